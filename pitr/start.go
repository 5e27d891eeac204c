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

	"github.com/pitr-dev/pitr/internal/durable"
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
	// FastPromote, with Action promote, has recovery pause at the target
	// and promotes the paused server (pg_ctl promote) instead of letting
	// recovery_target_action = 'promote' end it. PostgreSQL ends a
	// recovery that stops at its target with an end-of-recovery
	// checkpoint it waits for, after any restartpoint in progress; a
	// promotion writes an end-of-recovery record and opens at once, the
	// way a standby is promoted, and checkpoints afterwards. The restored
	// server is the same either way; only the wait differs (0.6 s
	// against about 0.1 s in the benchmark's restore).
	FastPromote bool
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
	// PromotedAtPause: pitr promoted the server where recovery paused at
	// the target (StartOptions.FastPromote).
	PromotedAtPause bool
}

// Log lines the server writes during targeted recovery (xlogrecovery.c,
// xlog.c). They are matched loosely: wording is stable across 13-18 but the
// LSN formatting changed in 18.
var (
	reStopping    = lazyre.New(`LOG:\s+(recovery stopping .*)`)
	reLastXact    = lazyre.New(`last completed transaction was at log time (.*)`)
	reRedoDone    = lazyre.New(`redo done at ([0-9A-F]+/[0-9A-F]+)`)
	rePaused      = lazyre.New(`pausing at the end of recovery`)
	rePromoteReq  = lazyre.New(`received promote request`)
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
	fast := false
	if opts.FastPromote && opts.Action == ActionPromote {
		var err error
		if fast, err = pauseToPromote(ctx, opts); err != nil {
			return Outcome{}, err
		}
	}
	out, err := startAndFollow(ctx, opts, fast)
	if err == nil && fast && out.State == "shut down" {
		// The server stopped at the target instead of pausing, which
		// PostgreSQL does when it cannot pause (hot standby off, or, in
		// some versions, never active). Recovery restarts from its last
		// restartpoint and promotes the usual way.
		if err := setTargetAction(opts.PGData, ActionPause, ActionPromote, "pitr: the server could not pause at the target"); err != nil {
			return out, err
		}
		return startAndFollow(ctx, opts, false)
	}
	return out, err
}

// startAndFollow starts the server and follows the log it writes from now
// on. With promoteAtPause, a server paused at the end of recovery is
// promoted.
func startAndFollow(ctx context.Context, opts StartOptions, promoteAtPause bool) (Outcome, error) {
	readLog := newLogFollower(opts.LogFile).read
	pgctl := filepath.Join(opts.PGBin, "pg_ctl")
	// pg_ctl start waits until the server accepts connections, read-only
	// ones included, for 60 s by default (PGCTLTIMEOUT) and then fails
	// while the server goes on: a long way to consistency, or a whole
	// recovery without hot standby, takes longer. The wait is ours (ctx,
	// opts.Timeout), so pg_ctl's is made long enough not to end first.
	wait := 100 * 24 * time.Hour
	if opts.Timeout > 0 {
		wait = opts.Timeout + time.Second
	}
	start := exec.CommandContext(ctx, pgctl, "-D", opts.PGData, "-l", opts.LogFile, "-o", "-p "+strconv.Itoa(opts.Port),
		"-t", strconv.Itoa(int(wait.Seconds())), "start")
	if out, err := start.CombinedOutput(); err != nil {
		return Outcome{}, fmt.Errorf("pg_ctl start: %v: %s%s", err, oneLine(out), fatalIn(readLog()))
	}
	promote := func() error {
		// -W: the log says when it is done; pg_ctl would poll pg_control
		// every 100 ms for the same answer.
		b, err := exec.CommandContext(ctx, pgctl, "-D", opts.PGData, "-W", "promote").CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_ctl promote: %v: %s", err, oneLine(b))
		}
		return nil
	}
	// The promotion is requested now, while replay runs: an archive
	// recovery that is not a standby looks for a promotion request only
	// where it pauses, so replay still runs to the target, and there the
	// pause ends at once. Requested after the pause began, it would wait
	// for the pause's next check, a second later. If this one is lost (a
	// crash restart forgets it), the pause gets another.
	var early bool
	if promoteAtPause {
		early = promote() == nil
	}
	var out Outcome
	var pausedSince time.Time
	latePromote := false
	tick := time.NewTicker(50 * time.Millisecond) // reading a small log file is cheap; a restore waits on this
	defer tick.Stop()
	for {
		lines := readLog()
		out = parseRecoveryLog(lines)
		switch {
		case out.State == "promoted" && promoteAtPause && out.StopLine == "":
			// Never expected: the request ended recovery before the target.
			return out, fmt.Errorf("the server promoted without reaching the recovery target (no \"recovery stopping\" line, redo done at %s); see %s", orNone(out.RedoDone), opts.LogFile)
		case out.State == "paused" && opts.Action == ActionPause,
			out.State == "promoted" && opts.Action != ActionShutdown,
			out.State == "shut down" && opts.Action == ActionShutdown:
			out.PromotedAtPause = out.State == "promoted" && promoteAtPause
			return out, nil
		case out.State == "paused" && promoteAtPause && !latePromote && !afterLast(lines, rePaused(), rePromoteReq()):
			// Paused, and the server has not taken a promotion request
			// (once it has, ending recovery can take a while: history
			// files through restore_command, the new timeline's first
			// segment; a second request would only race with it).
			if pausedSince.IsZero() {
				pausedSince = time.Now()
			}
			if !early || time.Since(pausedSince) > 3*time.Second {
				if err := promote(); err != nil {
					return out, fmt.Errorf("%w (the server is paused at the target)", err)
				}
				latePromote = true
			}
		}
		if !postmasterRunning(opts.PGData) {
			// Read again: the last lines may have landed after the read above.
			lines = readLog()
			out = parseRecoveryLog(lines)
			if m := reFatal().FindAllSubmatch(lines, -1); len(m) > 0 {
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
			hint := ""
			if promoteAtPause && !early {
				hint = "; it pauses at the target, where pg_ctl promote ends recovery"
			}
			return out, fmt.Errorf("waiting for recovery: %w (the server is still running%s; see %s)", ctx.Err(), hint, opts.LogFile)
		case <-tick.C:
		}
	}
}

// pauseToPromote makes a restored server pause at its target instead of
// promoting itself (see StartOptions.FastPromote), when it can pause:
// PostgreSQL turns pause into shutdown when hot_standby is off. It reports
// whether it did; a data directory it does not recognise is left alone.
func pauseToPromote(ctx context.Context, opts StartOptions) (bool, error) {
	conf, err := os.ReadFile(filepath.Join(opts.PGData, "postgresql.auto.conf"))
	if err != nil {
		return false, nil
	}
	lines := strings.Split(string(conf), "\n")
	if _, action, ok := lastSetting(lines, "recovery_target_action"); !ok || action != string(ActionPromote) {
		return false, nil // no target (latest), or not what pitr restore wrote
	}
	if _, target, _ := lastSetting(lines, "recovery_target"); target == "immediate" {
		// Recovery stops where it becomes consistent, which is where
		// pg_ctl start returns: the pause would begin before the request
		// and wait its second, for an end-of-recovery checkpoint of
		// the little WAL the backup itself wrote.
		return false, nil
	}
	// The server's own reading of its configuration, includes and all.
	b, err := exec.CommandContext(ctx, filepath.Join(opts.PGBin, "postgres"), "-C", "hot_standby", "-D", opts.PGData).Output()
	if err != nil || strings.TrimSpace(string(b)) != "on" {
		return false, nil
	}
	if err := setTargetAction(opts.PGData, ActionPromote, ActionPause, "pitr: promoted by pitr once paused at the target"); err != nil {
		return false, err
	}
	return true, nil
}

// setTargetAction rewrites the last recovery_target_action line of
// postgresql.auto.conf from one value to another, with a comment saying
// why; any other value is an error (someone else's setting).
func setTargetAction(pgdata string, from, to Action, why string) error {
	p := filepath.Join(pgdata, "postgresql.auto.conf")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("set recovery_target_action: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	i, v, ok := lastSetting(lines, "recovery_target_action")
	if !ok || v != string(from) {
		return fmt.Errorf("set recovery_target_action in %s: found %q, expected %q", p, v, from)
	}
	lines[i] = fmt.Sprintf("recovery_target_action = %s   # %s", quoteConf(string(to)), why)
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	// Replaced the way ALTER SYSTEM replaces it: a crash leaves the old
	// file or the new one, never half of one.
	tmp := p + ".tmp"
	if err := writeFileSync(tmp, []byte(strings.Join(lines, "\n")), fi.Mode().Perm()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("set recovery_target_action: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("set recovery_target_action: %w", err)
	}
	return durable.SyncDir(pgdata)
}

// lastSetting finds the last line that sets name, in the syntax pitr
// writes and ALTER SYSTEM keeps: name = 'value', maybe a comment after.
func lastSetting(lines []string, name string) (int, string, bool) {
	for i := len(lines) - 1; i >= 0; i-- {
		k, v, ok := strings.Cut(lines[i], "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), name) {
			continue
		}
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, "'") {
			if end := strings.Index(v[1:], "'"); end >= 0 {
				return i, v[1 : end+1], true
			}
		}
		v, _, _ = strings.Cut(v, "#")
		return i, strings.TrimSpace(v), true
	}
	return 0, "", false
}

// logFollower reads a server log as it grows and keeps only the lines
// parseRecoveryLog looks at. A long recovery logs two lines per WAL file
// (pitr wal-fetch's and the server's "restored log file"): 14 MB for 64k
// segments, which took 38 ms to scan whole, every 50 ms.
type logFollower struct {
	path    string
	off     int64  // read so far; where pg_ctl -l appends this start's lines
	partial []byte // a line not finished yet
	kept    []byte
	buf     []byte
}

func newLogFollower(path string) *logFollower {
	f := &logFollower{path: path}
	if fi, err := os.Stat(path); err == nil {
		f.off = fi.Size() // an earlier start's lines are not this one's
	}
	return f
}

// read returns the kept lines of everything logged so far.
func (f *logFollower) read() []byte {
	file, err := os.Open(f.path)
	if err != nil {
		return f.kept
	}
	defer file.Close()
	if fi, err := file.Stat(); err == nil && fi.Size() < f.off {
		f.off, f.partial = 0, nil // truncated: start over
	}
	if f.buf == nil {
		f.buf = make([]byte, 256<<10)
	}
	for {
		n, err := file.ReadAt(f.buf, f.off)
		f.off += int64(n)
		data := append(f.partial, f.buf[:n]...)
		end := bytes.LastIndexByte(data, '\n') + 1
		for _, line := range bytes.SplitAfter(data[:end], []byte("\n")) {
			if recoveryLine(line) {
				f.kept = append(f.kept, line...)
			}
		}
		f.partial = append([]byte(nil), data[end:]...)
		if err != nil || n < len(f.buf) {
			return f.kept
		}
	}
}

// recoveryLine reports whether parseRecoveryLog or the FATAL check could
// use line.
func recoveryLine(line []byte) bool {
	for _, re := range []*regexp.Regexp{reStopping(), reLastXact(), reRedoDone(), rePaused(), rePromoteReq(), rePromoted(), reRecComplete(), reShutdown(), reFatal()} {
		if re.Match(line) {
			return true
		}
	}
	return false
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
	case reRecComplete().Match(log) && afterLast(log, reRecComplete(), rePromoted()):
		o.State = "promoted" // perhaps after a pause at the target
	case rePaused().Match(log):
		o.State = "paused"
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

// oneLine joins a command's output lines for an error message.
func oneLine(out []byte) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", " ; ")), " ")
}

func fatalIn(log []byte) string {
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
