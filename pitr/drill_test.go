package pitr

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage/fs"
)

func latestPlan(t *testing.T, lastSeg int) Plan {
	t.Helper()
	p, err := MakePlan(Inputs{Backups: []basebackup.Backup{backup("b1", 10, 11, 0, 11)}, WAL: archived(1, 10, lastSeg), Target: Target{Kind: TargetLatest}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEvaluateRecoveryPointLatest(t *testing.T) {
	p := latestPlan(t, 30)
	xact := t0.Add(29 * time.Minute)
	for _, tc := range []struct {
		name string
		end  wal.LSN
		want string
	}{
		{"inside the newest segment", segLSN(30) + 0x1000, CheckPass},
		{"end exactly at the newest segment's end (XLOG_SWITCH)", segLSN(31), CheckPass},
		{"further: more WAL archived during the drill", segLSN(33) + 8, CheckPass},
		{"ended in the segment before", segLSN(29) + 0x1000, CheckFail},
		{"ended at the newest segment's start", segLSN(30), CheckFail},
		{"nothing replayed", 0, CheckFail},
	} {
		got, detail := evaluateRecoveryPoint(p, tc.end, &xact, Outcome{})
		if got != tc.want {
			t.Errorf("%s: %s (%s), want %s", tc.name, got, detail, tc.want)
		}
		if got == CheckFail && tc.end != 0 && !strings.Contains(detail, segName(1, 30)) {
			t.Errorf("%s: failure does not name the newest archived segment: %s", tc.name, detail)
		}
	}
}

func TestEvaluateRecoveryPointTargets(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 10, 11, 0, 11)}, WAL: archived(1, 10, 30)}
	in.Target = timeTarget(20)
	p, err := MakePlan(in)
	if err != nil {
		t.Fatal(err)
	}
	before, after := t0.Add(19*time.Minute), t0.Add(21*time.Minute)
	stop := Outcome{StopLine: "recovery stopping before commit of transaction 900, time ..."}
	if r, d := evaluateRecoveryPoint(p, segLSN(20), &before, stop); r != CheckPass {
		t.Errorf("time target reached: %s %s", r, d)
	}
	if r, d := evaluateRecoveryPoint(p, segLSN(20), &after, stop); r != CheckFail {
		t.Errorf("last transaction after the target: %s %s", r, d)
	}
	if r, d := evaluateRecoveryPoint(p, segLSN(20), &before, Outcome{}); r != CheckFail {
		t.Errorf("no stop line: %s %s", r, d)
	}
	in.Target = Target{Kind: TargetImmediate}
	if p, err = MakePlan(in); err != nil {
		t.Fatal(err)
	}
	if r, _ := evaluateRecoveryPoint(p, segLSN(11), nil, Outcome{StopLine: "recovery stopping after reaching consistency"}); r != CheckPass {
		t.Errorf("immediate: %s", r)
	}
}

func TestTableScanPlausible(t *testing.T) {
	for _, tc := range []struct {
		s    tableScan
		want bool
	}{
		{tableScan{"a", -1, 0, -1}, true},      // never analyzed
		{tableScan{"b", 0, 0, -1}, true},       // empty
		{tableScan{"c", 999, 0, -1}, true},     // small: deletes without vacuum happen
		{tableScan{"d", 5000, 4800, -1}, true}, // estimates are estimates
		{tableScan{"e", 5000, 0, -1}, false},   // lost its rows
		{tableScan{"f", -1, 0, 20000}, false},  // restored to the backup's end, large when it was taken
		{tableScan{"g", -1, 0, 500}, true},     // small at backup time
		{tableScan{"h", -1, 19000, 20000}, true},
	} {
		if got := tc.s.implausible() == ""; got != tc.want {
			t.Errorf("%+v: plausible %v, want %v", tc.s, got, tc.want)
		}
	}
}

func TestDrillSettingsKeepTheScratchServerApart(t *testing.T) {
	got := map[string]string{}
	for _, s := range drillSettings("/scratch", "/sock") {
		got[s.Name] = s.Value
	}
	for name, want := range map[string]string{
		"archive_mode": "off", "listen_addresses": "", "unix_socket_directories": "/sock",
		"hba_file": "/scratch/pg_hba.conf", "logging_collector": "off", "synchronous_standby_names": "",
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %q (set %v), want %q", name, v, ok, want)
		}
	}
	if strings.Contains(drillHBA, "host ") {
		t.Errorf("the drill's pg_hba.conf allows TCP connections:\n%s", drillHBA)
	}
}

func TestDrillReportsRoundTrip(t *testing.T) {
	ctx := context.Background()
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if last, err := LastDrill(ctx, st, 42); err != nil || last != nil {
		t.Fatalf("no drills yet: %v %v", last, err)
	}
	for i, ok := range []bool{true, false} {
		r := DrillReport{Version: DrillReportVersion, SystemIdentifier: 42, StartedAt: t0.Add(time.Duration(i) * time.Hour), Target: "latest", OK: ok}
		key, err := WriteDrillReport(ctx, st, r)
		if err != nil {
			t.Fatal(err)
		}
		if want := repo.DrillKey(42, r.StartedAt); key != want || !strings.HasPrefix(key, "42/drills/") {
			t.Fatalf("key %s, want %s", key, want)
		}
	}
	last, err := LastDrill(ctx, st, 42)
	if err != nil || last == nil || last.OK || !last.StartedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("last drill: %+v %v", last, err)
	}
}

// A drill that cannot plan (here: no backup) fails and says why, without
// touching the disk; as root it refuses to run at all.
func TestRunDrillFailsWithoutBackup(t *testing.T) {
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	rep := RunDrill(context.Background(), st, 42, Inputs{}, DrillOptions{ScratchParent: scratch, RestoreCommand: "x"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if rep.OK || len(rep.Failures()) != 1 || rep.Target != "latest" || rep.FinishedAt.IsZero() {
		t.Fatalf("report: %+v", rep)
	}
	f := rep.Failures()[0]
	if f.Name != "environment" && !(f.Name == "plan" && strings.Contains(f.Detail, "no completed base backup")) {
		t.Fatalf("failure: %+v", f)
	}
	var b bytes.Buffer
	rep.Summary(&b)
	if !strings.Contains(b.String(), "drill FAILED") {
		t.Fatalf("summary:\n%s", b.String())
	}
}
