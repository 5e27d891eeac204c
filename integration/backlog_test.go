package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// Scenario 27: a backlog of .ready segments (archiving was failing) drains
// through archive-push's background archiver; PostgreSQL's calls for files
// it archived are answered from the spool; every file arrives intact and
// pitr leaves archive_status to PostgreSQL. On both backends.
func TestBacklogDrains(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			testBacklogDrains(t, kind)
		})
	}
}

func testBacklogDrains(t *testing.T, kind string) {
	r := newRepo(t, kind, nil)
	c := pgtest.NewCluster(t, pgtest.Options{
		WalSegSizeMB:   1,
		ArchiveCommand: "false", // archiving fails until the backlog has built up
		ExtraConf:      map[string]string{"wal_keep_size": "1GB"},
	})
	c.Start(t)
	var backlog []string
	for range 12 {
		generateWAL(t, c, 1)
		backlog = append(backlog, c.SwitchWAL(t))
	}
	c.WaitFor(t, time.Minute, func() bool {
		_, failed, _, _ := c.ArchiverStats(t)
		return failed > 0
	})
	c.Exec(t, "ALTER SYSTEM SET archive_command = '"+strings.ReplaceAll(r.archiveCommand(), "'", "''")+"'")
	c.Exec(t, "SELECT pg_reload_conf()")
	last := c.SwitchWAL(t)
	c.WaitArchived(t, last, 2*time.Minute)

	log := c.Log()
	if !strings.Contains(log, "msg=\"started the background archiver for the backlog\"") || !regexp.MustCompile(`msg=archived file=\S+ .* ahead=true`).MatchString(log) {
		t.Fatalf("the backlog was not drained ahead of PostgreSQL's calls:\n%s", log)
	}
	assertFetchesIdentical(t, r, c, append(backlog, last))
	// pitr wrote nothing into archive_status: only PostgreSQL's .ready/.done files are there.
	entries, _ := os.ReadDir(filepath.Join(c.DataDir(), "pg_wal", "archive_status"))
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".done") && !strings.HasSuffix(e.Name(), ".ready") {
			t.Errorf("unexpected file in archive_status: %s", e.Name())
		}
	}
	if _, failed, _, _ := c.ArchiverStats(t); failed == 0 {
		t.Fatal("the failing phase was not recorded")
	}
}

// The background archiver is killed (SIGKILL) in the middle of a drain: the
// spool holds records only for objects that are in the repository intact,
// the archive-push call waiting for its file still succeeds (it archives the
// file itself once the lock is free), and PostgreSQL's later calls archive
// every remaining file; none is skipped on the strength of the spool.
func TestBacklogArchiverKilled(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			testBacklogArchiverKilled(t, kind)
		})
	}
}

func testBacklogArchiverKilled(t *testing.T, kind string) {
	r := newRepo(t, kind, nil)
	c := pgtest.NewCluster(t, pgtest.Options{
		WalSegSizeMB:   1,
		ArchiveCommand: "false",
		ExtraConf:      map[string]string{"wal_keep_size": "1GB"},
	})
	c.Start(t)
	var backlog []string
	for range 16 {
		generateWAL(t, c, 1)
		backlog = append(backlog, c.SwitchWAL(t))
	}
	c.WaitFor(t, time.Minute, func() bool {
		_, failed, _, _ := c.ArchiverStats(t)
		return failed > 0
	})
	ready := readyNames(t, c)
	if len(ready) < 4 {
		t.Fatalf("backlog of %d files, want several: %v", len(ready), ready)
	}
	// Play PostgreSQL's first call; kill the archiver it starts as soon as
	// it has recorded something.
	cmd := exec.Command(pitrBin, "archive-push", filepath.Join("pg_wal", ready[0]))
	cmd.Dir = c.DataDir()
	cmd.Env = append(os.Environ(), "PITR_CONFIG="+r.configPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	pgtest.RunAs(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(c.DataDir(), "pg_wal", "pitr_archived")
	pid, killed := 0, false
	deadline := time.Now().Add(time.Minute)
	for !killed && time.Now().Before(deadline) {
		if pid == 0 {
			pid = archiverPID(c.DataDir())
		}
		if pid != 0 && len(spoolRecords(spool)) > 0 {
			killed = syscall.Kill(pid, syscall.SIGKILL) == nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("archive-push %s with its archiver killed: %v\n%s", ready[0], err, out.String())
	}
	if !killed {
		t.Fatalf("never saw the background archiver (pid %d) record a file", pid)
	}
	recs := spoolRecords(spool)
	t.Logf("archiver killed after recording %d of %d files", len(recs), len(ready))
	assertFetchesIdentical(t, r, c, recs)

	c.Exec(t, "ALTER SYSTEM SET archive_command = '"+strings.ReplaceAll(r.archiveCommand(), "'", "''")+"'")
	c.Exec(t, "SELECT pg_reload_conf()")
	last := c.SwitchWAL(t)
	c.WaitArchived(t, last, 2*time.Minute)
	assertFetchesIdentical(t, r, c, append(backlog, last))
}

func readyNames(t *testing.T, c *pgtest.Cluster) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(c.DataDir(), "pg_wal", "archive_status"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".ready"); ok && len(n) == 24 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func spoolRecords(spool string) []string {
	entries, _ := os.ReadDir(spool)
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			out = append(out, n)
		}
	}
	return out
}

// archiverPID finds the `pitr archive-ahead` process working in dataDir.
func archiverPID(dataDir string) int {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("\x00archive-ahead\x00")) {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", p.Name(), "cwd")); err == nil && cwd == dataDir {
			return pid
		}
	}
	return 0
}
