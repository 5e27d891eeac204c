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
}

// BacklogResult adds what a backlog push did besides the requested file.
type BacklogResult struct {
	PushResult
	FromSpool bool     // the file had been archived ahead by an earlier call
	Ahead     []string // other .ready files archived by this call
	AheadErrs int      // of those, how many failed (PostgreSQL will call for them)
}

// PushBacklog archives the file at path like Push and, when path is in a
// data directory's pg_wal, also archives up to parallel other files that
// PostgreSQL has marked ready, concurrently, so that a backlog drains at the
// speed of several cores instead of one call at a time.
//
// It never creates, renames or deletes anything in archive_status (that is
// PostgreSQL's bookkeeping); it only reads it. Success for path is reported
// only once path is durably stored, by this call or, per the spool, by an
// earlier one and still present in the repository.
func (a *Archiver) PushBacklog(ctx context.Context, path string, parallel int) (BacklogResult, error) {
	walDir := filepath.Dir(path)
	statusDir := filepath.Join(walDir, "archive_status")
	if parallel <= 0 || filepath.Base(walDir) != "pg_wal" || !isDir(statusDir) {
		res, err := a.Push(ctx, path)
		return BacklogResult{PushResult: res}, err
	}
	name := filepath.Base(path)
	spool := filepath.Join(walDir, SpoolDir)

	pruneSpool(spool, statusDir, a.log())
	if res, ok := a.fromSpool(ctx, spool, path); ok {
		return res, nil
	}
	ready, err := readyFiles(statusDir, name)
	if err != nil {
		a.log().Warn("cannot read archive_status; archiving only the requested file", "err", err)
		ready = nil
	}
	var ahead []string
	for _, r := range ready {
		if len(ahead) == parallel {
			break
		}
		if _, err := os.Stat(filepath.Join(spool, r+".json")); err == nil {
			continue // already archived ahead
		}
		ahead = append(ahead, r)
	}

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		res     BacklogResult
		mainErr error
	)
	push := func(p string, isMain bool) {
		defer wg.Done()
		r, err := a.Push(ctx, p)
		if err == nil {
			// A record is a promise that the file is durable; Push has
			// returned, so it is. If writing the record fails, the next call
			// simply pushes again and finds an identical copy.
			if werr := writeSpoolRecord(spool, spoolRecord{Name: r.Name, Key: r.Key, Size: r.Size, PushedAt: a.now().UTC()}); werr != nil {
				a.log().Warn("cannot record archived file in the spool", "file", r.Name, "err", werr)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case isMain:
			res.PushResult, mainErr = r, err
		case err != nil:
			res.AheadErrs++
			a.log().Warn("archiving ahead failed; PostgreSQL will ask for it again", "file", filepath.Base(p), "err", err)
		default:
			res.Ahead = append(res.Ahead, r.Name)
		}
	}
	// History files first: a timeline's segments must not become durable
	// before the .history file that makes the timeline known to a restore.
	var histAhead, segAhead []string
	for _, r := range ahead {
		if k, _ := wal.Classify(r); k == wal.KindTimelineHistory {
			histAhead = append(histAhead, r)
		} else {
			segAhead = append(segAhead, r)
		}
	}
	if k, _ := wal.Classify(name); k == wal.KindTimelineHistory {
		segAhead = nil // PostgreSQL asks for them once the history is done
	}
	wg.Add(1 + len(histAhead))
	go push(path, true)
	for _, r := range histAhead {
		go push(filepath.Join(walDir, r), false)
	}
	wg.Wait()
	wg.Add(len(segAhead))
	for _, r := range segAhead {
		go push(filepath.Join(walDir, r), false)
	}
	wg.Wait()
	sort.Strings(res.Ahead)
	return res, mainErr
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
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.Name != name || rec.Size != fi.Size() || rec.Key == "" {
		return BacklogResult{}, false
	}
	// The repository is the truth: a record from another repository (the
	// configuration changed) or an object deleted since must not be trusted.
	if _, err := a.Store.Stat(ctx, rec.Key); err != nil {
		return BacklogResult{}, false
	}
	return BacklogResult{FromSpool: true, PushResult: PushResult{
		Name: name, Key: rec.Key, Size: rec.Size, AlreadyArchived: true, Duration: a.now().Sub(start),
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
			if strings.HasPrefix(e.Name(), ".tmp-") {
				os.Remove(filepath.Join(spool, e.Name())) // a record interrupted while written
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(statusDir, n+".ready")); errors.Is(err, os.ErrNotExist) {
			if err := os.Remove(filepath.Join(spool, e.Name())); err != nil {
				log.Warn("cannot remove spool record", "file", n, "err", err)
			}
		}
	}
}

func writeSpoolRecord(spool string, rec spoolRecord) error {
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return err
	}
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
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
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
	return syncDir(spool)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
