package pitr

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/internal/lazyre"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// ServerSettings are what pitr check reads from the server.
type ServerSettings struct {
	VersionNum       int
	SystemIdentifier repo.SystemID
	WalLevel         string
	ArchiveMode      string
	ArchiveCommand   string
	ArchiveLibrary   string
	RestoreCommand   string
	ArchiveTimeout   int // seconds
	InRecovery       bool
}

// ReadServerSettings connects with dsn (libpq syntax, PG* environment for
// the rest) and reads the settings pitr check judges.
func ReadServerSettings(ctx context.Context, conn *pgx.Conn) (ServerSettings, error) {
	var s ServerSettings
	var sysid int64
	var lib *string
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int,
		(SELECT system_identifier FROM pg_control_system()),
		current_setting('wal_level'), current_setting('archive_mode'), current_setting('archive_command'),
		current_setting('archive_library', true), current_setting('restore_command'),
		(SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout'), pg_is_in_recovery()`).Scan(
		&s.VersionNum, &sysid, &s.WalLevel, &s.ArchiveMode, &s.ArchiveCommand, &lib, &s.RestoreCommand, &s.ArchiveTimeout, &s.InRecovery)
	if err != nil {
		return s, fmt.Errorf("read server settings: %w", err)
	}
	s.SystemIdentifier = repo.SystemID(sysid)
	if lib != nil {
		s.ArchiveLibrary = *lib
	}
	return s, nil
}

// ConnectServer opens a connection for pitr check and status.
func ConnectServer(ctx context.Context, dsn, app string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx puts the whole DSN (and so a password) in some parse errors.
		return nil, errors.New("connection settings (dsn or PG* environment) are not valid")
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > 10*time.Second {
		cfg.ConnectTimeout = 10 * time.Second
	}
	cfg.RuntimeParams["application_name"] = app
	return pgx.ConnectConfig(ctx, cfg)
}

// PitrInvocation is what a pitr command line in archive_command or
// restore_command says about the repository.
type PitrInvocation struct {
	Binary     string
	Subcommand string // archive-push, wal-fetch
	Repo       string // --repo, if given
	Config     string // --config, if given
}

// ParsePitrCommand finds a pitr invocation in a shell command line. ok is
// false when the command does not run pitr's sub-command.
func ParsePitrCommand(cmdline, sub string) (PitrInvocation, bool) {
	words := shellWords(cmdline)
	for i, w := range words {
		if w != sub || i == 0 || !strings.Contains(path.Base(words[i-1]), "pitr") {
			continue
		}
		inv := PitrInvocation{Binary: words[i-1], Subcommand: sub}
		rest := words[i+1:]
		for j := 0; j < len(rest); j++ {
			name, val, hasVal := strings.Cut(strings.TrimLeft(rest[j], "-"), "=")
			if !strings.HasPrefix(rest[j], "-") {
				if rest[j] == "&&" || rest[j] == ";" || rest[j] == "||" || rest[j] == "|" {
					break
				}
				continue
			}
			if name != "repo" && name != "config" {
				continue
			}
			if !hasVal && j+1 < len(rest) {
				j++
				val = rest[j]
			}
			if name == "repo" {
				inv.Repo = val
			} else {
				inv.Config = val
			}
		}
		return inv, true
	}
	return PitrInvocation{}, false
}

// shellWords splits a command line like sh would, for the quoting forms
// people put in archive_command: '...', "...", backslash escapes.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	in := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				cur.WriteRune(c)
			}
		case quote == '"':
			if c == '"' {
				quote = 0
			} else if c == '\\' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case c == ';':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
			words = append(words, ";")
		default:
			cur.WriteRune(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// SameRepo reports whether two repository URLs name the same place.
func SameRepo(a, b string) bool {
	norm := func(s string) string {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return s
		}
		p := u.Path
		if u.Scheme == "file" {
			p = filepath.Clean(p)
		} else {
			p = strings.Trim(p, "/")
		}
		return strings.ToLower(u.Scheme) + "://" + u.Host + "/" + strings.TrimPrefix(p, "/")
	}
	return norm(a) == norm(b)
}

// RepoOfConfig reads the repo setting of a pitr config file.
type RepoOfConfig func(file string) (string, error)

// CheckSettings judges the server's archiving settings against the
// repository pitr check was given. repoOf reads another config file's
// repository (the one archive_command names); defaultConfig is the file
// archive-push reads when the command names none.
func CheckSettings(s ServerSettings, wantRepo string, repoOf RepoOfConfig, defaultConfig string) []CheckResult {
	var out []CheckResult
	add := func(name, result, detail string) {
		out = append(out, CheckResult{Name: name, Result: result, Detail: detail})
	}
	switch s.WalLevel {
	case "replica", "logical":
		add("wal_level", CheckPass, s.WalLevel)
	default:
		add("wal_level", CheckFail, fmt.Sprintf("wal_level is %s; archived WAL from it cannot restore a base backup. Fix: ALTER SYSTEM SET wal_level = 'replica', then restart", s.WalLevel))
	}
	switch {
	case s.ArchiveMode == "on" || s.ArchiveMode == "always":
		add("archive_mode", CheckPass, s.ArchiveMode)
	case s.InRecovery:
		add("archive_mode", CheckFail, fmt.Sprintf("archive_mode is %s on this standby; it archives nothing (the primary does, or set archive_mode = 'always')", s.ArchiveMode))
	default:
		add("archive_mode", CheckFail, fmt.Sprintf("archive_mode is %s: nothing is archived. Fix: ALTER SYSTEM SET archive_mode = 'on', then restart PostgreSQL", s.ArchiveMode))
	}
	fixCmd := fmt.Sprintf("ALTER SYSTEM SET archive_command = '<path to pitr> archive-push --config <config file> %%p' (a config file whose repo is %s), then SELECT pg_reload_conf()", wantRepo)
	if s.ArchiveCommand == "(disabled)" { // what SHOW says while archive_mode is off
		add("archive_command", CheckSkip, "not in effect while archive_mode is off")
	} else if s.ArchiveLibrary != "" {
		add("archive_command", CheckFail, fmt.Sprintf("archive_library is %q, so archive_command is not used. Fix: ALTER SYSTEM RESET archive_library; %s", s.ArchiveLibrary, fixCmd))
	} else if inv, ok := ParsePitrCommand(s.ArchiveCommand, "archive-push"); !ok {
		add("archive_command", CheckFail, fmt.Sprintf("archive_command %q does not run pitr archive-push. Fix: %s", s.ArchiveCommand, fixCmd))
	} else {
		r, c := judgeRepo(inv, wantRepo, repoOf, defaultConfig, "archive_command")
		add("archive_command", r, c+fixIf(r, fixCmd))
	}
	if s.RestoreCommand == "" {
		add("restore_command", CheckPass, "not set (pitr restore writes its own)")
	} else if inv, ok := ParsePitrCommand(s.RestoreCommand, "wal-fetch"); !ok {
		add("restore_command", CheckFail, fmt.Sprintf("restore_command %q does not run pitr wal-fetch. Fix: ALTER SYSTEM SET restore_command = '<path to pitr> wal-fetch --config <config file> %%f %%p'", s.RestoreCommand))
	} else {
		r, c := judgeRepo(inv, wantRepo, repoOf, defaultConfig, "restore_command")
		add("restore_command", r, c+fixIf(r, "ALTER SYSTEM SET restore_command = '<path to pitr> wal-fetch --config <config file> %f %p'"))
	}
	return out
}

func fixIf(result, fix string) string {
	if result == CheckFail {
		return ". Fix: " + fix
	}
	return ""
}

// judgeRepo decides whether a pitr invocation uses wantRepo.
func judgeRepo(inv PitrInvocation, wantRepo string, repoOf RepoOfConfig, defaultConfig, setting string) (string, string) {
	var got, from string
	switch {
	case inv.Repo != "":
		got, from = inv.Repo, "--repo"
	case inv.Config != "":
		r, err := repoOf(inv.Config)
		if err != nil {
			return CheckFail, fmt.Sprintf("%s uses config file %s, which cannot be read here (%v)", setting, inv.Config, err)
		}
		got, from = r, "config file "+inv.Config
	default:
		r, err := repoOf(defaultConfig)
		if err != nil || r == "" {
			return CheckFail, fmt.Sprintf("%s names no repository (no --repo or --config) and %s has none; it depends on the server's environment (PITR_REPO), which pitr check cannot see", setting, defaultConfig)
		}
		got, from = r, "default config file "+defaultConfig
	}
	if !SameRepo(got, wantRepo) {
		return CheckFail, fmt.Sprintf("%s archives into %s (from %s), not into %s", setting, got, from, wantRepo)
	}
	return CheckPass, fmt.Sprintf("runs %s %s into %s (from %s)", inv.Binary, inv.Subcommand, got, from)
}

// ProbeRepository writes, reads back and deletes a small object, and
// returns the clock skew between the repository's modification time of it
// and this machine's clock.
func ProbeRepository(ctx context.Context, st storage.Store, now func() time.Time) (time.Duration, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	key := "pitr-check/probe-" + hex.EncodeToString(rnd[:])
	body := []byte("pitr check probe " + hex.EncodeToString(rnd[:]) + "\n")
	before := now()
	if err := st.Put(ctx, key, bytes.NewReader(body)); err != nil {
		return 0, fmt.Errorf("write %s: %w", key, err)
	}
	after := now()
	defer st.Delete(context.WithoutCancel(ctx), key)
	rc, err := st.Open(ctx, key, 0)
	if err != nil {
		return 0, fmt.Errorf("read %s back: %w", key, err)
	}
	got, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	rc.Close()
	if err != nil {
		return 0, fmt.Errorf("read %s back: %w", key, err)
	}
	if !bytes.Equal(got, body) {
		return 0, fmt.Errorf("read %s back: got different bytes than were written", key)
	}
	info, err := st.Stat(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", key, err)
	}
	if err := st.Delete(ctx, key); err != nil {
		return 0, fmt.Errorf("delete %s: %w", key, err)
	}
	return skew(info.ModTime, before, after), nil
}

// skew is how far t lies outside [before, after] (0 inside), signed.
func skew(t, before, after time.Time) time.Duration {
	switch {
	case t.Before(before.Add(-time.Second)): // object stores keep whole seconds
		return t.Sub(before)
	case t.After(after):
		return t.Sub(after)
	}
	return 0
}

// MaxClockSkew is what pitr check tolerates between the server, the
// repository and this machine: recovery targets are server times, archive
// times come from the repository.
const MaxClockSkew = 10 * time.Second

// CheckClock judges measured skews.
func CheckClock(server, repository time.Duration) CheckResult {
	abs := func(d time.Duration) time.Duration {
		if d < 0 {
			return -d
		}
		return d
	}
	detail := fmt.Sprintf("server clock %+.1fs, repository clock %+.1fs from this machine's", server.Seconds(), repository.Seconds())
	if abs(server) > MaxClockSkew || abs(repository) > MaxClockSkew {
		return CheckResult{Name: "clock", Result: CheckFail, Detail: detail + fmt.Sprintf(" (more than %s): recovery target times and archive times disagree. Fix: synchronise the clocks (chrony, systemd-timesyncd)", MaxClockSkew)}
	}
	return CheckResult{Name: "clock", Result: CheckPass, Detail: detail}
}

// ServerClockSkew measures the server's clock against local time.
func ServerClockSkew(ctx context.Context, conn *pgx.Conn, now func() time.Time) (time.Duration, error) {
	before := now()
	var server time.Time
	if err := conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&server); err != nil {
		return 0, err
	}
	after := now()
	mid := before.Add(after.Sub(before) / 2)
	d := server.Sub(mid)
	if half := after.Sub(before) / 2; d > -half && d < half {
		return 0, nil
	}
	return d, nil
}

var rePGVersion = lazyre.New(`\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?`)

// ParsePGVersionOutput reads the major version from "pg_basebackup
// (PostgreSQL) 15.8 (Debian ...)".
func ParsePGVersionOutput(out string) (int, error) {
	m := rePGVersion().FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("unrecognised --version output %q", strings.TrimSpace(out))
	}
	return strconv.Atoi(m[1])
}

// CheckBaseBackupBinary runs pg_basebackup --version from dir (default
// /usr/lib/postgresql/<major>/bin) and compares its major version.
func CheckBaseBackupBinary(ctx context.Context, dir string, serverVersionNum int) CheckResult {
	major := serverVersionNum / 10000
	if dir == "" {
		dir = fmt.Sprintf("/usr/lib/postgresql/%d/bin", major)
	}
	bin := filepath.Join(dir, "pg_basebackup")
	fix := fmt.Sprintf("Fix: install the PostgreSQL %d client programs (Debian: postgresql-client-%d) or set pg_bin", major, major)
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return CheckResult{Name: "pg_basebackup", Result: CheckFail, Detail: fmt.Sprintf("%s: %v. %s", bin, err, fix)}
	}
	got, err := ParsePGVersionOutput(string(out))
	if err != nil {
		return CheckResult{Name: "pg_basebackup", Result: CheckFail, Detail: fmt.Sprintf("%s: %v", bin, err)}
	}
	if got != major {
		return CheckResult{Name: "pg_basebackup", Result: CheckFail, Detail: fmt.Sprintf("%s is PostgreSQL %d, the server is %d. %s", bin, got, major, fix)}
	}
	return CheckResult{Name: "pg_basebackup", Result: CheckPass, Detail: fmt.Sprintf("%s is PostgreSQL %d, like the server", bin, got)}
}

// SwitchAndWait makes the server complete a WAL segment and waits until
// the repository of system id holds it. It returns the segment's name.
func SwitchAndWait(ctx context.Context, conn *pgx.Conn, st storage.Store, id repo.SystemID, timeout time.Duration) (string, error) {
	// A transaction with an xid writes a commit record, so the switch has
	// something to complete (pg_switch_wal on an idle segment does nothing).
	if _, err := conn.Exec(ctx, "SELECT pg_current_xact_id()"); err != nil {
		return "", err
	}
	var name string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&name); err != nil {
		return "", fmt.Errorf("pg_switch_wal(): %w (run pitr check as a superuser, or GRANT EXECUTE ON FUNCTION pg_switch_wal() to its role)", err)
	}
	key, err := repo.WALKey(id, name)
	if err != nil {
		return name, err
	}
	deadline := time.Now().Add(timeout)
	for {
		_, err := st.Stat(ctx, key)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, storage.ErrNotExist) {
			return name, fmt.Errorf("look for %s in the repository: %w", name, err)
		}
		if time.Now().After(deadline) {
			return name, fmt.Errorf("segment %s did not reach the repository within %s", name, timeout)
		}
		select {
		case <-ctx.Done():
			return name, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
