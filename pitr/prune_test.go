package pitr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/fs"
)

// The fixtures use 16 MiB segments and segment numbers instead of LSNs, and
// a "now" with every backup and file placed relative to it.
const (
	pruneSys = repo.SystemID(7000000000000000001)
	pruneSeg = wal.DefaultSegmentSize
)

var pruneNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func daysAgo(d float64) time.Time { return pruneNow.Add(-time.Duration(d * float64(24*time.Hour))) }

func segLSN(n int) wal.LSN { return wal.LSN(uint64(n) * uint64(pruneSeg)) }

func walName(tli, n int) string {
	return pruneSeg.FileName(wal.Segment{TLI: wal.TimelineID(tli), No: wal.SegNo(n)})
}

// mkBackup is a backup on timeline tli from segment start to stop, ended
// ended (and started an hour before).
func mkBackup(name string, tli, start, stop int, ended time.Time) basebackup.Backup {
	return basebackup.Backup{
		Version: basebackup.MetadataVersion, Name: name, SystemIdentifier: pruneSys,
		WALSegmentSize: uint64(pruneSeg),
		StartLSN:       segLSN(start) + 0x28, StopLSN: segLSN(stop) + 0x100, CheckpointLSN: segLSN(start) + 0x60,
		StartTimeline: wal.TimelineID(tli), StopTimeline: wal.TimelineID(tli),
		StartTime: ended.Add(-time.Hour), StopTime: ended,
		Codec: "zstd", Size: 100, StoredSize: 40, Parts: []basebackup.Part{{Name: "base.tar", Size: 100, StoredSize: 40}},
	}
}

// segs lists segments from..to (inclusive) of a timeline, archived at.
func segs(tli, from, to int, at time.Time) []pitr.WALFile {
	var out []pitr.WALFile
	for n := from; n <= to; n++ {
		out = append(out, pitr.WALFile{Name: walName(tli, n), StoredSize: 10, ArchivedAt: at})
	}
	return out
}

func backupHistoryFile(b basebackup.Backup) pitr.WALFile {
	return pitr.WALFile{Name: pruneSeg.BackupHistoryFileName(b.StartTimeline, b.StartLSN), StoredSize: 1, ArchivedAt: b.StopTime}
}

// inputs builds PruneInputs whose backup listing has the metadata and one
// part of every backup.
func inputs(backups []basebackup.Backup, files []pitr.WALFile, histories map[wal.TimelineID][]wal.HistoryEntry) pitr.PruneInputs {
	in := pitr.PruneInputs{System: pruneSys, Backups: backups, WAL: files, Histories: histories}
	for _, b := range backups {
		in.BackupObjects = append(in.BackupObjects,
			storage.ObjectInfo{Key: b.Key("base.tar"), Size: 40, ModTime: b.StopTime},
			storage.ObjectInfo{Key: b.Key(repo.BackupMetadataName), Size: 1, ModTime: b.StopTime})
	}
	return in
}

func keptNames(p pitr.PrunePlan) []string {
	var out []string
	for _, k := range p.Keep {
		out = append(out, k.Backup.Name)
	}
	return out
}

func deletedNames(p pitr.PrunePlan) []string {
	var out []string
	for _, d := range p.DeleteBackups {
		out = append(out, d.Backup.Name)
	}
	return out
}

func deletedWAL(p pitr.PrunePlan) map[string]bool {
	out := map[string]bool{}
	for _, f := range p.DeleteWAL {
		out[f.Name] = true
	}
	return out
}

func mustPlan(t *testing.T, in pitr.PruneInputs, policy pitr.RetentionPolicy) pitr.PrunePlan {
	t.Helper()
	p, err := pitr.PlanPrune(in, policy, pruneNow)
	if err != nil {
		t.Fatalf("PlanPrune: %v", err)
	}
	return p
}

// fourBackups: weekly backups on timeline 1, WAL 10..49 archived as it was
// written (old enough that no recent-WAL rule applies).
func fourBackups() ([]basebackup.Backup, []pitr.WALFile) {
	bs := []basebackup.Backup{
		mkBackup("b1", 1, 10, 11, daysAgo(28)),
		mkBackup("b2", 1, 20, 21, daysAgo(21)),
		mkBackup("b3", 1, 30, 31, daysAgo(14)),
		mkBackup("b4", 1, 40, 41, daysAgo(7)),
	}
	files := segs(1, 10, 49, daysAgo(30))
	for _, b := range bs {
		files = append(files, backupHistoryFile(b))
	}
	return bs, files
}

func TestPruneRefusesWithoutPolicy(t *testing.T) {
	bs, files := fourBackups()
	for _, policy := range []pitr.RetentionPolicy{{}, {IncompleteAfter: time.Hour}} {
		_, err := pitr.PlanPrune(inputs(bs, files, nil), policy, pruneNow)
		if !errors.Is(err, pitr.ErrNoRetentionPolicy) {
			t.Errorf("policy %+v: err = %v, want ErrNoRetentionPolicy", policy, err)
		}
	}
	for _, policy := range []pitr.RetentionPolicy{{KeepCount: -1}, {KeepWithin: -time.Hour}, {KeepCount: 1, IncompleteAfter: -time.Hour},
		// shorter than a running backup's heartbeat guarantee
		{KeepCount: 1, IncompleteAfter: time.Minute}} {
		if _, err := pitr.PlanPrune(inputs(bs, files, nil), policy, pruneNow); err == nil {
			t.Errorf("policy %+v accepted", policy)
		}
	}
}

// The scenario: 4 backups, keep 2: the two oldest go, and the WAL
// before the third backup's start segment; everything from it stays.
func TestPruneKeepCount(t *testing.T) {
	bs, files := fourBackups()
	p := mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepCount: 2})
	if got := keptNames(p); !slices.Equal(got, []string{"b3", "b4"}) {
		t.Fatalf("kept %v, want [b3 b4]", got)
	}
	if got := deletedNames(p); !slices.Equal(got, []string{"b1", "b2"}) {
		t.Fatalf("deleted %v, want [b1 b2]", got)
	}
	del := deletedWAL(p)
	for n := 10; n <= 49; n++ {
		if got, want := del[walName(1, n)], n < 30; got != want {
			t.Errorf("segment %s deleted = %v, want %v", walName(1, n), got, want)
		}
	}
	for i, b := range bs {
		name := backupHistoryFile(b).Name
		if got, want := del[name], i < 2; got != want {
			t.Errorf("%s deleted = %v, want %v", name, got, want)
		}
	}
	if len(p.DeleteWAL) != 22 || p.WALBytes != 20*10+2 {
		t.Errorf("%d WAL files, %d bytes; want 22 files, 202 bytes", len(p.DeleteWAL), p.WALBytes)
	}
	if !slices.IsSortedFunc(p.DeleteWAL, func(a, b pitr.PrunedWAL) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("WAL deletions are not in name order")
	}
	if p.DeleteWAL[0].Key != "7000000000000000001/wal/0000000100000000/00000001000000000000000A" {
		t.Errorf("key %q", p.DeleteWAL[0].Key)
	}
	if len(p.Timelines) != 1 || p.Timelines[0].FirstKept != walName(1, 30) {
		t.Errorf("timeline summary %+v, want kept from %s", p.Timelines, walName(1, 30))
	}
}

// Metadata first: once backup.json is gone the backup does not exist for any
// other command, and the parts are mere leftovers.
func TestPruneDeletesMetadataFirst(t *testing.T) {
	bs, files := fourBackups()
	p := mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepCount: 3})
	if len(p.DeleteBackups) != 1 {
		t.Fatalf("deleting %d backups, want 1", len(p.DeleteBackups))
	}
	keys := p.DeleteBackups[0].Keys
	if len(keys) != 2 || !strings.HasSuffix(keys[0], "/b1/backup.json") || !strings.HasSuffix(keys[1], "/b1/base.tar") {
		t.Fatalf("keys %v: want backup.json first, then base.tar", keys)
	}
}

func TestPruneKeepWithin(t *testing.T) {
	bs := []basebackup.Backup{
		mkBackup("d40", 1, 10, 11, daysAgo(40)),
		mkBackup("d20", 1, 20, 21, daysAgo(20)),
		mkBackup("d10", 1, 30, 31, daysAgo(10)),
		mkBackup("d1", 1, 40, 41, daysAgo(1)),
	}
	files := segs(1, 10, 45, daysAgo(41))
	p := mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepWithin: 15 * 24 * time.Hour})
	// d20 ended before the window but is the backup a target 15 days ago
	// would be restored from.
	if got := keptNames(p); !slices.Equal(got, []string{"d20", "d10", "d1"}) {
		t.Fatalf("kept %v, want [d20 d10 d1]", got)
	}
	if got := deletedNames(p); !slices.Equal(got, []string{"d40"}) {
		t.Fatalf("deleted %v, want [d40]", got)
	}
	if !strings.Contains(strings.Join(p.Keep[0].Reasons, ";"), "before the 15d window") {
		t.Errorf("reasons for d20: %v", p.Keep[0].Reasons)
	}
	del := deletedWAL(p)
	if !del[walName(1, 19)] || del[walName(1, 20)] {
		t.Errorf("WAL cut is not at d20's start segment")
	}

	// A window covering every backup keeps all and deletes no WAL.
	p = mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepWithin: 60 * 24 * time.Hour})
	if len(p.DeleteBackups) != 0 || len(p.DeleteWAL) != 0 {
		t.Errorf("deleting %v and %d WAL files", deletedNames(p), len(p.DeleteWAL))
	}
}

func TestPruneKeepCountAndWithinIsUnion(t *testing.T) {
	bs := []basebackup.Backup{
		mkBackup("d40", 1, 10, 11, daysAgo(40)),
		mkBackup("d30", 1, 20, 21, daysAgo(30)),
		mkBackup("d20", 1, 30, 31, daysAgo(20)),
		mkBackup("d2", 1, 40, 41, daysAgo(2)),
		mkBackup("d1", 1, 50, 51, daysAgo(1)),
	}
	files := segs(1, 10, 55, daysAgo(41))
	// keep 3 alone: d20, d2, d1. Within 25d alone: d2, d1 and d30 (newest
	// before the window). Union: d30..d1.
	p := mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepCount: 3, KeepWithin: 25 * 24 * time.Hour})
	if got := keptNames(p); !slices.Equal(got, []string{"d30", "d20", "d2", "d1"}) {
		t.Fatalf("kept %v", got)
	}
}

func TestPruneNeverDeletesNewest(t *testing.T) {
	bs := []basebackup.Backup{
		mkBackup("old", 1, 10, 11, daysAgo(90)),
		mkBackup("newest", 1, 20, 21, daysAgo(60)),
	}
	files := segs(1, 10, 25, daysAgo(91))
	// Every backup is older than the window: the newest stays.
	p := mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepWithin: 24 * time.Hour})
	if got := keptNames(p); !slices.Equal(got, []string{"newest"}) {
		t.Fatalf("kept %v, want [newest]", got)
	}
	// Newest is by stop time, not by name or LSN.
	bs = []basebackup.Backup{
		mkBackup("zzz-but-older", 1, 50, 51, daysAgo(9)),
		mkBackup("aaa-but-newer", 1, 60, 61, daysAgo(1)),
	}
	p = mustPlan(t, inputs(bs, segs(1, 50, 65, daysAgo(10)), nil), pitr.RetentionPolicy{KeepCount: 1})
	if got := keptNames(p); !slices.Equal(got, []string{"aaa-but-newer"}) {
		t.Fatalf("kept %v, want [aaa-but-newer]", got)
	}
}

func history(lines ...string) []wal.HistoryEntry {
	entries, err := wal.ParseHistory([]byte(strings.Join(lines, "\n")))
	if err != nil {
		panic(err)
	}
	return entries
}

// Timeline 2 branched off timeline 1 at segment 25, before the oldest kept
// backup (b4, segment 40 on timeline 1), and carries the newest backup,
// b5, which starts at segment 30: lower than b4 although taken later. A cut
// at "the oldest kept backup's start" would delete b5's WAL.
func TestPruneTimelineBranchedBeforeOldestKept(t *testing.T) {
	bs, files := fourBackups()
	b5 := mkBackup("b5", 2, 30, 31, daysAgo(1))
	bs = append(bs, b5)
	files = append(files, segs(2, 25, 45, daysAgo(5))...)
	files = append(files, pitr.WALFile{Name: walName(1, 25) + ".partial", StoredSize: 5, ArchivedAt: daysAgo(5)},
		pitr.WALFile{Name: "00000002.history", StoredSize: 1, ArchivedAt: daysAgo(5)})
	hist := map[wal.TimelineID][]wal.HistoryEntry{2: history("1\t" + (segLSN(25) + 0x1000).String() + "\tbefore 2026-04-25")}

	p := mustPlan(t, inputs(bs, files, hist), pitr.RetentionPolicy{KeepCount: 2})
	if got := keptNames(p); !slices.Equal(got, []string{"b4", "b5"}) {
		t.Fatalf("kept %v, want [b4 b5]", got)
	}
	del := deletedWAL(p)
	for n := 25; n <= 45; n++ {
		if got, want := del[walName(2, n)], n < 30; got != want {
			t.Errorf("timeline 2 segment %d deleted = %v, want %v (cut at b5's start)", n, got, want)
		}
	}
	for n := 10; n <= 49; n++ {
		// Timeline 1 serves only b4 (timeline 2 does not lead back to
		// timeline 1 after its branch point).
		if got, want := del[walName(1, n)], n < 40; got != want {
			t.Errorf("timeline 1 segment %d deleted = %v, want %v (cut at b4's start)", n, got, want)
		}
	}
	if !del[walName(1, 25)+".partial"] {
		t.Errorf("timeline 1's .partial below the cut is kept")
	}
	if del["00000002.history"] {
		t.Errorf(".history file deleted")
	}

	// Keep only the newest (b5): timeline 1 no longer leads anywhere kept,
	// and timeline 2 from b5's start is all that is needed.
	p = mustPlan(t, inputs(bs, files, hist), pitr.RetentionPolicy{KeepCount: 1})
	del = deletedWAL(p)
	for n := 25; n <= 45; n++ {
		if got, want := del[walName(2, n)], n < 30; got != want {
			t.Errorf("keep 1: timeline 2 segment %d deleted = %v, want %v", n, got, want)
		}
	}
	if !del[walName(1, 29)] || del[walName(1, 30)] {
		t.Errorf("keep 1: timeline 1 is cut at the oldest kept start (30) since no kept backup descends to it")
	}
}

// A timeline without a kept backup of its own that descends from a kept
// backup's timeline keeps everything from that backup's start: the brief's
// "TL2 branching off before the oldest kept start".
func TestPruneDescendantTimelineKeepsFromKeptStart(t *testing.T) {
	bs, files := fourBackups()
	files = append(files, segs(2, 25, 45, daysAgo(5))...)
	hist := map[wal.TimelineID][]wal.HistoryEntry{2: history("1\t" + (segLSN(25) + 0x1000).String() + "\tbefore x")}
	p := mustPlan(t, inputs(bs, files, hist), pitr.RetentionPolicy{KeepCount: 2})
	del := deletedWAL(p)
	for n := 25; n <= 45; n++ {
		if got, want := del[walName(2, n)], n < 30; got != want {
			t.Errorf("timeline 2 segment %d deleted = %v, want %v", n, got, want)
		}
	}

	// A timeline branching after the kept backup is entirely needed (a
	// restore from b3 may follow it), and it is kept whatever its age.
	_, files = fourBackups()
	files = append(files, segs(3, 35, 45, daysAgo(20))...)
	hist = map[wal.TimelineID][]wal.HistoryEntry{3: history("1\t" + segLSN(35).String() + "\tx")}
	p = mustPlan(t, inputs(bs, files, hist), pitr.RetentionPolicy{KeepCount: 2})
	for name := range deletedWAL(p) {
		if strings.HasPrefix(name, "00000003") {
			t.Errorf("deleted %s of a timeline the kept backups can be restored into", name)
		}
	}
}

// After a restore to a point before every kept backup, the new timeline has
// no backup yet; no kept backup can use its WAL, which goes below the cut
// however recent, as long as no backup is running.
func TestPruneBackuplessTimeline(t *testing.T) {
	bs, files := fourBackups()
	files = append(files, segs(2, 12, 17, pruneNow.Add(-time.Hour))...)
	hist := map[wal.TimelineID][]wal.HistoryEntry{2: history("1\t" + (segLSN(12) + 0x40).String() + "\tbefore x")}
	p := mustPlan(t, inputs(bs, files, hist), pitr.RetentionPolicy{KeepCount: 2})
	del := deletedWAL(p)
	for n := 12; n <= 17; n++ {
		if !del[walName(2, n)] {
			t.Errorf("timeline 2 segment %d kept", n)
		}
	}
}

// A running backup (heartbeat younger than IncompleteAfter) needs WAL from
// its start, on a timeline and at an LSN prune cannot know: everything
// archived since its start (less an hour for clocks) stays.
func TestPruneKeepsWALForRunningBackup(t *testing.T) {
	bs, files := fourBackups()
	// The first backup on timeline 2, started 11:30 (30 minutes ago).
	files = append(files, segs(2, 12, 14, pruneNow.Add(-3*time.Hour))...)
	files = append(files, segs(2, 15, 17, pruneNow.Add(-80*time.Minute))...)
	hist := map[wal.TimelineID][]wal.HistoryEntry{2: history("1\t" + (segLSN(12) + 0x40).String() + "\tbefore x")}
	in := inputs(bs, files, hist)
	running := pruneNow.Add(-30 * time.Minute).Format(basebackup.NameLayout)
	in.BackupObjects = append(in.BackupObjects, storage.ObjectInfo{
		Key: repo.BackupKey(pruneSys, running, repo.BackupInProgressName), Size: 100, ModTime: pruneNow.Add(-20 * time.Second)})
	p := mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 2})
	if !slices.Equal(p.InProgress, []string{running}) {
		t.Fatalf("in progress %v", p.InProgress)
	}
	del := deletedWAL(p)
	for n := 12; n <= 17; n++ {
		if got, want := del[walName(2, n)], n <= 14; got != want {
			t.Errorf("timeline 2 segment %d deleted = %v, want %v", n, got, want)
		}
	}
	if !del[walName(1, 29)] {
		t.Errorf("old WAL on timeline 1 kept although it predates the running backup")
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "timeline 2: kept 3 files archived since 2026-05-01 10:30:00") {
		t.Errorf("notes %q do not explain the kept files", p.Notes)
	}

	// A running backup whose start cannot be known blocks WAL deletion.
	in.BackupObjects = append(in.BackupObjects, storage.ObjectInfo{
		Key: repo.BackupKey(pruneSys, "hand-made", "base.tar"), Size: 1, ModTime: pruneNow.Add(-time.Minute)})
	p = mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 2})
	if len(p.DeleteWAL) != 0 || len(p.DeleteBackups) != 2 {
		t.Fatalf("with a backup of unknown start in progress: deleting %d WAL files, %d backups", len(p.DeleteWAL), len(p.DeleteBackups))
	}
}

func TestPruneKeepsTimelineWithoutHistory(t *testing.T) {
	bs, files := fourBackups()
	files = append(files, segs(3, 5, 8, daysAgo(60))...)
	p := mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepCount: 1})
	for name := range deletedWAL(p) {
		if strings.HasPrefix(name, "00000003") {
			t.Errorf("deleted %s of a timeline with unknown ancestry", name)
		}
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "00000003.history is missing") {
		t.Errorf("notes %q", p.Notes)
	}
}

func TestPruneIncompleteLeftovers(t *testing.T) {
	bs, files := fourBackups()
	in := inputs(bs, files, nil)
	prefix := repo.BackupPrefix(pruneSys)
	in.BackupObjects = append(in.BackupObjects,
		storage.ObjectInfo{Key: prefix + "crashed/base.tar", Size: 1000, ModTime: daysAgo(3)},
		storage.ObjectInfo{Key: prefix + "crashed/16384.tar", Size: 500, ModTime: daysAgo(2)},
		storage.ObjectInfo{Key: prefix + "20260501T100000Z/in-progress.json", Size: 700, ModTime: pruneNow.Add(-10 * time.Minute)},
		storage.ObjectInfo{Key: prefix + "stray-object", Size: 1, ModTime: daysAgo(100)},
	)
	p := mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 4})
	if len(p.Leftovers) != 1 || p.Leftovers[0].Name != "crashed" || len(p.Leftovers[0].Keys) != 2 || p.Leftovers[0].StoredSize != 1500 {
		t.Fatalf("leftovers %+v, want crashed with 2 objects", p.Leftovers)
	}
	if !slices.Equal(p.InProgress, []string{"20260501T100000Z"}) {
		t.Fatalf("in progress %v, want [20260501T100000Z]", p.InProgress)
	}
	if len(p.DeleteBackups) != 0 {
		t.Fatalf("deleting complete backups %v", deletedNames(p))
	}

	// The threshold is configurable.
	p = mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 4, IncompleteAfter: 72 * time.Hour})
	if len(p.Leftovers) != 0 || len(p.InProgress) != 2 {
		t.Fatalf("with a 72h threshold: leftovers %d, in progress %v", len(p.Leftovers), p.InProgress)
	}
	// Staleness is judged on the repository's clock when it is known.
	in.RepoNow = pruneNow.Add(-47 * time.Hour)
	p = mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 4})
	if len(p.Leftovers) != 0 {
		t.Fatalf("on the repository's clock, crashed was written 1 hour ago: leftovers %+v", p.Leftovers)
	}
}

func TestPruneWithoutBackupsDeletesNoWAL(t *testing.T) {
	in := inputs(nil, segs(1, 1, 20, daysAgo(30)), nil)
	in.BackupObjects = append(in.BackupObjects, storage.ObjectInfo{Key: repo.BackupPrefix(pruneSys) + "x/base.tar", Size: 1, ModTime: daysAgo(30)})
	p := mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 2})
	if len(p.DeleteWAL) != 0 || len(p.Keep) != 0 {
		t.Fatalf("no backups: deleting %d WAL files", len(p.DeleteWAL))
	}
	if len(p.Leftovers) != 1 {
		t.Fatalf("leftovers %+v", p.Leftovers)
	}
}

// With 1 MiB segments the low 8 hex digits roll over at 0xFFF.
func TestPruneSmallSegmentsAcrossRollover(t *testing.T) {
	size := wal.MinSegmentSize
	name := func(n int) string { return size.FileName(wal.Segment{TLI: 1, No: wal.SegNo(n)}) }
	b := func(nm string, start int, ended time.Time) basebackup.Backup {
		bk := mkBackup(nm, 1, 0, 0, ended)
		bk.WALSegmentSize = uint64(size)
		bk.StartLSN = wal.LSN(uint64(start)*uint64(size) + 0x28)
		bk.StopLSN = bk.StartLSN + 0x1000
		return bk
	}
	bs := []basebackup.Backup{b("a", 0xFF0, daysAgo(2)), b("b", 0x1002, daysAgo(1))}
	var files []pitr.WALFile
	for n := 0xFF0; n <= 0x1010; n++ {
		files = append(files, pitr.WALFile{Name: name(n), StoredSize: 1, ArchivedAt: daysAgo(3)})
	}
	p := mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepCount: 1})
	del := deletedWAL(p)
	if len(del) != 0x12 || !del[name(0xFFF)] || !del[name(0x1001)] || del[name(0x1002)] {
		t.Fatalf("deleted %d files; want 0xFF0..0x1001 (%s..%s)", len(del), name(0xFF0), name(0x1001))
	}
	if name(0x1000) != "000000010000000100000000" {
		t.Fatalf("fixture: %s", name(0x1000))
	}
}

func TestPruneDescribe(t *testing.T) {
	bs, files := fourBackups()
	p := mustPlan(t, inputs(bs, files, nil), pitr.RetentionPolicy{KeepCount: 2})
	var buf bytes.Buffer
	p.Describe(&buf, true)
	out := buf.String()
	for _, want := range []string{
		"Retention: keep the newest 2 backups",
		"Keep 2 backups:", "b3", "one of the newest 2",
		"Would delete 2 backups:", "b1",
		"Would delete 22 WAL files (202 B): 00000001000000000000000A .. 00000001000000000000001D",
		"timeline 1: 22 files", "kept from 00000001000000000000001E",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// ---- ExecutePrune against a real (fs) store ----

// recordingStore logs deletions in order.
type recordingStore struct {
	storage.Store
	mu      sync.Mutex
	deleted []string
	onDel   func(key string)
}

func (r *recordingStore) Delete(ctx context.Context, key string) error {
	r.mu.Lock()
	r.deleted = append(r.deleted, key)
	hook := r.onDel
	r.mu.Unlock()
	err := r.Store.Delete(ctx, key)
	if hook != nil {
		hook(key)
	}
	return err
}

func put(t *testing.T, st storage.Store, key, body string) {
	t.Helper()
	if err := st.Put(context.Background(), key, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
}

func listKeys(t *testing.T, st storage.Store, prefix string) []string {
	t.Helper()
	objs, err := st.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

// populate writes every backup part and WAL file of the fixture (content is
// irrelevant to prune) and returns inputs as LoadPruneInputs would see them,
// with the fixture's times instead of the store's.
func populate(t *testing.T, st storage.Store, bs []basebackup.Backup, files []pitr.WALFile) pitr.PruneInputs {
	t.Helper()
	in := inputs(bs, files, nil)
	for _, o := range in.BackupObjects {
		put(t, st, o.Key, "x")
	}
	for _, f := range files {
		key, err := repo.WALKey(pruneSys, f.Name)
		if err != nil {
			t.Fatal(err)
		}
		put(t, st, key, "x")
	}
	return in
}

func TestExecutePrune(t *testing.T) {
	base, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &recordingStore{Store: base}
	bs, files := fourBackups()
	in := populate(t, st, bs, files)
	crashed := repo.BackupPrefix(pruneSys) + "crashed/base.tar"
	put(t, st, crashed, "partial")
	in.BackupObjects = append(in.BackupObjects, storage.ObjectInfo{Key: crashed, Size: 7, ModTime: daysAgo(3)})

	p := mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 2})
	// The real store's modification times are "now"; the leftover re-check
	// compares them with the repository clock of the plan: make it later.
	p.RepoNow = time.Now().Add(48 * time.Hour)
	res, err := pitr.ExecutePrune(context.Background(), st, p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if res.Backups != 2 || res.Leftovers != 1 || res.WAL != 22 {
		t.Fatalf("result %+v", res)
	}

	left := listKeys(t, st, repo.BackupPrefix(pruneSys))
	for _, k := range left {
		if strings.Contains(k, "/b1/") || strings.Contains(k, "/b2/") || strings.Contains(k, "/crashed/") {
			t.Errorf("%s still exists", k)
		}
	}
	if len(left) != 4 {
		t.Errorf("backup objects left: %v", left)
	}
	walLeft := listKeys(t, st, repo.WALPrefix(pruneSys))
	if len(walLeft) != len(files)-22 || !strings.HasSuffix(walLeft[0], walName(1, 30)) {
		t.Errorf("WAL left starts at %s (%d files)", walLeft[0], len(walLeft))
	}

	// Order: each backup's metadata before its parts, backups before WAL.
	d := st.deleted
	idx := func(suffix string) int {
		return slices.IndexFunc(d, func(k string) bool { return strings.HasSuffix(k, suffix) })
	}
	if !(idx("/b1/backup.json") < idx("/b1/base.tar") && idx("/b2/backup.json") < idx("/b2/base.tar")) {
		t.Errorf("metadata not deleted first: %v", d)
	}
	firstWAL := slices.IndexFunc(d, func(k string) bool { return strings.Contains(k, "/wal/") })
	if firstWAL < idx("/b2/base.tar") || firstWAL < idx("/crashed/base.tar") {
		t.Errorf("WAL deleted before backups: %v", d)
	}
}

// A leftover that completes (or writes again) after the plan was made is
// alive and is left alone.
func TestExecutePruneRechecksLeftovers(t *testing.T) {
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bs, files := fourBackups()
	in := populate(t, st, bs, files)
	late := repo.BackupPrefix(pruneSys) + "late/base.tar"
	put(t, st, late, "x")
	in.BackupObjects = append(in.BackupObjects, storage.ObjectInfo{Key: late, Size: 1, ModTime: daysAgo(3)})
	p := mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 4})
	if len(p.Leftovers) != 1 {
		t.Fatalf("leftovers %+v", p.Leftovers)
	}
	// The store's times are recent: "late" was written within 24h of the
	// plan's clock when listed again.
	p.RepoNow = time.Now()
	res, err := pitr.ExecutePrune(context.Background(), st, p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if res.Leftovers != 0 || !slices.Equal(res.Skipped, []string{"late"}) {
		t.Fatalf("result %+v, want late skipped", res)
	}
	if len(listKeys(t, st, repo.BackupPrefix(pruneSys)+"late/")) != 1 {
		t.Fatalf("late was deleted")
	}
}

// When the lock is lost, deletion stops at the next step with the cause.
func TestExecutePruneStopsWhenLockLost(t *testing.T) {
	base, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bs, files := fourBackups()
	in := populate(t, base, bs, files)
	p := mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 2})
	ctx, cancel := context.WithCancelCause(context.Background())
	st := &recordingStore{Store: base, onDel: func(key string) {
		if strings.HasSuffix(key, "/b1/base.tar") {
			cancel(fmt.Errorf("%w: test", pitr.ErrLockLost))
		}
	}}
	res, err := pitr.ExecutePrune(ctx, st, p, slog.New(slog.DiscardHandler))
	if !errors.Is(err, pitr.ErrLockLost) {
		t.Fatalf("err = %v, want ErrLockLost", err)
	}
	if res.Backups != 1 || res.WAL != 0 {
		t.Fatalf("result %+v: want b1 deleted and nothing after", res)
	}
	for _, k := range st.deleted {
		if strings.Contains(k, "/wal/") || strings.Contains(k, "/b2/") {
			t.Fatalf("deleted %s after the lock was lost", k)
		}
	}
}

// LoadPruneInputs reads what PlanPrune needs; a round trip through a store.
func TestLoadPruneInputs(t *testing.T) {
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bs, files := fourBackups()
	for _, b := range bs {
		writeBackup(t, st, b)
	}
	for _, f := range files {
		key, _ := repo.WALKey(pruneSys, f.Name)
		put(t, st, key, "x")
	}
	in, err := pitr.LoadPruneInputs(ctx, st, pruneSys)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Backups) != 4 || len(in.WAL) != len(files) || len(in.BackupObjects) != 8 {
		t.Fatalf("loaded %d backups, %d WAL files, %d backup objects", len(in.Backups), len(in.WAL), len(in.BackupObjects))
	}
}

func writeBackup(t *testing.T, st storage.Store, b basebackup.Backup) {
	t.Helper()
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	put(t, st, b.Key("base.tar"), "x")
	put(t, st, b.Key(repo.BackupMetadataName), string(data))
}
