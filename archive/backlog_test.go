package archive

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/pitr-dev/pitr/archive/wal"
)

// dataDir lays out pg_wal with segments 1..n on timeline 1, each .ready, and
// returns the data directory.
func dataDir(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	walDir := filepath.Join(dir, "pg_wal")
	if err := os.MkdirAll(filepath.Join(walDir, "archive_status"), 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		p := makeSegment(t, walDir, 1, wal.SegNo(i), testSysID, byte(i))
		os.WriteFile(filepath.Join(walDir, "archive_status", filepath.Base(p)+".ready"), nil, 0o600)
	}
	return dir
}

func statusFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "pg_wal", "archive_status"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// markDone does what PostgreSQL does after a successful archive_command.
func markDone(t *testing.T, dir, name string) {
	t.Helper()
	st := filepath.Join(dir, "pg_wal", "archive_status")
	if err := os.Rename(filepath.Join(st, name+".ready"), filepath.Join(st, name+".done")); err != nil {
		t.Fatal(err)
	}
}

func segPath(dir string, n int) string {
	return filepath.Join(dir, "pg_wal", wal.SegmentSize(testSegSize).FileName(wal.Segment{TLI: 1, No: wal.SegNo(n)}))
}

func TestBacklogArchivesAheadAndLaterCallsAreCheap(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 6)
	// a history file is archived first, as PostgreSQL would
	hist := filepath.Join(dir, "pg_wal", "00000002.history")
	os.WriteFile(hist, []byte("1\t0/600000\tno recovery target specified\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "pg_wal", "archive_status", "00000002.history.ready"), nil, 0o600)
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	before := statusFiles(t, dir)

	res, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.FromSpool || res.Stored == 0 {
		t.Fatalf("first call: %+v", res)
	}
	want := []string{"00000002.history", filepath.Base(segPath(dir, 2)), filepath.Base(segPath(dir, 3))}
	sort.Strings(want)
	if len(res.Ahead) != 3 || res.Ahead[0] != want[0] || res.Ahead[2] != want[2] {
		t.Fatalf("archived ahead %v, want %v (history first, then oldest)", res.Ahead, want)
	}
	if after := statusFiles(t, dir); len(after) != len(before) {
		t.Fatalf("archive_status changed: %v -> %v", before, after)
	}
	for i := 1; i <= 3; i++ {
		got, err := f.fetch(t, filepath.Base(segPath(dir, i)))
		want, _ := os.ReadFile(segPath(dir, i))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("segment %d not archived intact: %v", i, err)
		}
	}

	markDone(t, dir, filepath.Base(segPath(dir, 1)))
	res, err = f.a.PushBacklog(f.ctx, segPath(dir, 2), 3)
	if err != nil || !res.FromSpool || len(res.Ahead) != 0 {
		t.Fatalf("call for a segment archived ahead: %+v, %v; want an answer from the spool", res, err)
	}
	// The spool forgets files PostgreSQL has marked done.
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", SpoolDir, filepath.Base(segPath(dir, 1))+".json")); !os.IsNotExist(err) {
		t.Fatalf("spool record of a done segment kept: %v", err)
	}
}

// A record whose object is gone from the repository (deleted, or another
// repository configured since) must not be trusted.
func TestBacklogSpoolNeverTrustedWithoutTheObject(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 3)
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 2); err != nil {
		t.Fatal(err)
	}
	markDone(t, dir, filepath.Base(segPath(dir, 1)))
	if err := f.store.Delete(f.ctx, mustKey(t, filepath.Base(segPath(dir, 2)))); err != nil {
		t.Fatal(err)
	}
	res, err := f.a.PushBacklog(f.ctx, segPath(dir, 2), 2)
	if err != nil || res.FromSpool || res.Stored == 0 {
		t.Fatalf("call after the object vanished: %+v, %v; want a real push", res, err)
	}
	if _, err := f.store.Stat(f.ctx, mustKey(t, filepath.Base(segPath(dir, 2)))); err != nil {
		t.Fatalf("segment 2 not in the repository again: %v", err)
	}
}

// Without a record (a crash before it was written) the call pushes again and
// finds the identical copy: nothing is skipped, nothing fails.
func TestBacklogCrashBeforeRecord(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 3)
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 2); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "pg_wal", SpoolDir))
	res, err := f.a.PushBacklog(f.ctx, segPath(dir, 2), 2)
	if err != nil || res.FromSpool || !res.AlreadyArchived {
		t.Fatalf("%+v, %v; want an identical-copy success", res, err)
	}
}

// A failure of a file archived ahead does not fail the requested one.
func TestBacklogAheadFailureIsNotFatal(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 3)
	os.Truncate(segPath(dir, 2), 100) // not a valid segment any more
	res, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 2)
	if err != nil || res.AheadErrs != 1 || len(res.Ahead) != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", SpoolDir, filepath.Base(segPath(dir, 2))+".json")); !os.IsNotExist(err) {
		t.Fatal("a failed push left a spool record")
	}
}

// Outside a data directory (a manual push) it is a plain push.
func TestBacklogOutsideDataDir(t *testing.T) {
	f := newFixture(t)
	p := makeSegment(t, t.TempDir(), 1, 1, testSysID, 1)
	res, err := f.a.PushBacklog(f.ctx, p, 4)
	if err != nil || len(res.Ahead) != 0 || res.Stored == 0 {
		t.Fatalf("%+v, %v", res, err)
	}
}

// When PostgreSQL asks for a timeline's .history file, no segment is
// archived alongside it: a segment of the new timeline must never be durable
// before the history that makes the timeline known.
func TestBacklogHistoryAlone(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 3)
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	hist := filepath.Join(dir, "pg_wal", "00000002.history")
	os.WriteFile(hist, []byte("1\t0/300000\tno recovery target specified\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "pg_wal", "archive_status", "00000002.history.ready"), nil, 0o600)
	res, err := f.a.PushBacklog(f.ctx, hist, 3)
	if err != nil || len(res.Ahead) != 0 {
		t.Fatalf("history push archived %v ahead (%v)", res.Ahead, err)
	}
}

// archive-push records the data directory's tablespaces once, so a restore
// can see a tablespace its backup lacks.
func TestPushRecordsTablespaces(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 2)
	loc := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "pg_tblspc"), 0o700)
	if err := os.Symlink(loc, filepath.Join(dir, "pg_tblspc", "16500")); err != nil {
		t.Fatal(err)
	}
	f.a.DataDir = dir
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 0); err != nil {
		t.Fatal(err)
	}
	got, err := ListTablespaces(f.ctx, f.store, testSysID)
	if err != nil || len(got) != 1 || got[0].OID != 16500 || got[0].Location != loc {
		t.Fatalf("recorded %+v, %v", got, err)
	}
	first := got[0].SeenAt
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 2), 0); err != nil {
		t.Fatal(err)
	}
	if again, _ := ListTablespaces(f.ctx, f.store, testSysID); len(again) != 1 || !again[0].SeenAt.Equal(first) {
		t.Fatalf("record rewritten: %+v", again)
	}
}
