package pitr

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/pitr-dev/pitr/storage"
)

// PruneLockKey is the lock object prune holds while it plans and deletes. It
// sits at the repository root, plain JSON like the format marker, so a person
// can read (and, if need be, delete) it.
const PruneLockKey = "locks/prune.json"

// Lock defaults. The TTL is long against clock skew between hosts and short
// enough that a crashed prune blocks the next one for minutes, not hours.
const (
	DefaultLockTTL    = 10 * time.Minute
	DefaultLockSettle = 3 * time.Second
)

// ErrLocked is matched (errors.Is) by a *LockedError.
var ErrLocked = errors.New("repository is locked")

// ErrLockLost is the cause of a held lock's context when another owner
// took it over or the lease could not be renewed in time.
var ErrLockLost = errors.New("repository lock lost")

// LockInfo is the content of a lock object.
type LockInfo struct {
	Owner      string    `json:"owner"` // random token of this holder
	Purpose    string    `json:"purpose"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// LockedError says who holds the lock.
type LockedError struct {
	Key    string
	Holder LockInfo // zero when the contender is unknown
}

func (e *LockedError) Error() string {
	h := e.Holder
	if h.Owner == "" {
		return fmt.Sprintf("%s: %s was taken by another process at the same moment; try again", ErrLocked, e.Key)
	}
	return fmt.Sprintf("%s: %s is held by %s (pid %d on %s) since %s until %s; if that process is gone, wait for the expiry or delete %s",
		ErrLocked, e.Key, h.Purpose, h.PID, h.Host, h.AcquiredAt.UTC().Format(time.RFC3339), h.ExpiresAt.UTC().Format(time.RFC3339), e.Key)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// LockOptions configure AcquireLock. Zero values take the defaults.
type LockOptions struct {
	Key     string        // default PruneLockKey
	Purpose string        // written into the lock for people, e.g. "prune"
	TTL     time.Duration // lease length; renewed every TTL/3 by Hold
	// Settle is how long to wait between writing the lock and reading it
	// back; see AcquireLock for why.
	Settle time.Duration
	Host   string // default os.Hostname
	PID    int    // default os.Getpid
	Log    *slog.Logger
	// Now and Sleep replace the clock in tests.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

func (o *LockOptions) defaults() {
	if o.Key == "" {
		o.Key = PruneLockKey
	}
	if o.TTL <= 0 {
		o.TTL = DefaultLockTTL
	}
	if o.Settle <= 0 {
		o.Settle = DefaultLockSettle
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.PID == 0 {
		o.PID = os.Getpid()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Lock is a held repository lock.
type Lock struct {
	st   storage.Store
	opts LockOptions

	mu   sync.Mutex
	info LockInfo
	// leaseEnd is when this holder stops trusting the lock by its own
	// clock: the start of the last successful write plus TTL, minus a
	// quarter TTL of tolerance for other hosts' clocks running ahead.
	leaseEnd time.Time
	// TookOver is the expired lock this holder replaced, if any.
	TookOver *LockInfo
}

// AcquireLock takes the lock at opts.Key or returns a *LockedError.
//
// Object stores have no reliable "create if absent" (S3 conditional writes
// are new and S3-compatible servers differ; see shared S3 notes), so the lock
// is taken in three steps: read the object (absent, or expired by our clock,
// means free), write our own with a random owner token, wait Settle, read it
// back and hold the lock only if our token is still there. Of several
// contenders that all saw it free, the last writer wins and the others see
// its token when they read back.
//
// Guarantees, and what they rest on:
//   - Mutual exclusion, if the store is read-after-write consistent for one
//     key (AWS S3 since 2020, versitygw, local file systems) and no
//     contender takes longer than Settle/2 from its read to its write being
//     acknowledged. Each contender measures its own gap and, when it was
//     longer, does not hold the lock (its object stays until it expires), so
//     a slow store makes prune fail safely rather than run twice.
//   - An expired lock (a crashed holder) is taken over after its TTL. A live
//     holder renews its lease every TTL/3 (Hold) and stops by itself when it
//     cannot renew before its lease ends, or when it finds another owner in
//     the object. This holds while hosts' clocks agree within TTL/4.
//   - Nothing else: a process that ignores the lock is not stopped by it.
func AcquireLock(ctx context.Context, st storage.Store, opts LockOptions) (*Lock, error) {
	opts.defaults()
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, fmt.Errorf("lock %s: %w", opts.Key, err)
	}
	l := &Lock{st: st, opts: opts}

	checked := opts.Now()
	cur, found, err := l.read(ctx)
	if err != nil {
		return nil, err
	}
	if found && checked.Before(cur.ExpiresAt) {
		return nil, &LockedError{Key: opts.Key, Holder: cur}
	}
	if found {
		stale := cur
		l.TookOver = &stale
		opts.Log.Warn("taking over an expired lock", "key", opts.Key, "holder_host", cur.Host, "holder_pid", cur.PID,
			"holder_purpose", cur.Purpose, "expired_at", cur.ExpiresAt)
	}

	l.info = LockInfo{Owner: hex.EncodeToString(token), Purpose: opts.Purpose, Host: opts.Host, PID: opts.PID,
		AcquiredAt: checked.UTC(), ExpiresAt: checked.Add(opts.TTL).UTC()}
	if err := l.write(ctx, l.info); err != nil {
		return nil, err
	}
	if gap := opts.Now().Sub(checked); gap > opts.Settle/2 {
		// Another contender may have read its own token back before our
		// write landed, and hold the lock that we just overwrote. Leaving
		// our object in place (it expires) makes that holder's next
		// renewal find a foreign owner and stop, and keeps newcomers out;
		// deleting it would let a newcomer in beside that holder.
		return nil, fmt.Errorf("lock %s: the store took %s between checking and writing the lock (more than %s), so holding it would not be safe; it expires at %s, try again then: %w",
			opts.Key, gap.Round(time.Millisecond), opts.Settle/2, l.info.ExpiresAt.Format(time.RFC3339), ErrLocked)
	}
	// From here on our write followed our check closely, so any contender
	// that saw the lock free reads back after our write and defers to the
	// last writer: deleting our object if it is still ours is safe.
	if err := opts.Sleep(ctx, opts.Settle); err != nil {
		l.release()
		return nil, fmt.Errorf("lock %s: %w", opts.Key, err)
	}
	back, found, err := l.read(ctx)
	if err != nil {
		l.release()
		return nil, err
	}
	if !found || back.Owner != l.info.Owner {
		return nil, &LockedError{Key: opts.Key, Holder: back}
	}
	l.leaseEnd = checked.Add(opts.TTL - opts.TTL/4)
	opts.Log.Debug("lock acquired", "key", opts.Key, "expires_at", l.info.ExpiresAt)
	return l, nil
}

// Info returns what the lock object says about this holder.
func (l *Lock) Info() LockInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.info
}

// Valid reports whether the lease is still trusted by this holder's clock.
func (l *Lock) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opts.Now().Before(l.leaseEnd)
}

// Refresh checks that the object still names this holder and extends the
// lease. ErrLockLost means someone else owns the lock now.
func (l *Lock) Refresh(ctx context.Context) error {
	start := l.opts.Now()
	cur, found, err := l.read(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	info := l.info
	l.mu.Unlock()
	if !found || cur.Owner != info.Owner {
		return fmt.Errorf("%w: %s now names %q on %s", ErrLockLost, l.opts.Key, cur.Purpose, cur.Host)
	}
	info.ExpiresAt = start.Add(l.opts.TTL).UTC()
	if err := l.write(ctx, info); err != nil {
		return err
	}
	l.mu.Lock()
	l.info = info
	l.leaseEnd = start.Add(l.opts.TTL - l.opts.TTL/4)
	l.mu.Unlock()
	return nil
}

// Hold renews the lease in the background until release is called. The
// returned context is cancelled, with an ErrLockLost cause, as soon as the
// lock is found taken over or the lease ends without a successful renewal:
// work done under the lock should use it. release stops renewing and
// deletes the lock object if it is still ours.
func (l *Lock) Hold(ctx context.Context) (held context.Context, release func()) {
	held, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Tick more often than TTL/3 so an expiring lease is noticed early.
		tick := time.NewTicker(l.opts.TTL / 12)
		defer tick.Stop()
		lastRefresh := l.opts.Now()
		for {
			select {
			case <-done:
				return
			case <-held.Done():
				return
			case <-tick.C:
			}
			if !l.Valid() {
				cancel(fmt.Errorf("%w: lease of %s ended without a successful renewal", ErrLockLost, l.opts.Key))
				return
			}
			if l.opts.Now().Sub(lastRefresh) < l.opts.TTL/3 {
				continue
			}
			err := l.Refresh(held)
			switch {
			case errors.Is(err, ErrLockLost):
				cancel(err)
				return
			case err != nil:
				l.opts.Log.Warn("could not renew the repository lock; retrying", "key", l.opts.Key, "err", err)
			default:
				lastRefresh = l.opts.Now()
			}
		}
	}()
	var once sync.Once
	return held, func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			cancel(nil)
			l.release()
		})
	}
}

// Release deletes the lock object if it is still ours. Use the release
// function from Hold instead when Hold was called.
func (l *Lock) Release() { l.release() }

// release runs on its own short deadline: it is called on the way out,
// often because ctx was cancelled by a signal.
func (l *Lock) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cur, found, err := l.read(ctx)
	if err != nil {
		l.opts.Log.Warn("could not release the repository lock; it expires by itself", "key", l.opts.Key, "expires_at", l.Info().ExpiresAt, "err", err)
		return
	}
	if !found || cur.Owner != l.Info().Owner {
		return // not ours any more: leave the new owner's lock alone
	}
	if err := l.st.Delete(ctx, l.opts.Key); err != nil {
		l.opts.Log.Warn("could not release the repository lock; it expires by itself", "key", l.opts.Key, "expires_at", l.Info().ExpiresAt, "err", err)
	}
}

const maxLockSize = 64 << 10

func (l *Lock) read(ctx context.Context) (LockInfo, bool, error) {
	rc, err := l.st.Open(ctx, l.opts.Key, 0)
	if errors.Is(err, storage.ErrNotExist) {
		return LockInfo{}, false, nil
	}
	if err != nil {
		return LockInfo{}, false, fmt.Errorf("read lock %s: %w", l.opts.Key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxLockSize+1))
	if err != nil {
		return LockInfo{}, false, fmt.Errorf("read lock %s: %w", l.opts.Key, err)
	}
	var info LockInfo
	if err := json.Unmarshal(data, &info); err != nil || len(data) > maxLockSize || info.Owner == "" || info.ExpiresAt.IsZero() {
		// Unsure who holds it: refuse rather than guess.
		return LockInfo{}, false, fmt.Errorf("lock %s is not a valid lock object; if no prune is running, delete it", l.opts.Key)
	}
	return info, true, nil
}

func (l *Lock) write(ctx context.Context, info LockInfo) error {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("write lock %s: %w", l.opts.Key, err)
	}
	if err := l.st.Put(ctx, l.opts.Key, bytes.NewReader(append(data, '\n'))); err != nil {
		return fmt.Errorf("write lock %s: %w", l.opts.Key, err)
	}
	return nil
}
