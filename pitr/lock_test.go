package pitr_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/pitr-dev/pitr/internal/s3test"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/fs"
	"github.com/pitr-dev/pitr/storage/s3"
)

// TestLock runs every lock test on the fs backend and on a real
// S3-compatible server, since the lock's guarantees rest on the store's
// consistency.
func TestLock(t *testing.T) {
	backends := map[string]func(t *testing.T) storage.Store{
		"fs": func(t *testing.T) storage.Store {
			st, err := fs.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	}
	var (
		srvOnce sync.Once
		srv     *s3test.Server
	)
	parent := t
	backends["s3"] = func(t *testing.T) storage.Store {
		srvOnce.Do(func() { srv = s3test.Start(parent) })
		st, err := s3.New(t.Context(), s3.Config{Bucket: srv.Bucket, Prefix: srv.NewPrefix(t), Region: srv.Region, Endpoint: srv.Endpoint},
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, "")))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, st storage.Store)
	}{
		{"Excludes", testLockExcludes},
		{"StaleTakeover", testLockStaleTakeover},
		{"Contention", testLockContention},
		{"HoldRenews", testLockHoldRenews},
		{"HoldNoticesTakeover", testLockHoldNoticesTakeover},
		{"LeaseEndsWithoutRenewal", testLockLeaseEnds},
		{"SlowStoreDoesNotHold", testLockSlowStore},
		{"InvalidObject", testLockInvalidObject},
	}
	for _, kind := range []string{"fs", "s3"} {
		t.Run(kind, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, backends[kind](t)) })
			}
		})
	}
}

// fastLock keeps tests quick; the settle delay is still far above the
// latency of a local store.
func fastLock(host string) pitr.LockOptions {
	return pitr.LockOptions{Purpose: "prune", Host: host, PID: 4242, TTL: time.Minute, Settle: 200 * time.Millisecond}
}

func readLock(t *testing.T, st storage.Store) string {
	t.Helper()
	rc, err := st.Open(context.Background(), pitr.PruneLockKey, 0)
	if errors.Is(err, storage.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testLockExcludes(t *testing.T, st storage.Store) {
	ctx := context.Background()
	a, err := pitr.AcquireLock(ctx, st, fastLock("host-a"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(readLock(t, st), a.Info().Owner) {
		t.Fatalf("lock object does not name the holder")
	}
	_, err = pitr.AcquireLock(ctx, st, fastLock("host-b"))
	var locked *pitr.LockedError
	if !errors.As(err, &locked) || !errors.Is(err, pitr.ErrLocked) {
		t.Fatalf("second acquire: err = %v, want *LockedError", err)
	}
	if locked.Holder.Host != "host-a" || locked.Holder.PID != 4242 || locked.Holder.Purpose != "prune" {
		t.Fatalf("holder %+v", locked.Holder)
	}
	if msg := err.Error(); !strings.Contains(msg, "host-a") || !strings.Contains(msg, "locks/prune.json") {
		t.Fatalf("message %q does not say who holds which lock", msg)
	}
	a.Release()
	if readLock(t, st) != "" {
		t.Fatalf("lock object still there after release")
	}
	b, err := pitr.AcquireLock(ctx, st, fastLock("host-b"))
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	b.Release()
}

// fakeClock is a settable clock; Sleep advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.Advance(d)
	return ctx.Err()
}

// A holder that crashed leaves its lock; after the TTL the next prune takes
// it over, and the old holder, should it wake up, finds it lost.
func testLockStaleTakeover(t *testing.T, st storage.Store) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	opts := fastLock("crashed")
	opts.Now, opts.Sleep = clock.Now, clock.Sleep
	old, err := pitr.AcquireLock(ctx, st, opts)
	if err != nil {
		t.Fatal(err)
	}

	clock.Advance(59 * time.Second) // not expired yet
	opts.Host = "next"
	if _, err := pitr.AcquireLock(ctx, st, opts); !errors.Is(err, pitr.ErrLocked) {
		t.Fatalf("before expiry: err = %v, want ErrLocked", err)
	}
	if old.Valid() {
		t.Fatalf("the old holder still trusts its lease 59s into a 1m TTL (it should stop at 3/4 TTL)")
	}

	clock.Advance(2 * time.Second)
	next, err := pitr.AcquireLock(ctx, st, opts)
	if err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if next.TookOver == nil || next.TookOver.Host != "crashed" {
		t.Fatalf("TookOver = %+v, want the crashed holder", next.TookOver)
	}
	if err := old.Refresh(ctx); !errors.Is(err, pitr.ErrLockLost) {
		t.Fatalf("old holder's refresh: err = %v, want ErrLockLost", err)
	}
	old.Release() // must not delete the new owner's lock
	if !strings.Contains(readLock(t, st), next.Info().Owner) {
		t.Fatalf("the old holder's release removed the new owner's lock")
	}
	next.Release()
}

// Contenders that all find the lock free at once: exactly one holds it.
// At most one of several simultaneous contenders may hold the lock (safety).
// None holding it is allowed by design when the store was slow between a
// contender's check and its write (each then declines); on a loaded machine
// that can happen, so a round with no winner is tried again, and only a
// lock that nobody can take three times running fails the test.
func testLockContention(t *testing.T, st storage.Store) {
	for round := range 3 {
		won := int32(0)
		for try := 0; try < 3 && won == 0; try++ {
			won = contend(t, st, round)
			if won == 0 {
				// Decliners leave their object until it expires; clear it
				// so the next try starts from a free lock.
				if err := st.Delete(context.Background(), pitr.PruneLockKey); err != nil {
					t.Fatal(err)
				}
			}
		}
		if won == 0 {
			t.Fatalf("round %d: no contender could take a free lock in 3 tries", round)
		}
	}
}

// contend races 5 contenders for the lock, fails the test if more than one
// wins, releases the winner's lock and returns the number of winners.
func contend(t *testing.T, st storage.Store, round int) int32 {
	const n = 5
	var (
		wg      sync.WaitGroup
		won     atomic.Int32
		winners = make(chan *pitr.Lock, n)
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			l, err := pitr.AcquireLock(context.Background(), st, fastLock(strings.Repeat("h", i+1)))
			switch {
			case err == nil:
				won.Add(1)
				winners <- l
			case !errors.Is(err, pitr.ErrLocked):
				t.Errorf("round %d: contender %d: %v", round, i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(winners)
	got := won.Load()
	if got > 1 {
		t.Fatalf("round %d: %d contenders hold the lock, want at most 1", round, got)
	}
	for l := range winners {
		l.Release()
	}
	return got
}

func testLockHoldRenews(t *testing.T, st storage.Store) {
	opts := fastLock("holder")
	opts.TTL = 2400 * time.Millisecond // renewed every 800ms
	opts.Settle = 400 * time.Millisecond
	l, err := pitr.AcquireLock(context.Background(), st, opts)
	if err != nil {
		t.Fatal(err)
	}
	first := l.Info().ExpiresAt
	held, release := l.Hold(context.Background())
	time.Sleep(3 * time.Second) // longer than the TTL
	if held.Err() != nil {
		t.Fatalf("held context ended: %v", context.Cause(held))
	}
	if !l.Info().ExpiresAt.After(first) || !l.Valid() {
		t.Fatalf("lease not renewed: expiry %s, first %s", l.Info().ExpiresAt, first)
	}
	release()
	if held.Err() == nil {
		t.Fatalf("held context still live after release")
	}
	if readLock(t, st) != "" {
		t.Fatalf("lock object still there after release")
	}
}

func testLockHoldNoticesTakeover(t *testing.T, st storage.Store) {
	opts := fastLock("holder")
	// Windows wide enough for a busy 2-core machine talking to a real S3
	// server: the store may take up to Settle/2 between check and write.
	opts.TTL = 3 * time.Second
	opts.Settle = 400 * time.Millisecond
	l, err := pitr.AcquireLock(context.Background(), st, opts)
	if err != nil {
		t.Fatal(err)
	}
	held, release := l.Hold(context.Background())
	defer release()
	// Someone who (wrongly) thinks the lock expired overwrites it.
	intruder := `{"owner":"intruder","purpose":"prune","host":"other","pid":1,"acquired_at":"2026-05-01T00:00:00Z","expires_at":"2099-01-01T00:00:00Z"}`
	if err := st.Put(context.Background(), pitr.PruneLockKey, strings.NewReader(intruder)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held.Done():
	case <-time.After(8 * time.Second):
		t.Fatalf("holder did not notice the takeover")
	}
	if !errors.Is(context.Cause(held), pitr.ErrLockLost) {
		t.Fatalf("cause %v, want ErrLockLost", context.Cause(held))
	}
	release()
	if !strings.Contains(readLock(t, st), "intruder") {
		t.Fatalf("release removed the other owner's lock")
	}
}

// failingStore fails every call once failing is set.
type failingStore struct {
	storage.Store
	failing atomic.Bool
}

var errStoreDown = errors.New("store down")

func (f *failingStore) Open(ctx context.Context, key string, off int64) (io.ReadCloser, error) {
	if f.failing.Load() {
		return nil, errStoreDown
	}
	return f.Store.Open(ctx, key, off)
}

func (f *failingStore) Put(ctx context.Context, key string, r io.Reader) error {
	if f.failing.Load() {
		return errStoreDown
	}
	return f.Store.Put(ctx, key, r)
}

// A holder that cannot renew stops trusting the lock before others may
// take it over.
func testLockLeaseEnds(t *testing.T, base storage.Store) {
	st := &failingStore{Store: base}
	opts := fastLock("holder")
	// Windows wide enough for a busy 2-core machine talking to a real S3
	// server: the store may take up to Settle/2 between check and write.
	opts.TTL = 3 * time.Second
	opts.Settle = 400 * time.Millisecond
	l, err := pitr.AcquireLock(context.Background(), st, opts)
	if err != nil {
		t.Fatal(err)
	}
	acquired := time.Now()
	held, release := l.Hold(context.Background())
	defer release()
	st.failing.Store(true)
	select {
	case <-held.Done():
	case <-time.After(8 * time.Second):
		t.Fatalf("holder kept going without a lease")
	}
	if d := time.Since(acquired); d > opts.TTL {
		t.Fatalf("holder stopped %s after acquiring, after the TTL (%s) when others may take over", d, opts.TTL)
	}
	if !errors.Is(context.Cause(held), pitr.ErrLockLost) {
		t.Fatalf("cause %v", context.Cause(held))
	}
}

// slowPutStore makes writes slower than half the settle delay.
type slowPutStore struct {
	storage.Store
	delay time.Duration
}

func (s *slowPutStore) Put(ctx context.Context, key string, r io.Reader) error {
	time.Sleep(s.delay)
	return s.Store.Put(ctx, key, r)
}

func testLockSlowStore(t *testing.T, base storage.Store) {
	opts := fastLock("slow")
	opts.Settle = 100 * time.Millisecond
	_, err := pitr.AcquireLock(context.Background(), &slowPutStore{Store: base, delay: 200 * time.Millisecond}, opts)
	if !errors.Is(err, pitr.ErrLocked) || !strings.Contains(err.Error(), "not be safe") {
		t.Fatalf("err = %v, want a refusal to hold the lock", err)
	}
	// The object stays until it expires: deleting it could let a newcomer
	// in beside a holder whose lock this write replaced.
	if readLock(t, base) == "" {
		t.Fatalf("lock object was withdrawn")
	}
}

func testLockInvalidObject(t *testing.T, st storage.Store) {
	if err := st.Put(context.Background(), pitr.PruneLockKey, strings.NewReader("garbage")); err != nil {
		t.Fatal(err)
	}
	_, err := pitr.AcquireLock(context.Background(), st, fastLock("x"))
	if err == nil || !strings.Contains(err.Error(), "not a valid lock object") {
		t.Fatalf("err = %v", err)
	}
	if readLock(t, st) != "garbage" {
		t.Fatalf("an unreadable lock object was replaced")
	}
}
