package stream

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/storage"
)

// dirEntries lists what is in dir: always nothing, since a buffer file is
// unlinked when it is created (so that SIGKILL leaves nothing behind).
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// bufFile is the streamer's open buffer file, or nil.
func bufFile(s *Streamer) *os.File {
	if s.buf == nil {
		return nil
	}
	return s.buf.file
}

// A segment above the memory limit is buffered in a file, and what reaches
// the repository (.partial, finished segment) is byte for byte what the
// in-memory buffer stores; the file is never visible in its directory, a
// new one serves each segment, and none is open after streaming stops.
func TestFileBackedSegmentMatchesMemory(t *testing.T) {
	ctx := context.Background()
	type result struct{ partial, full, partial2 []byte }
	run := func(file bool) result {
		dir := t.TempDir()
		limit := int64(MemorySegmentLimit)
		if file {
			limit = 64 << 10
		}
		s, st := newTestStreamerOpts(t, Options{TempDir: dir}, limit)
		if got := bufFile(s); (got != nil) != file {
			t.Fatalf("file backing %v: buffer file %v", file, got)
		}
		if got := dirEntries(t, dir); len(got) != 0 {
			t.Fatalf("buffer directory holds %v; a SIGKILL would leave it behind", got)
		}
		first := bufFile(s)
		seg := segmentBytes(s.segSize, 5, 0xAB)
		start := s.segSize.StartLSN(5)
		name := s.segSize.FileName(wal.Segment{TLI: 1, No: 5})
		next := segmentBytes(s.segSize, 6, 0xCD)
		name6 := s.segSize.FileName(wal.Segment{TLI: 1, No: 6})

		if _, err := s.write(ctx, start, seg[:300000], nil); err != nil {
			t.Fatal(err)
		}
		if err := s.uploadPartial(ctx); err != nil {
			t.Fatal(err)
		}
		var r result
		var err error
		if r.partial, err = readObject(t, st, name+".partial"); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte(nil), seg[:300000]...), make([]byte, len(seg)-300000)...)
		if !bytes.Equal(r.partial, want) {
			t.Fatalf("file backing %v: .partial is not the received bytes zero-padded", file)
		}
		if s.durable != start+300000 {
			t.Fatalf("durable = %s, want %s", s.durable, start+300000)
		}

		msg := append(append([]byte(nil), seg[300000:]...), next[:7000]...)
		if done, err := s.write(ctx, start+300000, msg, nil); err != nil || !done {
			t.Fatalf("write across the segment end: %v %v", done, err)
		}
		if r.full, err = readObject(t, st, name); err != nil || !bytes.Equal(r.full, seg) {
			t.Fatalf("file backing %v: complete segment not stored intact: %v", file, err)
		}
		if _, err := readObject(t, st, name+".partial"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("the finished segment's .partial is still there: %v", err)
		}
		if file {
			if got := bufFile(s); got == nil || got == first {
				t.Fatalf("after the segment: buffer file %v, the finished one was %v", got, first)
			}
			if _, err := first.Stat(); err == nil {
				t.Fatal("the finished segment's buffer file is still open")
			}
		}
		if got := dirEntries(t, dir); len(got) != 0 {
			t.Fatalf("buffer directory holds %v", got)
		}

		// The next segment's buffer starts zeroed: its .partial holds only
		// what was received of it.
		if err := s.uploadPartial(ctx); err != nil {
			t.Fatal(err)
		}
		if r.partial2, err = readObject(t, st, name6+".partial"); err != nil {
			t.Fatal(err)
		}
		want = append(append([]byte(nil), next[:7000]...), make([]byte, len(next)-7000)...)
		if !bytes.Equal(r.partial2, want) {
			t.Fatalf("file backing %v: next segment's .partial is not zero-padded", file)
		}

		last := bufFile(s)
		s.releaseBuf()
		if last != nil {
			if _, err := last.Stat(); err == nil {
				t.Fatal("buffer file still open after stopping")
			}
		}
		return r
	}
	mem, fil := run(false), run(true)
	if !bytes.Equal(mem.partial, fil.partial) || !bytes.Equal(mem.full, fil.full) || !bytes.Equal(mem.partial2, fil.partial2) {
		t.Fatal("memory and file backings uploaded different bytes")
	}
}

// Run closes the buffer file when it returns (here at once: the context is
// already cancelled), after the final upload.
func TestRunClosesBufferFile(t *testing.T) {
	dir := t.TempDir()
	s, _ := newTestStreamerOpts(t, Options{TempDir: dir, DSN: "host=/nonexistent"}, 64<<10)
	f := bufFile(s)
	if f == nil {
		t.Fatal("no buffer file")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Stat(); err == nil {
		t.Fatal("buffer file still open after Run")
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Fatalf("buffer directory holds %v after Run", got)
	}
}

// The identical-content rule holds for a file-backed segment too.
func TestFileBackedSegmentNextToArchivePush(t *testing.T) {
	ctx := context.Background()
	for _, same := range []bool{true, false} {
		s, st := newTestStreamerOpts(t, Options{TempDir: t.TempDir()}, 64<<10)
		seg := segmentBytes(s.segSize, 5, 0x11)
		name := s.segSize.FileName(wal.Segment{TLI: 1, No: 5})
		other := seg
		if !same {
			other = segmentBytes(s.segSize, 5, 0x22)
		}
		a := &archive.Archiver{Store: st}
		if _, err := a.PushBytes(ctx, testSys, name, other); err != nil {
			t.Fatal(err)
		}
		_, err := s.write(ctx, s.segSize.StartLSN(5), seg, nil)
		if same && err != nil {
			t.Fatalf("identical segment already archived: %v", err)
		}
		if !same && (!errors.Is(err, archive.ErrConflict) || !errors.Is(err, ErrPermanent)) {
			t.Fatalf("different segment already archived: err = %v, want ErrConflict, permanent", err)
		}
		if got, _ := readObject(t, st, name); !bytes.Equal(got, other) {
			t.Fatal("the archived segment was changed")
		}
	}
}
