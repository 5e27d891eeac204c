package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// fetchWrapper is a restore_command that runs pitr wal-fetch exactly as the
// plain one does, and besides records every call (%f, %p, exit status,
// duration) and can hold one file back until the test releases it: the
// tests see what PostgreSQL asked for and what pitr answered, and can break
// the storage at a chosen point of a recovery.
type fetchWrapper struct {
	dir    string
	script string
	hold   string // file name to hold back ("" for none)
}

// fetchCall is one recorded restore_command call.
type fetchCall struct {
	file, path string
	code       int
	took       time.Duration
}

func newFetchWrapper(t *testing.T, r *testRepo, hold string) *fetchWrapper {
	t.Helper()
	w := &fetchWrapper{dir: pgtest.SharedTempDir(t), hold: hold}
	w.script = filepath.Join(w.dir, "restore_command.sh")
	// The hold loop gives up after 5 minutes so that a failed test never
	// leaves it behind.
	script := fmt.Sprintf(`#!/bin/sh
# test restore_command: pitr wal-fetch, recorded
if [ -n "%[1]s" ] && [ "$1" = "%[1]s" ] && [ ! -e %[2]s/release ]; then
	touch %[2]s/held
	i=0
	while [ ! -e %[2]s/release ] && [ $i -lt 6000 ]; do sleep 0.05; i=$((i+1)); done
fi
start=$(date +%%s%%N)
%[3]s wal-fetch --config %[4]s "$1" "$2"
rc=$?
echo "$1 $2 $rc $(( ($(date +%%s%%N) - start) / 1000000 ))" >> %[2]s/calls.log
exit $rc
`, hold, w.dir, pitrBin, r.configPath)
	if err := os.WriteFile(w.script, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.release) // never leave a server's startup process waiting
	return w
}

// command is the restore_command setting.
func (w *fetchWrapper) command() string { return w.script + " %f %p" }

// install makes c's next start use the wrapper (postgresql.auto.conf, where
// pitr restore wrote its own restore_command, later lines winning).
func (w *fetchWrapper) install(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	c.AppendAutoConf(t, "restore_command = '"+w.command()+"'   # test: recorded pitr wal-fetch")
}

// waitHeld waits until PostgreSQL has asked for the held file.
func (w *fetchWrapper) waitHeld(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(filepath.Join(w.dir, "held")); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("restore_command was not called for %s within %v; calls: %v", w.hold, timeout, w.calls(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// release lets the held call (and every later one) go on.
func (w *fetchWrapper) release() {
	_ = os.WriteFile(filepath.Join(w.dir, "release"), nil, 0o644)
}

// rearm makes the next call for the held file wait again.
func (w *fetchWrapper) rearm(t *testing.T) {
	t.Helper()
	for _, f := range []string{"release", "held"} {
		if err := os.Remove(filepath.Join(w.dir, f)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

// calls returns the recorded calls, oldest first.
func (w *fetchWrapper) calls(t *testing.T) []fetchCall {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(w.dir, "calls.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []fetchCall
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		code, _ := strconv.Atoi(f[2])
		ms, _ := strconv.Atoi(f[3])
		out = append(out, fetchCall{file: f[0], path: f[1], code: code, took: time.Duration(ms) * time.Millisecond})
	}
	return out
}

// callsFor returns the recorded calls for one file name.
func (w *fetchWrapper) callsFor(t *testing.T, name string) []fetchCall {
	t.Helper()
	var out []fetchCall
	for _, c := range w.calls(t) {
		if c.file == name {
			out = append(out, c)
		}
	}
	return out
}
