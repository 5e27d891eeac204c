package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
