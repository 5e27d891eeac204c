// Package storage defines the one interface every repository backend implements.
//
// Backends are dumb bytes: they know nothing about PostgreSQL, compression or
// encryption. Those live in wrappers (see storage/codec, storage/retry) that embed
// a Store and are composed in one place (cmd/pitr), so callers never thread
// options through individual calls.
package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotExist is returned (possibly wrapped) by every backend when an object is
// definitely absent. Callers rely on it to tell "not archived" from "could not
// ask": restore_command must exit 1 only in the first case.
var ErrNotExist = errors.New("object does not exist")

// ErrLocked is returned (wrapped, and permanent) by Delete or Put when the
// backend refuses because the object is under retention (S3 Object Lock).
// Prune skips such objects instead of failing.
var ErrLocked = errors.New("object is locked by its retention period")

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64 // stored (encoded) size in bytes
	ModTime time.Time
}

// Store is a flat key/value object store.
//
// Keys are slash-separated relative paths ("wal/0000000100000000/...") made of
// [A-Za-z0-9._-] segments; backends may reject anything else.
//
// Contract every backend honours (checked by storagetest.Run):
//   - Put stores the whole content of r under key, replacing any previous object.
//     It returns nil only once the object is durable (fsync'd and renamed into
//     place; or an acknowledged PUT). Readers never observe a partial object under
//     key: on error, the previous object (or its absence) is left unchanged.
//     If r also implements io.Seeker, Put may rewind it to retry.
//   - Open returns a reader of the object's bytes from offset (0 = start).
//     An absent object is ErrNotExist, reported by Open itself, not by the first Read.
//   - Stat reports size and modification time, or ErrNotExist.
//   - List returns every object whose key starts with prefix, sorted by key.
//   - Delete removes an object; deleting an absent object is not an error.
type Store interface {
	Put(ctx context.Context, key string, r io.Reader) error
	Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error)
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	Delete(ctx context.Context, key string) error
}

// Unwrapper is implemented by wrappers so tests and diagnostics can reach the
// store underneath.
type Unwrapper interface {
	Unwrap() Store
}

// TempSweeper is implemented by backends that can leave a temporary file
// behind when a writer is killed mid-upload (the fs backend: its temp files
// are never listed, so nothing else would ever remove them).
type TempSweeper interface {
	// SweepTemp removes temporary files not written to for olderThan and
	// returns how many it removed.
	SweepTemp(ctx context.Context, olderThan time.Duration) (int, error)
}

// SweepTemp runs the TempSweeper of st or of a store below its wrappers.
// Stores without one report 0 (on S3 an unfinished multipart upload is
// cleaned up by a bucket lifecycle rule).
func SweepTemp(ctx context.Context, st Store, olderThan time.Duration) (int, error) {
	for st != nil {
		if s, ok := st.(TempSweeper); ok {
			return s.SweepTemp(ctx, olderThan)
		}
		u, ok := st.(Unwrapper)
		if !ok {
			return 0, nil
		}
		st = u.Unwrap()
	}
	return 0, nil
}

// PermanentError marks an error that retrying cannot fix (bad credentials, a
// missing bucket, a rejected key). Wrappers like storage/retry give up at once.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that IsPermanent reports true for it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err should not be retried. ErrNotExist and
// context cancellation are permanent: the answer will not change by asking again.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p) || errors.Is(err, ErrNotExist) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
