package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/bench/internal/benchkit"
	"github.com/pitr-dev/pitr/bench/internal/runas"
)

// The reaper reports the command's exit as soon as it happens, while a
// process the command left behind is still running, and reports the CPU
// only once that orphan has exited too (so its CPU is in the total): the
// orphan waits for a file the test creates after the first report, and
// writes another as it ends, which must exist at the second.
func TestReaperWaitsForOrphans(t *testing.T) {
	if _, err := os.Stat(runas.GNUTime); err != nil {
		t.Skipf("%s: %v", runas.GNUTime, err)
	}
	dir := t.TempDir()
	reaper, err := benchkit.BuildReaper(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	goOn, ended := filepath.Join(dir, "go-on"), filepath.Join(dir, "ended")
	// The orphan lets go of the output pipe, or waiting for the reaper
	// (which waits for the pipe) would outlast the orphan anyway.
	script := `(while [ ! -e "$1" ]; do sleep 0.01; done; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; touch "$2") >/dev/null 2>&1 & exit 3`
	argv := []string{"/bin/sh", "-c", script, "sh", goOn, ended}
	cmd := exec.Command(reaper, append([]string{runas.GNUTime, filepath.Join(dir, "rss"), "--"}, argv...)...)
	c, err := launch(cmd, argv)
	if err != nil {
		t.Fatal(err)
	}
	if c.status != 3 {
		t.Errorf("exit status %d, want the command's 3", c.status)
	}
	if _, err := os.Stat(ended); err == nil {
		t.Fatal("the command's exit was reported after its orphan ended")
	}
	if err := os.WriteFile(goOn, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.finish(time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ended); err != nil {
		t.Fatalf("the reaper reported before the orphan ended: %v", err)
	}
	if c.cpu <= 0 || c.fgRSS <= 0 {
		t.Errorf("CPU %v, peak RSS %d: not measured", c.cpu, c.fgRSS)
	}
}
