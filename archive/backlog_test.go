package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/storage"
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

// goSpawner runs the background archiver in a goroutine, as
// `pitr archive-ahead` runs it in a process: on its own descriptor of the
// locked lock file. wait waits for every archiver started and returns the
// last one's error.
func goSpawner(a *Archiver, ctx context.Context, parallel int) (Spawner, func() error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last error
	)
	spawn := func(walDir string, lock *os.File) error {
		fd, err := syscall.Dup(int(lock.Fd()))
		if err != nil {
			return err
		}
		l := os.NewFile(uintptr(fd), "lock")
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer l.Close()
			err := a.ArchiveAhead(ctx, walDir, parallel, l)
			mu.Lock()
			last = err
			mu.Unlock()
		}()
		return nil
	}
	return spawn, func() error { wg.Wait(); return last }
}

// hookStore calls before(key) ahead of every Put.
type hookStore struct {
	storage.Store
	before func(key string) error
}

func (h hookStore) Put(ctx context.Context, key string, r io.Reader) error {
	if err := h.before(key); err != nil {
		return err
	}
	return h.Store.Put(ctx, key, r)
}

// assertRecordsDurable checks the spool's promise: every record names an
// object that is in the repository with the file's content.
func assertRecordsDurable(t *testing.T, f *fixture, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(dir, "pg_wal", SpoolDir))
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		got, err := f.fetch(t, n)
		want, _ := os.ReadFile(filepath.Join(dir, "pg_wal", n))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("spool records %s but the repository does not hold it intact: %v", n, err)
		}
	}
}

func TestBacklogArchivesAheadAndLaterCallsAreCheap(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 6)
	// a history file is archived before every segment, as PostgreSQL would
	hist := filepath.Join(dir, "pg_wal", "00000002.history")
	os.WriteFile(hist, []byte("1\t0/600000\tno recovery target specified\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "pg_wal", "archive_status", "00000002.history.ready"), nil, 0o600)
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	histKey := mustKey(t, "00000002.history")
	f.a.Store = hookStore{Store: f.store, before: func(key string) error {
		if strings.Contains(key, "/wal/") && key != histKey {
			if _, err := f.store.Stat(f.ctx, histKey); err != nil {
				return fmt.Errorf("segment %s stored before the history file: %w", key, err)
			}
		}
		return nil
	}}
	before := statusFiles(t, dir)
	spawn, wait := goSpawner(f.a, f.ctx, 3)

	res, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 3, spawn)
	if err != nil || !res.Started || !res.FromSpool {
		t.Fatalf("first call: %+v, %v; want the background archiver started and the file archived by it", res, err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if after := statusFiles(t, dir); len(after) != len(before) {
		t.Fatalf("archive_status changed: %v -> %v", before, after)
	}
	for i := 1; i <= 6; i++ {
		got, err := f.fetch(t, filepath.Base(segPath(dir, i)))
		want, _ := os.ReadFile(segPath(dir, i))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("segment %d not archived intact: %v", i, err)
		}
	}
	assertRecordsDurable(t, f, dir)

	markDone(t, dir, filepath.Base(segPath(dir, 1)))
	res, err = f.a.PushBacklog(f.ctx, segPath(dir, 2), 3, spawn)
	if err != nil || !res.FromSpool || res.Started {
		t.Fatalf("call for a segment archived ahead: %+v, %v; want an answer from the spool", res, err)
	}
	// The spool forgets files PostgreSQL has marked done.
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", SpoolDir, filepath.Base(segPath(dir, 1))+".json")); !os.IsNotExist(err) {
		t.Fatalf("spool record of a done segment kept: %v", err)
	}
}

// With nothing else ready (a server keeping up) the call pushes its file
// itself and starts nothing.
func TestBacklogSequentialStartsNothing(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 1)
	res, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 4, func(string, *os.File) error {
		t.Fatal("background archiver started without a backlog")
		return nil
	})
	if err != nil || res.Started || res.FromSpool || res.Stored == 0 {
		t.Fatalf("%+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", SpoolDir, filepath.Base(segPath(dir, 1))+".json")); !os.IsNotExist(err) {
		t.Fatalf("a plain push left a spool record: %v", err)
	}
}

// A record whose object is gone from the repository (deleted, or another
// repository configured since) must not be trusted.
func TestBacklogSpoolNeverTrustedWithoutTheObject(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 3)
	spawn, wait := goSpawner(f.a, f.ctx, 2)
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 2, spawn); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	markDone(t, dir, filepath.Base(segPath(dir, 1)))
	if err := f.store.Delete(f.ctx, mustKey(t, filepath.Base(segPath(dir, 2)))); err != nil {
		t.Fatal(err)
	}
	res, err := f.a.PushBacklog(f.ctx, segPath(dir, 2), 2, spawn)
	if err != nil || res.FromSpool || res.Stored == 0 {
		t.Fatalf("call after the object vanished: %+v, %v; want a real push", res, err)
	}
	if _, err := f.store.Stat(f.ctx, mustKey(t, filepath.Base(segPath(dir, 2)))); err != nil {
		t.Fatalf("segment 2 not in the repository again: %v", err)
	}
	// The untrusted record is gone: a running archiver, which skips
	// recorded files, would otherwise never take the file again.
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", SpoolDir, filepath.Base(segPath(dir, 2))+".json")); !os.IsNotExist(err) {
		t.Fatalf("untrusted record kept: %v", err)
	}
}

// The background archiver dies in the middle of a drain (here: its context
// is cancelled while a segment is being stored, as a kill would stop it):
// the spool holds records only for durable objects, the call waiting for the
// unfinished segment archives it itself, and every later call succeeds.
func TestBacklogArchiverCrashMidway(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 6)
	actx, kill := context.WithCancel(f.ctx)
	defer kill()
	victim := mustKey(t, filepath.Base(segPath(dir, 4)))
	ahead := &Archiver{Store: hookStore{Store: f.store, before: func(key string) error {
		if key == victim {
			kill()
			return actx.Err()
		}
		return nil
	}}, Codec: f.a.Codec}
	spawn, wait := goSpawner(ahead, actx, 1)
	for i := 1; i <= 6; i++ {
		res, err := f.a.PushBacklog(f.ctx, segPath(dir, i), 1, spawn)
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if i == 4 && res.FromSpool {
			t.Fatal("segment 4 answered from the spool though the archiver died storing it")
		}
		if i == 1 {
			// let the archiver run into the crash before PostgreSQL's next call
			if err := wait(); !errors.Is(err, context.Canceled) {
				t.Fatalf("archiver: %v, want it killed", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "pg_wal", SpoolDir, filepath.Base(segPath(dir, 4))+".json")); !os.IsNotExist(err) {
				t.Fatalf("spool record for a segment that was never stored: %v", err)
			}
			assertRecordsDurable(t, f, dir)
		}
		markDone(t, dir, filepath.Base(segPath(dir, i)))
	}
	for i := 1; i <= 6; i++ {
		got, err := f.fetch(t, filepath.Base(segPath(dir, i)))
		want, _ := os.ReadFile(segPath(dir, i))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("segment %d not archived intact: %v", i, err)
		}
	}
}

// A file the archiver cannot archive stops it; the calls for the files
// before it succeed, and the call for the bad one fails, so PostgreSQL keeps
// it and retries. No record is written for it.
func TestBacklogAheadFailureReachesItsOwnCall(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 3)
	os.Truncate(segPath(dir, 2), 100) // not a valid segment any more
	spawn, wait := goSpawner(f.a, f.ctx, 2)
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 2, spawn); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err == nil {
		t.Fatal("the archiver did not report the bad file")
	}
	markDone(t, dir, filepath.Base(segPath(dir, 1)))
	if _, err := os.Stat(filepath.Join(dir, "pg_wal", SpoolDir, filepath.Base(segPath(dir, 2))+".json")); !os.IsNotExist(err) {
		t.Fatal("a failed push left a spool record")
	}
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 2), 2, spawn); err == nil {
		t.Fatal("the call for the bad file succeeded")
	}
	wait()
	assertRecordsDurable(t, f, dir)
}

// A call does not archive its file while an archiver holds the lock: it
// waits for the record (no second reader of the file, which PostgreSQL may
// recycle once it is marked done).
func TestBacklogWaitsForTheRunningArchiver(t *testing.T) {
	f := newFixture(t)
	dir := dataDir(t, 2)
	spool := filepath.Join(dir, "pg_wal", SpoolDir)
	lock, err := tryAheadLock(spool)
	if err != nil || lock == nil {
		t.Fatalf("lock: %v", err)
	}
	var pushed atomic.Int32
	f.a.Store = hookStore{Store: f.store, before: func(key string) error {
		if strings.Contains(key, "/wal/") {
			pushed.Add(1)
		}
		return nil
	}}
	done := make(chan error, 1)
	go func() {
		_, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 2, func(string, *os.File) error {
			return errors.New("must not start a second archiver")
		})
		done <- err
	}()
	// Stand in for the archiver: archive the file, record it, release.
	ahead := &Archiver{Store: f.store, Codec: f.a.Codec}
	r, err := ahead.Push(f.ctx, segPath(dir, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeSpoolRecord(spool, spoolRecord{Name: r.Name, Key: r.Key, Size: r.Size}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lock.Close()
	if n := pushed.Load(); n != 0 {
		t.Fatalf("the waiting call stored %d objects itself", n)
	}
}

// Outside a data directory (a manual push) it is a plain push.
func TestBacklogOutsideDataDir(t *testing.T) {
	f := newFixture(t)
	p := makeSegment(t, t.TempDir(), 1, 1, testSysID, 1)
	res, err := f.a.PushBacklog(f.ctx, p, 4, nil)
	if err != nil || res.Started || res.Stored == 0 {
		t.Fatalf("%+v, %v", res, err)
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
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 1), 0, nil); err != nil {
		t.Fatal(err)
	}
	got, err := ListTablespaces(f.ctx, f.store, testSysID)
	if err != nil || len(got) != 1 || got[0].OID != 16500 || got[0].Location != loc {
		t.Fatalf("recorded %+v, %v", got, err)
	}
	first := got[0].SeenAt
	if _, err := f.a.PushBacklog(f.ctx, segPath(dir, 2), 0, nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := ListTablespaces(f.ctx, f.store, testSysID); len(again) != 1 || !again[0].SeenAt.Equal(first) {
		t.Fatalf("record rewritten: %+v", again)
	}
}
