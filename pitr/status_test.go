package pitr

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
)

func problemsContain(s Status, sub string) bool {
	for _, p := range s.Problems {
		if strings.Contains(p, sub) {
			return true
		}
	}
	return false
}

func TestStatusHealthy(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 10, 11, 0, 11), backup("b2", 20, 21, 20, 21)}, WAL: archived(1, 10, 30)}
	now := t0.Add(31 * time.Minute)
	drill := &DrillReport{StartedAt: t0, OK: true, Target: "latest", Backup: "b2"}
	s := ComputeStatus(42, in, drill, now)
	s.Server = &ServerStatus{Reachable: true, PendingSegments: 0}
	s.Evaluate(Thresholds{MaxArchiveLag: time.Minute, MaxBackupAge: time.Hour, MaxDrillAge: time.Hour})
	if len(s.Problems) != 0 || len(s.Gaps) != 0 {
		t.Fatalf("problems %v, gaps %v", s.Problems, s.Gaps)
	}
	if s.NewestSegment != segName(1, 30) || s.WALFiles != 21 || len(s.Backups) != 2 || !s.Backups[0].Restorable {
		t.Fatalf("status: %+v", s)
	}
	if w := s.Window; w == nil || w.EarliestBackup != "b1" || !w.Earliest.Equal(t0.Add(11*time.Minute)) || w.LatestSegment != segName(1, 30) {
		t.Fatalf("window: %+v", s.Window)
	}
	var b bytes.Buffer
	s.Describe(&b)
	for _, want := range []string{"gaps:       none", "backups:    2", "last drill: passed", "OK"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("description lacks %q:\n%s", want, b.String())
		}
	}
}

func TestStatusGapsAndThresholds(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 10, 11, 0, 11), backup("b2", 20, 21, 20, 21)},
		WAL: without(without(archived(1, 10, 30), segName(1, 15)), segName(1, 25))}
	now := t0.Add(10 * 24 * time.Hour)
	s := ComputeStatus(42, in, &DrillReport{StartedAt: t0, OK: false, Checks: []CheckResult{{Name: "amcheck", Result: CheckFail, Detail: "index x corrupt"}}}, now)
	s.Evaluate(Thresholds{MaxArchiveLag: time.Hour, MaxBackupAge: 8 * 24 * time.Hour, MaxDrillAge: 35 * 24 * time.Hour})
	if len(s.Gaps) != 2 || s.Gaps[0].Missing != segName(1, 15) || s.Gaps[1].Missing != segName(1, 25) ||
		strings.Join(s.Gaps[1].Backups, ",") != "b2" || strings.Join(s.Gaps[0].Backups, ",") != "b1" {
		t.Fatalf("gaps: %+v", s.Gaps)
	}
	// b1 reaches segment 14, b2 reaches 24: the window ends before the later gap.
	if w := s.Window; w == nil || w.LatestSegment != segName(1, 24) || w.EarliestBackup != "b1" {
		t.Fatalf("window: %+v", s.Window)
	}
	for _, want := range []string{
		"WAL segment " + segName(1, 25) + " is missing", "newest backup b2 is 9d23h old (max 8d)",
		"newest archived segment " + segName(1, 30), "last drill at", "amcheck: index x corrupt",
	} {
		if !problemsContain(s, want) {
			t.Errorf("problems lack %q: %q", want, s.Problems)
		}
	}
}

func TestStatusServerArchiving(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 10, 11, 0, 11)}, WAL: archived(1, 10, 30)}
	now := t0.Add(2 * time.Hour) // the newest segment is 90 minutes old
	okAt, failAt := t0.Add(30*time.Minute), t0.Add(100*time.Minute)
	th := Thresholds{MaxArchiveLag: time.Hour}

	// Idle server: nothing completed since the newest archived segment.
	s := ComputeStatus(42, in, nil, now)
	s.Server = &ServerStatus{Reachable: true, LastArchivedTime: &okAt}
	s.Evaluate(th)
	if len(s.Problems) != 0 {
		t.Fatalf("idle server: %q", s.Problems)
	}
	// Failing archiver with completed segments waiting.
	s = ComputeStatus(42, in, nil, now)
	s.Server = &ServerStatus{Reachable: true, LastArchivedTime: &okAt, LastFailedTime: &failAt, LastFailedWAL: segName(1, 31), FailedCount: 7, PendingSegments: 3}
	s.Evaluate(th)
	if !problemsContain(s, "archive_command is failing: "+segName(1, 31)) || !problemsContain(s, "archiving is behind: 3 completed segment(s)") {
		t.Fatalf("failing archiver: %q", s.Problems)
	}
	// Recovered: the last success is newer than the last failure.
	later := failAt.Add(time.Minute)
	s = ComputeStatus(42, in, nil, now)
	s.Server = &ServerStatus{Reachable: true, LastArchivedTime: &later, LastFailedTime: &failAt}
	s.Evaluate(th)
	if len(s.Problems) != 0 {
		t.Fatalf("recovered archiver: %q", s.Problems)
	}
	// Empty repository.
	s = ComputeStatus(42, Inputs{}, nil, now)
	s.Evaluate(Thresholds{MaxDrillAge: time.Hour})
	for _, want := range []string{"no base backup", "no WAL segment", "no restore drill"} {
		if !problemsContain(s, want) {
			t.Errorf("empty repository: problems lack %q: %q", want, s.Problems)
		}
	}
}

func TestArchiveLag(t *testing.T) {
	size := wal.SegmentSize(seg16)
	if n, b := archiveLag(size, segLSN(31)+100, segName(1, 30)); n != 0 || b != 100 {
		t.Errorf("up to date: %d segments, %d bytes", n, b)
	}
	if n, b := archiveLag(size, segLSN(34)+100, segName(1, 30)); n != 3 || b != 3*seg16+100 {
		t.Errorf("3 behind: %d segments, %d bytes", n, b)
	}
	if n, _ := archiveLag(size, segLSN(31), segName(2, 40)); n != 0 {
		t.Errorf("archive ahead (another timeline): %d", n)
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		40 * time.Second: "40s", 90 * time.Minute: "1h30m", 8 * 24 * time.Hour: "8d", 9*24*time.Hour + 5*time.Hour: "9d5h",
	} {
		if got := age2(d); got != want {
			t.Errorf("age2(%s) = %s, want %s", d, got, want)
		}
	}
}
