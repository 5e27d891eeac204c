package corpus

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/bench/internal/runas"
)

// DefaultBinDir is where Debian's postgresql-15 installs its programs.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// BinDir returns the PostgreSQL bin directory: $PITR_TEST_PG_BIN (as for the
// tests) or DefaultBinDir, after checking the programs are there.
func BinDir() (string, error) {
	dir := os.Getenv("PITR_TEST_PG_BIN")
	if dir == "" {
		dir = DefaultBinDir
	}
	for _, p := range []string{"initdb", "pg_ctl", "postgres", "pgbench", "psql", "pg_waldump"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return "", fmt.Errorf("PostgreSQL 15 programs not found in %s (run scripts/install-deps.sh, or set PITR_TEST_PG_BIN): %w", dir, err)
		}
	}
	return dir, nil
}

// confName is the file in the data directory that holds the benchmark's
// settings; postgresql.conf includes it.
const confName = "walbench.conf"

// Cluster is a PostgreSQL server on the corpus's data directory, run as the
// cluster user, listening on 127.0.0.1 and a private Unix socket directory.
type Cluster struct {
	User    runas.User
	BinDir  string
	DataDir string
	LogPath string
	SockDir string
	Port    int
	running bool
}

func (c *Cluster) cmd(ctx context.Context, name string, args ...string) (string, error) {
	cmd := c.User.Command(ctx, c.SockDir, c.BinDir, filepath.Join(c.BinDir, name), args...)
	if c.Port != 0 {
		cmd.Env = append(cmd.Env, "PGHOST="+c.SockDir, "PGPORT="+strconv.Itoa(c.Port),
			"PGUSER=postgres", "PGDATABASE=postgres")
	}
	return runas.Run(cmd)
}

// Query runs one SQL statement with psql and returns its unaligned output.
func (c *Cluster) Query(ctx context.Context, sql string) (string, error) {
	out, err := c.cmd(ctx, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql)
	return strings.TrimSpace(out), err
}

// Exec runs SQL statements, each in its own transaction, in one psql session.
func (c *Cluster) Exec(ctx context.Context, stmts ...string) error {
	args := []string{"-XAtq", "-v", "ON_ERROR_STOP=1"}
	for _, s := range stmts {
		args = append(args, "-c", s)
	}
	_, err := c.cmd(ctx, "psql", args...)
	return err
}

// writeConf writes walbench.conf and makes postgresql.conf include it.
func (c *Cluster) writeConf(settings [][2]string) error {
	var b strings.Builder
	b.WriteString("# Written by pitr's bench/internal/corpus.\n")
	for _, kv := range settings {
		fmt.Fprintf(&b, "%s = '%s'\n", kv[0], strings.ReplaceAll(kv[1], "'", "''"))
	}
	p := filepath.Join(c.DataDir, confName)
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if err := c.User.Chown(p); err != nil {
		return err
	}
	main := filepath.Join(c.DataDir, "postgresql.conf")
	cur, err := os.ReadFile(main)
	if err != nil {
		return err
	}
	include := "include '" + confName + "'"
	if strings.Contains(string(cur), "\n"+include+"\n") {
		return nil
	}
	cur = append(cur, []byte("\n"+include+"\n")...)
	return os.WriteFile(main, cur, 0o600)
}

var portInUse = regexp.MustCompile(`could not bind|Address already in use|could not create any TCP/IP sockets`)

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartCluster starts a server on dataDir (which must belong to the cluster
// user) with a fresh socket directory and port. Stop it with Stop.
func StartCluster(ctx context.Context, u runas.User, binDir, dataDir, logPath string) (*Cluster, error) {
	sock, err := os.MkdirTemp("", "pitr-bench-sock-")
	if err != nil {
		return nil, err
	}
	if err := u.MkdirShared(sock); err != nil {
		os.RemoveAll(sock)
		return nil, err
	}
	c := &Cluster{User: u, BinDir: binDir, DataDir: dataDir, LogPath: logPath, SockDir: sock}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(sock)
			return nil, err
		}
		c.Port = port
		before := logSize(logPath)
		_, err = c.cmd(ctx, "pg_ctl", "-D", dataDir, "-l", logPath, "-w", "-t", "300",
			"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", port, sock), "start")
		if err == nil {
			c.running = true
			return c, nil
		}
		lastErr = fmt.Errorf("%w\n--- server log ---\n%s", err, logFrom(logPath, before))
		if !portInUse.MatchString(logFrom(logPath, before)) {
			break
		}
	}
	os.RemoveAll(sock)
	return nil, lastErr
}

// Stop shuts the server down (fast mode) and removes the socket directory.
func (c *Cluster) Stop(ctx context.Context) error {
	if c == nil || !c.running {
		return nil
	}
	_, err := c.cmd(ctx, "pg_ctl", "-D", c.DataDir, "-w", "-t", "300", "-m", "fast", "stop")
	if err != nil {
		// Last resort, so no server outlives the benchmark.
		_, _ = c.cmd(context.Background(), "pg_ctl", "-D", c.DataDir, "-m", "immediate", "stop")
	}
	c.running = false
	_ = os.RemoveAll(c.SockDir)
	return err
}

func logSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func logFrom(p string, off int64) string {
	b, err := os.ReadFile(p)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	s := strings.TrimSpace(string(b[off:]))
	if lines := strings.Split(s, "\n"); len(lines) > 30 {
		s = strings.Join(lines[len(lines)-30:], "\n")
	}
	return s
}

// waitArchived waits until the archiver has archived name (or later) with no
// failure since the server started.
func (c *Cluster) waitArchived(ctx context.Context, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := c.Query(ctx, "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver")
		if err != nil {
			return err
		}
		f := strings.Split(out, "|")
		if len(f) == 3 {
			if f[1] != "0" {
				return fmt.Errorf("archive_command failed %s times (last failure %s); see %s", f[1], f[2], c.LogPath)
			}
			if len(f[0]) == 24 && f[0] >= name {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not archived within %v (archiver: %s)", name, timeout, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
