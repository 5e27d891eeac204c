package pitr

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
)

const seg16 = 16 << 20

var t0 = time.Date(2026, 4, 8, 12, 0, 0, 0, time.UTC)

// segLSN is the first LSN of segment n with 16 MiB segments.
func segLSN(n int) wal.LSN { return wal.LSN(uint64(n) * seg16) }

func segName(tli, n int) string {
	return wal.SegmentSize(seg16).FileName(wal.Segment{TLI: wal.TimelineID(tli), No: wal.SegNo(n)})
}

// backup starting in segment start and ending in segment stop (mid-segment),
// taken from t0+startMin to t0+stopMin.
func backup(name string, start, stop int, startMin, stopMin float64) basebackup.Backup {
	return basebackup.Backup{
		Version: basebackup.MetadataVersion, Name: name, SystemIdentifier: 42,
		WALSegmentSize: seg16, StartTimeline: 1, StopTimeline: 1,
		StartLSN: segLSN(start) + 0x28, StopLSN: segLSN(stop) + 0x100, CheckpointLSN: segLSN(start) + 0x60,
		StartTime:  t0.Add(time.Duration(startMin * float64(time.Minute))),
		StopTime:   t0.Add(time.Duration(stopMin * float64(time.Minute))),
		StoredSize: 1000, Parts: []basebackup.Part{{Name: "base.tar"}},
	}
}

// archived returns timeline-1 segments from..to, segment n archived at t0+n minutes.
func archived(tli, from, to int) []WALFile {
	var out []WALFile
	for n := from; n <= to; n++ {
		out = append(out, WALFile{Name: segName(tli, n), StoredSize: 10, ArchivedAt: t0.Add(time.Duration(n) * time.Minute)})
	}
	return out
}

func without(files []WALFile, name string) []WALFile {
	var out []WALFile
	for _, f := range files {
		if f.Name != name {
			out = append(out, f)
		}
	}
	return out
}

func timeTarget(min float64) Target {
	return Target{Kind: TargetTime, Time: t0.Add(time.Duration(min * float64(time.Minute)))}
}

func names(files []WALFile) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.Name)
	}
	return out
}

func TestTimeTargetPicksNewestBackupEndedBefore(t *testing.T) {
	backups := []basebackup.Backup{backup("b1", 2, 3, 2, 3.5), backup("b2", 10, 12, 10, 12.5)}
	in := Inputs{Backups: backups, WAL: archived(1, 1, 30)}

	for _, tc := range []struct {
		target float64
		want   string
	}{
		{20, "b2"},   // well after b2
		{12.6, "b2"}, // just after b2 ended
		{12.4, "b1"}, // inside b2's window: b2 was still running
		{11, "b1"},
		{5, "b1"},
	} {
		in.Target = timeTarget(tc.target)
		p, err := MakePlan(in)
		if err != nil {
			t.Fatalf("target t0+%vm: %v", tc.target, err)
		}
		if p.Backup.Name != tc.want {
			t.Errorf("target t0+%vm: chose %s, want %s", tc.target, p.Backup.Name, tc.want)
		}
	}
}

func TestTimeTargetWALRange(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5)}, WAL: archived(1, 1, 30), Target: timeTarget(7.5)}
	p, err := MakePlan(in)
	if err != nil {
		t.Fatal(err)
	}
	got := names(p.WAL)
	// From the backup's start segment to the first segment archived after the target (8 at t0+8m).
	if got[0] != segName(1, 2) || got[len(got)-1] != segName(1, 8) || len(got) != 7 {
		t.Fatalf("WAL = %v", got)
	}
	if !p.MayReadMore || p.DownloadBytes != 1000+7*10 {
		t.Fatalf("plan %+v", p)
	}
	want := []Setting{{"recovery_target_timeline", "1"}, {"recovery_target_time", "2026-04-08 12:07:30+00"}, {"recovery_target_action", "promote"}}
	if len(p.Settings) != len(want) {
		t.Fatalf("settings %v", p.Settings)
	}
	for i := range want {
		if p.Settings[i] != want[i] {
			t.Fatalf("settings %v, want %v", p.Settings, want)
		}
	}
}

func TestTargetBeforeEarliestBackupRefused(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5)}, WAL: archived(1, 1, 30), Target: timeTarget(3)}
	_, err := MakePlan(in)
	if !errors.Is(err, ErrNoUsableBackup) || !strings.Contains(err.Error(), "before the end of the earliest backup b1") {
		t.Fatalf("err = %v", err)
	}
}

func TestTargetPastArchiveRefused(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5)}, WAL: archived(1, 1, 9), Target: timeTarget(9.5)}
	_, err := MakePlan(in)
	if err == nil || !strings.Contains(err.Error(), "later than anything archived") || !strings.Contains(err.Error(), segName(1, 9)) {
		t.Fatalf("err = %v", err)
	}
}

func TestGapIsReportedWithFirstMissingSegment(t *testing.T) {
	wal := without(without(archived(1, 1, 30), segName(1, 6)), segName(1, 7))
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5)}, WAL: wal, Target: timeTarget(20)}
	_, err := MakePlan(in)
	var gap *GapError
	if !errors.As(err, &gap) || gap.Missing != segName(1, 6) || gap.After != segName(1, 5) {
		t.Fatalf("err = %v", err)
	}
	// A gap after the target's end point does not matter for a time target...
	in.Target = timeTarget(4.5)
	if _, err := MakePlan(in); err != nil {
		t.Fatalf("gap after the target: %v", err)
	}
	// ...but does for "latest": recovery would stop at the gap and promote, losing what follows.
	in.Target = Target{Kind: TargetLatest}
	if _, err := MakePlan(in); !errors.As(err, &gap) || gap.Missing != segName(1, 6) {
		t.Fatalf("latest with a gap: %v", err)
	}
}

func TestGapInsideBackupRange(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 4, 2, 4.5)}, WAL: without(archived(1, 1, 30), segName(1, 3)), Target: Target{Kind: TargetImmediate}}
	_, err := MakePlan(in)
	var gap *GapError
	if !errors.As(err, &gap) || gap.Missing != segName(1, 3) || !strings.Contains(err.Error(), "consistent") {
		t.Fatalf("err = %v", err)
	}
}

func TestImmediateNeedsOnlyBackupWAL(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 4, 2, 4.5), backup("b2", 10, 11, 10, 11.5)}, WAL: archived(1, 1, 30), Target: Target{Kind: TargetImmediate}}
	p, err := MakePlan(in)
	if err != nil {
		t.Fatal(err)
	}
	if p.Backup.Name != "b2" || strings.Join(names(p.WAL), ",") != segName(1, 10)+","+segName(1, 11) {
		t.Fatalf("backup %s WAL %v", p.Backup.Name, names(p.WAL))
	}
	if p.Settings[1] != (Setting{"recovery_target", "immediate"}) {
		t.Fatalf("settings %v", p.Settings)
	}
}

func TestStopLSNOnSegmentBoundary(t *testing.T) {
	// A backup that ends exactly at a segment boundary does not need the segment starting there.
	b := backup("b1", 2, 4, 2, 4.5)
	b.StopLSN = segLSN(5)
	in := Inputs{Backups: []basebackup.Backup{b}, WAL: archived(1, 1, 4), Target: Target{Kind: TargetImmediate}}
	p, err := MakePlan(in)
	if err != nil {
		t.Fatal(err)
	}
	if last := p.WAL[len(p.WAL)-1].Name; last != segName(1, 4) {
		t.Fatalf("last needed segment %s", last)
	}
}

func TestLSNTarget(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5), backup("b2", 10, 12, 10, 12.5)}, WAL: archived(1, 1, 20)}
	in.Target = Target{Kind: TargetLSN, LSN: segLSN(11)} // inside b2: b1 must serve
	p, err := MakePlan(in)
	if err != nil || p.Backup.Name != "b1" || p.WAL[len(p.WAL)-1].Name != segName(1, 11) {
		t.Fatalf("plan %v %v, err %v", p.Backup.Name, names(p.WAL), err)
	}
	in.Target = Target{Kind: TargetLSN, LSN: segLSN(25)}
	if _, err := MakePlan(in); err == nil || !strings.Contains(err.Error(), "beyond the end of the archive") {
		t.Fatalf("LSN past the archive: %v", err)
	}
}

// Timeline 2 forked from timeline 1 at segment 8 (mid-segment): segments
// before 8 come from timeline 1, segment 8 onwards from timeline 2.
func TestTimeTargetAcrossTimelineSwitch(t *testing.T) {
	switchLSN := segLSN(8) + 0x5000
	hist := map[wal.TimelineID][]wal.HistoryEntry{2: {{TLI: 1, SwitchPoint: switchLSN, Reason: "no recovery target specified"}}}
	files := append(archived(1, 1, 7), WALFile{Name: segName(1, 8) + ".partial", ArchivedAt: t0.Add(8 * time.Minute)},
		WALFile{Name: "00000002.history", ArchivedAt: t0.Add(8 * time.Minute)})
	files = append(files, archived(2, 8, 20)...)
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5)}, WAL: files, Histories: hist, Target: timeTarget(15.5)}
	p, err := MakePlan(in)
	if err != nil {
		t.Fatal(err)
	}
	if p.Timeline != 2 {
		t.Fatalf("timeline %d, want 2", p.Timeline)
	}
	got := names(p.WAL)
	if got[0] != segName(1, 2) || got[5] != segName(1, 7) || got[6] != segName(2, 8) || got[len(got)-1] != segName(2, 16) {
		t.Fatalf("WAL path %v", got)
	}
	if p.Settings[0] != (Setting{"recovery_target_timeline", "2"}) {
		t.Fatalf("settings %v", p.Settings)
	}

	// The child's copy of the switch segment is required even though the
	// parent's .partial of the same number exists (PostgreSQL never uses it).
	in.WAL = without(files, segName(2, 8))
	var gap *GapError
	if _, err := MakePlan(in); !errors.As(err, &gap) || gap.Missing != segName(2, 8) {
		t.Fatalf("missing first segment of timeline 2: %v", err)
	}

	// --target-timeline current stays on timeline 1, whose WAL ends at segment 7.
	in.WAL = files
	in.Target.Timeline = CurrentTimeline
	if _, err := MakePlan(in); err == nil || !strings.Contains(err.Error(), "later than anything archived") {
		t.Fatalf("current timeline: %v", err)
	}
}

// A timeline that forked off before the backup ended cannot be reached from
// it: "latest" must pick a reachable timeline, and an explicit request for
// the unreachable one must pick an older backup or fail.
func TestTimelineForkedBeforeBackup(t *testing.T) {
	hist := map[wal.TimelineID][]wal.HistoryEntry{2: {{TLI: 1, SwitchPoint: segLSN(5) + 0x10, Reason: "before 2026-04-08 12:05:00+00"}}}
	b1, b2 := backup("b1", 2, 3, 2, 3.5), backup("b2", 10, 11, 10, 11.5)
	files := append(archived(1, 1, 20), archived(2, 5, 9)...)
	in := Inputs{Backups: []basebackup.Backup{b1, b2}, WAL: files, Histories: hist, Target: Target{Kind: TargetLatest}}

	p, err := MakePlan(in)
	if err != nil || p.Backup.Name != "b2" || p.Timeline != 1 {
		t.Fatalf("latest: backup %s timeline %d err %v; want b2 on timeline 1", p.Backup.Name, p.Timeline, err)
	}
	in.Target.Timeline = 2
	p, err = MakePlan(in)
	if err != nil || p.Backup.Name != "b1" || p.Timeline != 2 {
		t.Fatalf("timeline 2: backup %s timeline %d err %v; want b1", p.Backup.Name, p.Timeline, err)
	}
	in.Backup = "b2"
	if _, err := MakePlan(in); err == nil || !strings.Contains(err.Error(), "forked off timeline 1") {
		t.Fatalf("forced b2 on timeline 2: %v", err)
	}
	in.Backup = ""
	in.Target.Timeline = 3
	if _, err := MakePlan(in); err == nil || !strings.Contains(err.Error(), "00000003.history") {
		t.Fatalf("nonexistent timeline: %v", err)
	}
}

func TestNoBackups(t *testing.T) {
	if _, err := MakePlan(Inputs{Target: Target{Kind: TargetLatest}}); !errors.Is(err, ErrNoUsableBackup) {
		t.Fatalf("err = %v", err)
	}
}

func TestSettingsForEachTarget(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5)}, WAL: archived(1, 1, 20)}
	for _, tc := range []struct {
		target Target
		want   string
	}{
		{Target{Kind: TargetXID, XID: 1234, Exclusive: true, Action: ActionPause}, "recovery_target_timeline=1 recovery_target_xid=1234 recovery_target_inclusive=off recovery_target_action=pause"},
		{Target{Kind: TargetName, Name: "before upgrade", Action: ActionShutdown}, "recovery_target_timeline=1 recovery_target_name=before upgrade recovery_target_action=shutdown"},
		{Target{Kind: TargetLSN, LSN: segLSN(6) + 0x10}, "recovery_target_timeline=1 recovery_target_lsn=0/6000010 recovery_target_action=promote"},
		{Target{Kind: TargetLatest}, "recovery_target_timeline=1"},
	} {
		in.Target = tc.target
		p, err := MakePlan(in)
		if err != nil {
			t.Fatalf("%v: %v", tc.target.Kind, err)
		}
		var got []string
		for _, s := range p.Settings {
			got = append(got, s.Name+"="+s.Value)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%v: %s\nwant %s", tc.target.Kind, strings.Join(got, " "), tc.want)
		}
	}
	in.Target = Target{Kind: TargetName, Name: "x", Exclusive: true}
	if _, err := MakePlan(in); err == nil {
		t.Error("--exclusive with a name target accepted")
	}
}

func TestParseTargetTime(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	want := time.Date(2026, 4, 8, 11, 13, 0, 0, time.UTC)
	for _, in := range []string{
		"2026-04-08 14:13 +03",
		"2026-04-08 14:13:00+03:00",
		"2026-04-08T14:13:00 Europe/Helsinki", // EEST, +03 in April
		"2026-04-08 11:13 UTC",
		"2026-04-08 11:13:00Z",
		"2026-04-08 07:13", // default zone America/New_York, EDT -04
		"2026-04-08 10:43 -0030",
	} {
		got, _, err := ParseTargetTime(in, ny)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if !got.Equal(want) {
			t.Errorf("%q = %s, want %s", in, got.UTC(), want)
		}
	}
	for _, bad := range []string{"2026-04-08 14:13 EEST", "2026-04-08", "yesterday", "2026-04-08 14:13 Mars/Olympus", "2026-13-08 14:13", "2026-03-08 02:30"} {
		if _, _, err := ParseTargetTime(bad, ny); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got := FormatPGTime(time.Date(2026, 4, 8, 14, 13, 0, 500000000, time.FixedZone("x", 3*3600))); got != "2026-04-08 11:13:00.5+00" {
		t.Errorf("FormatPGTime = %s", got)
	}
}

func TestParseTimeline(t *testing.T) {
	for in, want := range map[string]wal.TimelineID{"": 0, "latest": 0, "current": CurrentTimeline, "3": 3, "0x1A": 26} {
		if got, err := ParseTimeline(in); err != nil || got != want {
			t.Errorf("%q = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"0", "-1", "x", "4294967295"} {
		if _, err := ParseTimeline(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The boundaries are strict: a backup that ended exactly at the target was
// still running at it, and a segment archived exactly at the target may hold
// nothing after it.
func TestStrictBoundaries(t *testing.T) {
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5), backup("b2", 10, 12, 10, 12.5)}, WAL: archived(1, 1, 30), Target: timeTarget(12.5)}
	p, err := MakePlan(in)
	if err != nil || p.Backup.Name != "b1" {
		t.Fatalf("target equal to b2's stop time: chose %s (%v), want b1", p.Backup.Name, err)
	}
	in.Target = timeTarget(15) // segment 15 was archived at exactly t0+15m
	p, err = MakePlan(in)
	if err != nil || p.WAL[len(p.WAL)-1].Name != segName(1, 16) {
		t.Fatalf("target equal to an archive time: last %v (%v), want %s", names(p.WAL), err, segName(1, 16))
	}
}

// After a PITR to t0+14m created timeline 2 (at t0+40m, forking where
// timeline 1 was at t0+14m), a restore to t0+17m must follow timeline 1:
// timeline 2 did not exist then, and has nothing of t0+14m..t0+17m.
// A target after timeline 2's creation follows it.
func TestTimeTargetIgnoresTimelinesCreatedLater(t *testing.T) {
	hist := map[wal.TimelineID][]wal.HistoryEntry{2: {{TLI: 1, SwitchPoint: segLSN(14) + 0x10, Reason: "before 2026-04-08 12:14:00+00"}}}
	files := append(archived(1, 1, 30), WALFile{Name: "00000002.history", ArchivedAt: t0.Add(40 * time.Minute)})
	for n := 14; n <= 16; n++ {
		files = append(files, WALFile{Name: segName(2, n), ArchivedAt: t0.Add(time.Duration(40+n) * time.Minute)})
	}
	in := Inputs{Backups: []basebackup.Backup{backup("b1", 2, 3, 2, 3.5)}, WAL: files, Histories: hist, Target: timeTarget(17)}
	p, err := MakePlan(in)
	if err != nil || p.Timeline != 1 {
		t.Fatalf("target before timeline 2 existed: timeline %d, err %v", p.Timeline, err)
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "timeline 2 was created") {
		t.Fatalf("notes %v", p.Notes)
	}
	in.Target = timeTarget(55)
	if p, err := MakePlan(in); err != nil || p.Timeline != 2 {
		t.Fatalf("target after timeline 2 was created: timeline %d, err %v", p.Timeline, err)
	}
	// Other targets keep PostgreSQL's meaning of latest.
	in.Target = Target{Kind: TargetLatest}
	if p, err := MakePlan(in); err != nil || p.Timeline != 2 {
		t.Fatalf("latest: timeline %d, err %v", p.Timeline, err)
	}
}

// A tablespace seen after the backup started and not in the backup is
// recreated by replay at its original path: the plan says so.
func TestLateTablespaces(t *testing.T) {
	b := backup("b1", 2, 3, 2, 3.5)
	b.Tablespaces = []basebackup.Tablespace{{OID: 16390, Location: "/srv/ts_old"}}
	seen := []archive.Tablespace{
		{OID: 16390, Location: "/srv/ts_old", SeenAt: t0},                      // in the backup
		{OID: 16400, Location: "/srv/dropped", SeenAt: t0.Add(time.Minute)},    // gone before the backup
		{OID: 16410, Location: "/srv/ts_new", SeenAt: t0.Add(4 * time.Minute)}, // created after it
	}
	p, err := MakePlan(Inputs{Backups: []basebackup.Backup{b}, WAL: archived(1, 1, 30), Tablespaces: seen, Target: timeTarget(20)})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.LateTablespaces) != 1 || p.LateTablespaces[0].OID != 16410 {
		t.Fatalf("late tablespaces %+v", p.LateTablespaces)
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "/srv/ts_new") {
		t.Fatalf("notes %v", p.Notes)
	}
}

func TestCheckLateTablespaces(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	busy := t.TempDir()
	os.WriteFile(filepath.Join(busy, "PG_15_202209061"), nil, 0o600)
	if err := checkLateTablespaces([]archive.Tablespace{{OID: 1, Location: busy}}, log); err == nil || !strings.Contains(err.Error(), busy) {
		t.Fatalf("non-empty location: %v", err)
	}
	if err := checkLateTablespaces([]archive.Tablespace{{OID: 1, Location: filepath.Join(busy, "absent")}, {OID: 2, Location: t.TempDir()}}, log); err != nil {
		t.Fatalf("absent or empty locations: %v", err)
	}
}
