// Package pgtest runs throw-away PostgreSQL clusters for tests.
//
// PostgreSQL refuses to run as root, so when the tests run as root every
// PostgreSQL program (initdb, pg_ctl, postgres, pg_basebackup, ...) runs as
// the unprivileged user "pitrtest" (see UserName), which is created on first
// use if missing. archive_command and restore_command then run as that user
// too: anything they need (the pitr binary, a file:// repository, an archive
// directory) must be reachable by it; see SharedTempDir and MakeShared.
//
// When the PostgreSQL binaries are missing or a fresh cluster cannot be
// initialised or started, the test is skipped, except when CI=true, where it
// fails: in CI a server that cannot start is a failure, never a skip.
// Failures after a cluster once started (and of standbys and restored
// clusters) always fail the test. When a test fails, the tail of each of its
// clusters' server logs is written to the test log.
//
// Environment:
//
//	PITR_TEST_PG_BIN   PostgreSQL bin directory (default /usr/lib/postgresql/15/bin)
//	PITR_TEST_USER     run-as user when root (default pitrtest)
//	PITR_TEST_TMPDIR   parent of the clusters' directories (default: temp dir)
//	PITR_TEST_KEEP     if set, directories of failed tests are kept
//	PITR_TEST_PG_DSN   a PostgreSQL server outside the harness (the docker
//	                   compose postgres service); used only to check that it
//	                   has the major version of the programs above
//	CI                 "true": environment problems fail instead of skip
//
// Everything is safe for parallel tests: each cluster has its own directory,
// Unix socket directory and loopback port (picked by binding port 0; a start
// that loses a port race is retried on another port).
package pgtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultBinDir is where Debian's postgresql-15 installs its programs.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// confFile is the file (inside the data directory) that holds the settings
// pgtest manages; postgresql.conf includes it. postgresql.auto.conf (ALTER
// SYSTEM, or what a restore writes there) still takes precedence.
const confFile = "pitrtest.conf"

// logTailLines is how many server log lines a failing test gets.
const logTailLines = 40

// relevantLogLines is how many of the server log lines that say what
// recovery and archiving did (see relevantLog) a failing test gets, ahead of
// the tail: the tail alone is often a shutdown sequence.
const relevantLogLines = 60

// relevantLog matches the server log lines worth reading first when a test
// fails: errors (the server's and pitr's own, which archive_command and
// restore_command write to the server log), and the lines that say where
// recovery started, stopped and what it decided.
var relevantLog = regexp.MustCompile(`FATAL|PANIC|ERROR:|WARNING:|level=ERROR|level=WARN|` +
	`starting (point-in-time|archive) recovery|starting backup recovery|consistent recovery state|recovery stopping|` +
	`redo (starts|done)|last completed transaction|selected new timeline|archive recovery complete|` +
	`could not restore|archive command failed|pausing at the end|shutdown at recovery target|` +
	`recovery ended before|requested timeline|database system is (ready|shut down)`)

// Options configure a cluster.
type Options struct {
	// WalSegSizeMB is initdb's --wal-segsize (a power of 2 from 1 to 1024);
	// 0 keeps the default 16 MB. Ignored by NewStandby and RestoredCluster.
	WalSegSizeMB int
	// ArchiveCommand, when set, turns archive_mode on with this command.
	ArchiveCommand string
	// RestoreCommand, when set, is written as restore_command.
	RestoreCommand string
	// ExtraConf are further settings (name → value). Values are written
	// quoted, so any type works ("60", "on", "America/New_York"). They come
	// after, and so override, the settings pgtest writes.
	ExtraConf map[string]string
	// Timezone sets the server's timezone setting (default "UTC").
	// log_timezone is always UTC.
	Timezone string
	// DataChecksums runs initdb with -k.
	DataChecksums bool
	// Env are extra KEY=VALUE environment entries for the server (and so for
	// archive_command / restore_command) and for commands started with
	// Command / RunAsUser.
	Env []string
	// ServerOptions are passed to the server at start (pg_ctl -o), e.g.
	// "-c config_file=/etc/..." for a configuration outside the data
	// directory, as Debian's clusters have.
	ServerOptions string
}

// Cluster is one PostgreSQL data directory plus its server.
type Cluster struct {
	binDir  string
	user    *osUser
	baseDir string // owned by the run-as user: socket, log
	dataDir string
	logPath string
	opts    Options

	ownsData bool // dataDir is inside baseDir and removed with it

	mu      sync.Mutex
	port    int
	started bool // has started successfully at least once
	envSkip bool // a start failure is an environment problem (skip outside CI)
}

var (
	portMu    sync.Mutex
	usedPorts = map[int]bool{}
)

// pickPort returns a free loopback port not handed out before by this process.
func pickPort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !usedPorts[p] {
			usedPorts[p] = true
			return p, nil
		}
	}
	return 0, errors.New("no free port found")
}

// inCI reports whether environment problems must fail rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// envFailf fails (in CI) or skips (elsewhere) the test for a problem with the
// environment, with the server log tail if there is one.
func (c *Cluster) envFailf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		// The cleanup writes the server log tail of a failed test.
		t.Fatalf("pgtest: %s", msg)
	}
	if c != nil && c.logPath != "" {
		if tail := c.logTail(logTailLines); tail != "" {
			msg += fmt.Sprintf("\n--- server log tail (%s) ---\n%s", c.logPath, tail)
		}
	}
	t.Skipf("pgtest: skipping, PostgreSQL unusable here (CI=true would fail): %s", msg)
}

// binDir finds the PostgreSQL programs.
func findBinDir() (string, error) {
	dir := os.Getenv("PITR_TEST_PG_BIN")
	if dir == "" {
		dir = DefaultBinDir
	}
	for _, p := range []string{"initdb", "pg_ctl", "postgres", "pg_basebackup"} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			return "", fmt.Errorf("PostgreSQL programs not found (set PITR_TEST_PG_BIN or run scripts/install-deps.sh): %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 && isRoot() {
			return "", fmt.Errorf("%s is not executable by other users", filepath.Join(dir, p))
		}
	}
	return dir, nil
}

// BinMajorVersion is the major version of the PostgreSQL server programs the
// harness uses (postgres --version), e.g. 15.
func BinMajorVersion() (int, error) {
	dir, err := findBinDir()
	if err != nil {
		return 0, err
	}
	out, err := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("postgres --version: %w", err)
	}
	// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	m := regexp.MustCompile(`\(PostgreSQL\) (\d+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("postgres --version: unexpected output %q", out)
	}
	return strconv.Atoi(string(m[1]))
}

// newCluster sets up the per-cluster directory and cleanup.
func newCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	bin, err := findBinDir()
	if err != nil {
		(*Cluster)(nil).envFailf(t, "%v", err)
	}
	u, err := runUser()
	if err != nil {
		(*Cluster)(nil).envFailf(t, "run-as user: %v", err)
	}
	base, err := newSharedDir("pitr-pg-")
	if err != nil {
		(*Cluster)(nil).envFailf(t, "cluster directory: %v", err)
	}
	port, err := pickPort()
	if err != nil {
		_ = os.RemoveAll(base)
		(*Cluster)(nil).envFailf(t, "pick port: %v", err)
	}
	c := &Cluster{
		binDir:   bin,
		user:     u,
		baseDir:  base,
		dataDir:  filepath.Join(base, "data"),
		logPath:  filepath.Join(base, "server.log"),
		opts:     opts,
		ownsData: true,
		port:     port,
	}
	t.Cleanup(func() { c.cleanup(t) })
	return c
}

func (c *Cluster) cleanup(t testing.TB) {
	if c.Running() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := c.pgctl(ctx, "stop", "-m", "immediate")
		cancel()
		if err != nil && c.Running() {
			if pid := c.postmasterPID(); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	failed := t.Failed()
	if failed {
		if lines := c.relevantLogLines(relevantLogLines); lines != "" {
			t.Logf("--- server log: recovery, archiving and error lines (%s, port %d) ---\n%s", c.logPath, c.Port(), lines)
		}
		if tail := c.logTail(logTailLines); tail != "" {
			t.Logf("--- server log tail (%s, port %d) ---\n%s", c.logPath, c.Port(), tail)
		}
	}
	if failed && os.Getenv("PITR_TEST_KEEP") != "" {
		t.Logf("pgtest: keeping %s (data directory %s)", c.baseDir, c.dataDir)
		return
	}
	_ = os.RemoveAll(c.baseDir)
}

// NewCluster runs initdb for a new cluster and writes its configuration. The
// server is not started: call Start.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c := newCluster(t, opts)
	c.envSkip = true
	args := []string{"-D", c.dataDir, "-A", "trust", "-U", "postgres", "-N", "-E", "UTF8", "--locale=C"}
	if opts.WalSegSizeMB > 0 {
		args = append(args, fmt.Sprintf("--wal-segsize=%d", opts.WalSegSizeMB))
	}
	if opts.DataChecksums {
		args = append(args, "-k")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.run(ctx, "initdb", args...); err != nil {
		c.envFailf(t, "%v", err)
	}
	if err := c.writeConf(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c
}

// NewStandby makes a streaming standby of the running primary with
// pg_basebackup -R -X stream (run as the cluster user). It is not started:
// call Start. opts.WalSegSizeMB and DataChecksums are ignored (inherited).
func NewStandby(t testing.TB, primary *Cluster, opts Options) *Cluster {
	t.Helper()
	c := newCluster(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err := c.run(ctx, "pg_basebackup", "-D", c.dataDir, "-R", "-X", "stream", "-c", "fast", "-N",
		"-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port()), "-U", "postgres")
	if err != nil {
		t.Fatalf("pgtest: standby of %s: %v", primary.DataDir(), err)
	}
	if err := c.writeConf(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c
}

// RestoredCluster adopts an existing data directory (for example one that
// pitr restore laid out) with a new port and socket directory: it chowns the
// tree (and tablespace targets) to the cluster user, makes the parents
// traversable, sets mode 0700 and rewrites pgtest's settings. The directory
// is not removed at cleanup (its creator owns it). It is not started.
func RestoredCluster(t testing.TB, dataDir string, opts Options) *Cluster {
	t.Helper()
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if _, err := os.Stat(filepath.Join(abs, "PG_VERSION")); err != nil {
		t.Fatalf("pgtest: %s is not a PostgreSQL data directory: %v", abs, err)
	}
	c := newCluster(t, opts)
	c.dataDir = abs
	c.ownsData = false
	if err := adoptDataDir(abs, c.user); err != nil {
		t.Fatalf("pgtest: adopt %s: %v", abs, err)
	}
	// A postmaster.pid copied along with the files (a file-level copy of a
	// running cluster) names some other server: pg_ctl would signal it.
	if pid := c.postmasterPID(); pid > 0 && !c.pidServesDataDir(pid) {
		if err := os.Remove(filepath.Join(abs, "postmaster.pid")); err != nil {
			t.Fatalf("pgtest: remove stale postmaster.pid: %v", err)
		}
	}
	if err := c.writeConf(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c
}

func adoptDataDir(dir string, u *osUser) error {
	if isRoot() {
		if err := makeParentsTraversable(dir); err != nil {
			return err
		}
		if err := chownTree(dir, u); err != nil {
			return err
		}
		links, _ := os.ReadDir(filepath.Join(dir, "pg_tblspc"))
		for _, l := range links {
			target, err := filepath.EvalSymlinks(filepath.Join(dir, "pg_tblspc", l.Name()))
			if err != nil {
				return fmt.Errorf("tablespace %s: %w", l.Name(), err)
			}
			if err := makeParentsTraversable(target); err != nil {
				return err
			}
			if err := chownTree(target, u); err != nil {
				return err
			}
		}
	}
	return os.Chmod(dir, 0o700)
}

// quoteConf quotes a configuration value.
func quoteConf(v string) string {
	if len(v) >= 2 && strings.HasPrefix(v, "'") && strings.HasSuffix(v, "'") {
		return v
	}
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// writeConf (re)writes pitrtest.conf and makes postgresql.conf include it.
func (c *Cluster) writeConf() error {
	tz := c.opts.Timezone
	if tz == "" {
		tz = "UTC"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by internal/pgtest; rewritten whenever the port changes.\n")
	set := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(v)) }
	set("listen_addresses", "127.0.0.1")
	set("port", strconv.Itoa(c.Port()))
	set("unix_socket_directories", c.baseDir)
	set("wal_level", "replica")
	set("max_wal_senders", "4")
	set("logging_collector", "off")
	set("log_timezone", "UTC")
	set("timezone", tz)
	if c.opts.ArchiveCommand != "" {
		set("archive_mode", "on")
		set("archive_command", c.opts.ArchiveCommand)
	} else {
		set("archive_mode", "off")
	}
	if c.opts.RestoreCommand != "" {
		set("restore_command", c.opts.RestoreCommand)
	}
	keys := make([]string, 0, len(c.opts.ExtraConf))
	for k := range c.opts.ExtraConf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set(k, c.opts.ExtraConf[k])
	}
	if err := c.writeDataFile(confFile, []byte(b.String()), false); err != nil {
		return err
	}
	main := filepath.Join(c.dataDir, "postgresql.conf")
	cur, err := os.ReadFile(main)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	include := "include '" + confFile + "'"
	for _, line := range strings.Split(string(cur), "\n") {
		if strings.TrimSpace(line) == include {
			return nil
		}
	}
	if len(cur) > 0 && !bytes.HasSuffix(cur, []byte("\n")) {
		cur = append(cur, '\n')
	}
	cur = append(cur, []byte("\n# pgtest settings (must stay last)\n"+include+"\n")...)
	return c.writeDataFile("postgresql.conf", cur, true)
}

// writeDataFile writes a file in the data directory owned by the cluster user.
func (c *Cluster) writeDataFile(name string, data []byte, keepMode bool) error {
	p := filepath.Join(c.dataDir, name)
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(p); err == nil && keepMode {
		mode = fi.Mode().Perm()
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	if isRoot() {
		return os.Chown(p, int(c.user.uid), int(c.user.gid))
	}
	return nil
}

// baseEnv is the environment of everything run as the cluster user.
func (c *Cluster) baseEnv() []string {
	env := make([]string, 0, len(os.Environ()))
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "LANGUAGE" {
			continue
		}
		env = append(env, e)
	}
	env = envWith(env, "HOME="+c.user.home, "LANG=C", "PATH="+c.binDir+":"+os.Getenv("PATH"))
	return envWith(env, c.opts.Env...)
}

// Command returns a command that runs as the cluster user with PGHOST,
// PGPORT, PGUSER=postgres, PGDATABASE=postgres and PGDATA set and the
// cluster's directory as working directory. A name without a slash is looked
// up in the PostgreSQL bin directory first, then in PATH.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if !strings.Contains(name, "/") {
		if p := filepath.Join(c.binDir, name); fileExists(p) {
			name = p
		}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = envWith(c.baseEnv(),
		"PGHOST=127.0.0.1", "PGPORT="+strconv.Itoa(c.Port()), "PGUSER=postgres",
		"PGDATABASE=postgres", "PGDATA="+c.dataDir)
	cmd.Dir = c.baseDir
	cmd.WaitDelay = 10 * time.Second
	RunAs(cmd)
	return cmd
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// run runs a PostgreSQL program as the cluster user and returns its stdout;
// the error includes stderr.
func (c *Cluster) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := c.Command(ctx, name, args...)
	cmd.Env = c.baseEnv() // no PG* variables for our own invocations
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// RunAsUser runs a program (pg_basebackup, pg_waldump, psql, the pitr
// binary, ...) as the cluster user with PGHOST/PGPORT/PGUSER/PGDATABASE/
// PGDATA pointing at this cluster. It returns stdout; a non-nil error
// includes stderr. It does not fail the test.
func (c *Cluster) RunAsUser(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := c.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (c *Cluster) pgctl(ctx context.Context, args ...string) (string, error) {
	return c.run(ctx, "pg_ctl", append([]string{"-D", c.dataDir}, args...)...)
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// BaseDir is the cluster's own directory (Unix socket, server log; for
// NewCluster and NewStandby also the data directory), owned by the cluster
// user and removed at cleanup.
func (c *Cluster) BaseDir() string { return c.baseDir }

// BinDir is the PostgreSQL bin directory in use.
func (c *Cluster) BinDir() string { return c.binDir }

// Port is the server's TCP port on 127.0.0.1.
func (c *Cluster) Port() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.port
}

// DSN is a keyword/value connection string for the postgres superuser.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=10", c.Port())
}

// LogPath is the server log file (pg_ctl -l; appended to across restarts).
func (c *Cluster) LogPath() string { return c.logPath }

// Log returns the whole server log.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// LogContains reports whether the server log contains substr.
func (c *Cluster) LogContains(substr string) bool {
	return strings.Contains(c.Log(), substr)
}

func (c *Cluster) logTail(n int) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = append(lines[:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// relevantLogLines returns the last n lines of the server log that match
// relevantLog.
func (c *Cluster) relevantLogLines(n int) string {
	var lines []string
	for _, l := range strings.Split(c.Log(), "\n") {
		if relevantLog.MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LogCount is the number of times substr occurs in the server log.
func (c *Cluster) LogCount(substr string) int {
	return strings.Count(c.Log(), substr)
}

// AppendAutoConf appends lines to postgresql.auto.conf (where pitr restore
// writes the recovery settings; a later line wins over an earlier one), as
// an operator editing the restored directory would. The server must be
// stopped or reloaded afterwards to see them.
func (c *Cluster) AppendAutoConf(t testing.TB, lines ...string) {
	t.Helper()
	cur, err := os.ReadFile(filepath.Join(c.dataDir, "postgresql.auto.conf"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pgtest: %v", err)
	}
	if len(cur) > 0 && !bytes.HasSuffix(cur, []byte("\n")) {
		cur = append(cur, '\n')
	}
	cur = append(cur, []byte(strings.Join(lines, "\n")+"\n")...)
	if err := c.writeDataFile("postgresql.auto.conf", cur, true); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// DumpAll returns pg_dumpall's output for the whole cluster (roles,
// tablespaces, every database with its data). The session time zone is UTC
// (PGTZ), so timestamptz values print the same whatever the server's
// timezone setting: two clusters holding the same data dump the same text.
func (c *Cluster) DumpAll(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := []string{"--no-password"}
	if c.dumpHasRestrictKey() {
		// The \restrict line (15.14+) holds a random key unless given one.
		args = append(args, "--restrict-key=pgtest")
	}
	cmd := c.Command(ctx, "pg_dumpall", args...)
	cmd.Env = envWith(cmd.Env, "PGTZ=UTC")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pgtest: pg_dumpall on port %d: %v: %s", c.Port(), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String()
}

var (
	restrictKeyOnce sync.Once
	restrictKey     bool
)

// dumpHasRestrictKey reports whether pg_dumpall has --restrict-key.
func (c *Cluster) dumpHasRestrictKey() bool {
	restrictKeyOnce.Do(func() {
		out, _ := exec.Command(filepath.Join(c.binDir, "pg_dumpall"), "--help").Output()
		restrictKey = strings.Contains(string(out), "--restrict-key")
	})
	return restrictKey
}

func (c *Cluster) logSize() int64 {
	fi, err := os.Stat(c.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (c *Cluster) logFrom(off int64) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var portInUse = regexp.MustCompile(`could not bind|Address already in use|could not create any TCP/IP sockets|could not create lock file .*\.s\.PGSQL`)

// TryStart starts the server (pg_ctl start -w) and returns an error instead
// of failing the test, for tests that expect the start to fail (a FATAL in
// recovery, recovery_target_action=shutdown, ...). The error includes the
// new part of the server log. A start that loses a race for its port is
// retried on another port.
func (c *Cluster) TryStart(t testing.TB) error {
	t.Helper()
	return c.start(true)
}

func (c *Cluster) start(withLog bool) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		off := c.logSize()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		args := []string{"-l", c.logPath, "-w", "-t", "300"}
		if c.opts.ServerOptions != "" {
			args = append(args, "-o", c.opts.ServerOptions)
		}
		_, err = c.pgctl(ctx, append(args, "start")...)
		cancel()
		if err == nil {
			c.mu.Lock()
			c.started = true
			c.envSkip = false
			c.mu.Unlock()
			return nil
		}
		newLog := c.logFrom(off)
		if portInUse.MatchString(newLog) && !c.Running() {
			p, perr := pickPort()
			if perr != nil {
				return fmt.Errorf("%v; pick port: %v", err, perr)
			}
			c.mu.Lock()
			c.port = p
			c.mu.Unlock()
			if werr := c.writeConf(); werr != nil {
				return werr
			}
			continue
		}
		if !withLog {
			return err
		}
		return fmt.Errorf("%v\n--- server log ---\n%s", err, lastLines(newLog, logTailLines))
	}
	return err
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if err := c.start(false); err != nil { // the log tail comes from the cleanup (or envFailf)
		c.mu.Lock()
		envSkip := c.envSkip
		c.mu.Unlock()
		if envSkip {
			c.envFailf(t, "start %s: %v", c.dataDir, err)
		}
		t.Fatalf("pgtest: start %s: %v", c.dataDir, err)
	}
}

// Stop shuts the server down (fast mode) and waits.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.pgctl(ctx, "-w", "-t", "300", "-m", "fast", "stop"); err != nil {
		t.Fatalf("pgtest: stop %s: %v", c.dataDir, err)
	}
}

// Kill shuts the server down in immediate mode (no checkpoint, like a crash:
// the next start runs crash recovery).
func (c *Cluster) Kill(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.pgctl(ctx, "-w", "-t", "300", "-m", "immediate", "stop"); err != nil {
		t.Fatalf("pgtest: kill %s: %v", c.dataDir, err)
	}
}

// Restart stops (fast) and starts the server.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.Stop(t)
	c.Start(t)
}

// Promote promotes a standby (pg_ctl promote -w).
func (c *Cluster) Promote(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.pgctl(ctx, "-w", "-t", "300", "promote"); err != nil {
		t.Fatalf("pgtest: promote %s: %v", c.dataDir, err)
	}
}

func (c *Cluster) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// pidServesDataDir reports whether pid is a live process whose working
// directory is the data directory (a postmaster chdirs there).
func (c *Cluster) pidServesDataDir(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return true // cannot tell: assume it is ours
	}
	want, err := filepath.EvalSymlinks(c.dataDir)
	if err != nil {
		want = c.dataDir
	}
	return cwd == want || cwd == c.dataDir
}

// Running reports whether a postmaster is running on the data directory.
func (c *Cluster) Running() bool {
	pid := c.postmasterPID()
	return pid > 0 && c.pidServesDataDir(pid)
}

// WaitStopped waits until the server has exited on its own (a FATAL during
// recovery, recovery_target_action=shutdown, ...).
func (c *Cluster) WaitStopped(t testing.TB, timeout time.Duration) {
	t.Helper()
	c.WaitFor(t, timeout, func() bool { return !c.Running() })
}

// WaitFor polls cond every 100 ms until it returns true, failing the test
// after timeout.
func (c *Cluster) WaitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: condition not met within %v (server log: %s)", timeout, c.logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
