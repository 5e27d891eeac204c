// Package retry wraps a storage.Store so transient failures (network errors,
// throttling, a server restarting) are retried with exponential backoff and
// jitter, while permanent ones (see storage.IsPermanent) fail at once.
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/pitr-dev/pitr/storage"
)

// Options configures the retry policy. The zero value is usable.
type Options struct {
	// Attempts is the total number of tries per operation, including the
	// first. Default 5.
	Attempts int
	// Initial is the backoff before the first retry; it doubles per retry up
	// to Max. Defaults 100ms and 5s.
	Initial time.Duration
	Max     time.Duration
	// Sleep waits for d or until ctx is done. Tests replace it to run without
	// real delays. Default: a timer honouring ctx.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives one record per retry. Nil discards.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Initial <= 0 {
		o.Initial = 100 * time.Millisecond
	}
	if o.Max <= 0 {
		o.Max = 5 * time.Second
	}
	if o.Max < o.Initial {
		o.Max = o.Initial
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Store is the retrying wrapper returned by New.
type Store struct {
	inner storage.Store
	opts  Options
}

var (
	_ storage.Store     = (*Store)(nil)
	_ storage.Unwrapper = (*Store)(nil)
)

// New wraps inner with the retry policy in opts.
func New(inner storage.Store, opts Options) storage.Store {
	return &Store{inner: inner, opts: opts.withDefaults()}
}

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() storage.Store { return s.inner }

// backoff returns the delay before retry number n (1-based): exponential,
// capped at Max, with "equal jitter" (half fixed, half random) so that many
// archive_command processes failing together do not retry in lockstep.
func (s *Store) backoff(n int) time.Duration {
	d := s.opts.Initial
	for i := 1; i < n && d < s.opts.Max; i++ {
		d *= 2
	}
	d = min(d, s.opts.Max)
	half := d / 2
	return half + rand.N(half+1)
}

// do runs fn until it succeeds, fails permanently, or runs out of attempts.
// before, if set, runs ahead of every retry (not the first try); its error
// ends the loop.
func (s *Store) do(ctx context.Context, op, key string, attempts int, before func() error, fn func() error) error {
	var err error
	for n := 1; ; n++ {
		if n > 1 && before != nil {
			if berr := before(); berr != nil {
				return fmt.Errorf("%s %s: cannot retry: %w (after: %w)", op, key, berr, err)
			}
		}
		err = fn()
		if err == nil || storage.IsPermanent(err) {
			return err
		}
		if n >= attempts {
			if attempts > 1 {
				return fmt.Errorf("giving up after %d attempts: %w", n, err)
			}
			return err
		}
		d := s.backoff(n)
		s.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "storage operation failed, retrying",
			slog.String("op", op), slog.String("key", key),
			slog.Int("attempt", n), slog.Duration("backoff", d), slog.Any("error", err))
		if serr := s.opts.Sleep(ctx, d); serr != nil {
			return fmt.Errorf("%s %s: %w (last error: %w)", op, key, serr, err)
		}
	}
}

// Put retries only when it can replay the body: r must be an io.Seeker that
// can report its position (an *os.File on a pipe implements io.Seeker but
// cannot seek, and gets one attempt). Before each retry r is rewound to where
// it was when Put was called.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	attempts := 1
	var rewind func() error
	if seeker, ok := r.(io.Seeker); ok {
		if start, err := seeker.Seek(0, io.SeekCurrent); err == nil {
			attempts = s.opts.Attempts
			rewind = func() error {
				_, err := seeker.Seek(start, io.SeekStart)
				return err
			}
		}
	}
	return s.do(ctx, "put", key, attempts, rewind, func() error {
		return s.inner.Put(ctx, key, r)
	})
}

// Open retries opening the object, and the returned reader re-opens it at the
// current offset after a failed Read, so a dropped connection in the middle of
// a 16 MiB segment does not restart or fail the whole download.
func (s *Store) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	rc, err := s.open(ctx, key, offset)
	if err != nil {
		return nil, err
	}
	return &resumingReader{s: s, ctx: ctx, key: key, offset: offset, rc: rc}, nil
}

func (s *Store) open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := s.do(ctx, "open", key, s.opts.Attempts, nil, func() error {
		var err error
		rc, err = s.inner.Open(ctx, key, offset)
		return err
	})
	return rc, err
}

func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	var info storage.ObjectInfo
	err := s.do(ctx, "stat", key, s.opts.Attempts, nil, func() error {
		var err error
		info, err = s.inner.Stat(ctx, key)
		return err
	})
	return info, err
}

func (s *Store) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	var infos []storage.ObjectInfo
	err := s.do(ctx, "list", prefix, s.opts.Attempts, nil, func() error {
		var err error
		infos, err = s.inner.List(ctx, prefix)
		return err
	})
	return infos, err
}

func (s *Store) Delete(ctx context.Context, key string) error {
	return s.do(ctx, "delete", key, s.opts.Attempts, nil, func() error {
		return s.inner.Delete(ctx, key)
	})
}

// resumingReader reads an object and, when a Read fails with a transient
// error, re-opens it at the offset reached so far. Each resume is one retry
// (with backoff); the budget of Attempts is reset whenever a resumed stream
// delivers data, so a long download survives several separate hiccups but
// a stream that fails without progress gives up.
type resumingReader struct {
	s      *Store
	ctx    context.Context
	key    string
	offset int64
	rc     io.ReadCloser // nil after a failed read, until re-opened
	fails  int           // consecutive failed reads without progress
	err    error         // sticky error once given up
}

func (r *resumingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for {
		if r.rc == nil {
			if err := r.reopen(); err != nil {
				r.err = err
				return 0, err
			}
		}
		n, err := r.rc.Read(p)
		r.offset += int64(n)
		if n > 0 {
			r.fails = 0
		}
		if err == nil || err == io.EOF {
			return n, err
		}
		_ = r.rc.Close()
		r.rc = nil
		if storage.IsPermanent(err) {
			r.err = fmt.Errorf("read %s at %d: %w", r.key, r.offset, err)
			return n, r.err
		}
		r.fails++
		if r.fails >= r.s.opts.Attempts {
			r.err = fmt.Errorf("read %s at %d: giving up after %d attempts: %w", r.key, r.offset, r.fails, err)
			return n, r.err
		}
		d := r.s.backoff(r.fails)
		r.s.opts.Logger.LogAttrs(r.ctx, slog.LevelWarn, "storage read failed, resuming",
			slog.String("key", r.key), slog.Int64("offset", r.offset),
			slog.Int("attempt", r.fails), slog.Duration("backoff", d), slog.Any("error", err))
		if serr := r.s.opts.Sleep(r.ctx, d); serr != nil {
			r.err = fmt.Errorf("read %s at %d: %w (last error: %w)", r.key, r.offset, serr, err)
			return n, r.err
		}
		// Hand over what was read before the failure; the next Read resumes.
		if n > 0 {
			return n, nil
		}
	}
}

func (r *resumingReader) reopen() error {
	rc, err := r.s.open(r.ctx, r.key, r.offset)
	if err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			// Deleted or replaced between two reads: the bytes already handed
			// out cannot be completed consistently.
			return fmt.Errorf("resume %s at %d: object vanished: %w", r.key, r.offset, err)
		}
		return fmt.Errorf("resume %s at %d: %w", r.key, r.offset, err)
	}
	r.rc = rc
	return nil
}

func (r *resumingReader) Close() error {
	if r.err == nil {
		r.err = fmt.Errorf("read %s: reader closed", r.key)
	}
	if r.rc == nil {
		return nil
	}
	err := r.rc.Close()
	r.rc = nil
	return err
}
