// Package runas runs the benchmark's child processes (PostgreSQL programs,
// pitr, pgBackRest) as the unprivileged cluster user, the way PostgreSQL runs
// archive_command and restore_command, with a clean environment and resource
// usage taken from the kernel.
//
// When the benchmark runs as root the user is pgtest's (pitrtest, or
// $PITR_TEST_USER); otherwise it is the current user.
package runas

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// User is the OS user that runs every child process.
type User struct {
	Name     string
	UID, GID int
	Home     string
}

// Lookup resolves the cluster user. As root, a missing user is an error that
// points at scripts/install-deps.sh (which creates it).
func Lookup() (User, error) {
	name := pgtest.UserName()
	u, err := user.Lookup(name)
	if err != nil {
		return User{}, fmt.Errorf("cluster user %q: %w (run scripts/install-deps.sh as root)", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return User{}, fmt.Errorf("user %q: bad uid %q", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return User{}, fmt.Errorf("user %q: bad gid %q", name, u.Gid)
	}
	if uid == 0 {
		return User{}, fmt.Errorf("user %q has uid 0: PostgreSQL and pgBackRest refuse to run as root", name)
	}
	return User{Name: name, UID: uid, GID: gid, Home: u.HomeDir}, nil
}

// IsRoot reports whether this process runs as root (and so switches user for
// its children).
func IsRoot() bool { return os.Geteuid() == 0 }

// Env is the environment of every child: nothing from the caller's PG*,
// PITR_*, PGBACKREST_*, AWS_* or locale variables leaks into the measured
// programs, so both tools see only their command line and config file.
func (u User) Env(binDir string, extra ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch {
		case strings.HasPrefix(k, "PG"), strings.HasPrefix(k, "PITR_"), strings.HasPrefix(k, "AWS_"),
			strings.HasPrefix(k, "LC_"), k == "LANG", k == "LANGUAGE", k == "HOME", k == "PATH",
			k == "GOMAXPROCS", k == "GOGC", k == "GODEBUG", k == "GOMEMLIMIT", k == "TMPDIR":
			continue
		}
		env = append(env, e)
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if binDir != "" {
		path = binDir + ":" + path
	}
	home := u.Home
	if home == "" {
		home = "/"
	}
	env = append(env, "HOME="+home, "PATH="+path, "LANG=C")
	return append(env, extra...)
}

// Command returns a command that runs as the user in dir with Env.
func (u User) Command(ctx context.Context, dir, binDir string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = u.Env(binDir)
	cmd.WaitDelay = 10 * time.Second
	pgtest.RunAs(cmd) // credentials of the cluster user when root
	return cmd
}

// Chown gives path (not recursively) to the user when running as root.
func (u User) Chown(path string) error {
	if !IsRoot() {
		return nil
	}
	return os.Lchown(path, u.UID, u.GID)
}

// ChownTree gives a whole tree to the user when running as root.
func (u User) ChownTree(root string) error {
	if !IsRoot() {
		return nil
	}
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.UID, u.GID)
	})
}

// MkdirShared creates dir (and parents) with mode 0755, owned by the user.
func (u User) MkdirShared(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	return u.Chown(dir)
}

// Usage is what one process invocation cost, as the kernel accounts it.
// There is deliberately no peak RSS: for a child of a Go process the kernel
// reports the parent's RSS (see walbench's peakRSS).
type Usage struct {
	Wall time.Duration
	User time.Duration // includes children the process waited for
	Sys  time.Duration
}

// CPU is user + system time.
func (u Usage) CPU() time.Duration { return u.User + u.Sys }

// ExitError is a process that ran but exited with an unexpected status.
type ExitError struct {
	Cmd    string
	Code   int
	Output string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("%s: exit status %d: %s", e.Cmd, e.Code, strings.TrimSpace(e.Output))
}

// Measure runs cmd, which must exit with status want, and returns its
// resource usage and combined output. The wall time is from just before
// fork/exec to just after the exit was reaped.
func Measure(cmd *exec.Cmd, want int) (Usage, string, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Start()
	if err != nil {
		return Usage{}, "", fmt.Errorf("%s: %w", cmd.Path, err)
	}
	err = cmd.Wait()
	wall := time.Since(start)
	ps := cmd.ProcessState
	var u Usage
	if ps != nil {
		u = Usage{Wall: wall, User: ps.UserTime(), Sys: ps.SystemTime()}
	}
	var ee *exec.ExitError
	switch {
	case err == nil && want == 0:
		return u, out.String(), nil
	case err == nil:
		return u, out.String(), &ExitError{Cmd: strings.Join(cmd.Args, " "), Code: 0, Output: out.String()}
	case errors.As(err, &ee) && ee.ExitCode() == want:
		return u, out.String(), nil
	case errors.As(err, &ee):
		return u, out.String(), &ExitError{Cmd: strings.Join(cmd.Args, " "), Code: ee.ExitCode(), Output: out.String()}
	}
	return u, out.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
}

// Run runs cmd and returns its stdout; the error carries the output.
func Run(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, msg)
	}
	return stdout.String(), nil
}
