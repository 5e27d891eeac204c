package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/fs"
	"github.com/pitr-dev/pitr/storage/storagetest"
)

// fakeStore is a storage.Store whose methods are function fields; a nil
// field fails the test if called.
type fakeStore struct {
	t        *testing.T
	PutFn    func(ctx context.Context, key string, r io.Reader) error
	OpenFn   func(ctx context.Context, key string, offset int64) (io.ReadCloser, error)
	StatFn   func(ctx context.Context, key string) (storage.ObjectInfo, error)
	ListFn   func(ctx context.Context, prefix string) ([]storage.ObjectInfo, error)
	DeleteFn func(ctx context.Context, key string) error
}

func (f *fakeStore) Put(ctx context.Context, key string, r io.Reader) error {
	if f.PutFn == nil {
		f.t.Fatal("unexpected Put")
	}
	return f.PutFn(ctx, key, r)
}

func (f *fakeStore) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	if f.OpenFn == nil {
		f.t.Fatal("unexpected Open")
	}
	return f.OpenFn(ctx, key, offset)
}

func (f *fakeStore) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if f.StatFn == nil {
		f.t.Fatal("unexpected Stat")
	}
	return f.StatFn(ctx, key)
}

func (f *fakeStore) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	if f.ListFn == nil {
		f.t.Fatal("unexpected List")
	}
	return f.ListFn(ctx, prefix)
}

func (f *fakeStore) Delete(ctx context.Context, key string) error {
	if f.DeleteFn == nil {
		f.t.Fatal("unexpected Delete")
	}
	return f.DeleteFn(ctx, key)
}

var errTransient = errors.New("connection reset by peer")

// sleeps records requested backoffs instead of sleeping.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.d)
}

func newRetry(inner storage.Store) (storage.Store, *sleeps) {
	sl := &sleeps{}
	return New(inner, Options{Sleep: sl.sleep}), sl
}

func TestConformanceOverFS(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, err := fs.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return New(s, Options{})
	})
}

func TestUnwrap(t *testing.T) {
	inner := &fakeStore{t: t}
	s := New(inner, Options{})
	u, ok := s.(storage.Unwrapper)
	if !ok || u.Unwrap() != storage.Store(inner) {
		t.Fatalf("Unwrap does not return the inner store")
	}
}

func TestRetriesTransientThenSucceeds(t *testing.T) {
	calls := 0
	inner := &fakeStore{t: t, StatFn: func(ctx context.Context, key string) (storage.ObjectInfo, error) {
		calls++
		if calls < 3 {
			return storage.ObjectInfo{}, errTransient
		}
		return storage.ObjectInfo{Key: key, Size: 42}, nil
	}}
	s, sl := newRetry(inner)
	info, err := s.Stat(t.Context(), "k")
	if err != nil || info.Size != 42 {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	if calls != 3 || sl.count() != 2 {
		t.Fatalf("calls = %d, sleeps = %d; want 3 and 2", calls, sl.count())
	}
}

func TestGivesUpAfterAttempts(t *testing.T) {
	for _, attempts := range []int{0, 1, 3} {
		t.Run(fmt.Sprint(attempts), func(t *testing.T) {
			calls := 0
			inner := &fakeStore{t: t, ListFn: func(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
				calls++
				return nil, errTransient
			}}
			sl := &sleeps{}
			s := New(inner, Options{Attempts: attempts, Sleep: sl.sleep})
			_, err := s.List(t.Context(), "wal/")
			if !errors.Is(err, errTransient) {
				t.Fatalf("List = %v, want the inner error", err)
			}
			want := attempts
			if want == 0 {
				want = 5 // default
			}
			if calls != want || sl.count() != want-1 {
				t.Fatalf("calls = %d, sleeps = %d; want %d and %d", calls, sl.count(), want, want-1)
			}
		})
	}
}

func TestNoRetryOnPermanent(t *testing.T) {
	for _, perr := range []error{
		fmt.Errorf("s3 stat k: %w", storage.ErrNotExist),
		storage.Permanent(errors.New("AccessDenied")),
		fmt.Errorf("wrapped: %w", storage.Permanent(errors.New("NoSuchBucket"))),
		context.Canceled,
	} {
		t.Run(perr.Error(), func(t *testing.T) {
			calls := 0
			inner := &fakeStore{t: t,
				StatFn: func(ctx context.Context, key string) (storage.ObjectInfo, error) {
					calls++
					return storage.ObjectInfo{}, perr
				},
				OpenFn: func(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
					calls++
					return nil, perr
				},
				DeleteFn: func(ctx context.Context, key string) error {
					calls++
					return perr
				},
				PutFn: func(ctx context.Context, key string, r io.Reader) error {
					calls++
					return perr
				},
			}
			s, sl := newRetry(inner)
			ctx := t.Context()
			if _, err := s.Stat(ctx, "k"); !errors.Is(err, perr) && err != perr {
				t.Fatalf("Stat = %v", err)
			}
			if _, err := s.Open(ctx, "k", 0); !errors.Is(err, perr) {
				t.Fatalf("Open = %v", err)
			}
			if err := s.Delete(ctx, "k"); !errors.Is(err, perr) {
				t.Fatalf("Delete = %v", err)
			}
			if err := s.Put(ctx, "k", bytes.NewReader([]byte("x"))); !errors.Is(err, perr) {
				t.Fatalf("Put = %v", err)
			}
			if calls != 4 || sl.count() != 0 {
				t.Fatalf("calls = %d, sleeps = %d; want one call per op and no sleep", calls, sl.count())
			}
		})
	}
}

func TestNotExistStaysDetectable(t *testing.T) {
	inner := &fakeStore{t: t, OpenFn: func(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
		return nil, fmt.Errorf("s3 open %s: %w", key, storage.ErrNotExist)
	}}
	s, _ := newRetry(inner)
	if _, err := s.Open(t.Context(), "wal/x", 0); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Open = %v, want ErrNotExist", err)
	}
}

func TestContextCancelledDuringBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	inner := &fakeStore{t: t, DeleteFn: func(ctx context.Context, key string) error {
		calls++
		return errTransient
	}}
	// The real sleep, with long backoffs: cancellation must cut it short.
	s := New(inner, Options{Initial: time.Hour, Max: time.Hour})
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	start := time.Now()
	err := s.Delete(ctx, "k")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errTransient) {
		t.Fatalf("Delete = %v, want context.Canceled wrapping the last error", err)
	}
	if !storage.IsPermanent(err) {
		t.Fatalf("a cancelled retry loop must be permanent for outer layers: %v", err)
	}
	if calls != 1 || time.Since(start) > 10*time.Second {
		t.Fatalf("calls = %d after %v", calls, time.Since(start))
	}
}

func TestBackoff(t *testing.T) {
	s := New(nil, Options{Initial: 100 * time.Millisecond, Max: 5 * time.Second}).(*Store)
	for n, ceil := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		6: 3200 * time.Millisecond, 7: 5 * time.Second, 30: 5 * time.Second, 100: 5 * time.Second,
	} {
		for range 100 {
			d := s.backoff(n)
			if d < ceil/2 || d > ceil {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, ceil/2, ceil)
			}
		}
	}
}

func TestPutSeekableRewinds(t *testing.T) {
	data := []byte("0123456789abcdef")
	var seen []string
	inner := &fakeStore{t: t, PutFn: func(ctx context.Context, key string, r io.Reader) error {
		// Consume part of the body, as a failed upload does.
		b, _ := io.ReadAll(io.LimitReader(r, int64(4+len(seen)*100)))
		if len(seen) < 2 {
			seen = append(seen, string(b))
			return errTransient
		}
		rest, _ := io.ReadAll(r)
		seen = append(seen, string(b)+string(rest))
		return nil
	}}
	s, sl := newRetry(inner)
	r := bytes.NewReader(data)
	// The body starts where the caller left it, not necessarily at 0.
	if _, err := r.Seek(3, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "k", r); err != nil {
		t.Fatalf("Put = %v", err)
	}
	want := []string{"3456", string(data[3:]), string(data[3:])}
	if fmt.Sprint(seen) != fmt.Sprint(want) || sl.count() != 2 {
		t.Fatalf("attempts saw %q (sleeps %d), want %q", seen, sl.count(), want)
	}
}

func TestPutNonSeekableSingleAttempt(t *testing.T) {
	calls := 0
	inner := &fakeStore{t: t, PutFn: func(ctx context.Context, key string, r io.Reader) error {
		calls++
		_, _ = io.Copy(io.Discard, r)
		return errTransient
	}}
	s, sl := newRetry(inner)
	err := s.Put(t.Context(), "k", strings.NewReader("abc")) // seekable...
	if !errors.Is(err, errTransient) || calls != 5 {
		t.Fatalf("seekable: Put = %v after %d calls, want 5 calls", err, calls)
	}

	calls = 0
	before := sl.count()
	err = s.Put(t.Context(), "k", storagetest.OnlyReader{R: strings.NewReader("abc")})
	if !errors.Is(err, errTransient) || calls != 1 || sl.count() != before {
		t.Fatalf("non-seekable: Put = %v after %d calls and %d sleeps, want one call", err, calls, sl.count()-before)
	}
}

func TestPutPipeIsNotRetried(t *testing.T) {
	// *os.File implements io.Seeker even on a pipe, where Seek fails.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	go func() { _, _ = pw.Write([]byte("segment")); pw.Close() }()
	calls := 0
	inner := &fakeStore{t: t, PutFn: func(ctx context.Context, key string, r io.Reader) error {
		calls++
		_, _ = io.Copy(io.Discard, r)
		return errTransient
	}}
	s, _ := newRetry(inner)
	if err := s.Put(t.Context(), "k", pr); !errors.Is(err, errTransient) || calls != 1 {
		t.Fatalf("Put(pipe) = %v after %d calls, want 1 call", err, calls)
	}
}

func TestOpenRetriesOpen(t *testing.T) {
	calls := 0
	inner := &fakeStore{t: t, OpenFn: func(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
		calls++
		if calls == 1 {
			return nil, errTransient
		}
		return io.NopCloser(strings.NewReader("content")), nil
	}}
	s, _ := newRetry(inner)
	rc, err := s.Open(t.Context(), "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || string(b) != "content" || calls != 2 {
		t.Fatalf("read %q, %v after %d opens", b, err, calls)
	}
}

// flakyReader returns the object from offset and fails after failAfter bytes.
type flakyReader struct {
	data      []byte
	off       int
	failAfter int
	err       error
	closed    bool
}

func (f *flakyReader) Read(p []byte) (int, error) {
	if f.failAfter <= 0 {
		return 0, f.err
	}
	if f.off >= len(f.data) {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), f.failAfter)], f.data[f.off:])
	f.off += n
	f.failAfter -= n
	return n, nil
}

func (f *flakyReader) Close() error { f.closed = true; return nil }

func TestOpenResumesAfterReadError(t *testing.T) {
	data := storagetest.RandomBytes(7, 10_000)
	fails := []int{1000, 0, 1500, 2500} // bytes before each stream fails; 0 = fails at once
	var offsets []int64
	var readers []*flakyReader
	inner := &fakeStore{t: t, OpenFn: func(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
		offsets = append(offsets, offset)
		fa := len(data)
		if i := len(offsets) - 1; i < len(fails) {
			fa = fails[i]
		}
		r := &flakyReader{data: data, off: int(offset), failAfter: fa, err: errTransient}
		readers = append(readers, r)
		return r, nil
	}}
	s, sl := newRetry(inner)
	rc, err := s.Open(t.Context(), "k", 500)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("ReadAll = %v", err)
	}
	if !bytes.Equal(got, data[500:]) {
		t.Fatalf("resumed read returned %d bytes, want %d equal bytes", len(got), len(data)-500)
	}
	want := []int64{500, 1500, 1500, 3000, 5500}
	if fmt.Sprint(offsets) != fmt.Sprint(want) {
		t.Fatalf("re-opened at %v, want %v", offsets, want)
	}
	if sl.count() != 4 {
		t.Fatalf("sleeps = %d, want 4", sl.count())
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	for i, r := range readers {
		if !r.closed {
			t.Errorf("stream %d not closed", i)
		}
	}
	if _, err := rc.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read after Close succeeded")
	}
}

func TestResumeGivesUpWithoutProgress(t *testing.T) {
	opens := 0
	inner := &fakeStore{t: t, OpenFn: func(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
		opens++
		return &flakyReader{data: []byte("abc"), failAfter: 0, err: errTransient}, nil
	}}
	s, _ := newRetry(inner)
	rc, err := s.Open(t.Context(), "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	if !errors.Is(err, errTransient) {
		t.Fatalf("ReadAll = %v, want the transient error", err)
	}
	if opens != 5 {
		t.Fatalf("opened %d times, want 5 (one per attempt)", opens)
	}
}

func TestResumeStopsOnPermanentReadError(t *testing.T) {
	opens := 0
	perr := storage.Permanent(errors.New("checksum mismatch"))
	inner := &fakeStore{t: t, OpenFn: func(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
		opens++
		return &flakyReader{data: []byte("abcdef"), failAfter: 3, err: perr}, nil
	}}
	s, _ := newRetry(inner)
	rc, err := s.Open(t.Context(), "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if !errors.Is(err, perr) || string(got) != "abc" || opens != 1 {
		t.Fatalf("ReadAll = %q, %v after %d opens", got, err, opens)
	}
}

func TestResumeObjectVanished(t *testing.T) {
	opens := 0
	inner := &fakeStore{t: t, OpenFn: func(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
		opens++
		if opens > 1 {
			return nil, fmt.Errorf("fake open: %w", storage.ErrNotExist)
		}
		return &flakyReader{data: []byte("abcdef"), failAfter: 3, err: errTransient}, nil
	}}
	s, _ := newRetry(inner)
	rc, err := s.Open(t.Context(), "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, storage.ErrNotExist) || opens != 2 {
		t.Fatalf("ReadAll = %v after %d opens, want ErrNotExist after 2", err, opens)
	}
}

func TestLogsRetries(t *testing.T) {
	var buf bytes.Buffer
	calls := 0
	inner := &fakeStore{t: t, DeleteFn: func(ctx context.Context, key string) error {
		calls++
		if calls == 1 {
			return errTransient
		}
		return nil
	}}
	s := New(inner, Options{
		Sleep:  func(context.Context, time.Duration) error { return nil },
		Logger: slog.New(slog.NewTextHandler(&buf, nil)),
	})
	if err := s.Delete(t.Context(), "wal/x"); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "retrying") || !strings.Contains(out, "key=wal/x") ||
		!strings.Contains(out, "connection reset") {
		t.Fatalf("log = %q", out)
	}
}
