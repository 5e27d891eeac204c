package fs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/storagetest"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t) })
}

// leftovers returns every name under root that is not a final object.
func leftovers(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFailedPutLeavesNoTempFile(t *testing.T) {
	s := newStore(t)
	data := storagetest.RandomBytes(1, 1<<20)
	err := s.Put(t.Context(), "wal/a/b/object", &storagetest.FailingReader{Data: data, N: 1000})
	if !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	if left := leftovers(t, s.Root()); len(left) != 0 {
		t.Fatalf("temp files left behind: %q", left)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "wal/a/b/object")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("final file exists after failed Put: %v", err)
	}
}

func TestListSkipsForeignTempFiles(t *testing.T) {
	// A crash between create and rename leaves a temp file behind; it must
	// never be listed as an object.
	s := newStore(t)
	if err := s.Put(t.Context(), "wal/x", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Root(), "wal", tmpPrefix+"123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	infos, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Key != "wal/x" {
		t.Fatalf("List = %+v, want only wal/x", infos)
	}
}

func TestPermissions(t *testing.T) {
	old := syscall.Umask(0o077) // the strictest umask must not take group read away
	defer syscall.Umask(old)

	s := newStore(t)
	if err := s.Put(t.Context(), "a/b/c", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rel  string
		want fs.FileMode
	}{
		{".", DirPerm},
		{"a", DirPerm},
		{"a/b", DirPerm},
		{"a/b/c", FilePerm},
	} {
		fi, err := os.Stat(filepath.Join(s.Root(), c.rel))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != c.want {
			t.Errorf("%s: mode %v, want %v", c.rel, got, c.want)
		}
	}
}

func TestExistingRootKeepsMode(t *testing.T) {
	root := t.TempDir()
	if err := os.Chmod(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := New(root); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("New changed the mode of an existing root to %v", fi.Mode().Perm())
	}
}

func TestRootIsFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(f); err == nil {
		t.Fatal("New(file) succeeded")
	}
}

func TestRejectedKeys(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	for _, key := range []string{
		"", "/abs", "/", "a//b", "a/", "./a", "a/./b", "..", "../x", "a/../b", "a/..", "a..b",
		`a\b`, "a\x00b", tmpPrefix + "x", "a/" + tmpPrefix + "x",
	} {
		if err := s.Put(ctx, key, bytes.NewReader(nil)); !storage.IsPermanent(err) {
			t.Errorf("Put(%q) = %v, want a permanent error", key, err)
		}
		if _, err := s.Open(ctx, key, 0); !storage.IsPermanent(err) || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Open(%q) = %v, want a permanent error other than ErrNotExist", key, err)
		}
		if _, err := s.Stat(ctx, key); !storage.IsPermanent(err) || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Stat(%q) = %v, want a permanent error other than ErrNotExist", key, err)
		}
		if err := s.Delete(ctx, key); !storage.IsPermanent(err) {
			t.Errorf("Delete(%q) = %v, want a permanent error", key, err)
		}
	}
	for _, prefix := range []string{"/", "../", "a/../../", `a\`} {
		if _, err := s.List(ctx, prefix); !storage.IsPermanent(err) {
			t.Errorf("List(%q) = %v, want a permanent error", prefix, err)
		}
	}
	if left := leftovers(t, s.Root()); len(left) != 0 {
		t.Fatalf("rejected keys left files: %q", left)
	}
}

func TestKeyUnderFile(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if err := s.Put(ctx, "a", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	// "a" is an object, so "a/b" cannot exist and cannot be created.
	if _, err := s.Stat(ctx, "a/b"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Stat(a/b) = %v, want ErrNotExist", err)
	}
	if err := s.Put(ctx, "a/b", bytes.NewReader([]byte("y"))); err == nil || errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Put(a/b) under a file = %v, want an error other than ErrNotExist", err)
	}
}

func TestNegativeOffset(t *testing.T) {
	s := newStore(t)
	if err := s.Put(t.Context(), "k", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(t.Context(), "k", -1); !storage.IsPermanent(err) {
		t.Fatalf("Open(-1) = %v, want a permanent error", err)
	}
}

func TestReadOnlyDirectoryIsPermanent(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	s := newStore(t)
	if err := os.Chmod(s.Root(), 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(s.Root(), 0o700) })
	if err := s.Put(t.Context(), "k", bytes.NewReader([]byte("x"))); !storage.IsPermanent(err) {
		t.Fatalf("Put into a read-only directory = %v, want a permanent error", err)
	}
}

// A full disk must fail the Put and leave neither the final object nor a temp
// file. /dev/full fails every write with ENOSPC, but the temp file is created
// inside the store, so simulating ENOSPC needs a small filesystem; skipped
// unless one is provided.
func TestDiskFull(t *testing.T) {
	dir := os.Getenv("PITR_TEST_SMALL_FS")
	if dir == "" {
		t.Skip("set PITR_TEST_SMALL_FS to a directory on a small (e.g. 1 MiB tmpfs) filesystem")
	}
	s, err := New(filepath.Join(dir, "repo-"+strings.ReplaceAll(t.Name(), "/", "_")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(s.Root()) })
	var statfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &statfs); err != nil {
		t.Fatal(err)
	}
	size := int(statfs.Bavail)*int(statfs.Bsize) + 1<<20
	err = s.Put(t.Context(), "big", bytes.NewReader(make([]byte, size)))
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		t.Fatalf("Put larger than the filesystem = %v, want ENOSPC", err)
	}
	if _, err := s.Stat(t.Context(), "big"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Stat after ENOSPC = %v, want ErrNotExist", err)
	}
	if left := leftovers(t, s.Root()); len(left) != 0 {
		t.Fatalf("temp files left after ENOSPC: %q", left)
	}
}
