// Package integration drives the built pitr binary the way PostgreSQL and a
// person do, against a real PostgreSQL and a real S3-compatible server.
package integration

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
	"sync"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/internal/s3test"
)

// pitrBin is the binary under test, built once by TestMain into a directory
// the cluster user can reach (archive_command runs as that user).
var pitrBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pitr-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pitrBin = filepath.Join(dir, "pitr")
	build := exec.Command("go", "build", "-o", pitrBin, "../cmd/pitr")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pitr:", err)
		return 1
	}
	// One S3 server for the whole package (tests use their own prefixes);
	// tests that stop the server start their own with s3test.Start.
	return s3test.Main(m)
}

// backends lists the storage backends every storage-sensitive test runs on.
var backends = []string{"file", "s3"}

// testRepo is a repository plus the config file that archive_command,
// restore_command and the test's own pitr invocations share.
type testRepo struct {
	kind       string
	url        string
	dir        string // file:// repositories: the directory
	configPath string
	s3         *s3test.Server
	s3Prefix   string

	mu    sync.Mutex
	calls []string // every pitr invocation with its output, for failure reports
}

// pitrCallsShown is how many of a failed test's pitr invocations are
// printed (the last ones), and pitrOutputLines how many lines of each one's
// stdout and stderr.
const (
	pitrCallsShown  = 12
	pitrOutputLines = 40
)

// newRepo makes an empty repository on the given backend. For S3 each test
// gets its own prefix in the shared server's bucket, or in server if given.
func newRepo(t *testing.T, kind string, server *s3test.Server) *testRepo {
	t.Helper()
	shared := pgtest.SharedTempDir(t)
	r := &testRepo{kind: kind, configPath: filepath.Join(shared, "pitr.yaml")}
	var conf strings.Builder
	switch kind {
	case "file":
		r.dir = filepath.Join(shared, "repo")
		r.url = "file://" + r.dir
	case "s3":
		if server == nil {
			server = s3test.Shared(t)
		}
		r.s3 = server
		r.s3Prefix = server.NewPrefix(t)
		r.url = "s3://" + server.Bucket + "/" + r.s3Prefix
		fmt.Fprintf(&conf, "s3_endpoint: %s\ns3_region: %s\ns3_access_key_id: %s\ns3_secret_access_key: %s\n",
			server.Endpoint, server.Region, server.AccessKey, server.SecretKey)
		if server.External() {
			// docker compose's s3 service is plain http on another host;
			// a local versitygw is loopback, which pitr allows by itself.
			conf.WriteString("s3_allow_http: true\n")
		}
	default:
		t.Fatalf("unknown backend %q", kind)
	}
	fmt.Fprintf(&conf, "repo: %s\n", r.url)
	writePrivateFile(t, r.configPath, conf.String())
	// A failed test shows what pitr said, not only what the test expected:
	// the server logs (with archive_command's and restore_command's output)
	// come from pgtest's own cleanup.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		r.mu.Lock()
		calls := r.calls
		r.mu.Unlock()
		if len(calls) == 0 {
			return
		}
		skipped := 0
		if len(calls) > pitrCallsShown {
			skipped = len(calls) - pitrCallsShown
			calls = calls[skipped:]
		}
		t.Logf("--- pitr commands run by the test (%s repository %s; %d earlier ones not shown) ---\n%s",
			r.kind, r.url, skipped, strings.Join(calls, "\n"))
	})
	return r
}

// writePrivateFile writes a file that may hold secrets the way an operator
// must (pitr refuses it otherwise): mode 0600, owned by the user pitr runs
// as, here the cluster user.
func writePrivateFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup(pgtest.UserName())
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// lastLines returns the last n lines of s, saying how many were cut.
func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "(empty)"
	}
	lines := strings.Split(s, "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("(%d lines cut)\n%s", len(lines)-n, strings.Join(lines[len(lines)-n:], "\n"))
}

func (r *testRepo) archiveCommand() string {
	return fmt.Sprintf("%s archive-push --config %s %%p", pitrBin, r.configPath)
}

func (r *testRepo) restoreCommand() string {
	return fmt.Sprintf("%s wal-fetch --config %s %%f %%p", pitrBin, r.configPath)
}

// result of one pitr invocation.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// pitr runs the binary as the cluster user in dir (the data directory, when
// imitating PostgreSQL) with the repository's config.
func (r *testRepo) pitr(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return r.pitrEnv(t, dir, nil, args...)
}

// pitrEnv is pitr with env added to its environment.
func (r *testRepo) pitrEnv(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pitrBin, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PITR_CONFIG="+r.configPath), env...)
	pgtest.RunAs(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("run pitr %v: %v", args, err)
	}
	r.mu.Lock()
	r.calls = append(r.calls, fmt.Sprintf("$ pitr %s   (in %s, %s)\nexit %d\nstdout: %s\nstderr: %s",
		strings.Join(args, " "), dir, time.Now().UTC().Format("15:04:05.000"), res.code,
		lastLines(res.stdout, pitrOutputLines), lastLines(res.stderr, pitrOutputLines)))
	r.mu.Unlock()
	return res
}

// generateWAL writes about mb MiB of WAL through real table inserts.
func generateWAL(t *testing.T, c *pgtest.Cluster, mb int) {
	t.Helper()
	c.Exec(t, "CREATE TABLE IF NOT EXISTS filler (id bigserial primary key, payload text)")
	c.Exec(t, "INSERT INTO filler (payload) SELECT md5(g::text) || repeat('x', 900) FROM generate_series(1, $1) g", mb*1024)
}

// archivedNames returns the WAL file names PostgreSQL has marked done, in order.
func archivedNames(t *testing.T, c *pgtest.Cluster) []string {
	t.Helper()
	done, err := filepath.Glob(filepath.Join(c.DataDir(), "pg_wal", "archive_status", "*.done"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range done {
		names = append(names, strings.TrimSuffix(filepath.Base(d), ".done"))
	}
	return names
}

// recoverFromArchive starts a server on pgdata (a base backup laid out
// without recovery settings) with recovery.signal and pitr wal-fetch as
// restore_command, and waits until it has replayed the archive and promoted.
func recoverFromArchive(t *testing.T, r *testRepo, pgdata string) *pgtest.Cluster {
	t.Helper()
	if err := os.WriteFile(filepath.Join(pgdata, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := pgtest.RestoredCluster(t, pgdata, pgtest.Options{RestoreCommand: r.restoreCommand()})
	c.Start(t)
	waitPromoted(t, c)
	return c
}

// waitPromoted waits until recovery has finished and the server accepts writes.
func waitPromoted(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	c.WaitFor(t, 2*time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT pg_is_in_recovery()::text")
		return err == nil && v == "false"
	})
}
