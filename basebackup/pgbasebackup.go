package basebackup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/internal/conninfo"
	"github.com/pitr-dev/pitr/internal/lazyre"
)

// DefaultPGBinDir is where Debian and Ubuntu (apt.postgresql.org) install the
// programs of each major version side by side.
func DefaultPGBinDir(major int) string {
	return fmt.Sprintf("/usr/lib/postgresql/%d/bin", major)
}

// ErrClientVersion means pg_basebackup is missing or is not of the server's
// major version.
var ErrClientVersion = errors.New("pg_basebackup does not match the server")

var clientVersionRE = lazyre.New(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// checkPGBaseBackup finds pg_basebackup in binDir (default: the server's
// major version's directory) and refuses it unless `pg_basebackup --version`
// reports the server's major version. An older client may not know newer
// server features, and one famous outage lost its backups to a dump tool one
// major version behind that failed every night unnoticed: so a mismatch is an
// error before anything starts, naming both versions.
func checkPGBaseBackup(ctx context.Context, binDir string, server Server) (string, error) {
	if binDir == "" {
		binDir = DefaultPGBinDir(server.Major())
	}
	path := filepath.Join(binDir, "pg_basebackup")
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w: %s not found (the server is PostgreSQL %s: install its client programs, e.g. postgresql-client-%d, or set --pg-bin): %v",
			ErrClientVersion, path, server.VersionString(), server.Major(), err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s --version: %v", ErrClientVersion, path, err)
	}
	text := strings.TrimSpace(string(out))
	m := clientVersionRE().FindStringSubmatch(text)
	if m == nil {
		return "", fmt.Errorf("%w: cannot read the version of %s from %q", ErrClientVersion, path, text)
	}
	major, _ := strconv.Atoi(m[1])
	if major != server.Major() {
		client := m[1]
		if m[2] != "" {
			client += "." + m[2]
		}
		return "", fmt.Errorf("%w: %s is version %s but the server is PostgreSQL %s; use pg_basebackup %d (set --pg-bin to its directory)",
			ErrClientVersion, path, client, server.VersionString(), server.Major())
	}
	return path, nil
}

// pgBaseBackupArgs builds the command line for a tar stream on stdout
// without WAL (-X none: the archive supplies it; the server waits until the
// last segment is archived before pg_basebackup exits).
func pgBaseBackupArgs(o *Options, label, alg string) []string {
	checkpoint := "spread"
	if o.FastCheckpoint {
		checkpoint = "fast"
	}
	args := []string{"-D", "-", "-F", "tar", "-X", "none", "-c", checkpoint,
		"-l", label, "--manifest-checksums=" + alg, "--no-estimate-size"}
	if o.DSN != "" {
		args = append(args, "-d", o.DSN)
	}
	if o.MaxRate != "" {
		args = append(args, "-r", o.MaxRate)
	}
	return args
}

// runPGBaseBackup runs pg_basebackup and hands its stdout (one tar stream
// that ends with the backup_manifest) to consume. The process is stopped if
// consume fails or ctx ends; its exit status decides, together with consume,
// whether the stream was complete.
func runPGBaseBackup(ctx context.Context, path string, args []string, log *slog.Logger, consume func(io.Reader) error) error {
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
	// SIGTERM first: pg_basebackup then exits and the server aborts the backup.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	setParentDeathSignal(cmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	growPipe(stdout)
	stderr := &stderrLog{log: log}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", path, err)
	}
	cerr := consume(stdout)
	if cerr != nil {
		cancel()
		// Unblock a pg_basebackup stuck writing to a pipe nobody reads.
		go io.Copy(io.Discard, stdout)
	}
	werr := cmd.Wait()
	stderr.flush()
	if werr != nil {
		msg := stderr.tail()
		if ctx.Err() != nil && cerr == nil {
			return fmt.Errorf("pg_basebackup stopped: %w", context.Cause(ctx))
		}
		if cerr != nil {
			return cerr
		}
		return fmt.Errorf("pg_basebackup failed (%v): %s", werr, msg)
	}
	return cerr
}

// stderrLog logs pg_basebackup's stderr line by line and keeps the last
// lines for the error message.
type stderrLog struct {
	log     *slog.Logger
	mu      sync.Mutex
	partial []byte
	last    []string
}

const stderrTailLines = 5

func (s *stderrLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.line(string(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	if len(s.partial) > 64<<10 {
		s.line(string(s.partial))
		s.partial = s.partial[:0]
	}
	return len(p), nil
}

func (s *stderrLog) line(l string) {
	l = strings.TrimSpace(l)
	if l == "" {
		return
	}
	s.log.Info("pg_basebackup", "line", l)
	s.last = append(s.last, l)
	if len(s.last) > stderrTailLines {
		s.last = s.last[1:]
	}
}

func (s *stderrLog) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(s.partial))
	for sc.Scan() {
		s.line(sc.Text())
	}
	s.partial = nil
}

func (s *stderrLog) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.last) == 0 {
		return "no message on stderr"
	}
	return strings.Join(s.last, " / ")
}
