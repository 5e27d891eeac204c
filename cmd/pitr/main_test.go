package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage/fs"
)

// runPitr runs the CLI in-process with a clean PITR_* environment.
func runPitr(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func isolate(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "PITR_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Setenv("PITR_CONFIG", filepath.Join(t.TempDir(), "absent.yaml"))
	os.Unsetenv("PITR_CONFIG")
	t.Chdir(t.TempDir())
}

// newRepoURL creates a repository bound to a system, so wal-fetch can tell
// "not archived" from "no repository".
func newRepoURL(t *testing.T) (string, *fs.Store) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	st, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(context.Background(), st, 7, time.Now()); err != nil {
		t.Fatal(err)
	}
	return "file://" + dir, st
}

// The exit status is PostgreSQL's contract, so every failure class is pinned here.
func TestWalFetchExitCodes(t *testing.T) {
	isolate(t)
	url, st := newRepoURL(t)
	cases := []struct {
		name string
		args []string
		want int
	}{
		{"not archived", []string{"wal-fetch", "--repo", url, "000000010000000000000001", "RECOVERYXLOG"}, 1},
		{"history probe", []string{"wal-fetch", "--repo", url, "00000002.history", "RECOVERYHISTORY"}, 1},
		{"no repository", []string{"wal-fetch", "--repo", "file://" + t.TempDir(), "000000010000000000000001", "RECOVERYXLOG"}, 255},
		{"no repo configured", []string{"wal-fetch", "000000010000000000000001", "RECOVERYXLOG"}, 255},
		{"missing argument", []string{"wal-fetch", "--repo", url, "000000010000000000000001"}, 255},
		{"unknown flag", []string{"wal-fetch", "--bogus", "000000010000000000000001", "x"}, 255},
		{"invalid name", []string{"wal-fetch", "--repo", url, "../../etc/passwd", "x"}, 255},
		{"bad scheme", []string{"wal-fetch", "--repo", "ftp://x/y", "000000010000000000000001", "x"}, 255},
	}
	for _, tc := range cases {
		code, _, stderr := runPitr(t, tc.args...)
		if code != tc.want {
			t.Errorf("%s: exit %d, want %d (stderr: %s)", tc.name, code, tc.want, stderr)
		}
		if code != 0 && strings.Count(strings.TrimSpace(stderr), "\n") > 0 && tc.want != 255 {
			t.Errorf("%s: error is not one line: %q", tc.name, stderr)
		}
	}
	// A corrupt object stops recovery.
	key, _ := repo.WALKey(7, "000000010000000000000002")
	if err := st.Put(context.Background(), key, strings.NewReader("garbage")); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runPitr(t, "wal-fetch", "--repo", url, "000000010000000000000002", "RECOVERYXLOG"); code != 255 || !strings.Contains(stderr, "corrupt") {
		t.Errorf("corrupt object: exit %d, stderr %s", code, stderr)
	}
	if _, err := os.Stat("RECOVERYXLOG"); err == nil {
		t.Error("a failed fetch left RECOVERYXLOG")
	}
}

// archive-push never exits above 125, whatever goes wrong, or PostgreSQL's
// archiver would restart instead of counting and retrying.
func TestArchivePushExitCodes(t *testing.T) {
	isolate(t)
	url, _ := newRepoURL(t)
	for name, args := range map[string][]string{
		"missing file":   {"archive-push", "--repo", url, "pg_wal/000000010000000000000001"},
		"no arguments":   {"archive-push", "--repo", url},
		"unknown flag":   {"archive-push", "--nope", "x"},
		"no repo":        {"archive-push", "pg_wal/000000010000000000000001"},
		"bad name":       {"archive-push", "--repo", url, "/etc/passwd"},
		"bad log level":  {"archive-push", "--repo", url, "--log-level", "loud", "x"},
		"bad codec":      {"archive-push", "--repo", url, "--compression", "lzma", "x"},
		"help requested": {"archive-push", "-h"},
	} {
		if code, _, stderr := runPitr(t, args...); code != 1 {
			t.Errorf("%s: exit %d, want 1 (stderr: %s)", name, code, stderr)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	if code, _, stderr := runPitr(t, "archive-pus"); code != 2 || !strings.Contains(stderr, "archive-pus") {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
}

// Flags override the environment, which overrides the config file.
func TestConfigPrecedence(t *testing.T) {
	isolate(t)
	file := filepath.Join(t.TempDir(), "pitr.yaml")
	os.WriteFile(file, []byte("repo: file:///from-file\ncompression: none\nlog_level: warn\n"), 0o600)
	load := func(env map[string]string, args ...string) Config {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		defer func() {
			for k := range env {
				os.Unsetenv(k)
			}
		}()
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		get := configFlags(fs)
		if err := fs.Parse(append([]string{"--config", file}, args...)); err != nil {
			t.Fatal(err)
		}
		cfg, err := get()
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if c := load(nil); c.Repo != "file:///from-file" || c.Compression != "none" || c.File != file {
		t.Errorf("file only: %+v", c)
	}
	if c := load(map[string]string{"PITR_REPO": "file:///from-env"}); c.Repo != "file:///from-env" || c.LogLevel != "warn" {
		t.Errorf("env over file: %+v", c)
	}
	if c := load(map[string]string{"PITR_REPO": "file:///from-env"}, "--repo", "file:///from-flag"); c.Repo != "file:///from-flag" {
		t.Errorf("flag over env: %+v", c)
	}
	// A secret is never a flag.
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	configFlags(fs)
	if fs.Lookup("s3-secret-access-key") != nil {
		t.Error("the S3 secret is settable on the command line")
	}
}

func TestConfigFileErrors(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("repo: file:///x\nrepository: typo\n"), 0o600)
	code, _, stderr := runPitr(t, "archive-push", "--config", bad, "x")
	if code != 1 || !strings.Contains(stderr, "repository") {
		t.Errorf("unknown key: exit %d, %s", code, stderr)
	}
	code, _, stderr = runPitr(t, "archive-push", "--config", filepath.Join(dir, "missing.yaml"), "x")
	if code != 1 || !strings.Contains(stderr, "missing.yaml") {
		t.Errorf("explicit missing file: exit %d, %s", code, stderr)
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, []byte("# nothing yet\n"), 0o600)
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	get := configFlags(fs)
	fs.Parse([]string{"--config", empty})
	if _, err := get(); err != nil {
		t.Errorf("comment-only config file: %v", err)
	}
}

// The README documents the config schema; it must list every setting.
func TestReadmeDocumentsEveryConfigKey(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range configFields() {
		if !bytes.Contains(readme, []byte("`"+f.key+"`")) || !bytes.Contains(readme, []byte("`"+f.env+"`")) {
			t.Errorf("README.md does not document %s / %s", f.key, f.env)
		}
	}
}

// restore --start as root is refused before anything is written: the
// server could not start, and nothing should be laid out (or prefetched)
// for it.
func TestRestoreStartAsRootRefusedFirst(t *testing.T) {
	isolate(t)
	geteuid = func() int { return 0 }
	t.Cleanup(func() { geteuid = os.Geteuid })
	url, _ := newRepoURL(t)
	pgdata := filepath.Join(t.TempDir(), "data")
	code, _, stderr := runPitr(t, "restore", "--repo", url, "--pgdata", pgdata, "--target", "latest", "--start")
	if code == 0 || !strings.Contains(stderr, "does not run as root") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(pgdata); !os.IsNotExist(err) {
		t.Fatalf("the data directory was created: %v", err)
	}
}
