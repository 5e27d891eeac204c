// Package fs stores objects as files under a local directory (a local disk or
// an NFS mount). Every Put is atomic and durable: tmp file → fsync → rename →
// fsync directory, so a crash or a full disk never leaves a partial object
// under its final name.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/internal/durable"
	"github.com/pitr-dev/pitr/internal/writeback"
	"github.com/pitr-dev/pitr/storage"
)

// Permissions of what the store creates. Group read is deliberate: the
// repository is often created by root (or a backup user) while restore_command
// runs as PostgreSQL's OS user, which then only needs to share the group.
// New directories are chmod'ed explicitly so a restrictive umask cannot take
// group access away; an existing root keeps whatever mode it already has.
const (
	FilePerm iofs.FileMode = 0o640
	DirPerm  iofs.FileMode = 0o750
)

// tmpPrefix starts the name of every in-flight upload. Put rejects keys with a
// segment starting with it, so List can skip such names without ever hiding a
// real object.
const tmpPrefix = ".tmp-"

// Store is a storage.Store rooted at a local directory.
type Store struct {
	root string
}

var _ storage.Store = (*Store)(nil)

// New returns a Store rooted at root, creating the directory (DirPerm) if it
// does not exist.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("fs: empty root directory")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("fs: root %s: %w", root, err)
	}
	if err := mkdirAll(abs); err != nil {
		return nil, fmt.Errorf("fs: root %s: %w", abs, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("fs: root %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("fs: root %s: not a directory", abs)
	}
	return &Store{root: abs}, nil
}

// Root returns the absolute directory the store writes under.
func (s *Store) Root() string { return s.root }

// Put writes r to a temporary file next to the final one and renames it into
// place only after fsync, so readers see the old object or the complete new
// one. Errors from write, fsync and close (ENOSPC, EDQUOT, NFS write-back
// errors that only show up at close) all abort the Put before the rename.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (err error) {
	path, err := s.path(key)
	if err != nil {
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	dir := filepath.Dir(path)
	if err := mkdirAll(dir); err != nil {
		return fmt.Errorf("fs put %s: %w", key, writeErr(err))
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("fs put %s: %w", key, writeErr(err))
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if err != nil && !renamed {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp uses 0600; Chmod is not subject to the umask.
	if err := f.Chmod(FilePerm); err != nil {
		return fmt.Errorf("fs put %s: %w", key, writeErr(err))
	}
	if _, err := io.CopyBuffer(writeback.NewWriter(f), ctxReader{ctx: ctx, r: r}, make([]byte, 256<<10)); err != nil {
		return fmt.Errorf("fs put %s: %w", key, writeErr(err))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fs put %s: fsync: %w", key, writeErr(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("fs put %s: close: %w", key, writeErr(err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("fs put %s: %w", key, writeErr(err))
	}
	renamed = true
	// The rename is only durable once the directory entry is on disk.
	if err := durable.SyncDir(dir); err != nil {
		return fmt.Errorf("fs put %s: fsync dir: %w", key, writeErr(err))
	}
	return nil
}

// Open returns the object's bytes from offset. An offset at or past the end
// yields an empty reader, so a resumed read of a fully read object is not an
// error.
func (s *Store) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	path, err := s.path(key)
	if err != nil {
		return nil, fmt.Errorf("fs open %s: %w", key, err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("fs open %s: %w", key, storage.Permanent(fmt.Errorf("negative offset %d", offset)))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fs open %s: %w", key, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("fs open %s: %w", key, classify(err))
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fs open %s: %w", key, classify(err))
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("fs open %s: %w", key, storage.ErrNotExist)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("fs open %s: seek %d: %w", key, offset, err)
		}
	}
	return f, nil
}

// Stat reports the object's size and modification time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	path, err := s.path(key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("fs stat %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("fs stat %s: %w", key, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("fs stat %s: %w", key, classify(err))
	}
	// A directory is a by-product of nested keys, not an object.
	if !fi.Mode().IsRegular() {
		return storage.ObjectInfo{}, fmt.Errorf("fs stat %s: %w", key, storage.ErrNotExist)
	}
	return storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List returns every object whose key starts with prefix. The prefix is a
// string prefix, not a directory: only the directory part of it is walked,
// and names are filtered afterwards.
func (s *Store) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, fmt.Errorf("fs list %s: %w", prefix, err)
	}
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	var out []storage.ObjectInfo
	err := filepath.WalkDir(start, func(path string, d iofs.DirEntry, err error) error {
		if err != nil {
			// The prefix's directory not existing just means no objects.
			if path == start && isNotExist(err) {
				return filepath.SkipDir
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(s.root, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			// Prune subtrees that cannot contain a match.
			if path != start && !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, iofs.ErrNotExist) {
			return nil // deleted while listing
		}
		if err != nil {
			return err
		}
		out = append(out, storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fs list %s: %w", prefix, classify(err))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes the object. Empty parent directories are left in place: a
// concurrent Put may be about to create its temp file in them.
func (s *Store) Delete(ctx context.Context, key string) error {
	path, err := s.path(key)
	if err != nil {
		return fmt.Errorf("fs delete %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs delete %s: %w", key, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return fmt.Errorf("fs delete %s: %w", key, classify(err))
	}
	if fi.IsDir() {
		return nil // not an object
	}
	if err := os.Remove(path); err != nil && !isNotExist(err) {
		return fmt.Errorf("fs delete %s: %w", key, writeErr(err))
	}
	if err := durable.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("fs delete %s: fsync dir: %w", key, writeErr(err))
	}
	return nil
}

func (s *Store) path(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// checkKey rejects keys that could escape the root or that would not map to
// exactly one file. Rejections are permanent: retrying cannot fix a key.
func checkKey(key string) error {
	switch {
	case key == "":
		return storage.Permanent(errors.New("empty key"))
	case strings.HasPrefix(key, "/"):
		return storage.Permanent(fmt.Errorf("invalid key %q: absolute", key))
	case strings.Contains(key, ".."):
		return storage.Permanent(fmt.Errorf("invalid key %q: contains \"..\"", key))
	case strings.ContainsAny(key, "\\\x00"):
		return storage.Permanent(fmt.Errorf("invalid key %q: backslash or NUL", key))
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "" || seg == ".":
			return storage.Permanent(fmt.Errorf("invalid key %q: empty segment", key))
		case strings.HasPrefix(seg, tmpPrefix):
			return storage.Permanent(fmt.Errorf("invalid key %q: segment starts with %q", key, tmpPrefix))
		}
	}
	return nil
}

func checkPrefix(prefix string) error {
	switch {
	case strings.HasPrefix(prefix, "/"):
		return storage.Permanent(fmt.Errorf("invalid prefix %q: absolute", prefix))
	case strings.Contains(prefix, ".."):
		return storage.Permanent(fmt.Errorf("invalid prefix %q: contains \"..\"", prefix))
	case strings.ContainsAny(prefix, "\\\x00"):
		return storage.Permanent(fmt.Errorf("invalid prefix %q: backslash or NUL", prefix))
	}
	return nil
}

// writeErr classifies errors of Put. Unlike classify it never reports
// ErrNotExist: a missing directory during a write is a race with something
// else, not an answer about the object.
func writeErr(err error) error {
	switch {
	case errors.Is(err, iofs.ErrPermission), errors.Is(err, syscall.EROFS):
		return storage.Permanent(err)
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR):
		// A key collides with an existing object or directory ("a" vs "a/b").
		return storage.Permanent(err)
	}
	return err
}

func isNotExist(err error) bool {
	// ENOTDIR: a path component is a file, so the object cannot exist either.
	return errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// classify maps OS errors onto the storage error contract: absence becomes
// storage.ErrNotExist, and conditions a retry cannot fix become permanent.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case isNotExist(err):
		return storage.ErrNotExist
	case errors.Is(err, iofs.ErrPermission), errors.Is(err, syscall.EROFS):
		return storage.Permanent(err)
	}
	return err
}

// mkdirAll creates dir and any missing parents with DirPerm, and fsyncs the
// parent of each directory it creates so the new entries survive a crash
// along with the file renamed into them.
func mkdirAll(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return &os.PathError{Op: "mkdir", Path: d, Err: syscall.ENOTDIR}
			}
			break
		}
		if !errors.Is(err, iofs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, DirPerm); err != nil {
			if errors.Is(err, iofs.ErrExist) {
				continue // a concurrent Put created it
			}
			return err
		}
		if err := os.Chmod(d, DirPerm); err != nil {
			return err
		}
		if err := durable.SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// ctxReader stops a long copy when ctx is cancelled, so a Put of a slow
// stream does not outlive its caller.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// SweepTemp removes the temporary files of uploads that never finished (the
// writer was killed) and have not been written to for olderThan. A running
// upload writes its temp file continuously, so a long idle time means dead.
func (s *Store) SweepTemp(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	err := filepath.WalkDir(s.root, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, iofs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, iofs.ErrNotExist) {
			return err
		}
		removed++
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("sweep temporary files under %s: %w", s.root, err)
	}
	return removed, nil
}
