package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Without a reachable repository or server, check reports both with fixes
// and exits 1.
func TestCheckUnreachable(t *testing.T) {
	isolate(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := runPitr(t, "check", "--repo", "file://"+file+"/repo", "--dsn", "host=/nonexistent port=1 connect_timeout=2")
	if code != 1 || !strings.Contains(stdout, "fail repository") || !strings.Contains(stdout, "fail server") ||
		strings.Count(stdout, "Fix:") < 2 || !strings.Contains(stdout, "check FAILED: 2 problem(s)") {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
}
