package pgtest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultUser is the unprivileged OS user that runs PostgreSQL when the tests
// run as root (PostgreSQL refuses to run as root).
const DefaultUser = "pitrtest"

// DefaultUserHome is the home directory given to DefaultUser when it is created.
const DefaultUserHome = "/var/lib/pitrtest"

// osUser is the resolved run-as user.
type osUser struct {
	name string
	uid  uint32
	gid  uint32
	home string
}

var (
	userMu     sync.Mutex
	userCached *osUser
)

// isRoot reports whether the test process runs with euid 0.
func isRoot() bool { return os.Geteuid() == 0 }

// UserName returns the name of the OS user that runs the test clusters and
// the commands started through RunAs: "pitrtest" (or $PITR_TEST_USER) when
// the tests run as root, else the current user.
func UserName() string {
	if isRoot() {
		if u := os.Getenv("PITR_TEST_USER"); u != "" {
			return u
		}
		return DefaultUser
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

// runUser resolves (and, when root, creates if missing) the run-as user.
func runUser() (*osUser, error) {
	userMu.Lock()
	defer userMu.Unlock()
	if userCached != nil {
		return userCached, nil
	}
	if !isRoot() {
		u := &osUser{name: UserName(), uid: uint32(os.Getuid()), gid: uint32(os.Getgid()), home: os.Getenv("HOME")}
		if cu, err := user.Current(); err == nil {
			u.home = cu.HomeDir
		}
		userCached = u
		return u, nil
	}
	name := UserName()
	u, err := lookupUser(name)
	if err != nil {
		var unknown user.UnknownUserError
		if !errors.As(err, &unknown) {
			return nil, fmt.Errorf("look up user %q: %w", name, err)
		}
		if err := createUser(name); err != nil {
			return nil, err
		}
		if u, err = lookupUser(name); err != nil {
			return nil, fmt.Errorf("look up user %q after creating it: %w", name, err)
		}
	}
	userCached = u
	return u, nil
}

func lookupUser(name string) (*osUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: bad uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: bad gid %q", name, u.Gid)
	}
	if uid == 0 {
		return nil, fmt.Errorf("user %q has uid 0; PostgreSQL will not run as root", name)
	}
	return &osUser{name: name, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}, nil
}

// createUser runs useradd. Several test binaries (one per package) may race
// to create the user: "already exists" (exit 9) counts as success and a busy
// passwd lock (exit 10) is retried.
func createUser(name string) error {
	home := DefaultUserHome
	if name != DefaultUser {
		home = "/var/lib/" + name
	}
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		cmd := exec.Command("useradd", "--system", "--home-dir", home, "--create-home",
			"--shell", "/usr/sbin/nologin", name)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 9 {
			return nil
		}
		if _, lerr := user.Lookup(name); lerr == nil {
			return nil
		}
		lastErr = fmt.Errorf("useradd %s: %v: %s", name, err, strings.TrimSpace(string(out)))
		if errors.As(err, &ee) && ee.ExitCode() == 10 {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		break
	}
	return lastErr
}

// RunAs makes cmd run as the cluster user (UserName). When the test process
// is not root it only fills in the environment. When root it sets
// SysProcAttr.Credential (dropping supplementary groups) and, if cmd.Env is
// nil, gives the command the current environment with HOME set to the user's
// home. cmd.Dir is left alone: a relative path or a working directory under a
// root-only directory (/root, t.TempDir()) is not usable by that user.
// If the user cannot be resolved or created, cmd.Start returns the error.
func RunAs(cmd *exec.Cmd) {
	u, err := runUser()
	if err != nil {
		cmd.Err = err
		return
	}
	if cmd.Env == nil {
		cmd.Env = envWith(os.Environ(), "HOME="+u.home)
	}
	if !isRoot() {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}
}

// envWith returns env with the given KEY=VALUE entries replacing any existing
// entries of the same keys.
func envWith(env []string, kv ...string) []string {
	out := make([]string, 0, len(env)+len(kv))
	keys := map[string]bool{}
	for _, e := range kv {
		k, _, _ := strings.Cut(e, "=")
		keys[k] = true
	}
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		if !keys[k] {
			out = append(out, e)
		}
	}
	return append(out, kv...)
}

// MakeShared makes path usable by the cluster user, so that PostgreSQL's
// archive_command / restore_command (which run as that user) can reach it:
//
//   - every parent directory up to / gets the search bit for everyone (a+x;
//     nothing is made listable or writable), e.g. a 0700 t.TempDir() parent;
//   - a regular file gets a+r, plus a+x when it is executable by its owner
//     (the built pitr binary);
//   - a directory tree is chown'ed -R to the user (a repository directory the
//     cluster writes to) and its directories get u+rwx.
//
// When the tests do not run as root the cluster user is the current user and
// MakeShared does nothing. Prefer SharedTempDir for new directories: it lives
// under the temp directory, so nothing outside it is touched.
func MakeShared(t testing.TB, path string) {
	t.Helper()
	if err := makeShared(path); err != nil {
		t.Fatalf("pgtest.MakeShared(%s): %v", path, err)
	}
}

func makeShared(path string) error {
	if !isRoot() {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	u, err := runUser()
	if err != nil {
		return err
	}
	if err := makeParentsTraversable(abs); err != nil {
		return err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		mode := fi.Mode().Perm() | 0o444
		if fi.Mode().Perm()&0o100 != 0 {
			mode |= 0o111
		}
		return os.Chmod(abs, mode)
	}
	return chownTree(abs, u)
}

// makeParentsTraversable adds a+x to every ancestor of abs that lacks it.
func makeParentsTraversable(abs string) error {
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o111 != 0o111 {
			if err := os.Chmod(dir, fi.Mode().Perm()|0o111); err != nil {
				return fmt.Errorf("chmod a+x %s: %w", dir, err)
			}
		}
		if dir == "/" || dir == filepath.Dir(dir) {
			return nil
		}
	}
}

// chownTree chowns root and everything below it to u (symlinks themselves,
// not their targets) and gives directories u+rwx.
func chownTree(root string, u *osUser) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, int(u.uid), int(u.gid)); err != nil {
			return err
		}
		if d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Mode().Perm()&0o700 != 0o700 {
				return os.Chmod(p, fi.Mode().Perm()|0o700)
			}
		}
		return nil
	})
}

// SharedTempDir returns a new empty directory (mode 0755, owned by the
// cluster user, under the system temp directory) that both the test process
// and the cluster user can read and write: a place for a file:// repository,
// an archive directory or the built pitr binary. It is removed when the test
// ends.
func SharedTempDir(t testing.TB) string {
	t.Helper()
	dir, err := newSharedDir("pitr-shared-")
	if err != nil {
		t.Fatalf("pgtest.SharedTempDir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// newSharedDir makes a 0755 directory under the temp dir owned by the run-as
// user, after making sure the temp dir itself is reachable.
func newSharedDir(prefix string) (string, error) {
	u, err := runUser()
	if err != nil {
		return "", err
	}
	parent := tempParent()
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	if isRoot() {
		if err := makeParentsTraversable(dir); err != nil {
			return "", err
		}
		if err := os.Chown(dir, int(u.uid), int(u.gid)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// tempParent picks the directory for cluster base dirs: $PITR_TEST_TMPDIR,
// else os.TempDir() unless that is long (Unix socket paths are limited to
// 107 bytes), else /tmp.
func tempParent() string {
	if d := os.Getenv("PITR_TEST_TMPDIR"); d != "" {
		return d
	}
	if d := os.TempDir(); len(d) <= 40 {
		return d
	}
	return "/tmp"
}
