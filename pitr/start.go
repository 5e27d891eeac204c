package pitr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/internal/lazyre"
)

// StartOptions say how to start a restored cluster and what to wait for.
type StartOptions struct {
	PGBin   string // directory with pg_ctl of the backup's major version
	PGData  string
	Port    int
	LogFile string
	Action  Action
	Timeout time.Duration // 0: no limit beyond ctx
}

// Outcome is where recovery stopped, as the server reported it.
type Outcome struct {
	// StopLine is the server's "recovery stopping ..." line, if it stopped
	// at a target; empty when it replayed to the end of the archive.
	StopLine string
	// LastTransaction is the "last completed transaction was at log time"
	// time, as logged.
	LastTransaction string
	RedoDone        string // the LSN of "redo done at"
	State           string // promoted, paused or shut down
}

// Log lines the server writes during targeted recovery (xlogrecovery.c,
// xlog.c). They are matched loosely: wording is stable across 13-18 but the
// LSN formatting changed in 18.
var (
	reStopping    = lazyre.New(`LOG:\s+(recovery stopping .*)`)
	reLastXact    = lazyre.New(`last completed transaction was at log time (.*)`)
	reRedoDone    = lazyre.New(`redo done at ([0-9A-F]+/[0-9A-F]+)`)
	rePaused      = lazyre.New(`pausing at the end of recovery`)
	rePromoted    = lazyre.New(`database system is ready to accept connections`)
	reRecComplete = lazyre.New(`archive recovery complete`)
	// Only this line means "stopped at the target": a failed recovery also
	// ends with "database system is shut down".
	reShutdown = lazyre.New(`shutdown at recovery target`)
	reFatal    = lazyre.New(`(?:FATAL|PANIC):\s+(.*)`)
)

// StartAndWait starts PostgreSQL on a restored data directory and follows
// its log until recovery has reached the target and the server did what
// opts.Action says, or failed. A recovery failure is returned with the
// server's own reason in one line.
func StartAndWait(ctx context.Context, opts StartOptions) (Outcome, error) {
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	pgctl := filepath.Join(opts.PGBin, "pg_ctl")
	start := exec.CommandContext(ctx, pgctl, "-D", opts.PGData, "-l", opts.LogFile, "-o", "-p "+strconv.Itoa(opts.Port), "start")
	if out, err := start.CombinedOutput(); err != nil {
		return Outcome{}, fmt.Errorf("pg_ctl start: %v: %s%s", err, strings.TrimSpace(string(out)), fatalFrom(opts.LogFile))
	}
	var out Outcome
	tick := time.NewTicker(50 * time.Millisecond) // reading a small log file is cheap; a restore waits on this
	defer tick.Stop()
	for {
		log, _ := os.ReadFile(opts.LogFile)
		out = parseRecoveryLog(log)
		switch {
		case out.State == "paused" && opts.Action == ActionPause,
			out.State == "promoted" && opts.Action != ActionShutdown,
			out.State == "shut down" && opts.Action == ActionShutdown:
			return out, nil
		}
		if !postmasterRunning(opts.PGData) {
			// Read again: the last lines may have landed after the read above.
			log, _ = os.ReadFile(opts.LogFile)
			out = parseRecoveryLog(log)
			if m := reFatal().FindAllSubmatch(log, -1); len(m) > 0 {
				return out, fmt.Errorf("recovery failed: %s", m[len(m)-1][1])
			}
			if out.State == "shut down" {
				// Asked for, or pause without hot_standby, which PostgreSQL
				// turns into shutdown.
				return out, nil
			}
			return out, fmt.Errorf("the server stopped during recovery; see %s", opts.LogFile)
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("waiting for recovery: %w (the server is still running; see %s)", ctx.Err(), opts.LogFile)
		case <-tick.C:
		}
	}
}

func parseRecoveryLog(log []byte) Outcome {
	var o Outcome
	if m := reStopping().FindSubmatch(log); m != nil {
		o.StopLine = string(bytes.TrimSpace(m[1]))
	}
	if m := reLastXact().FindSubmatch(log); m != nil {
		o.LastTransaction = string(bytes.TrimSpace(m[1]))
	}
	if m := reRedoDone().FindSubmatch(log); m != nil {
		o.RedoDone = string(m[1])
	}
	switch {
	case rePaused().Match(log):
		o.State = "paused"
	case reRecComplete().Match(log) && afterLast(log, reRecComplete(), rePromoted()):
		o.State = "promoted"
	case reShutdown().Match(log):
		o.State = "shut down"
	}
	return o
}

// afterLast reports whether b matches somewhere after the last match of a.
func afterLast(log []byte, a, b *regexp.Regexp) bool {
	ia := a.FindAllIndex(log, -1)
	if len(ia) == 0 {
		return false
	}
	return b.Match(log[ia[len(ia)-1][1]:])
}

func fatalFrom(logFile string) string {
	log, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	if m := reFatal().FindAllSubmatch(log, -1); len(m) > 0 {
		return "; server said: " + string(m[len(m)-1][1])
	}
	return ""
}

// postmasterRunning reports whether postmaster.pid names a live process.
func postmasterRunning(pgdata string) bool {
	_, ok := runningPostmaster(pgdata)
	return ok
}

// ErrNotStarted is returned by FindPGBin when no matching server binaries exist.
var ErrNotStarted = errors.New("PostgreSQL binaries not found")

// FindPGBin returns the directory holding pg_ctl for a major version: dir
// if given, else Debian's /usr/lib/postgresql/<major>/bin.
func FindPGBin(dir string, pgVersionNum int) (string, error) {
	if dir == "" {
		dir = fmt.Sprintf("/usr/lib/postgresql/%d/bin", pgVersionNum/10000)
	}
	if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err != nil {
		return "", fmt.Errorf("%w: no pg_ctl in %s for PostgreSQL %d (set --pg-bin)", ErrNotStarted, dir, pgVersionNum/10000)
	}
	return dir, nil
}

// runningPostmaster reports the PID in pgdata/postmaster.pid if that
// process exists.
func runningPostmaster(pgdata string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(pgdata, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, false
	}
	return pid, true
}
