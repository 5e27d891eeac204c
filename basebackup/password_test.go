package basebackup

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A password in --dsn reaches pg_basebackup through its environment, never
// its command line, which every local user can read.
func TestPasswordNotOnCommandLine(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "record")
	path := filepath.Join(dir, "pg_basebackup")
	script := "#!/bin/sh\nprintf 'args=%s\\npassword=%s\\n' \"$*\" \"$PGPASSWORD\" > " + record + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	args := pgBaseBackupArgs(&Options{DSN: "postgres://backup:s3cret@db:5432/postgres"}, "lbl", "CRC32C")
	err := runPGBaseBackup(context.Background(), path, args, slog.New(slog.DiscardHandler), func(r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if strings.Contains(strings.SplitN(got, "\n", 2)[0], "s3cret") || !strings.Contains(got, "-d postgres://backup@db:5432/postgres") {
		t.Fatalf("command line: %q", got)
	}
	if !strings.Contains(got, "password=s3cret\n") {
		t.Fatalf("PGPASSWORD not passed: %q", got)
	}
}
