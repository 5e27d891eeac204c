package pitr

import (
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/basebackup"
)

// pitr stream's .partial of the segment after the newest complete one ends
// the WAL of a restore to latest, or to a time after the last complete
// segment; never one after a gap, one on another timeline, or one the
// backup's own WAL would need.
func TestPlanUsesStreamPartial(t *testing.T) {
	backups := []basebackup.Backup{backup("b1", 2, 3, 2, 3.5)}
	partial := func(tli, n int, min float64) WALFile {
		return WALFile{Name: segName(tli, n) + ".partial", StoredSize: 5, ArchivedAt: t0.Add(time.Duration(min * float64(time.Minute)))}
	}
	for _, tc := range []struct {
		name   string
		wal    []WALFile
		target Target
		want   string // the plan's Partial; "error" for no plan
	}{
		{"latest", append(archived(1, 1, 9), partial(1, 10, 10.5)), Target{Kind: TargetLatest}, segName(1, 10) + ".partial"},
		{"latest, no partial", archived(1, 1, 9), Target{Kind: TargetLatest}, ""},
		{"partial after a gap", append(archived(1, 1, 8), partial(1, 10, 10.5)), Target{Kind: TargetLatest}, ""},
		{"partial of another timeline", append(archived(1, 1, 9), partial(2, 10, 10.5)), Target{Kind: TargetLatest}, ""},
		{"partial of an older segment", append(archived(1, 1, 9), partial(1, 9, 9.5)), Target{Kind: TargetLatest}, ""},
		{"time inside the partial", append(archived(1, 1, 9), partial(1, 10, 10.5)), timeTarget(10.2), segName(1, 10) + ".partial"},
		{"time before the last segment", append(archived(1, 1, 9), partial(1, 10, 10.5)), timeTarget(8.5), ""},
		{"time after the partial's upload", append(archived(1, 1, 9), partial(1, 10, 10.5)), timeTarget(10.7), "error"},
		{"immediate", append(archived(1, 1, 9), partial(1, 10, 10.5)), Target{Kind: TargetImmediate}, ""},
		{"backup's own segment only partial", append(archived(1, 1, 2), partial(1, 3, 3.6)), Target{Kind: TargetLatest}, "error"},
	} {
		p, err := MakePlan(Inputs{Backups: backups, WAL: tc.wal, Target: tc.target})
		switch {
		case tc.want == "error":
			if err == nil {
				t.Errorf("%s: planned %v with partial %q, want a refusal", tc.name, names(p.WAL), p.Partial)
			}
			continue
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if p.Partial != tc.want {
			t.Errorf("%s: Partial = %q, want %q", tc.name, p.Partial, tc.want)
		}
		if last := p.WAL[len(p.WAL)-1].Name; tc.want != "" && last != tc.want {
			t.Errorf("%s: last WAL file %s, want the partial", tc.name, last)
		}
	}
}

func TestStreamProblems(t *testing.T) {
	down := &StreamStatus{Slot: "pitr", SlotExists: true, RetainedBytes: 3 << 20}
	p := down.problems(0)
	if len(p) != 1 || !strings.Contains(p[0], "slot pitr holds 3.0 MiB") || !strings.Contains(p[0], "fills the server's disk") ||
		!strings.Contains(p[0], "pg_drop_replication_slot('pitr')") {
		t.Fatalf("inactive slot: %q", p)
	}
	up := &StreamStatus{Slot: "pitr", SlotExists: true, SlotActive: true, LagBytes: 100, SinceUpload: 30}
	up.LastUpload = &t0
	if p := up.problems(time.Minute); len(p) != 0 {
		t.Fatalf("healthy streamer: %q", p)
	}
	up.SinceUpload = 600
	if p := up.problems(5 * time.Minute); len(p) != 1 || !strings.Contains(p[0], "streaming is behind") {
		t.Fatalf("stalled streamer: %q", p)
	}
}
