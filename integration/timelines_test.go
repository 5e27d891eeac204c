package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// Scenarios 14, 15 (timeline numbering), 16 and 17, on both backends, with
// the timeline switch in the middle of a segment and at a segment boundary:
//
//   - restore from a timeline-1 backup to a time on timeline 2 (after a
//     standby's promotion, with 00000002.history and, mid-segment, the
//     …partial archived): the timeline-2 rows are there, the new timeline is
//     3, the data equals the source's at the target;
//   - a second restore from the same repository creates timeline 4, never a
//     second 3, because the first restore's .history was archived;
//   - PostgreSQL fetches 00000002.history through restore_command with %p
//     pg_wal/RECOVERYHISTORY (exit 0) and probes the missing
//     00000003.history (exit 1, quickly); segments go to RECOVERYXLOG;
//   - with timeline 2's copy of the switch segment deleted (timeline 1's
//     full copy of the same segment number still archived by the old
//     primary), restore refuses and names the missing file.
func TestRestoreAcrossTimelines(t *testing.T) {
	for _, kind := range backends {
		for _, atBoundary := range []bool{false, true} {
			name := kind + "/mid-segment"
			if atBoundary {
				name = kind + "/segment-boundary"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				testAcrossTimelines(t, kind, atBoundary)
			})
		}
	}
}

func testAcrossTimelines(t *testing.T, kind string, atBoundary bool) {
	r := newRepo(t, kind, nil)
	primary := pgtest.NewCluster(t, pgtest.Options{WalSegSizeMB: 1, ArchiveCommand: r.archiveCommand()})
	primary.Start(t)
	primary.Exec(t, "CREATE TABLE pitr_probe (id serial, note text)")
	primary.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl1')")
	primary.WaitArchived(t, primary.SwitchWAL(t), time.Minute)
	r.backup(t, primary)
	standby := pgtest.NewStandby(t, primary, pgtest.Options{ArchiveCommand: r.archiveCommand()})
	standby.Start(t)
	primary.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl1 streamed')")
	standby.WaitFor(t, time.Minute, func() bool {
		v, err := standby.TryQueryString("SELECT count(*)::text FROM pitr_probe")
		return err == nil && v == "2"
	})
	if atBoundary {
		promoteAtSegmentBoundary(t, primary, standby)
	} else {
		standby.Promote(t)
	}
	// The old primary goes on for a moment on timeline 1 (as in a failover
	// where it was cut off late): timeline 1 gets a full copy of the switch
	// segment's number.
	primary.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl1 after the fork')")
	primary.WaitArchived(t, primary.SwitchWAL(t), time.Minute)
	primary.Stop(t)

	standby.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl2 A')")
	afterTL2A := snapshot(t, standby, "after commit 'tl2 A' on timeline 2")
	time.Sleep(time.Second)
	mid := standby.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
	time.Sleep(time.Second)
	standby.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl2 B')")
	standby.WaitArchived(t, "00000002.history", time.Minute)
	// Timeline 2 goes on past its first segment, so that segment missing
	// is a hole, not the end of the archive.
	for range 2 {
		standby.SwitchWAL(t)
	}
	standby.WaitArchived(t, standby.SwitchWAL(t), time.Minute)

	// Where timeline 2 begins, from its history file.
	work := pgtest.SharedTempDir(t)
	if res := r.pitr(t, work, "wal-fetch", "00000002.history", "h"); res.code != 0 {
		t.Fatalf("fetch 00000002.history: %v", res)
	}
	hist, _ := os.ReadFile(filepath.Join(work, "h"))
	switchSeg, offset := switchSegment(t, string(hist), 1<<20)
	tl1Copy, tl2Copy := segName(1, switchSeg, 1<<20), segName(2, switchSeg, 1<<20)
	archived := archivedWAL(t, r, systemID(t, r))
	want := []string{"00000002.history", tl1Copy, tl2Copy}
	if atBoundary {
		if offset != 0 {
			t.Fatalf("timeline 2 begins at offset %d of its segment, want a segment boundary:\n%s", offset, hist)
		}
	} else {
		if offset == 0 {
			t.Fatalf("timeline 2 begins at a segment boundary, want the middle of a segment:\n%s", hist)
		}
		want = append(want, tl1Copy+".partial")
	}
	for _, w := range want {
		if !slices.Contains(archived, w) {
			t.Fatalf("%s is not archived; archive: %v", w, archived)
		}
	}

	dir := pgtest.SharedTempDir(t)
	restore := func(name string, wrap *fetchWrapper) *pgtest.Cluster {
		pgdata := filepath.Join(dir, name)
		res := r.pitr(t, dir, "restore", "--pgdata", pgdata, "--target", mid+"+00")
		if res.code != 0 {
			t.Fatalf("restore %s: %v", name, res)
		}
		if !strings.Contains(res.stdout, "timeline:  2") {
			t.Fatalf("plan does not follow timeline 2:\n%s", res.stdout)
		}
		rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{ArchiveCommand: r.archiveCommand()})
		if wrap != nil {
			wrap.install(t, rc)
		}
		rc.Start(t)
		waitPromoted(t, rc)
		if got := probeRows(t, rc); got != "tl1,tl1 streamed,tl2 A" {
			t.Fatalf("%s: rows %q", name, got)
		}
		assertLog(t, rc, "recovery stopping before commit of transaction")
		assertRestoredData(t, rc, afterTL2A)
		return rc
	}
	wrap := newFetchWrapper(t, r, "")
	first := restore("first", wrap)
	if tl := timelineOf(t, first); tl != 3 {
		t.Fatalf("first restore is on timeline %d, want 3", tl)
	}
	first.WaitArchived(t, "00000003.history", time.Minute)
	first.Stop(t)

	// Scenario 17: what PostgreSQL asked restore_command for, and the answers.
	expect := func(file, path string, code int) {
		t.Helper()
		for _, c := range wrap.callsFor(t, file) {
			if c.path == path && c.code == code {
				if code == 1 && c.took > 5*time.Second {
					t.Errorf("the probe of the missing %s took %v", file, c.took)
				}
				return
			}
		}
		t.Fatalf("no restore_command call for %s to %s with exit %d; calls: %v", file, path, code, wrap.calls(t))
	}
	expect("00000002.history", "pg_wal/RECOVERYHISTORY", 0)
	expect("00000003.history", "pg_wal/RECOVERYHISTORY", 1)
	expect(tl2Copy, "pg_wal/RECOVERYXLOG", 0)
	for _, c := range wrap.calls(t) {
		if !strings.HasSuffix(c.path, "/RECOVERYHISTORY") && !strings.HasSuffix(c.path, "/RECOVERYXLOG") {
			t.Errorf("restore_command was called with %%p %s", c.path)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(first.DataDir(), "pg_wal", ".*pitr-tmp*")); len(leftovers) > 0 {
		t.Errorf("wal-fetch left temporary files: %v", leftovers)
	}

	second := restore("second", nil)
	if tl := timelineOf(t, second); tl != 4 {
		t.Fatalf("second restore is on timeline %d, want 4 (a new timeline, not a second 3)", tl)
	}
	second.Stop(t)

	// Scenario 16: timeline 2's copy of the switch segment is gone, timeline
	// 1's full copy of that number is not: replaying it would silently
	// follow the wrong history.
	deleteObject(t, r, tl2Copy)
	pgdata := filepath.Join(dir, "third")
	res := r.pitr(t, dir, "restore", "--pgdata", pgdata, "--target", mid+"+00")
	if res.code == 0 || !strings.Contains(res.stderr, tl2Copy) || !strings.Contains(res.stderr, "missing") {
		t.Fatalf("restore without %s (with %s archived): %v", tl2Copy, tl1Copy, res)
	}
	assertNotCreated(t, pgdata)
}

// switchSegment parses the last line of a timeline history file and returns
// the number of the segment the switch point falls in (or starts) and the
// switch point's offset in it.
func switchSegment(t *testing.T, history string, segSize uint64) (uint64, uint64) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(history), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) < 2 {
		t.Fatalf("history file: %q", history)
	}
	hi, lo, ok := strings.Cut(fields[1], "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("history file switch point %q", fields[1])
	}
	lsn := h<<32 | l
	return lsn / segSize, lsn % segSize
}

// segName is the file name of segment number seg on timeline tli.
func segName(tli uint32, seg, segSize uint64) string {
	perLogID := (uint64(1) << 32) / segSize
	return fmt.Sprintf("%08X%08X%08X", tli, seg/perLogID, seg%perLogID)
}

// promoteAtSegmentBoundary switches WAL on the primary, lets the standby
// replay the switch, cuts streaming (so that no record the primary writes
// later, such as the background writer's running-transactions record, lands
// on the new timeline's side) and promotes the standby, whose timeline then
// begins exactly at a segment boundary. A record that slipped in before the
// cut makes it try again.
func promoteAtSegmentBoundary(t *testing.T, primary, standby *pgtest.Cluster) {
	t.Helper()
	conninfo := standby.QueryString(t, "SHOW primary_conninfo")
	for attempt := 1; ; attempt++ {
		primary.SwitchWAL(t)
		end := primary.QueryString(t, "SELECT pg_current_wal_lsn()::text")
		standby.WaitFor(t, time.Minute, func() bool {
			v, err := standby.TryQueryString("SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", end)
			return err == nil && v == "true"
		})
		standby.Exec(t, "ALTER SYSTEM SET primary_conninfo = ''")
		standby.Exec(t, "SELECT pg_reload_conf()")
		standby.WaitFor(t, time.Minute, func() bool {
			v, err := standby.TryQueryString("SELECT count(*)::text FROM pg_stat_wal_receiver")
			return err == nil && v == "0"
		})
		atBoundary := standby.QueryString(t, "SELECT (pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0') % (SELECT setting::numeric FROM pg_settings WHERE name = 'wal_segment_size') = 0)::text")
		if atBoundary == "true" {
			break
		}
		if attempt == 3 {
			t.Fatalf("the standby never stopped exactly at a segment boundary")
		}
		standby.Exec(t, "ALTER SYSTEM SET primary_conninfo = '"+strings.ReplaceAll(conninfo, "'", "''")+"'")
		standby.Exec(t, "SELECT pg_reload_conf()")
	}
	standby.Promote(t)
}
