package archive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
)

// SpoolDir is where archive-push records files it archived ahead of
// PostgreSQL's call for them, inside pg_wal. PostgreSQL ignores names in
// pg_wal that are not WAL files, and pg_basebackup does not copy pg_wal's
// contents, so the spool never travels into a backup or a restored cluster.
const SpoolDir = "pitr_archived"

// spoolRecord says: this file, of this size, was durably stored under this
// key. It is written only after the upload returned.
type spoolRecord struct {
	Name     string    `json:"name"`
	Key      string    `json:"key"`
	Size     int64     `json:"size"`
	PushedAt time.Time `json:"pushed_at"`
	// What the upload found and did, so the call PostgreSQL makes for the
	// file logs the same outcome as if it had archived the file itself.
	Stored          int64 `json:"stored,omitempty"`
	AlreadyArchived bool  `json:"already_archived,omitempty"`
	Replaced        bool  `json:"replaced,omitempty"`
}

// BacklogResult adds what a backlog push did besides the requested file.
type BacklogResult struct {
	PushResult
	FromSpool bool // the background archiver (or an earlier one) archived the file
	Started   bool // this call started a background archiver for the backlog
	Waited    time.Duration
}

// AheadLock is the file a background archiver holds flock(2) on, in the
// spool. It is never removed, so a lock taken on it always names the one
// file every caller locks.
const AheadLock = "lock"

// AheadLog is where the background archiver's stdout and stderr go.
const AheadLog = "ahead.log"

// Spawner starts the background archiver for the pg_wal directory walDir,
// handing it lock (flock'ed by the caller; the archiver must keep it locked
// until it exits). The caller closes its own copy afterwards.
type Spawner func(walDir string, lock *os.File) error

// aheadWaitLimit bounds how long a call waits for the background archiver
// to archive its file. Past it the call fails (PostgreSQL retries) rather
// than reading the file alongside the archiver.
var aheadWaitLimit = 10 * time.Minute

// PushBacklog archives the file at path like Push. When path is in a data
// directory's pg_wal, parallel > 0 and other files are marked ready (a
// backlog), the work goes to one background archiver (started with spawn)
// that archives every ready file, parallel at a time, recording each durable
// one in the spool; this call returns as soon as its own file is recorded
// and the object is found in the repository. So a backlog drains with every
// core busy, not in batches that end when the slowest upload of the batch
// ends, and PostgreSQL's later calls return after a spool check.
//
// It never creates, renames or deletes anything in archive_status (that is
// PostgreSQL's bookkeeping); it only reads it. Success for path is reported
// only once path is durably stored. The call pushes path itself only while
// holding the archiver's lock, so it never reads a file the background
// archiver is reading, and never after PostgreSQL could recycle it.
func (a *Archiver) PushBacklog(ctx context.Context, path string, parallel int, spawn Spawner) (BacklogResult, error) {
	walDir := filepath.Dir(path)
	statusDir := filepath.Join(walDir, "archive_status")
	if filepath.Base(walDir) != "pg_wal" || !isDir(statusDir) {
		res, err := a.Push(ctx, path)
		return BacklogResult{PushResult: res}, err
	}
	name := filepath.Base(path)
	spool := filepath.Join(walDir, SpoolDir)

	pruneSpool(spool, statusDir, a.log())
	if res, ok := a.fromSpool(ctx, spool, path); ok {
		return res, nil
	}
	if parallel <= 0 || spawn == nil {
		res, err := a.Push(ctx, path)
		return BacklogResult{PushResult: res}, err
	}
	if _, err := os.Stat(filepath.Join(statusDir, name+".ready")); err != nil {
		// Not PostgreSQL's archiver asking (a manual push): the background
		// archiver will never take this file.
		res, err := a.Push(ctx, path)
		return BacklogResult{PushResult: res}, err
	}
	lock, err := tryAheadLock(spool)
	if err != nil {
		a.log().Warn("cannot use the archive-ahead lock; archiving only the requested file", "err", err)
		res, err := a.Push(ctx, path)
		return BacklogResult{PushResult: res}, err
	}
	var started bool
	if lock != nil {
		if !hasBacklog(spool, statusDir, name) {
			defer lock.Close()
			res, err := a.Push(ctx, path)
			return BacklogResult{PushResult: res}, err
		}
		if err := spawn(walDir, lock); err != nil {
			defer lock.Close()
			a.log().Warn("cannot start the background archiver; archiving only the requested file", "err", err)
			res, err := a.Push(ctx, path)
			return BacklogResult{PushResult: res}, err
		}
		lock.Close() // the archiver holds the lock through its own descriptor
		started = true
	}
	res, err := a.waitAhead(ctx, spool, path)
	res.Started = started
	return res, err
}

// waitAhead waits until the background archiver has recorded path, or has
// exited without doing so, in which case it pushes path itself.
func (a *Archiver) waitAhead(ctx context.Context, spool, path string) (BacklogResult, error) {
	start := a.now()
	rec := filepath.Join(spool, filepath.Base(path)+".json")
	delay := time.Millisecond
	for {
		if _, err := os.Stat(rec); err == nil {
			if res, ok := a.fromSpool(ctx, spool, path); ok {
				res.Waited = a.now().Sub(start)
				return res, nil
			}
		}
		lock, err := tryAheadLock(spool)
		if err != nil {
			return BacklogResult{}, fmt.Errorf("push %s: %w", filepath.Base(path), err)
		}
		if lock != nil {
			defer lock.Close()
			// The archiver has exited: it failed, or it recorded the file
			// just before it exited.
			if res, ok := a.fromSpool(ctx, spool, path); ok {
				res.Waited = a.now().Sub(start)
				return res, nil
			}
			res, err := a.Push(ctx, path)
			return BacklogResult{PushResult: res, Waited: a.now().Sub(start)}, err
		}
		if a.now().Sub(start) > aheadWaitLimit {
			return BacklogResult{}, fmt.Errorf("push %s: the background archiver (see pg_wal/%s/%s) has not archived it in %s", filepath.Base(path), SpoolDir, AheadLog, aheadWaitLimit)
		}
		select {
		case <-ctx.Done():
			return BacklogResult{}, fmt.Errorf("push %s: %w", filepath.Base(path), ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
}

// tryAheadLock takes the background archiver's lock without waiting. It
// returns nil, nil when an archiver holds it.
func tryAheadLock(spool string) (*os.File, error) {
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(spool, AheadLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return f, nil
}

// hasBacklog reports whether a file other than skip is ready and not
// recorded in the spool.
func hasBacklog(spool, statusDir, skip string) bool {
	ready, err := readyFiles(statusDir, skip)
	if err != nil {
		return false
	}
	for _, r := range ready {
		if _, err := os.Stat(filepath.Join(spool, r+".json")); err != nil {
			return true
		}
	}
	return false
}

// ArchiveAhead is the background archiver: it archives every file marked
// ready in walDir's archive_status that the spool has no record of,
// parallel at a time, and records each one once it is durable, until a scan
// finds nothing left. lock must be the spool's AheadLock, flock'ed; it is
// held until return, so calls waiting for a file know the archiver is alive.
//
// Each scan archives its timeline history files before any of its segments.
// On the first failure it stops taking new files, lets running uploads end
// and returns the error: the calls waiting for a file then find the lock
// free and archive the file themselves, reporting the failure to
// PostgreSQL.
func (a *Archiver) ArchiveAhead(ctx context.Context, walDir string, parallel int, lock *os.File) error {
	spool := filepath.Join(walDir, SpoolDir)
	statusDir := filepath.Join(walDir, "archive_status")
	if err := checkAheadLock(spool, lock); err != nil {
		return err
	}
	removeSpoolTemps(spool)
	parallel = max(parallel, 1)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ready, err := readyFiles(statusDir, "")
		if err != nil {
			return fmt.Errorf("archive ahead: %w", err)
		}
		var hist, segs []string
		for _, r := range ready {
			if _, err := os.Stat(filepath.Join(spool, r+".json")); err == nil {
				continue
			}
			if k, _ := wal.Classify(r); k == wal.KindTimelineHistory {
				hist = append(hist, r)
			} else {
				segs = append(segs, r)
			}
		}
		if len(hist)+len(segs) == 0 {
			return nil
		}
		// A timeline's segments must not become durable before the
		// .history file that makes the timeline known to a restore.
		if err := a.aheadBatch(ctx, walDir, spool, hist, parallel); err != nil {
			return err
		}
		if err := a.aheadBatch(ctx, walDir, spool, segs, parallel); err != nil {
			return err
		}
	}
}

// aheadBatch archives names with parallel workers, in order.
func (a *Archiver) aheadBatch(ctx context.Context, walDir, spool string, names []string, parallel int) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	take := func() (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if first != nil || next == len(names) {
			return "", false
		}
		next++
		return names[next-1], true
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
		}
	}
	for range min(parallel, len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, ok := take()
				if !ok {
					return
				}
				r, err := a.Push(ctx, filepath.Join(walDir, n))
				if err != nil {
					if _, serr := os.Stat(filepath.Join(walDir, "archive_status", n+".ready")); errors.Is(serr, os.ErrNotExist) {
						continue // archived by a call meanwhile and marked done
					}
					fail(err)
					return
				}
				// A record is a promise that the file is durable; Push has
				// returned, so it is.
				if err := writeSpoolRecord(spool, spoolRecord{Name: r.Name, Key: r.Key, Size: r.Size, PushedAt: a.now().UTC(),
					Stored: r.Stored, AlreadyArchived: r.AlreadyArchived, Replaced: r.Replaced}); err != nil {
					fail(err)
					return
				}
				a.log().Info("archived ahead", "file", r.Name, "size", r.Size, "stored", r.Stored, "already_archived", r.AlreadyArchived)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return fmt.Errorf("archive ahead: %w", first)
	}
	return nil
}

// checkAheadLock makes sure lock is the spool's lock file and locked.
func checkAheadLock(spool string, lock *os.File) error {
	if lock == nil {
		return errors.New("archive ahead: no lock")
	}
	got, err := lock.Stat()
	if err != nil {
		return fmt.Errorf("archive ahead: lock: %w", err)
	}
	want, err := os.Stat(filepath.Join(spool, AheadLock))
	if err != nil || !os.SameFile(got, want) {
		return fmt.Errorf("archive ahead: descriptor is not %s", filepath.Join(spool, AheadLock))
	}
	// Taking a lock this descriptor already holds succeeds; one held
	// through another descriptor does not.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("archive ahead: another archiver holds %s", want.Name())
	}
	return nil
}

// removeSpoolTemps removes records interrupted while being written. Only
// the background archiver writes records, and it holds the lock, so none is
// being written now.
func removeSpoolTemps(spool string) {
	entries, _ := os.ReadDir(spool)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			os.Remove(filepath.Join(spool, e.Name()))
		}
	}
}

// fromSpool reports whether path was archived ahead: a record of the same
// size exists and the object is still in the repository.
func (a *Archiver) fromSpool(ctx context.Context, spool, path string) (BacklogResult, bool) {
	start := a.now()
	name := filepath.Base(path)
	b, err := os.ReadFile(filepath.Join(spool, name+".json"))
	if err != nil {
		return BacklogResult{}, false
	}
	var rec spoolRecord
	fi, err := os.Stat(path)
	if err != nil {
		return BacklogResult{}, false
	}
	// The repository is the truth: a record from another repository (the
	// configuration changed) or an object deleted since must not be trusted.
	// It is removed, so that the background archiver, which skips recorded
	// files, takes the file again and this call is not left waiting.
	if json.Unmarshal(b, &rec) != nil || rec.Name != name || rec.Size != fi.Size() || rec.Key == "" {
		os.Remove(filepath.Join(spool, name+".json"))
		return BacklogResult{}, false
	}
	if _, err := a.Store.Stat(ctx, rec.Key); err != nil {
		a.log().Warn("spool record not trusted: the object is not in the repository", "file", name, "key", rec.Key, "err", err)
		os.Remove(filepath.Join(spool, name+".json"))
		return BacklogResult{}, false
	}
	return BacklogResult{FromSpool: true, PushResult: PushResult{
		Name: name, Key: rec.Key, Size: rec.Size, Stored: rec.Stored, AlreadyArchived: rec.AlreadyArchived,
		Replaced: rec.Replaced, Duration: a.now().Sub(start),
	}}, true
}

// readyFiles lists the files PostgreSQL wants archived, other than skip, in
// the order its archiver would take them: timeline history files first, then
// by name (oldest WAL first).
func readyFiles(statusDir, skip string) ([]string, error) {
	entries, err := os.ReadDir(statusDir)
	if err != nil {
		return nil, err
	}
	var hist, rest []string
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok || n == skip {
			continue
		}
		kind, err := wal.Classify(n)
		if err != nil {
			continue
		}
		if kind == wal.KindTimelineHistory {
			hist = append(hist, n)
		} else {
			rest = append(rest, n)
		}
	}
	sort.Strings(hist)
	sort.Strings(rest)
	return append(hist, rest...), nil
}

// pruneSpool deletes records of files PostgreSQL no longer wants archived
// (no .ready file): they have been marked done, so the record has served.
func pruneSpool(spool, statusDir string, log *slog.Logger) {
	entries, err := os.ReadDir(spool)
	if err != nil {
		return
	}
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue // the lock, the log, temps (the archiver removes its own)
		}
		if _, err := os.Stat(filepath.Join(statusDir, n+".ready")); errors.Is(err, os.ErrNotExist) {
			if err := os.Remove(filepath.Join(spool, e.Name())); err != nil {
				log.Warn("cannot remove spool record", "file", n, "err", err)
			}
		}
	}
}

// writeSpoolRecord does not create the spool: it exists while the
// archiver holds its lock, and an archiver outliving a removed data
// directory must not recreate part of it.
func writeSpoolRecord(spool string, rec spoolRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := filepath.Join(spool, ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// No fsync, of the record or the directory: the object was durable
	// before the record was written, so a crash can only lose a record (the
	// next call archives the file again and finds the identical copy) or
	// leave a torn one (not valid JSON, not trusted). On the fs backend that
	// halves the fsyncs per file (object and its directory remain).
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(spool, rec.Name+".json"))
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool record %s: %w", rec.Name, werr)
	}
	return nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
