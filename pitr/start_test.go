package pitr

import "testing"

// Log excerpts in PostgreSQL 15's wording.
const (
	logPromoted = `2026-11-28 12:40:01.100 UTC [100] LOG:  starting point-in-time recovery to 2026-11-28 12:39:30.5+00
2026-11-28 12:40:01.200 UTC [100] LOG:  restored log file "000000010000000000000003" from archive
2026-11-28 12:40:01.300 UTC [100] LOG:  consistent recovery state reached at 0/3000100
2026-11-28 12:40:01.400 UTC [100] LOG:  recovery stopping before commit of transaction 742, time 2026-11-28 12:39:31.2+00
2026-11-28 12:40:01.400 UTC [100] LOG:  redo done at 0/4000A28 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.10 s
2026-11-28 12:40:01.400 UTC [100] LOG:  last completed transaction was at log time 2026-11-28 12:39:29.1+00
2026-11-28 12:40:01.500 UTC [100] LOG:  selected new timeline ID: 2
2026-11-28 12:40:01.600 UTC [100] LOG:  archive recovery complete
2026-11-28 12:40:01.700 UTC [99] LOG:  database system is ready to accept connections
`
	logPaused = `2026-11-28 12:40:01.400 UTC [100] LOG:  recovery stopping before commit of transaction 742, time 2026-11-28 12:39:31.2+00
2026-11-28 12:40:01.500 UTC [99] LOG:  database system is ready to accept read-only connections
2026-11-28 12:40:01.600 UTC [100] LOG:  pausing at the end of recovery
`
	// Ready for read-only connections during recovery is not promotion.
	logHotStandby = `2026-11-28 12:40:01.300 UTC [100] LOG:  consistent recovery state reached at 0/3000100
2026-11-28 12:40:01.400 UTC [99] LOG:  database system is ready to accept read-only connections
`
)

func TestParseRecoveryLog(t *testing.T) {
	o := parseRecoveryLog([]byte(logPromoted))
	if o.State != "promoted" || o.RedoDone != "0/4000A28" ||
		o.StopLine != "recovery stopping before commit of transaction 742, time 2026-11-28 12:39:31.2+00" ||
		o.LastTransaction != "2026-11-28 12:39:29.1+00" {
		t.Fatalf("promoted: %+v", o)
	}
	if o := parseRecoveryLog([]byte(logPaused)); o.State != "paused" {
		t.Fatalf("paused: %+v", o)
	}
	if o := parseRecoveryLog([]byte(logHotStandby)); o.State != "" {
		t.Fatalf("still recovering: %+v", o)
	}
}

// A recovery that fails ends with "database system is shut down" too; that
// is not a shutdown at the target.
func TestParseRecoveryLogFailure(t *testing.T) {
	failed := `2026-11-28 13:00:09.100 UTC [200] LOG:  redo done at 0/800220
2026-11-28 13:00:09.100 UTC [200] FATAL:  recovery ended before configured recovery target was reached
2026-11-28 13:00:09.200 UTC [199] LOG:  startup process (PID 200) exited with exit code 1
2026-11-28 13:00:09.300 UTC [199] LOG:  database system is shut down
`
	if o := parseRecoveryLog([]byte(failed)); o.State != "" {
		t.Fatalf("failed recovery parsed as %q", o.State)
	}
	atTarget := "2026-11-28 13:00:09.100 UTC [200] LOG:  shutdown at recovery target\n"
	if o := parseRecoveryLog([]byte(atTarget)); o.State != "shut down" {
		t.Fatalf("shutdown at target parsed as %q", o.State)
	}
}

// pg_waldump's descriptions of the records recovery_target_time stops at.
func TestXactRecordPattern(t *testing.T) {
	for line, want := range map[string]string{
		"rmgr: Transaction len (rec/tot):     34/    34, tx:       6462, lsn: 0/14FF3058, prev 0/14FF3008, desc: COMMIT 2026-11-28 13:02:17.761327 UTC":                      "2026-11-28 13:02:17.761327",
		"rmgr: Transaction len (rec/tot):     34/    34, tx:        740, lsn: 0/03000060, prev 0/03000028, desc: ABORT 2026-11-28 13:02:18 UTC":                              "2026-11-28 13:02:18",
		"rmgr: Transaction len (rec/tot):     98/    98, tx:          0, lsn: 0/030001A0, prev 0/03000160, desc: COMMIT_PREPARED 741: 2026-11-28 13:02:19.5 UTC; inval msgs": "2026-11-28 13:02:19.5",
		"rmgr: Transaction len (rec/tot):    162/   162, tx:        742, lsn: 0/03000200, prev 0/030001A0, desc: PREPARE gid t1: 2026-11-28 13:02:20 UTC":                    "",
		"rmgr: Transaction len (rec/tot):     50/    50, tx:          0, lsn: 0/03000300, prev 0/03000200, desc: ASSIGNMENT xtop 743: subxacts: 744":                         "",
	} {
		m := xactRecord().FindStringSubmatch(line)
		got := ""
		if m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("%q: got %q, want %q", line, got, want)
		}
	}
}
