package archive

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/storage/codec"
)

func TestCheckArgPaths(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		path      string
		inDataDir bool
		ok        bool
	}{
		{"pg_wal/RECOVERYXLOG", true, true},
		{"pg_wal/RECOVERYHISTORY", true, true},
		{"./pg_wal/000000010000000000000001", true, true},
		{"pg_wal/000000010000000000000001", false, true},
		{"RECOVERYXLOG", false, true}, // by hand, outside a data directory
		{"out/x", false, true},
		{"/abs/datadir/pg_wal/000000010000000000000001", true, true}, // pg_rewind -c
		{dir + "/000000010000000000000001", true, true},
		{"RECOVERYXLOG", true, false},
		{"global/pg_control", true, false},
		{"pg_wal/../global/pg_control", true, false},
		{"../RECOVERYXLOG", false, false},
		{"pg_wal/../../x/RECOVERYXLOG", false, false},
		{"..", false, false},
		{"", false, false},
		{"pg_wal/a\x00b", true, false},
	} {
		for name, check := range map[string]func(string, bool) error{"push": CheckPushPath, "fetch": CheckFetchDest} {
			err := check(c.path, c.inDataDir)
			if (err == nil) != c.ok {
				t.Errorf("%s %q (data directory: %v): %v, want ok=%v", name, c.path, c.inDataDir, err, c.ok)
			}
		}
	}
}

func TestPushRefusesSymlink(t *testing.T) {
	f := newFixture(t)
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	hist := writeFile(t, t.TempDir(), "secret", "1\t0/3000000\tno recovery target specified\n")
	link := filepath.Join(f.src, "00000002.history")
	if err := os.Symlink(hist, link); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Push(f.ctx, link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("push through a symlink: %v", err)
	}
	if _, err := f.store.Stat(f.ctx, mustKey(t, "00000002.history")); err == nil {
		t.Fatal("the symlink's target was archived")
	}
}

// Contract: wal-fetch never writes outside the working directory for a
// relative %p that climbs out of it, and nothing is created there.
func TestFetchRefusesDestOutside(t *testing.T) {
	f := newFixture(t)
	seg := makeSegment(t, f.src, 1, 3, testSysID, 1)
	if _, err := f.a.Push(f.ctx, seg); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	_, err := f.a.Fetch(f.ctx, filepath.Base(seg), "../evil")
	if err == nil || errors.Is(err, ErrNotArchived) {
		t.Fatalf("fetch to ../evil: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(work)); len(entries) != 1 {
		t.Fatalf("fetch wrote beside the working directory: %v", entries)
	}
	// The same fetch into the working directory works.
	if _, err := f.a.Fetch(f.ctx, filepath.Base(seg), "RECOVERYXLOG"); err != nil {
		t.Fatal(err)
	}
}

// zeros encodes n zero bytes as a codec object: a true object (its trailer
// matches), only too large for its kind, and small (zstd's ratio on zeros).
func zeros(t *testing.T, n int64) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := codec.Encode(&b, io.LimitReader(zeroReader{}, n), codec.Options{Codec: codec.Zstd}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Contract: an archived object that decodes to more than any file of its
// kind can hold is refused as corrupt (not "not archived") once that size
// is passed, and nothing is left at %p.
func TestFetchRefusesDecompressionBomb(t *testing.T) {
	// A segment's limit is 1 GiB (the largest wal_segment_size), too much
	// to write in a unit test; the mechanism is the same for every kind.
	if got := MaxFileSize(wal.KindSegment); got != 1<<30 {
		t.Errorf("segment limit %d, want 1 GiB", got)
	}
	for _, name := range []string{"00000002.history", "000000010000000000000002.00000028.backup"} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			makeSegment(t, f.src, 1, 2, testSysID, 1)
			if _, err := f.a.Push(f.ctx, filepath.Join(f.src, "000000010000000000000002")); err != nil {
				t.Fatal(err)
			}
			kind, err := wal.Classify(name)
			if err != nil {
				t.Fatal(err)
			}
			limit := MaxFileSize(kind)
			// Just past the limit, with a true trailer: without the
			// limit the fetch would succeed.
			if err := f.store.Put(f.ctx, mustKey(t, name), bytes.NewReader(zeros(t, limit+(1<<20)))); err != nil {
				t.Fatal(err)
			}
			_, err = f.fetch(t, name)
			if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "more than") {
				t.Fatalf("fetch of a bomb: %v, want ErrCorrupt naming the limit", err)
			}
		})
	}
}

// Contract: archive-push comparing with an archived copy that is a
// decompression bomb stops at the kind's limit, treats the copy as corrupt
// and replaces it with the verified local file.
func TestPushReplacesBombArchivedCopy(t *testing.T) {
	f := newFixture(t)
	var logs bytes.Buffer
	f.a.Log = slog.New(slog.NewTextHandler(&logs, nil))
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	makeSegment(t, f.src, 1, 2, testSysID, 1)
	if _, err := f.a.Push(f.ctx, filepath.Join(f.src, "000000010000000000000002")); err != nil {
		t.Fatal(err)
	}
	hist := writeFile(t, f.src, "00000002.history", "1\t0/3000000\tno recovery target specified\n")
	if err := f.store.Put(f.ctx, mustKey(t, "00000002.history"), bytes.NewReader(zeros(t, MaxHistoryFileSize+(1<<20)))); err != nil {
		t.Fatal(err)
	}
	res, err := f.a.Push(f.ctx, hist)
	if err != nil || !res.Replaced {
		t.Fatalf("push over a bomb: %+v, %v", res, err)
	}
	if !strings.Contains(logs.String(), "more than") {
		t.Errorf("the bomb was not stopped by the limit: %s", logs.String())
	}
	if got, err := f.fetch(t, "00000002.history"); err != nil || !strings.HasPrefix(string(got), "1\t0/3000000") {
		t.Fatalf("fetch after replacement: %q, %v", got, err)
	}
}
