package archive

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
	"github.com/pitr-dev/pitr/storage/fs"
)

const (
	testSysID   = 7301234567890123456
	otherSysID  = 7309999999999999999
	testSegSize = 1 << 20
)

// makeSegment writes a WAL segment file with a valid long page header for
// (tli, segno) and a body derived from fill, and returns its path.
func makeSegment(t *testing.T, dir string, tli wal.TimelineID, segno wal.SegNo, sysid uint64, fill byte) string {
	t.Helper()
	size := wal.SegmentSize(testSegSize)
	b := make([]byte, testSegSize)
	for i := range b {
		b[i] = fill + byte(i/8192)
	}
	binary.LittleEndian.PutUint16(b[0:], 0xD110) // PG15 XLOG_PAGE_MAGIC
	binary.LittleEndian.PutUint16(b[2:], 0x0002) // XLP_LONG_HEADER
	binary.LittleEndian.PutUint32(b[4:], uint32(tli))
	binary.LittleEndian.PutUint64(b[8:], uint64(size.StartLSN(segno)))
	binary.LittleEndian.PutUint32(b[16:], 0)
	clear(b[20:24])
	binary.LittleEndian.PutUint64(b[24:], sysid)
	binary.LittleEndian.PutUint32(b[32:], testSegSize)
	binary.LittleEndian.PutUint32(b[36:], 8192)
	path := filepath.Join(dir, size.FileName(wal.Segment{TLI: tli, No: segno}))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeControl writes a minimal global/pg_control whose first 8 bytes are the system identifier.
func writeControl(t *testing.T, dir string, sysid uint64) string {
	t.Helper()
	b := make([]byte, 8192)
	binary.LittleEndian.PutUint64(b, sysid)
	p := filepath.Join(dir, "pg_control")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type fixture struct {
	ctx   context.Context
	store *fs.Store
	a     *Archiver
	src   string // a fake pg_wal
	dst   string // where fetched files go
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := fs.New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ctx: context.Background(), store: st, src: t.TempDir(), dst: t.TempDir()}
	f.a = &Archiver{Store: st, Codec: codec.Options{Codec: codec.Zstd}}
	return f
}

func (f *fixture) fetch(t *testing.T, name string) ([]byte, error) {
	t.Helper()
	dest := filepath.Join(f.dst, "RECOVERYXLOG")
	_, err := f.a.Fetch(f.ctx, name, dest)
	if err != nil {
		if _, statErr := os.Stat(dest); statErr == nil {
			t.Fatalf("fetch %s failed (%v) but left a file at %%p", name, err)
		}
		f.assertNoTempFiles(t)
		return nil, err
	}
	b, rerr := os.ReadFile(dest)
	if rerr != nil {
		t.Fatal(rerr)
	}
	os.Remove(dest)
	return b, nil
}

func (f *fixture) assertNoTempFiles(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(f.dst)
	for _, e := range entries {
		t.Errorf("fetch left %s behind in the destination directory", e.Name())
	}
}

func TestPushFetchRoundTrip(t *testing.T) {
	f := newFixture(t)
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	seg := makeSegment(t, f.src, 1, 0x1FF, testSysID, 3) // crosses no boundary, just a high number
	partial := makeSegment(t, f.src, 1, 0x200, testSysID, 4)
	partialPath := partial + ".partial"
	if err := os.Rename(partial, partialPath); err != nil {
		t.Fatal(err)
	}
	files := []string{
		seg,
		partialPath,
		writeFile(t, f.src, "00000002.history", "1\t0/1FF00000\tno recovery target specified\n"),
		writeFile(t, f.src, "0000000100000000000001FF.00000028.backup", "START WAL LOCATION: 0/1FF00028 (file 0000000100000000000001FF)\n"),
	}
	for _, p := range files {
		res, err := f.a.Push(f.ctx, p)
		if err != nil {
			t.Fatalf("push %s: %v", p, err)
		}
		if res.AlreadyArchived || res.Stored == 0 {
			t.Fatalf("push %s: %+v", p, res)
		}
		want, _ := os.ReadFile(p)
		got, err := f.fetch(t, filepath.Base(p))
		if err != nil {
			t.Fatalf("fetch %s: %v", filepath.Base(p), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("fetched %s differs from what was pushed", filepath.Base(p))
		}
	}
	m, err := repo.ReadMarker(f.ctx, f.store)
	if err != nil || m.SystemIdentifier != testSysID {
		t.Fatalf("marker = %+v, %v", m, err)
	}
	// The segment compresses: it is mostly runs of one byte.
	info, err := f.store.Stat(f.ctx, mustKey(t, filepath.Base(seg)))
	if err != nil || info.Size >= testSegSize/4 {
		t.Fatalf("stored segment: %+v, %v", info, err)
	}
}

func mustKey(t *testing.T, name string) string {
	k, err := repo.WALKey(testSysID, name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRepushIdenticalSucceeds(t *testing.T) {
	f := newFixture(t)
	seg := makeSegment(t, f.src, 1, 5, testSysID, 1)
	if _, err := f.a.Push(f.ctx, seg); err != nil {
		t.Fatal(err)
	}
	before, _ := f.store.Stat(f.ctx, mustKey(t, filepath.Base(seg)))
	res, err := f.a.Push(f.ctx, seg)
	if err != nil || !res.AlreadyArchived {
		t.Fatalf("re-push identical: %+v, %v; want success, already archived", res, err)
	}
	after, _ := f.store.Stat(f.ctx, mustKey(t, filepath.Base(seg)))
	if !after.ModTime.Equal(before.ModTime) {
		t.Fatalf("identical re-push rewrote the object")
	}
}

func TestRepushDifferentContentFailsAndKeepsArchive(t *testing.T) {
	f := newFixture(t)
	seg := makeSegment(t, f.src, 1, 5, testSysID, 1)
	if _, err := f.a.Push(f.ctx, seg); err != nil {
		t.Fatal(err)
	}
	original, _ := os.ReadFile(seg)
	other := t.TempDir()
	makeSegment(t, other, 1, 5, testSysID, 9) // same name, same header, different body
	_, err := f.a.Push(f.ctx, filepath.Join(other, filepath.Base(seg)))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("push of different content: %v, want ErrConflict", err)
	}
	if !strings.Contains(err.Error(), filepath.Base(seg)) {
		t.Fatalf("error %q does not name the file", err)
	}
	got, err := f.fetch(t, filepath.Base(seg))
	if err != nil || !bytes.Equal(got, original) {
		t.Fatalf("archived copy changed after a refused push (err %v)", err)
	}
}

func TestHistoryNeverOverwritten(t *testing.T) {
	f := newFixture(t)
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	first := writeFile(t, f.src, "00000002.history", "1\t0/3000000\tno recovery target specified\n")
	if _, err := f.a.Push(f.ctx, first); err != nil {
		t.Fatal(err)
	}
	if res, err := f.a.Push(f.ctx, first); err != nil || !res.AlreadyArchived {
		t.Fatalf("identical history re-push: %+v, %v", res, err)
	}
	second := writeFile(t, t.TempDir(), "00000002.history", "1\t0/5000000\tbefore 2026-04-08 14:13:00+00\n")
	if _, err := f.a.Push(f.ctx, second); !errors.Is(err, ErrConflict) {
		t.Fatalf("different history under same name: %v, want ErrConflict", err)
	}
	got, err := f.fetch(t, "00000002.history")
	if err != nil || string(got) != "1\t0/3000000\tno recovery target specified\n" {
		t.Fatalf("history file was overwritten: %q, %v", got, err)
	}
}

func TestPushRefusesForeignSystem(t *testing.T) {
	f := newFixture(t)
	if _, err := f.a.Push(f.ctx, makeSegment(t, f.src, 1, 1, testSysID, 1)); err != nil {
		t.Fatal(err)
	}
	foreign := makeSegment(t, t.TempDir(), 1, 2, otherSysID, 1)
	_, err := f.a.Push(f.ctx, foreign)
	var fe *repo.ForeignSystemError
	if !errors.As(err, &fe) || fe.Got != otherSysID || fe.Repository != testSysID {
		t.Fatalf("push of a foreign cluster's segment: %v, want ForeignSystemError", err)
	}
	if _, err := f.store.Stat(f.ctx, repo.WALPrefix(otherSysID)+"0000000100000000/000000010000000000000002"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("foreign segment was stored: %v", err)
	}
}

func TestPushRefusesInvalidFiles(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	// A segment renamed to another number: the header says where it belongs.
	renamed := makeSegment(t, dir, 1, 7, testSysID, 1)
	wrongName := filepath.Join(dir, "000000010000000000000008")
	os.Rename(renamed, wrongName)
	// A truncated segment.
	trunc := makeSegment(t, t.TempDir(), 1, 9, testSysID, 1)
	os.Truncate(trunc, testSegSize/2)
	// A file that is not WAL at all.
	junk := writeFile(t, dir, "000000010000000000000010", strings.Repeat("x", testSegSize))
	for name, p := range map[string]string{
		"renamed":   wrongName,
		"truncated": trunc,
		"not WAL":   junk,
		"bad name":  writeFile(t, dir, "000000010000000000000001.gz", "x"),
		"missing":   filepath.Join(dir, "000000010000000000000011"),
	} {
		if _, err := f.a.Push(f.ctx, p); err == nil {
			t.Errorf("%s: push succeeded", name)
		}
	}
	if objs, _ := f.store.List(f.ctx, ""); len(objs) > 1 { // the marker may exist from none of them
		t.Fatalf("invalid files left objects: %+v", objs)
	}
}

func TestPushHistoryNeedsIdentity(t *testing.T) {
	f := newFixture(t)
	_, err := f.a.Push(f.ctx, writeFile(t, f.src, "00000002.history", "1\t0/3000000\tx\n"))
	if err == nil || !strings.Contains(err.Error(), "pg_control") {
		t.Fatalf("history push into an empty repository without pg_control: %v", err)
	}
}

func TestFetchMissingIsNotArchived(t *testing.T) {
	f := newFixture(t)
	if _, err := f.a.Push(f.ctx, makeSegment(t, f.src, 1, 1, testSysID, 1)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"000000010000000000000002", "00000002.history"} {
		if _, err := f.fetch(t, name); !errors.Is(err, ErrNotArchived) {
			t.Fatalf("fetch of missing %s: %v, want ErrNotArchived", name, err)
		}
	}
}

// Without a repository there is no way to know the file is absent: that must
// not look like "not archived", or recovery would end early.
func TestFetchWithoutRepositoryIsNotNotArchived(t *testing.T) {
	f := newFixture(t)
	_, err := f.fetch(t, "000000010000000000000001")
	if err == nil || errors.Is(err, ErrNotArchived) || !errors.Is(err, repo.ErrNoRepository) {
		t.Fatalf("fetch from empty location: %v, want ErrNoRepository", err)
	}
}

func corrupt(t *testing.T, f *fixture, key string, mutate func([]byte) []byte) {
	t.Helper()
	p := filepath.Join(f.store.Root(), filepath.FromSlash(key))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, mutate(b), 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestFetchCorruptObjectFailsWithoutWriting(t *testing.T) {
	for name, mutate := range map[string]func([]byte) []byte{
		"flipped byte": func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"truncated":    func(b []byte) []byte { return b[:len(b)-10] },
		"emptied":      func(b []byte) []byte { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			seg := makeSegment(t, f.src, 1, 3, testSysID, 1)
			if _, err := f.a.Push(f.ctx, seg); err != nil {
				t.Fatal(err)
			}
			corrupt(t, f, mustKey(t, filepath.Base(seg)), mutate)
			_, err := f.fetch(t, filepath.Base(seg))
			if !errors.Is(err, codec.ErrCorrupt) || errors.Is(err, ErrNotArchived) {
				t.Fatalf("fetch of corrupt object: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestPushReplacesCorruptArchivedCopy(t *testing.T) {
	f := newFixture(t)
	seg := makeSegment(t, f.src, 1, 3, testSysID, 1)
	if _, err := f.a.Push(f.ctx, seg); err != nil {
		t.Fatal(err)
	}
	corrupt(t, f, mustKey(t, filepath.Base(seg)), func(b []byte) []byte { return b[:len(b)/2] })
	res, err := f.a.Push(f.ctx, seg)
	if err != nil || !res.Replaced {
		t.Fatalf("push over a corrupt copy: %+v, %v", res, err)
	}
	want, _ := os.ReadFile(seg)
	if got, err := f.fetch(t, filepath.Base(seg)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after replacement fetch = %v", err)
	}
}

func TestFetchRefusesOtherCluster(t *testing.T) {
	f := newFixture(t)
	seg := makeSegment(t, f.src, 1, 3, testSysID, 1)
	if _, err := f.a.Push(f.ctx, seg); err != nil {
		t.Fatal(err)
	}
	f.a.ControlFile = writeControl(t, t.TempDir(), otherSysID)
	var fe *repo.ForeignSystemError
	if _, err := f.fetch(t, filepath.Base(seg)); !errors.As(err, &fe) {
		t.Fatalf("fetch into another cluster's data directory: %v", err)
	}
}

func TestSegmentSizes(t *testing.T) {
	// The header carries the segment size, so any valid size round-trips;
	// 128 MiB is over mapLimit: streamed, in frames from two workers.
	for _, mb := range []uint64{1, 16, 64, 128} {
		f := newFixture(t) // the first segment after the rollover has the same name at every size
		size, _ := wal.NewSegmentSize(mb << 20)
		b := make([]byte, size)
		segno := wal.SegNo(size.SegmentsPerXLogID()) // first segment after the low-digit rollover
		binary.LittleEndian.PutUint16(b[0:], 0xD110)
		binary.LittleEndian.PutUint16(b[2:], 0x0002)
		binary.LittleEndian.PutUint32(b[4:], 1)
		binary.LittleEndian.PutUint64(b[8:], uint64(size.StartLSN(segno)))
		binary.LittleEndian.PutUint64(b[24:], testSysID)
		binary.LittleEndian.PutUint32(b[32:], uint32(size))
		binary.LittleEndian.PutUint32(b[36:], 8192)
		name := size.FileName(wal.Segment{TLI: 1, No: segno})
		if !strings.HasSuffix(name, "0000000100000000") {
			t.Fatalf("%d MiB: segment after rollover named %s", mb, name)
		}
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, b, 0o600)
		if _, err := f.a.Push(f.ctx, p); err != nil {
			t.Fatalf("%d MiB: %v", mb, err)
		}
		got, err := f.fetch(t, name)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%d MiB: fetch %v", mb, err)
		}
	}
}

// Segments over mapLimit are compressed on two workers; smaller ones on
// one, whatever their window, and a configured concurrency is kept.
func TestWALCodecOptions(t *testing.T) {
	for _, c := range []struct {
		conc       int
		size       int64
		wantConc   int
		wantWindow int
	}{
		{0, 16 << 20, 0, walWindow},
		{0, mapLimit, 0, walWindow},
		{0, mapLimit + 1, largeSegmentWorkers, walWindow},
		{0, 1 << 30, largeSegmentWorkers, walWindow},
		{4, 1 << 30, 4, walWindow},
		{3, 16 << 20, 3, walWindow},
	} {
		got := walCodecOptions(codec.Options{Concurrency: c.conc}, c.size)
		if got.Concurrency != c.wantConc || got.WindowSize != c.wantWindow {
			t.Errorf("concurrency %d, %d bytes: got concurrency %d, window %d; want %d, %d",
				c.conc, c.size, got.Concurrency, got.WindowSize, c.wantConc, c.wantWindow)
		}
	}
	if got := walCodecOptions(codec.Options{WindowSize: 4 << 20}, 16<<20); got.WindowSize != 4<<20 {
		t.Errorf("configured window replaced: %d", got.WindowSize)
	}
}
