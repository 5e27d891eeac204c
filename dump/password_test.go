package dump

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeClient writes a program that records its arguments and PGPASSWORD.
func fakeClient(t *testing.T) (path, record string) {
	t.Helper()
	dir := t.TempDir()
	record = filepath.Join(dir, "record")
	path = filepath.Join(dir, "pg_dump")
	script := "#!/bin/sh\nprintf 'args=%s\\npassword=%s\\n' \"$*\" \"$PGPASSWORD\" > " + record + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, record
}

// A password in --dsn reaches the program through its environment, never
// its command line, which every local user can read.
func TestPasswordNotOnCommandLine(t *testing.T) {
	path, record := fakeClient(t)
	args := []string{"-Fc", "--no-password", "-d", "host=db password='pa ss' dbname=app"}
	if err := runTool(context.Background(), path, args, nil, func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if strings.Contains(strings.SplitN(got, "\n", 2)[0], "pa ss") || !strings.Contains(got, "args=-Fc --no-password -d host=db dbname=app\n") {
		t.Fatalf("command line: %q", got)
	}
	if !strings.Contains(got, "password=pa ss\n") {
		t.Fatalf("PGPASSWORD not passed: %q", got)
	}
}
