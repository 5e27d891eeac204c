package fs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/retry"
)

// A writer killed mid-upload leaves its temp file, which List never shows:
// SweepTemp removes it once it has not been written to for a while, and
// leaves objects and recent temp files (an upload still running) alone.
// storage.SweepTemp finds the fs store below its wrappers.
func TestSweepTemp(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if err := s.Put(ctx, "wal/0000000100000000/000000010000000000000001", strings.NewReader("segment")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.Root(), "wal", "0000000100000000")
	stale := filepath.Join(dir, tmpPrefix+"killed")
	fresh := filepath.Join(dir, tmpPrefix+"running")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(stale, old, old)

	n, err := storage.SweepTemp(ctx, retry.New(s, retry.Options{}), 24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("swept %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatal("stale temp file still there")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatal("a recent temp file (upload in progress) was removed")
	}
	if objs, err := s.List(ctx, ""); err != nil || len(objs) != 1 {
		t.Fatalf("objects after sweep: %v, %v", objs, err)
	}
}
