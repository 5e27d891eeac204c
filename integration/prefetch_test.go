package integration

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

var (
	reFetchedLine    = regexp.MustCompile(`msg=fetched file=([0-9A-F]{24}) `)
	rePrefetchedLine = regexp.MustCompile(`msg=fetched file=([0-9A-F]{24}) .*prefetched=true`)
)

// Recovery through many segments with wal-fetch's prefetcher (fetch_ahead)
// on: replay ends with the source's data, segments were served from the
// spool in pg_wal/pitr_prefetch (wal-fetch logs prefetched=true for them),
// and the spool is gone once recovery has ended.
func TestRecoveryWithPrefetch(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			appendConfig(t, r, "fetch_ahead: 6\n")

			backupDir, final, _ := prefetchSource(t, r)
			restored := recoverFromArchive(t, r, backupDir)
			log := restored.Log()
			if strings.Contains(log, "FATAL") {
				t.Errorf("server log has a FATAL:\n%s", log)
			}
			fetched := len(reFetchedLine.FindAllString(log, -1))
			hits := len(rePrefetchedLine.FindAllString(log, -1))
			t.Logf("%s: %d segments fetched, %d of them from the prefetch spool", kind, fetched, hits)
			if fetched < 20 {
				t.Errorf("only %d segments fetched; the test means to replay many", fetched)
			}
			if hits == 0 {
				t.Errorf("no segment came from the prefetch spool (no 'prefetched=true' in the server log)")
			}
			assertRestoredData(t, restored, final)

			// PostgreSQL removed recovery.signal at promotion; the prefetcher
			// sees that and removes its spool.
			spool := filepath.Join(restored.DataDir(), "pg_wal", "pitr_prefetch")
			restored.WaitFor(t, time.Minute, func() bool {
				_, err := os.Stat(spool)
				return errors.Is(err, os.ErrNotExist)
			})
		})
	}
}

// prefetchSource archives a plain backup followed by a few dozen 1 MiB
// segments and returns the backup's directory, the data at the end and the
// archived WAL names.
func prefetchSource(t *testing.T, r *testRepo) (string, dataState, []string) {
	t.Helper()
	c := archivingCluster(t, r, 1)
	c.Exec(t, "CREATE TABLE probe (id int primary key, note text)")
	c.Exec(t, "INSERT INTO probe VALUES (1, 'before backup')")
	backupDir := filepath.Join(pgtest.SharedTempDir(t), "data")
	if out, err := c.RunAsUser(t, "pg_basebackup", "-D", backupDir, "-X", "none", "-c", "fast"); err != nil {
		t.Fatalf("pg_basebackup: %v %s", err, out)
	}
	c.Exec(t, "INSERT INTO probe VALUES (2, 'after backup')")
	generateWAL(t, c, 24)
	c.Exec(t, "INSERT INTO probe VALUES (3, 'last commit')")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	final := snapshot(t, c, "at the end of the archive")
	names := archivedNames(t, c)
	c.Stop(t)
	return backupDir, final, names
}

// A recovery that crashes and restarts asks again for segments before the
// ones the prefetcher had ready: those are fetched directly, the prefetcher
// follows, and replay ends with the source's data.
func TestRecoveryWithPrefetchRestarted(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	appendConfig(t, r, "fetch_ahead: 4\n")
	backupDir, final, names := prefetchSource(t, r)
	var segs []string
	for _, n := range names {
		if len(n) == 24 {
			segs = append(segs, n)
		}
	}
	hold := segs[len(segs)*2/3]
	w := newFetchWrapper(t, r, hold)
	if err := os.WriteFile(filepath.Join(backupDir, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rc := pgtest.RestoredCluster(t, backupDir, pgtest.Options{RestoreCommand: w.command()})
	rc.Start(t)
	w.waitHeld(t, 2*time.Minute)
	assertPrefetcherNiced(t, rc.DataDir())
	rc.Kill(t) // recovery crashes with segments after hold in the spool
	w.release()
	before := len(w.calls(t))
	rc.Start(t)
	waitPromoted(t, rc)

	calls := w.calls(t)
	again := map[string]bool{}
	for _, c := range calls[:before] {
		if c.code == 0 {
			again[c.file] = true
		}
	}
	refetched, hits := 0, 0
	for _, c := range calls[before:] {
		if again[c.file] && c.code == 0 {
			refetched++
		}
	}
	for _, line := range strings.Split(rc.Log(), "\n") {
		if rePrefetchedLine.MatchString(line) {
			hits++
		}
	}
	t.Logf("held %s; %d calls before the crash, %d after; %d segments fetched again; %d spool hits in all",
		hold, before, len(calls)-before, refetched, hits)
	if refetched == 0 {
		t.Errorf("the restarted recovery fetched no segment it had fetched before; calls: %v", calls)
	}
	for _, c := range calls {
		if c.code != 0 && c.code != 1 {
			t.Errorf("wal-fetch %s exited %d", c.file, c.code)
		}
	}
	if got := rc.QueryString(t, "SELECT string_agg(note, ',' ORDER BY id) FROM probe"); got != "before backup,after backup,last commit" {
		t.Errorf("rows %q", got)
	}
	assertRestoredData(t, rc, final)
	spool := filepath.Join(rc.DataDir(), "pg_wal", "pitr_prefetch")
	rc.WaitFor(t, time.Minute, func() bool {
		_, err := os.Stat(spool)
		return errors.Is(err, os.ErrNotExist)
	})
}

// appendConfig adds settings to the repository's config file, which
// restore_command and archive_command read on every call.
func appendConfig(t *testing.T, r *testRepo, lines string) {
	t.Helper()
	f, err := os.OpenFile(r.configPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(lines); err != nil {
		t.Fatal(err)
	}
}

// assertPrefetcherNiced checks that the prefetcher of the recovery in
// dataDir runs at nice 10 (cmd/pitr's prefetcherNice) on every thread: it
// must not take CPU from the startup process, which replays WAL and waits
// for each restore_command.
func assertPrefetcherNiced(t *testing.T, dataDir string) {
	t.Helper()
	pids := pgtest.ProcessesIn(dataDir, "wal-prefetch")
	if len(pids) != 1 {
		t.Fatalf("want one prefetcher working in %s, found %v", dataDir, pids)
	}
	nices, err := pgtest.ThreadNices(pids[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nices {
		if n != 10 {
			t.Fatalf("prefetcher %d: thread nice values %v, want 10 on every thread", pids[0], nices)
		}
	}
}
