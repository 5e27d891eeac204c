package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/internal/conninfo"
	"github.com/pitr-dev/pitr/internal/lazyre"
	"github.com/pitr-dev/pitr/repo"
)

// ErrClientVersion means a client program (pg_dump, pg_dumpall, pg_restore,
// psql) is missing or is not of the server's major version.
var ErrClientVersion = errors.New("client program does not match the server")

var clientVersionRE = lazyre.New(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// findTool returns binDir/name (binDir default: the server's major
// version's directory) after checking that `name --version` is of the
// server's major version, and the version it printed. A pg_dump one major
// version behind the server fails every night; one ahead writes archives an
// older pg_restore cannot read: refused before anything starts, naming both.
func findTool(ctx context.Context, binDir, name string, serverNum int) (path, version string, err error) {
	major := serverNum / 10000
	if binDir == "" {
		binDir = basebackup.DefaultPGBinDir(major)
	}
	path = filepath.Join(binDir, name)
	if _, err := os.Stat(path); err != nil {
		return "", "", fmt.Errorf("%w: %s not found (the server is PostgreSQL %s: install its client programs, e.g. postgresql-client-%d, or set --pg-bin): %v",
			ErrClientVersion, path, versionString(serverNum), major, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("%w: %s --version: %v", ErrClientVersion, path, err)
	}
	text := strings.TrimSpace(string(out))
	m := clientVersionRE().FindStringSubmatch(text)
	if m == nil {
		return "", "", fmt.Errorf("%w: cannot read the version of %s from %q", ErrClientVersion, path, text)
	}
	version = m[1]
	if m[2] != "" {
		version += "." + m[2]
	}
	if got, _ := strconv.Atoi(m[1]); got != major {
		return "", "", fmt.Errorf("%w: %s is version %s but the server is PostgreSQL %s; use %s %d (set --pg-bin to its directory)",
			ErrClientVersion, path, version, versionString(serverNum), name, major)
	}
	return path, version, nil
}

func versionString(num int) string { return fmt.Sprintf("%d.%d", num/10000, num%10000) }

// withDatabase returns dsn with its database replaced by db, for the
// client programs (which take a connection string in -d). Keyword/value
// strings get a trailing dbname (libpq lets a later keyword override an
// earlier one); URIs get db as their path.
func withDatabase(dsn, db string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("connection settings (--dsn) are not a valid URI")
		}
		u.Path = "/" + db
		u.RawPath = ""
		return u.String(), nil
	}
	quoted := "'" + strings.ReplaceAll(strings.ReplaceAll(db, `\`, `\\`), `'`, `\'`) + "'"
	if strings.TrimSpace(dsn) == "" {
		return "dbname=" + quoted, nil
	}
	return dsn + " dbname=" + quoted, nil
}

// connectTimeout bounds connecting when the DSN sets none.
const connectTimeout = 30 * time.Second

// connect opens a connection with the libpq settings in dsn (and the PG*
// environment), to database db unless db is "".
func connect(ctx context.Context, dsn, db, app string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx puts the whole DSN (and so a password) in some parse errors.
		return nil, fmt.Errorf("connection settings (--dsn or PG* environment) are not valid")
	}
	if db != "" {
		cfg.Database = db
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	cfg.RuntimeParams["application_name"] = app
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if db != "" {
			return nil, fmt.Errorf("connect to database %s: %w", db, err)
		}
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return conn, nil
}

// serverInfo is what a dump needs to know about the server.
type serverInfo struct {
	VersionNum int
	SystemID   repo.SystemID
	Clock      time.Time
}

func queryServer(ctx context.Context, conn *pgx.Conn) (serverInfo, error) {
	var s serverInfo
	var sysid int64
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int,
		(SELECT system_identifier FROM pg_control_system()), clock_timestamp()`).Scan(&s.VersionNum, &sysid, &s.Clock)
	if err != nil {
		return s, fmt.Errorf("query server: %w", err)
	}
	s.SystemID = repo.SystemID(uint64(sysid))
	s.Clock = s.Clock.UTC()
	return s, nil
}

// runTool runs a client program, hands its stdout to consume (nil: stdin
// gets stdin and stdout is discarded), and returns an error carrying the
// first error line of its stderr when it fails.
func runTool(ctx context.Context, path string, args []string, stdin io.Reader, consume func(io.Reader) error) error {
	return runToolFull(ctx, path, args, stdin, &stderrBuf{}, consume)
}

// runToolWith runs a program fed from stdin, its stdout discarded.
func runToolWith(ctx context.Context, path string, args []string, stdin io.Reader, stderr *stderrBuf) error {
	return runToolFull(ctx, path, args, stdin, stderr, nil)
}

func runToolFull(ctx context.Context, path string, args []string, stdin io.Reader, stderr *stderrBuf, consume func(io.Reader) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args, env, err := conninfo.HidePassword(args)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Stderr = stderr
	cmd.Stdin = stdin
	var stdout io.ReadCloser
	if consume != nil {
		var err error
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return err
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(path), err)
	}
	var cerr error
	if consume != nil {
		if cerr = consume(stdout); cerr != nil {
			cancel()
			go io.Copy(io.Discard, stdout)
		}
	}
	werr := cmd.Wait()
	name := filepath.Base(path)
	switch {
	case cerr != nil:
		return cerr
	case werr != nil && ctx.Err() != nil:
		return fmt.Errorf("%s stopped: %w", name, context.Cause(ctx))
	case werr != nil:
		return fmt.Errorf("%s failed (%v): %s", name, werr, stderr.firstError())
	}
	return nil
}

// stderrBuf keeps the beginning of a program's stderr (bounded).
type stderrBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const stderrKeep = 64 << 10

func (s *stderrBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if room := stderrKeep - s.buf.Len(); room > 0 {
		s.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (s *stderrBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// firstError is the first line that says "error:" or "FATAL:" (pg_dump
// prints "pg_dump: error: ..."), else the first non-empty line.
func (s *stderrBuf) firstError() string {
	return firstErrorLine(s.String())
}

func firstErrorLine(text string) string {
	first := ""
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if first == "" {
			first = l
		}
		if strings.Contains(l, "error:") || strings.Contains(l, "ERROR:") || strings.Contains(l, "FATAL:") {
			return l
		}
	}
	if first == "" {
		return "no message on stderr"
	}
	return first
}
