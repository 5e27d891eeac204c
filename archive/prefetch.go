package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/internal/durable"
	"github.com/pitr-dev/pitr/repo"
)

// PrefetchDir is the prefetch spool of wal-fetch, inside pg_wal. PostgreSQL
// only ever looks at WAL file names in pg_wal (and archive_status), and
// pg_basebackup copies none of pg_wal's contents, so the spool is invisible
// to recovery and never travels into a backup.
//
// Contents:
//
//	lock                         flock(2)ed by the one running prefetcher
//	wanted                       JSON: the segment wal-fetch was last asked for
//	<system id>_<segment name>   a downloaded, verified, synced segment
//	.<system id>_<name>.pitr-tmp-*  a download in progress (never trusted)
//	prefetch.log                 the prefetcher's log
//
// The system identifier in every name means a spool left behind by a
// recovery of another database system is never served.
const PrefetchDir = "pitr_prefetch"

const (
	spoolLock   = "lock"
	spoolWanted = "wanted"
	// SpoolLog is where cmd/pitr sends the prefetcher's output.
	SpoolLog = "prefetch.log"
)

// ErrPrefetcherRunning: another prefetcher holds the spool's lock.
var ErrPrefetcherRunning = errors.New("a prefetcher is already running for this spool")

// Spool is the prefetch spool of one data directory.
type Spool struct {
	Dir     string // <data directory>/pg_wal/pitr_prefetch
	DataDir string
	System  repo.SystemID // from the data directory's global/pg_control
	Ahead   int           // segments to keep downloaded ahead of the last request
	// AheadBytes, when set, lowers Ahead for large segments to the number
	// that fits in this many bytes, never below one: eight 16 MiB segments
	// are 128 MiB in pg_wal, eight 1 GiB ones (initdb --wal-segsize=1024)
	// would be 8 GiB on a disk sized for the server's own WAL.
	AheadBytes int64
}

// ahead is how many segments of this size the spool keeps ahead.
func (s *Spool) ahead(size wal.SegmentSize) int {
	if s.AheadBytes <= 0 || s.Ahead <= 1 {
		return s.Ahead
	}
	return min(s.Ahead, max(1, int(s.AheadBytes/int64(size))))
}

// OpenSpool returns the spool for a restore_command destination, or nil when
// prefetching does not apply: dest is not in the data directory's pg_wal, the
// data directory is not in recovery (a wal-fetch run by hand in a live
// cluster's directory must not leave a process behind), or ahead is 0.
func OpenSpool(dataDir, controlFile, dest string, ahead int) *Spool {
	if ahead <= 0 || dataDir == "" || controlFile == "" {
		return nil
	}
	walDir, err := filepath.Abs(filepath.Join(dataDir, "pg_wal"))
	if err != nil {
		return nil
	}
	a, err1 := os.Stat(walDir)
	b, err2 := os.Stat(filepath.Dir(dest))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		return nil
	}
	id, err := wal.ReadControlSystemID(controlFile)
	if err != nil {
		return nil
	}
	dd, _ := filepath.Abs(dataDir)
	sp := &Spool{Dir: filepath.Join(walDir, PrefetchDir), DataDir: dd, System: repo.SystemID(id), Ahead: ahead}
	if !sp.inRecovery() {
		return nil
	}
	return sp
}

// SeedPrefetch records, in the prefetch spool of a restored data directory
// before its server starts, the segment recovery will ask for first. The
// first wal-fetch call then finds that segment in the prefetcher's window
// and starts the prefetcher before fetching it, so the next segments are
// downloaded while the first one is; without the seed it starts the
// prefetcher only after its own fetch, and the calls right after it, which
// come quickly (the first segments of a backup hold little WAL), fetch for
// themselves. It is a hint like every wanted file: nothing depends on it.
func SeedPrefetch(dataDir string, system repo.SystemID, first string, segSize uint64) error {
	size, err := wal.NewSegmentSize(segSize)
	if err != nil {
		return err
	}
	if _, err := size.ParseFileName(first); err != nil {
		return err
	}
	sp := &Spool{Dir: filepath.Join(dataDir, "pg_wal", PrefetchDir), DataDir: dataDir, System: system}
	return sp.writeWanted(wanted{System: system, Name: first, SegSize: segSize})
}

// inRecovery: PostgreSQL removes both signal files when recovery ends, which
// is the prefetcher's cue to clean up without waiting to be idle.
func (s *Spool) inRecovery() bool {
	for _, f := range []string{"recovery.signal", "standby.signal"} {
		if _, err := os.Stat(filepath.Join(s.DataDir, f)); err == nil {
			return true
		}
	}
	return false
}

func (s *Spool) path(name string) string {
	return filepath.Join(s.Dir, s.System.String()+"_"+name)
}

// wanted is what wal-fetch tells the prefetcher.
type wanted struct {
	System  repo.SystemID `json:"system_identifier"`
	Name    string        `json:"name"`
	SegSize uint64        `json:"segment_size"`
}

func (s *Spool) readWanted() (wanted, bool) {
	b, err := os.ReadFile(filepath.Join(s.Dir, spoolWanted))
	if err != nil {
		return wanted{}, false
	}
	var w wanted
	if json.Unmarshal(b, &w) != nil || w.System != s.System {
		return wanted{}, false
	}
	if _, err := wal.NewSegmentSize(w.SegSize); err != nil {
		return wanted{}, false
	}
	if _, err := wal.SegmentSize(w.SegSize).ParseFileName(w.Name); err != nil {
		return wanted{}, false
	}
	return w, true
}

// writeWanted replaces the wanted file atomically. It is a hint, so it is
// not synced: after a crash the worst case is a prefetch aimed wrong.
func (s *Spool) writeWanted(w wanted) error {
	if err := os.Mkdir(s.Dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.Dir, ".wanted-"+strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.Dir, spoolWanted)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// window lists the segments the prefetcher keeps: the wanted one (which
// wal-fetch may be taking from the spool right now) and the ones after it
// (Ahead, or fewer within AheadBytes), on the same timeline.
func (s *Spool) window(w wanted) []string {
	size := wal.SegmentSize(w.SegSize)
	seg, err := size.ParseFileName(w.Name)
	if err != nil {
		return nil
	}
	out := []string{w.Name}
	for range s.ahead(size) {
		seg = size.Next(seg)
		out = append(out, size.FileName(seg))
	}
	return out
}

// lockFile takes the spool's lock without waiting. The lock file is removed
// with the spool, so after flock succeeds the path must still name the file
// we locked; otherwise a second prefetcher could lock a new file beside us.
func (s *Spool) lockFile() (*os.File, error) {
	p := filepath.Join(s.Dir, spoolLock)
	for range 3 {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, ErrPrefetcherRunning
			}
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		fi, err1 := f.Stat()
		pi, err2 := os.Stat(p)
		if err1 == nil && err2 == nil && os.SameFile(fi, pi) {
			return f, nil
		}
		f.Close()
	}
	return nil, ErrPrefetcherRunning
}

// Running reports whether a prefetcher holds the spool's lock.
func (s *Spool) Running() bool {
	f, err := os.Open(filepath.Join(s.Dir, spoolLock))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// take moves a prefetched segment to dest. Only final names are trusted
// (the prefetcher renames a file there only after its checksum, size and
// page header were verified and it was synced); the page header is read
// again so that a file that is not this system's segment, or of the wrong
// size, is never handed to PostgreSQL.
func (s *Spool) take(name, dest string) (int64, bool) {
	p := s.path(name)
	f, err := os.Open(p)
	if err != nil {
		return 0, false
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, false
	}
	h, _, err := readSegmentHeader(f, name, fi.Size())
	f.Close()
	if err != nil || repo.SystemID(h.SystemID) != s.System {
		os.Remove(p)
		return 0, false
	}
	if err := os.Rename(p, dest); err != nil {
		return 0, false
	}
	if err := durable.SyncDir(filepath.Dir(dest)); err != nil {
		// PostgreSQL durable_renames the file right after; a failed
		// directory sync here is not worth failing the fetch for, but the
		// file is already at dest, so it is success either way.
		return fi.Size(), true
	}
	return fi.Size(), true
}

// inFlight reports the size of a download of name in progress, if any.
func (s *Spool) inFlight(name string) (int64, bool) {
	m, _ := filepath.Glob(filepath.Join(s.Dir, "."+s.System.String()+"_"+name+".pitr-tmp-*"))
	if len(m) == 0 {
		return 0, false
	}
	fi, err := os.Stat(m[0])
	if err != nil {
		return 0, false
	}
	return fi.Size(), true
}

// RemoveStaleSpool removes the prefetch spool of a data directory that is
// not in recovery and whose prefetcher is gone: one killed before it could
// clean up (a crash at the end of recovery) would otherwise leave up to
// fetch_ahead+1 segments in pg_wal for good. archive-push calls it, as it
// runs in every cluster that archives. It reports whether it removed one.
func RemoveStaleSpool(dataDir string) (bool, error) {
	sp := &Spool{Dir: filepath.Join(dataDir, "pg_wal", PrefetchDir), DataDir: dataDir}
	if _, err := os.Lstat(sp.Dir); err != nil || sp.inRecovery() {
		return false, nil
	}
	lock, err := sp.lockFile()
	if err != nil {
		return false, nil // a prefetcher is still finishing; it cleans up itself
	}
	defer lock.Close()
	return true, sp.Remove()
}

// Remove deletes the spool and everything in it.
func (s *Spool) Remove() error { return os.RemoveAll(s.Dir) }

// Prefetch timing: how long wal-fetch waits for a download of its segment
// that the prefetcher is running, as long as it makes progress.
var (
	inFlightStall = 5 * time.Second
	inFlightMax   = 2 * time.Minute
)

// FetchPrefetched is Fetch with the prefetch spool sp (nil: plain Fetch).
// A segment the prefetcher has ready is moved into dest without touching the
// repository; otherwise the segment is fetched directly, exactly like Fetch,
// so the result and its errors never depend on the prefetcher. Either way
// the prefetcher is told what was asked for, and start is called when no
// prefetcher is running (it should start one, detached).
//
// Only segments go through the spool: .history, .partial and .backup files,
// and segments outside the prefetcher's window (the first request, a restart
// of recovery at an earlier segment, another timeline), are fetched directly
// and re-aim the prefetcher once fetched.
func (a *Archiver) FetchPrefetched(ctx context.Context, name, dest string, sp *Spool, start func()) (FetchResult, error) {
	kind, err := wal.Classify(name)
	if sp == nil || err != nil || kind != wal.KindSegment {
		return a.Fetch(ctx, name, dest)
	}
	if err := CheckFetchDest(dest, a.DataDir != ""); err != nil {
		return FetchResult{Name: name}, fmt.Errorf("fetch %s: %w", name, err)
	}
	t0 := a.now()
	prev, ok := sp.readWanted()
	inWindow := false
	if ok {
		for _, n := range sp.window(prev) {
			if n == name {
				inWindow = true
			}
		}
	}
	ensure := func() {
		if !sp.Running() {
			start()
		}
	}
	if inWindow {
		if err := sp.writeWanted(wanted{System: sp.System, Name: name, SegSize: prev.SegSize}); err != nil {
			a.log().Debug("cannot tell the prefetcher", "err", err)
		}
		ensure()
		if res, ok := a.takeWaiting(ctx, sp, name, dest, t0); ok {
			return res, nil
		}
	}
	res, err := a.Fetch(ctx, name, dest)
	if err != nil || inWindow {
		return res, err
	}
	if err := sp.writeWanted(wanted{System: sp.System, Name: name, SegSize: uint64(res.Size)}); err != nil {
		a.log().Debug("cannot tell the prefetcher", "err", err)
		return res, nil
	}
	ensure()
	return res, nil
}

// takeWaiting takes name from the spool, waiting for the prefetcher when it
// is downloading exactly that segment and making progress: a second download
// of the same segment would only compete with it.
func (a *Archiver) takeWaiting(ctx context.Context, sp *Spool, name, dest string, t0 time.Time) (FetchResult, bool) {
	var lastSize int64 = -1
	lastProgress := time.Now()
	for {
		if size, ok := sp.take(name, dest); ok {
			return FetchResult{Name: name, Size: size, Prefetched: true, Duration: a.now().Sub(t0)}, true
		}
		size, ok := sp.inFlight(name)
		if !ok || !sp.Running() {
			return FetchResult{}, false
		}
		if size != lastSize {
			lastSize, lastProgress = size, time.Now()
		}
		if time.Since(lastProgress) > inFlightStall || a.now().Sub(t0) > inFlightMax {
			return FetchResult{}, false
		}
		select {
		case <-ctx.Done():
			return FetchResult{}, false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// PrefetchOptions tune the prefetcher; zero values mean the defaults.
type PrefetchOptions struct {
	Idle    time.Duration // exit (and remove the spool) after no request for this long; default 60 s
	Workers int           // concurrent downloads; default half the CPUs, 2 to 8
	Poll    time.Duration // how often the wanted file is read; default 20 ms
}

// Prefetch runs the prefetcher of sp until recovery ends, no segment was
// asked for in opts.Idle, or ctx is cancelled. It keeps sp.Ahead segments
// (fewer within sp.AheadBytes) after the last wanted one downloaded and
// verified in the spool (at most that many plus one files, downloads in
// progress included) and deletes the rest.
// It stops going ahead at the first segment the repository does not have,
// and tries again when wal-fetch asks for something new. When it exits
// because recovery ended or it was idle, it removes the spool.
//
// Failures are logged, never returned for a single segment: wal-fetch
// fetches directly whatever is not ready.
func (a *Archiver) Prefetch(ctx context.Context, sp *Spool, opts PrefetchOptions) error {
	if opts.Idle <= 0 {
		opts.Idle = 60 * time.Second
	}
	if opts.Workers <= 0 {
		// Decoding, hashing and syncing a segment is about one core's work,
		// and replay needs one core of its own: half the CPUs, at least 2
		// so that a storage round trip overlaps with the other's work.
		opts.Workers = min(max(2, runtime.NumCPU()/2), 8)
	}
	if opts.Poll <= 0 {
		opts.Poll = 20 * time.Millisecond
	}
	if err := os.Mkdir(sp.Dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("prefetch: %w", err)
	}
	lock, err := sp.lockFile()
	if err != nil {
		return fmt.Errorf("prefetch: %w", err)
	}
	defer lock.Close()

	m, err := repo.ReadMarker(ctx, a.Store)
	if err != nil {
		return fmt.Errorf("prefetch: %w", err)
	}
	if m.SystemIdentifier != sp.System {
		return fmt.Errorf("prefetch: %w", &repo.ForeignSystemError{Repository: m.SystemIdentifier, Got: sp.System})
	}

	type done struct {
		name string
		err  error
	}
	var (
		results  = make(chan done)
		inflight = map[string]context.CancelFunc{}
		cur      wanted
		haveCur  bool
		changed  = time.Now()
		end      string    // first name of the window the repository lacks
		pause    time.Time // after a failure, no new downloads until then
		tidy     = true
	)
	stopAll := func() {
		for _, c := range inflight {
			c()
		}
		for range inflight {
			<-results
		}
	}
	// Downloads in progress of a killed prefetcher are stale: we hold the lock.
	sp.sweep(nil, true)
	log := a.log()
	tick := time.NewTicker(opts.Poll)
	defer tick.Stop()
	for {
		if !sp.inRecovery() {
			stopAll()
			log.Debug("recovery ended; removing the prefetch spool")
			return sp.Remove()
		}
		if w, ok := sp.readWanted(); ok && (!haveCur || w != cur) {
			cur, haveCur, changed, end, tidy = w, true, time.Now(), "", true
			pause = time.Time{}
		}
		if len(inflight) == 0 && time.Since(changed) > opts.Idle {
			log.Debug("no request for a while; removing the prefetch spool", "idle", opts.Idle)
			return sp.Remove()
		}
		var win []string
		if haveCur {
			win = sp.window(cur)
		}
		keep := map[string]bool{}
		for _, n := range win {
			keep[n] = true
		}
		for n, c := range inflight {
			if !keep[n] {
				c()
			}
		}
		if tidy {
			sp.sweep(keep, false)
			tidy = false
		}
		if len(win) > 1 && time.Now().After(pause) {
			for _, n := range win[1:] {
				if len(inflight) >= opts.Workers || (end != "" && n >= end) {
					break
				}
				if _, busy := inflight[n]; busy {
					continue
				}
				if _, err := os.Stat(sp.path(n)); err == nil {
					continue
				}
				fctx, cancel := context.WithCancel(ctx)
				inflight[n] = cancel
				go func(n string) {
					_, err := a.fetchFrom(fctx, a.now(), sp.System, wal.KindSegment, n, sp.path(n))
					results <- done{n, err}
				}(n)
			}
		}
		select {
		case <-ctx.Done():
			stopAll()
			return ctx.Err()
		case d := <-results:
			inflight[d.name]()
			delete(inflight, d.name)
			switch {
			case d.err == nil:
				log.Debug("prefetched", "file", d.name)
				if !keep[d.name] {
					tidy = true // aimed elsewhere while it downloaded
				}
			case errors.Is(d.err, ErrNotArchived):
				if end == "" || d.name < end {
					end = d.name
				}
				log.Debug("end of the archive", "file", d.name)
			case errors.Is(d.err, context.Canceled) && ctx.Err() == nil:
			default:
				log.Warn("prefetch failed; wal-fetch will fetch it directly", "file", d.name, "err", d.err)
				pause = time.Now().Add(time.Second)
			}
		case <-tick.C:
		}
	}
}

// sweep deletes spool entries: segments not in keep (nil keeps none) and,
// with temps, downloads in progress.
func (s *Spool) sweep(keep map[string]bool, temps bool) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return
	}
	prefix := s.System.String() + "_"
	for _, e := range entries {
		n := e.Name()
		switch {
		case n == spoolLock || n == spoolWanted || n == SpoolLog || strings.HasPrefix(n, ".wanted-"):
		case strings.HasPrefix(n, "."):
			if temps {
				os.Remove(filepath.Join(s.Dir, n))
			}
		case strings.HasPrefix(n, prefix) && keep[n[len(prefix):]]:
		default:
			os.Remove(filepath.Join(s.Dir, n))
		}
	}
}
