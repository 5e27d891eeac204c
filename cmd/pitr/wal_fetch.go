package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/archive"
)

// Exit statuses of wal-fetch, per the restore_command contract.
const (
	// exitNotFound tells PostgreSQL the file is not in the archive: normal at
	// the end of WAL and for probes of future .history files.
	exitNotFound = 1
	// exitAbortRecovery is above 125, which makes PostgreSQL stop recovery
	// with a FATAL error. Used for everything that is not a definite "not
	// archived" (corrupt object, unreachable repository, bad configuration),
	// so that recovery never ends early at the wrong point.
	exitAbortRecovery = 255
	// exitTerminated is 128+SIGTERM, which PostgreSQL treats like the command
	// being killed by SIGTERM during shutdown.
	exitTerminated = 128 + 15
)

func walFetchExit(err error, signalled bool) int {
	switch {
	case signalled:
		return exitTerminated
	case errors.Is(err, archive.ErrNotArchived):
		return exitNotFound
	}
	return exitAbortRecovery
}

// walFetchArgs parses wal-fetch's command line. The prefetcher is started
// with the same arguments, so both parse them here; it is as patient with
// storage as wal-fetch (a prefetch that rides out an outage saves a direct
// fetch later).
func walFetchArgs(ctx context.Context, env *environment, name, usage string, args []string) (a *archive.Archiver, pos []string, partial string, sp *archive.Spool, err error) {
	fs := newFlagSet(env, name, usage)
	load := configFlags(fs)
	partialName := partialFlag(fs)
	if pos, err = parseInterspersed(fs, args); err != nil {
		return nil, nil, "", nil, err
	}
	if len(pos) != 2 {
		return nil, nil, "", nil, fmt.Errorf("%w: want a WAL file name (%%f) and a destination path (%%p), got %d arguments", errUsage, len(pos))
	}
	cfg, err := load()
	if err != nil {
		return nil, nil, "", nil, err
	}
	ahead, err := parseFetchAhead(cfg.FetchAhead)
	if err != nil {
		return nil, nil, "", nil, err
	}
	if a, err = newArchiver(ctx, env, func() (Config, error) { return cfg, nil }, fetchRetries); err != nil {
		return nil, nil, "", nil, err
	}
	if sp = archive.OpenSpool(a.DataDir, a.ControlFile, pos[1], ahead); sp != nil {
		sp.AheadBytes = fetchAheadBytes(cfg.FetchAhead)
	}
	return a, pos, *partialName, sp, nil
}

func runWALFetch(ctx context.Context, env *environment, args []string) error {
	a, pos, partial, sp, err := walFetchArgs(ctx, env, "wal-fetch", "wal-fetch [flags] WAL_NAME DEST_PATH   (restore_command = 'pitr wal-fetch %f %p')", args)
	if err != nil {
		return err
	}
	res, err := a.FetchPrefetched(ctx, pos[0], pos[1], sp, func() {
		if err := startPrefetcher(sp, args); err != nil {
			env.log.Warn("cannot start the prefetcher; fetching one segment at a time", "err", err)
		}
	})
	if errors.Is(err, archive.ErrNotArchived) && partial != "" && pos[0] == partial {
		res, err = fetchPartial(ctx, env, a, pos[0], pos[1])
	}
	if errors.Is(err, archive.ErrNotArchived) {
		// Expected at the end of WAL and for .history probes: not an error
		// worth alarming anyone in the server log.
		env.log.Info("not in the archive", "file", pos[0])
		return reportedError{err}
	}
	if err != nil {
		return err
	}
	if res.Prefetched {
		env.log.Info("fetched", "file", res.Name, "size", res.Size, "prefetched", true, "duration", res.Duration.Round(1e5))
		return nil
	}
	env.log.Info("fetched", "file", res.Name, "size", res.Size, "codec", res.Codec.String(), "duration", res.Duration.Round(1e5))
	return nil
}

// defaultFetchAhead: 8 segments (128 MiB at the default size) keep replay
// fed through a slow patch of storage without much disk. With larger
// segments the default keeps fewer, within defaultFetchAheadBytes (at
// least one): pgBackRest's archive-get queue is 128 MiB by default too.
const (
	defaultFetchAhead      = 8
	defaultFetchAheadBytes = 128 << 20
)

// fetchAheadBytes is the spool's byte budget: the default's, unless
// fetch_ahead names a number of segments, which is then kept whatever
// their size.
func fetchAheadBytes(v string) int64 {
	if strings.TrimSpace(v) == "" {
		return defaultFetchAheadBytes
	}
	return 0
}

func parseFetchAhead(v string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return defaultFetchAhead, nil
	case "off", "0", "false":
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 || n > 256 {
		return 0, fmt.Errorf("fetch_ahead %q is not off or a number from 0 to 256", v)
	}
	return n, nil
}

// startPrefetcher starts `pitr wal-prefetch` with wal-fetch's own arguments
// (so the same configuration), detached: its own session, so signals to
// PostgreSQL's process group do not reach it, and no stdio shared with the
// server, so PostgreSQL's system() call returns as soon as wal-fetch exits.
func startPrefetcher(sp *archive.Spool, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.Mkdir(sp.Dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(sp.Dir, archive.SpoolLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	closeInheritedOnExec()
	cmd := exec.Command(exe, append([]string{"wal-prefetch"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// prefetchIdleEnv overrides how long the prefetcher waits for a request
// before it exits and removes its spool (tests; default 60 s).
const prefetchIdleEnv = "PITR_PREFETCH_IDLE"

// prefetchRusageEnv names a file to which the prefetcher appends its CPU
// time and peak RSS when it exits, one JSON line (benchmarks: the detached
// process is nobody's child, so its usage shows up nowhere else).
const prefetchRusageEnv = "PITR_PREFETCH_RUSAGE"

func appendRusage(path string) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "{\"pid\":%d,\"user_s\":%.3f,\"sys_s\":%.3f,\"max_rss_kb\":%d}\n", os.Getpid(),
		time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds(), ru.Maxrss)
}

// runWALPrefetch is the background prefetcher. It takes wal-fetch's
// arguments, finds the same spool, and keeps it filled until recovery ends
// or nothing is asked for a while. Its log goes to the spool's log file.
func runWALPrefetch(ctx context.Context, env *environment, args []string) error {
	// The .partial flag wal-fetch passes on is ignored: a .partial is never prefetched.
	a, _, _, sp, err := walFetchArgs(ctx, env, "wal-prefetch", "wal-prefetch [wal-fetch's flags and arguments]", args)
	if err != nil {
		return err
	}
	if sp == nil {
		return nil // not in recovery any more, or prefetching is off
	}
	var opts archive.PrefetchOptions
	if v := os.Getenv(prefetchIdleEnv); v != "" {
		if opts.Idle, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("%s: %w", prefetchIdleEnv, err)
		}
	}
	lowerOwnPriority(prefetcherNice)
	env.log.Debug("prefetcher started", "pid", os.Getpid(), "ahead", sp.Ahead)
	if p := os.Getenv(prefetchRusageEnv); p != "" {
		defer appendRusage(p)
	}
	err = a.Prefetch(ctx, sp, opts)
	if errors.Is(err, archive.ErrPrefetcherRunning) {
		return nil
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// closeInheritedOnExec marks every descriptor above stderr close-on-exec.
// PostgreSQL does not open all its files that way, so restore_command
// inherits some (with logging_collector, the log pipe); Go passes such
// descriptors on to a child, and a prefetcher that outlives recovery must
// not hold them open. wal-fetch itself exits right after, so the flag
// changes nothing for it.
func closeInheritedOnExec() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// prefetcherNice is the prefetcher's nice value. Replay is the critical
// path: PostgreSQL's startup process applies WAL on one core and stops for
// every restore_command, and the prefetcher only has to stay ahead of it.
const prefetcherNice = 10

// lowerOwnPriority sets every thread of this process to nice n (Linux keeps
// a nice value per thread, and a thread the runtime starts later inherits
// it from the thread that starts it). A thread started during a pass by a
// thread not yet set keeps the old value, and shows in /proc a moment after
// it copied it, so passes repeat, a millisecond apart, until one finds the
// same threads as the one before: every thread then has been set, and
// threads started afterwards inherit n. Failures are ignored: the priority
// is an optimisation.
func lowerOwnPriority(n int) {
	var seen []string
	for i := range 20 {
		if i > 0 {
			time.Sleep(time.Millisecond)
		}
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		tids := make([]string, len(entries))
		for j, e := range entries {
			tids[j] = e.Name()
		}
		if slices.Equal(tids, seen) {
			return
		}
		for _, t := range tids {
			if tid, err := strconv.Atoi(t); err == nil {
				_ = syscall.Setpriority(syscall.PRIO_PROCESS, tid, n)
			}
		}
		seen = tids
	}
}
