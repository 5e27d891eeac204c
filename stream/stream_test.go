package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
	"github.com/pitr-dev/pitr/storage/fs"
)

const testSys = repo.SystemID(7000000000000000001)

// segmentBytes is a whole 1 MiB segment no of timeline 1 with a valid long
// page header and recognisable content.
func segmentBytes(size wal.SegmentSize, no wal.SegNo, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, int(size))
	ne := binary.NativeEndian
	ne.PutUint16(b[0:], 0xD110)
	ne.PutUint16(b[2:], 0x0002)
	ne.PutUint32(b[4:], 1)
	ne.PutUint64(b[8:], uint64(size.StartLSN(no)))
	ne.PutUint64(b[24:], uint64(testSys))
	ne.PutUint32(b[32:], uint32(size))
	ne.PutUint32(b[36:], 8192)
	return b
}

func newTestStreamer(t *testing.T) (*Streamer, storage.Store) {
	return newTestStreamerOpts(t, Options{}, MemorySegmentLimit)
}

// newTestStreamerOpts is newTestStreamer with opts (its Store is set) and
// the memory limit: below the 1 MiB test segments, they go to a file.
func newTestStreamerOpts(t *testing.T, opts Options, memLimit int64) (*Streamer, storage.Store) {
	t.Helper()
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts.Store = st
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.memLimit = memLimit
	s.id, s.segSize = testSys, wal.SegmentSize(1<<20)
	if err := s.resetSegment(1, 5); err != nil {
		t.Fatal(err)
	}
	return s, st
}

func readObject(t *testing.T, st storage.Store, name string) ([]byte, error) {
	t.Helper()
	key, _ := repo.WALKey(testSys, name)
	obj, err := codec.Open(context.Background(), st, key)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

// The segment in progress is stored as a whole-size .partial, zeros after
// the received end (what wal-fetch --partial serves and replay reads as the
// end of WAL); the durable position, which is all the server is told, moves
// only with uploads; a finished segment replaces its .partial.
func TestPartialThenSegment(t *testing.T) {
	ctx := context.Background()
	s, st := newTestStreamer(t)
	seg := segmentBytes(s.segSize, 5, 0xAB)
	start := s.segSize.StartLSN(5)
	name := s.segSize.FileName(wal.Segment{TLI: 1, No: 5})

	if done, err := s.write(ctx, start, seg[:100000], nil); err != nil || done {
		t.Fatalf("write: %v %v", done, err)
	}
	if s.durable > start {
		t.Fatalf("durable %s before any upload", s.durable)
	}
	if err := s.uploadPartial(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := readObject(t, st, name+".partial")
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), seg[:100000]...), make([]byte, len(seg)-100000)...)
	if !bytes.Equal(got, want) {
		t.Fatalf(".partial is not the received bytes zero-padded to the segment size (%d bytes)", len(got))
	}
	if s.durable != start+100000 {
		t.Fatalf("durable = %s, want %s", s.durable, start+100000)
	}
	state, err := ReadState(ctx, st, testSys)
	if err != nil || state == nil || state.Durable != start+100000 || state.Segment != name {
		t.Fatalf("state = %+v, %v", state, err)
	}

	// The rest, plus the first bytes of the next segment in one message.
	next := segmentBytes(s.segSize, 6, 0xCD)
	msg := append(append([]byte(nil), seg[100000:]...), next[:5000]...)
	if done, err := s.write(ctx, start+100000, msg, nil); err != nil || !done {
		t.Fatalf("write across the segment end: %v %v", done, err)
	}
	if got, err := readObject(t, st, name); err != nil || !bytes.Equal(got, seg) {
		t.Fatalf("complete segment not stored intact: %v", err)
	}
	if _, err := readObject(t, st, name+".partial"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("the finished segment's .partial is still there: %v", err)
	}
	if s.durable != s.segSize.StartLSN(6) || s.seg != 6 || s.received != 5000 {
		t.Fatalf("after the segment: durable %s seg %d received %d", s.durable, s.seg, s.received)
	}
	if _, err := s.write(ctx, s.segSize.StartLSN(6)+4000, []byte{1}, nil); err == nil {
		t.Fatal("WAL at an unexpected position was accepted")
	}
}

// archive-push's identical-content rule: a segment archive-push stored first
// is success when identical, and a different one is never overwritten.
func TestCompleteSegmentNextToArchivePush(t *testing.T) {
	ctx := context.Background()
	for _, same := range []bool{true, false} {
		s, st := newTestStreamer(t)
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
			t.Fatalf("different segment already archived: err = %v, want ErrConflict, permanent (no retrying)", err)
		}
		if got, _ := readObject(t, st, name); !bytes.Equal(got, other) {
			t.Fatal("the archived segment was changed")
		}
	}
}

func TestParseSegmentSize(t *testing.T) {
	for in, want := range map[string]wal.SegmentSize{"16MB": 16 << 20, "1MB": 1 << 20, "1GB": 1 << 30, "64MB": 64 << 20} {
		if got, err := parseSegmentSize(in); err != nil || got != want {
			t.Errorf("parseSegmentSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"16kB", "3MB", "", "MB"} {
		if _, err := parseSegmentSize(in); err == nil {
			t.Errorf("parseSegmentSize(%q) accepted", in)
		}
	}
}

func TestSlotNameChecked(t *testing.T) {
	for _, bad := range []string{"Pitr", "pitr;drop", "a-b", string(make([]byte, 64))} {
		if _, err := New(Options{Slot: bad}); err == nil {
			t.Errorf("slot name %q accepted", bad)
		}
	}
}
