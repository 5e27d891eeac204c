package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/storage"
)

// countingStore counts Opens of WAL objects, to tell spool hits (no
// repository access) from direct fetches.
type countingStore struct {
	storage.Store
	opens atomic.Int64
}

func (c *countingStore) Open(ctx context.Context, key string, off int64) (io.ReadCloser, error) {
	if strings.Contains(key, "/wal/") {
		c.opens.Add(1)
	}
	return c.Store.Open(ctx, key, off)
}

type prefetchFixture struct {
	*fixture
	count   *countingStore
	dataDir string
	dest    string
	segs    map[string][]byte // archived segments by name
}

// newPrefetchFixture archives segments 1..n of timeline 1 and lays out a
// data directory in recovery (global/pg_control, pg_wal, recovery.signal).
func newPrefetchFixture(t *testing.T, n int) *prefetchFixture {
	t.Helper()
	f := newFixture(t)
	dir := t.TempDir()
	for _, d := range []string{"global", "pg_wal"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	f.a.ControlFile = writeControl(t, filepath.Join(dir, "global"), testSysID)
	os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600)
	p := &prefetchFixture{fixture: f, dataDir: dir, dest: filepath.Join(dir, "pg_wal", "RECOVERYXLOG"), segs: map[string][]byte{}}
	for i := 1; i <= n; i++ {
		seg := makeSegment(t, f.src, 1, wal.SegNo(i), testSysID, byte(i))
		if _, err := f.a.Push(f.ctx, seg); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(seg)
		p.segs[filepath.Base(seg)] = b
	}
	p.count = &countingStore{Store: f.store}
	f.a.Store = p.count
	return p
}

func (p *prefetchFixture) spool(t *testing.T, ahead int) *Spool {
	t.Helper()
	sp := OpenSpool(p.dataDir, p.a.ControlFile, p.dest, ahead)
	if sp == nil {
		t.Fatal("OpenSpool: nil for a data directory in recovery")
	}
	return sp
}

// fetchVia fetches name through the spool and checks the bytes at %p.
func (p *prefetchFixture) fetchVia(t *testing.T, sp *Spool, name string, start func()) FetchResult {
	t.Helper()
	res, err := p.a.FetchPrefetched(p.ctx, name, p.dest, sp, start)
	if err != nil {
		t.Fatalf("fetch %s: %v", name, err)
	}
	got, err := os.ReadFile(p.dest)
	if err != nil {
		t.Fatal(err)
	}
	if want, ok := p.segs[name]; ok && !bytes.Equal(got, want) {
		t.Fatalf("fetched %s (prefetched %v) differs from what was archived", name, res.Prefetched)
	}
	os.Remove(p.dest) // as PostgreSQL renames it away
	return res
}

func segName(n int) string {
	return wal.SegmentSize(testSegSize).FileName(wal.Segment{TLI: 1, No: wal.SegNo(n)})
}

// spoolSegments lists the segment files (final or in progress) in the spool.
func spoolSegments(t *testing.T, sp *Spool) []string {
	t.Helper()
	entries, _ := os.ReadDir(sp.Dir)
	var out []string
	for _, e := range entries {
		switch n := e.Name(); {
		case n == spoolLock || n == spoolWanted || n == SpoolLog || strings.HasPrefix(n, ".wanted-"):
		default:
			out = append(out, n)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPrefetchServesFromSpoolAndStaysBounded(t *testing.T) {
	const n, ahead = 14, 3
	p := newPrefetchFixture(t, n)
	sp := p.spool(t, ahead)
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	var started atomic.Int32
	exited := make(chan error, 1)
	// The prefetcher is another process in real life: its own Archiver,
	// whose repository reads are not counted.
	bg := &Archiver{Store: p.store}
	start := func() {
		if started.Add(1) == 1 {
			go func() { exited <- bg.Prefetch(ctx, sp, PrefetchOptions{Poll: time.Millisecond}) }()
		}
	}

	if res := p.fetchVia(t, sp, segName(1), start); res.Prefetched {
		t.Fatal("first segment came from an empty spool")
	}
	if started.Load() != 1 {
		t.Fatal("the first fetch did not start the prefetcher")
	}
	for i := 2; i <= n; i++ {
		waitFor(t, segName(i)+" in the spool", func() bool { _, err := os.Stat(sp.path(segName(i))); return err == nil })
		if got := spoolSegments(t, sp); len(got) > ahead+1 {
			t.Fatalf("spool holds %d segment files, more than fetch_ahead+1 = %d: %v", len(got), ahead+1, got)
		}
		before := p.count.opens.Load()
		res := p.fetchVia(t, sp, segName(i), start)
		if !res.Prefetched || p.count.opens.Load() != before {
			t.Fatalf("%s: prefetched=%v, repository opens %d → %d; want a spool hit without the repository",
				segName(i), res.Prefetched, before, p.count.opens.Load())
		}
	}
	// The end of the archive is still a definite "not archived".
	if _, err := p.a.FetchPrefetched(p.ctx, segName(n+1), p.dest, sp, start); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("past the end: %v, want ErrNotArchived", err)
	}
	if _, err := os.Stat(p.dest); err == nil {
		t.Fatal("a failed fetch left a file at the destination")
	}
	if started.Load() != 1 {
		t.Fatalf("prefetcher started %d times while one was running", started.Load())
	}
	// A second prefetcher on the same spool backs off.
	if err := p.a.Prefetch(ctx, sp, PrefetchOptions{}); !errors.Is(err, ErrPrefetcherRunning) {
		t.Fatalf("second prefetcher: %v, want ErrPrefetcherRunning", err)
	}
	// End of recovery: PostgreSQL removes recovery.signal.
	os.Remove(filepath.Join(p.dataDir, "recovery.signal"))
	if err := <-exited; err != nil {
		t.Fatalf("prefetcher: %v", err)
	}
	if _, err := os.Stat(sp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spool still there after recovery ended: %v", err)
	}
	if OpenSpool(p.dataDir, p.a.ControlFile, p.dest, ahead) != nil {
		t.Fatal("OpenSpool outside recovery: want nil (no prefetcher in a live cluster)")
	}
}

// A spool entry is used only under its final name, for this system, with a
// valid header of the right size; everything else is fetched directly.
func TestPrefetchIgnoresStaleAndForeignSpoolFiles(t *testing.T) {
	p := newPrefetchFixture(t, 4)
	sp := p.spool(t, 3)
	if err := sp.writeWanted(wanted{System: sp.System, Name: segName(1), SegSize: testSegSize}); err != nil {
		t.Fatal(err)
	}
	noStart := func() {}
	// 2: only a half-written temp of a killed prefetcher.
	os.WriteFile(filepath.Join(sp.Dir, "."+sp.System.String()+"_"+segName(2)+".pitr-tmp-abc"), p.segs[segName(2)][:1000], 0o600)
	// 3: a complete segment of another system under our name, and a valid
	// one of ours named for another system (a spool from another cluster).
	other := makeSegment(t, t.TempDir(), 1, 3, otherSysID, 99)
	ob, _ := os.ReadFile(other)
	os.WriteFile(sp.path(segName(3)), ob, 0o600)
	os.WriteFile(filepath.Join(sp.Dir, "7000000000000000000_"+segName(3)), p.segs[segName(3)], 0o600)
	// 4: truncated under its final name.
	os.WriteFile(sp.path(segName(4)), p.segs[segName(4)][:testSegSize/2], 0o600)

	for i := 2; i <= 4; i++ {
		before := p.count.opens.Load()
		if res := p.fetchVia(t, sp, segName(i), noStart); res.Prefetched || p.count.opens.Load() == before {
			t.Fatalf("%s: served from a bad spool entry (prefetched=%v)", segName(i), res.Prefetched)
		}
	}
}

func TestPrefetchHistoryAndOutOfWindowGoDirect(t *testing.T) {
	p := newPrefetchFixture(t, 12)
	hist := writeFile(t, p.src, "00000002.history", "1\t0/5000000\tno recovery target specified\n")
	if _, err := p.a.Push(p.ctx, hist); err != nil {
		t.Fatal(err)
	}
	sp := p.spool(t, 2)
	aim := wanted{System: sp.System, Name: segName(10), SegSize: testSegSize}
	if err := sp.writeWanted(aim); err != nil {
		t.Fatal(err)
	}
	// A file under the history name in the spool must never be served.
	os.WriteFile(sp.path("00000002.history"), []byte("bogus"), 0o600)
	starts := 0
	start := func() { starts++ }
	res, err := p.a.FetchPrefetched(p.ctx, "00000002.history", p.dest, sp, start)
	if err != nil || res.Prefetched {
		t.Fatalf("history: %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(p.dest); !strings.Contains(string(b), "0/5000000") {
		t.Fatalf("history content %q", b)
	}
	if w, _ := sp.readWanted(); w != aim || starts != 0 {
		t.Fatalf("a history fetch re-aimed (%+v) or started (%d) the prefetcher", w, starts)
	}
	if _, err := p.a.FetchPrefetched(p.ctx, "00000003.history", p.dest, sp, start); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("missing history: %v", err)
	}

	// Recovery restarted at an earlier segment: direct, then re-aimed there.
	if res := p.fetchVia(t, sp, segName(3), start); res.Prefetched {
		t.Fatal("earlier segment served from the spool")
	}
	if w, _ := sp.readWanted(); w.Name != segName(3) || starts != 1 {
		t.Fatalf("after a restart at %s: wanted %+v, %d starts", segName(3), w, starts)
	}
	// Another timeline: only exact names are served, so TLI 1's files in the
	// spool cannot answer for TLI 2.
	os.WriteFile(sp.path(segName(4)), p.segs[segName(4)], 0o600)
	tl2 := wal.SegmentSize(testSegSize).FileName(wal.Segment{TLI: 2, No: 4})
	if _, err := p.a.FetchPrefetched(p.ctx, tl2, p.dest, sp, start); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("%s (never archived): %v, want ErrNotArchived", tl2, err)
	}
}

func TestPrefetcherExitsIdleAndRemovesSpool(t *testing.T) {
	p := newPrefetchFixture(t, 3)
	sp := p.spool(t, 8)
	if err := sp.writeWanted(wanted{System: sp.System, Name: segName(1), SegSize: testSegSize}); err != nil {
		t.Fatal(err)
	}
	// A leftover download of a killed prefetcher is swept at start.
	os.WriteFile(filepath.Join(sp.Dir, ".x.pitr-tmp-1"), []byte("x"), 0o600)
	if err := p.a.Prefetch(p.ctx, sp, PrefetchOptions{Idle: 50 * time.Millisecond, Poll: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spool left after idle exit: %v", err)
	}
}

func TestOpenSpoolOnlyForPgWal(t *testing.T) {
	p := newPrefetchFixture(t, 0)
	if sp := OpenSpool(p.dataDir, p.a.ControlFile, filepath.Join(t.TempDir(), "x"), 8); sp != nil {
		t.Fatal("spool for a destination outside pg_wal")
	}
	if sp := OpenSpool(p.dataDir, p.a.ControlFile, p.dest, 0); sp != nil {
		t.Fatal("spool with fetch_ahead off")
	}
}

// archive-push removes a spool left by a prefetcher killed at the end of
// recovery, but never one in use.
func TestRemoveStaleSpool(t *testing.T) {
	p := newPrefetchFixture(t, 0)
	sp := p.spool(t, 4)
	if err := sp.writeWanted(wanted{System: sp.System, Name: segName(1), SegSize: testSegSize}); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemoveStaleSpool(p.dataDir); removed || err != nil {
		t.Fatalf("in recovery: removed=%v, %v", removed, err)
	}
	os.Remove(filepath.Join(p.dataDir, "recovery.signal"))
	lock, err := sp.lockFile()
	if err != nil {
		t.Fatal(err)
	}
	if removed, _ := RemoveStaleSpool(p.dataDir); removed {
		t.Fatal("removed a spool whose prefetcher holds the lock")
	}
	lock.Close()
	if removed, err := RemoveStaleSpool(p.dataDir); !removed || err != nil {
		t.Fatalf("stale spool: removed=%v, %v", removed, err)
	}
	if _, err := os.Stat(sp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("spool still there: %v", err)
	}
}

// Re-aimed (recovery restarted elsewhere), the prefetcher drops the old
// window: the spool never holds more than fetch_ahead+1 segments.
func TestPrefetchReaimDropsOldWindow(t *testing.T) {
	const ahead = 3
	p := newPrefetchFixture(t, 12)
	sp := p.spool(t, ahead)
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	bg := &Archiver{Store: p.store}
	var started atomic.Int32
	exited := make(chan error, 1)
	start := func() {
		if started.Add(1) == 1 {
			go func() { exited <- bg.Prefetch(ctx, sp, PrefetchOptions{Poll: time.Millisecond}) }()
		}
	}
	has := func(names ...string) func() bool {
		return func() bool {
			for _, n := range names {
				if _, err := os.Stat(sp.path(n)); err != nil {
					return false
				}
			}
			return true
		}
	}
	p.fetchVia(t, sp, segName(1), start)
	waitFor(t, "segments 2..4", has(segName(2), segName(3), segName(4)))
	if res := p.fetchVia(t, sp, segName(8), start); res.Prefetched {
		t.Fatal("out-of-window segment served from the spool")
	}
	waitFor(t, "segments 9..11", has(segName(9), segName(10), segName(11)))
	waitFor(t, "the old window to go", func() bool { return len(spoolSegments(t, sp)) <= ahead+1 })
	for _, n := range []string{segName(2), segName(3), segName(4)} {
		if has(n)() {
			t.Errorf("%s of the old window is still in the spool", n)
		}
	}
	cancel()
	<-exited
}

// A seeded spool (pitr restore seeds it with the first segment of the plan)
// makes the first fetch start the prefetcher before it fetches, not after.
func TestSeededPrefetchStartsBeforeTheFirstFetch(t *testing.T) {
	for _, seeded := range []bool{false, true} {
		p := newPrefetchFixture(t, 4)
		if seeded {
			if err := SeedPrefetch(p.dataDir, testSysID, segName(1), testSegSize); err != nil {
				t.Fatal(err)
			}
		}
		sp := p.spool(t, 3)
		opensAtStart := int64(-1)
		p.fetchVia(t, sp, segName(1), func() { opensAtStart = p.count.opens.Load() })
		switch {
		case opensAtStart < 0:
			t.Fatalf("seeded=%v: the first fetch did not start the prefetcher", seeded)
		case seeded && opensAtStart != 0:
			t.Fatalf("seeded: the prefetcher was started after the direct fetch (%d repository opens before it)", opensAtStart)
		case !seeded && opensAtStart == 0:
			t.Fatal("unseeded: the prefetcher started before the fetch; this test no longer tells the two apart")
		}
	}
	if err := SeedPrefetch(t.TempDir(), testSysID, "not a segment", testSegSize); err == nil {
		t.Fatal("a seed with a bad segment name was accepted")
	}
}

// A byte budget lowers the window for large segments, never below one
// segment ahead, and never raises it.
func TestSpoolWindowWithinAheadBytes(t *testing.T) {
	for _, c := range []struct {
		segSize    uint64
		ahead      int
		aheadBytes int64
		want       int // segments after the wanted one
	}{
		{16 << 20, 8, 128 << 20, 8},
		{64 << 20, 8, 128 << 20, 2},
		{1 << 30, 8, 128 << 20, 1},
		{1 << 20, 8, 128 << 20, 8}, // the budget never raises Ahead
		{1 << 30, 8, 0, 8},         // no budget: a count someone set
		{1 << 30, 3, 4 << 30, 3},   // within the budget
		{256 << 20, 8, 1 << 30, 4},
	} {
		size := wal.SegmentSize(c.segSize)
		first := wal.Segment{TLI: 2, No: wal.SegNo(size.SegmentsPerXLogID()) - 1} // the next one rolls over the log number
		sp := &Spool{Ahead: c.ahead, AheadBytes: c.aheadBytes}
		win := sp.window(wanted{Name: size.FileName(first), SegSize: c.segSize})
		if len(win) != c.want+1 {
			t.Errorf("%d MiB segments, ahead %d within %d bytes: window %v, want %d after the wanted one",
				c.segSize>>20, c.ahead, c.aheadBytes, win, c.want)
			continue
		}
		for i, name := range win {
			seg, err := size.ParseFileName(name)
			if err != nil || seg.TLI != 2 || seg.No != first.No+wal.SegNo(i) {
				t.Errorf("%d MiB segments: window[%d] = %s (%v), want segment %d on timeline 2", c.segSize>>20, i, name, err, first.No+wal.SegNo(i))
			}
		}
	}
}
