package archive

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// openLog records the key of every Open.
type openLog struct {
	storage.Store
	mu   sync.Mutex
	keys []string
}

func (o *openLog) Open(ctx context.Context, key string, off int64) (io.ReadCloser, error) {
	o.mu.Lock()
	o.keys = append(o.keys, key)
	o.mu.Unlock()
	return o.Store.Open(ctx, key, off)
}

func (o *openLog) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := o.keys
	o.keys = nil
	return k
}

// With pg_control to name the system, a fetch that finds its object makes
// that one request; the marker is read only to explain a failure, and
// every failure means what it meant when the marker came first.
func TestFetchReadsTheMarkerOnlyOnFailure(t *testing.T) {
	f := newFixture(t)
	log := &openLog{Store: f.store}
	f.a.Store = log
	seg := makeSegment(t, f.src, 1, 3, testSysID, 1)
	if _, err := f.a.Push(f.ctx, seg); err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(seg)
	segKey := mustKey(t, name)

	// Without pg_control the marker names the system first.
	log.take()
	if _, err := f.fetch(t, name); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); !slices.Equal(got, []string{repo.MarkerKey, segKey}) {
		t.Fatalf("fetch without pg_control opened %q", got)
	}

	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	if _, err := f.fetch(t, name); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); !slices.Equal(got, []string{segKey}) {
		t.Fatalf("fetch with pg_control opened %q, want only the segment", got)
	}

	if _, err := f.fetch(t, "000000010000000000000004"); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("fetch of a missing segment: %v, want ErrNotArchived", err)
	}
	if got := log.take(); !slices.Contains(got, repo.MarkerKey) {
		t.Fatalf("\"not archived\" without the marker's word: opened %q", got)
	}

	corrupt(t, f, segKey, func(b []byte) []byte { b[len(b)/2] ^= 1; return b })
	if _, err := f.fetch(t, name); !errors.Is(err, codec.ErrCorrupt) || errors.Is(err, ErrNotArchived) {
		t.Fatalf("fetch of a corrupt object: %v, want ErrCorrupt", err)
	}
}

// An empty location is no repository, with or without pg_control: never
// "not archived", which would end recovery early.
func TestFetchWithControlFileWithoutRepository(t *testing.T) {
	f := newFixture(t)
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	for _, name := range []string{"000000010000000000000001", "00000002.history"} {
		_, err := f.fetch(t, name)
		if errors.Is(err, ErrNotArchived) || !errors.Is(err, repo.ErrNoRepository) {
			t.Fatalf("fetch of %s from an empty location: %v, want ErrNoRepository", name, err)
		}
	}
}
