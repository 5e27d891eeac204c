package integration

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/repo"
)

// archivedWAL lists the names of the archived WAL files of system id.
func archivedWAL(t *testing.T, r *testRepo, id repo.SystemID) []string {
	t.Helper()
	objs, err := r.openStore(t).List(context.Background(), repo.WALPrefix(id))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, path.Base(o.Key))
	}
	slices.Sort(names)
	return names
}

// Contract (issue 3, retention): with 4 backups and --keep 2, the two oldest
// backups and the WAL before the third backup's start are gone; every
// segment from the oldest kept backup's start onward is still there; a
// restore from the oldest kept backup works, replaying every archived
// segment to the end. --dry-run before it deletes nothing.
func TestPruneKeepsWhatKeptBackupsNeed(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			c := archivingCluster(t, r, 1)
			c.Exec(t, "CREATE TABLE probe (id int primary key, note text)")
			var names []string
			for i := range 4 {
				generateWAL(t, c, 2)
				c.Exec(t, "INSERT INTO probe VALUES ($1, 'before a backup')", i+1)
				names = append(names, r.backup(t, c))
			}
			c.Exec(t, "INSERT INTO probe VALUES (100, 'after the last backup')")
			generateWAL(t, c, 1)
			c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
			final := snapshot(t, c, "at the end of the archive")

			id := systemID(t, r)
			var third basebackup.Backup
			for _, b := range r.listBackups(t) {
				if b.Name == names[2] {
					third = b
				}
			}
			if third.Name == "" {
				t.Fatalf("backup %s not listed", names[2])
			}
			size, err := third.SegmentSize()
			if err != nil {
				t.Fatal(err)
			}
			firstKept := size.FileName(wal.Segment{TLI: third.StartTimeline, No: size.SegmentOf(third.StartLSN)})
			before := archivedWAL(t, r, id)
			work := pgtest.SharedTempDir(t)

			dry := r.pitr(t, work, "prune", "--keep", "2", "--dry-run")
			if dry.code != 0 {
				t.Fatalf("prune --dry-run: %v", dry)
			}
			for _, want := range []string{"Would delete 2 backups:", names[0], names[1], "Keep 2 backups:", "kept from " + firstKept} {
				if !strings.Contains(dry.stdout, want) {
					t.Errorf("dry run output lacks %q:\n%s", want, dry.stdout)
				}
			}
			if got := archivedWAL(t, r, id); !slices.Equal(got, before) || len(r.listBackups(t)) != 4 {
				t.Fatalf("dry run deleted something")
			}

			res := r.pitr(t, work, "prune", "--keep", "2")
			if res.code != 0 {
				t.Fatalf("prune: %v", res)
			}
			t.Logf("prune output:\n%s", res.stdout)
			var left []string
			for _, b := range r.listBackups(t) {
				left = append(left, b.Name)
			}
			if !slices.Equal(left, names[2:]) {
				t.Fatalf("backups after prune %v, want %v", left, names[2:])
			}
			objs, err := r.openStore(t).List(context.Background(), repo.BackupPrefix(id))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if strings.Contains(o.Key, "/"+names[0]+"/") || strings.Contains(o.Key, "/"+names[1]+"/") {
					t.Errorf("%s is left of a pruned backup", o.Key)
				}
			}
			if inc := incompleteNames(t, r); len(inc) != 0 {
				t.Errorf("pruned backups left as incomplete: %v", inc)
			}

			after := archivedWAL(t, r, id)
			deleted := 0
			for _, name := range before {
				gone := !slices.Contains(after, name)
				if kind, _ := wal.Classify(name); kind == wal.KindTimelineHistory {
					if gone {
						t.Errorf("%s deleted", name)
					}
					continue
				}
				// Names sort by (timeline, segment); .backup and .partial
				// files sort right after their segment.
				if want := name < firstKept; gone != want {
					t.Errorf("%s: deleted = %v, want %v (oldest kept backup starts in %s)", name, gone, want, firstKept)
				}
				if gone {
					deleted++
				}
			}
			if deleted == 0 || after[0] != firstKept {
				t.Fatalf("deleted %d files; WAL now starts at %s, want %s", deleted, after[0], firstKept)
			}
			// Contiguous from the kept start to the newest segment.
			last := size.SegmentOf(third.StartLSN)
			for _, name := range after {
				if kind, _ := wal.Classify(name); kind != wal.KindSegment {
					continue
				}
				seg, err := size.ParseFileName(name)
				if err != nil {
					t.Fatal(err)
				}
				if seg.No > last+1 {
					t.Fatalf("gap in the kept WAL before %s", name)
				}
				last = max(last, seg.No)
			}
			if n := r.pitr(t, work, "prune", "--keep", "2"); n.code != 0 || !strings.Contains(n.stdout, "Delete no WAL") {
				t.Fatalf("second prune: %v", n)
			}

			restoreToEnd(t, r, third, 5, final)
		})
	}
}

// restoreToEnd extracts b and recovers through wal-fetch to the end of the
// archive (no target), as in TestRecoveryThroughWalFetch: a gap anywhere
// after b's start would end recovery early and lose probe rows.
func restoreToEnd(t *testing.T, r *testRepo, b basebackup.Backup, wantRows int64, want dataState) {
	t.Helper()
	pgdata := filepath.Join(pgtest.SharedTempDir(t), "data")
	if err := basebackup.Extract(context.Background(), r.openStore(t), b, pgdata, nil); err != nil {
		t.Fatalf("extract %s: %v", b.Name, err)
	}
	restored := recoverFromArchive(t, r, pgdata)
	if n := restored.QueryInt(t, "SELECT count(*) FROM probe"); n != wantRows {
		t.Fatalf("restored from %s: %d probe rows, want %d\n%s", b.Name, n, wantRows, restored.Log())
	}
	if log := restored.Log(); !strings.Contains(log, "archive recovery complete") || strings.Contains(log, "FATAL") {
		t.Fatalf("recovery from %s did not complete cleanly:\n%s", b.Name, log)
	}
	assertRestoredData(t, restored, want)
}

// startAgent starts pitr agent in the background with the repository's
// config and returns it with its stderr.
func startAgent(t *testing.T, r *testRepo, c *pgtest.Cluster, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(pitrBin, append([]string{"agent", "--dsn", c.DSN()}, args...)...)
	cmd.Dir = c.BaseDir()
	cmd.Env = append(os.Environ(), "PITR_CONFIG="+r.configPath)
	pgtest.RunAs(cmd)
	stderr := &lockedBuffer{}
	cmd.Stderr, cmd.Stdout = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, stderr
}

// stopAgent sends SIGTERM and wants a clean exit 0 within a minute.
func stopAgent(t *testing.T, cmd *exec.Cmd, log *lockedBuffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent after SIGTERM: %v, want exit 0\n%s", err, log.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("agent did not stop within a minute of SIGTERM\n%s", log.String())
	}
}

func waitLog(t *testing.T, log *lockedBuffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("agent log lacks %q after %v:\n%s", want, timeout, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Contract (issue 3, agent): SIGTERM during a scheduled backup cancels it
// (pg_basebackup stops, nothing is listed, nothing is left behind) and the
// agent exits 0. A fresh agent backs up at once, prunes after the backup
// (the WAL before it goes, with keep 1), logs the next run, and exits 0 on
// SIGTERM while it waits.
func TestAgentBacksUpPrunesAndStopsCleanly(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := archivingCluster(t, r, 1)
	if out, err := c.RunAsUser(t, "pgbench", "-i", "-q", "-s", "10"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	// 2 MB/s makes the 150 MB backup last over a minute.
	cmd, log := startAgent(t, r, c, "--keep", "1", "--backup-fast-checkpoint", "true", "--backup-max-rate", "2M")
	waitLog(t, log, "scheduled backup starting", time.Minute)
	c.WaitFor(t, time.Minute, func() bool {
		n, err := c.TryQueryString("SELECT coalesce(max(backup_streamed), 0) FROM pg_stat_progress_basebackup")
		v, _ := strconv.ParseInt(n, 10, 64)
		return err == nil && v > 4<<20
	})
	stopAgent(t, cmd, log)
	t.Logf("agent log, SIGTERM mid-backup:\n%s", log.String())
	if !strings.Contains(log.String(), "interrupted by shutdown") || strings.Contains(log.String(), "level=ERROR") {
		t.Fatalf("agent log after SIGTERM mid-backup:\n%s", log.String())
	}
	if list := r.listBackups(t); len(list) != 0 {
		t.Fatalf("an interrupted backup is listed: %+v", list)
	}
	if inc := incompleteNames(t, r); len(inc) != 0 {
		t.Fatalf("an interrupted backup left %v", inc)
	}
	c.WaitFor(t, 30*time.Second, func() bool {
		n, err := c.TryQueryString("SELECT count(*) FROM pg_stat_progress_basebackup")
		return err == nil && n == "0"
	})

	walBefore := archivedWAL(t, r, systemID(t, r))
	// Drills off: a fresh agent would start its first drill right after the
	// backup, and this test stops the agent while it waits (TestDrill covers
	// the agent's drills).
	cmd, log = startAgent(t, r, c, "--keep", "1", "--backup-fast-checkpoint", "true", "--drill-schedule", "off")
	waitLog(t, log, "next scheduled backup", 3*time.Minute)
	stopAgent(t, cmd, log)
	logs := log.String()
	t.Logf("agent log:\n%s", logs)
	for _, want := range []string{"agent started", "scheduled backup succeeded", "prune after backup succeeded", "next_run=", "agent stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("agent log lacks %q:\n%s", want, logs)
		}
	}
	list := r.listBackups(t)
	if len(list) != 1 {
		t.Fatalf("want the agent's one backup, got %+v", list)
	}
	size, _ := list[0].SegmentSize()
	start := size.FileName(wal.Segment{TLI: list[0].StartTimeline, No: size.SegmentOf(list[0].StartLSN)})
	after := archivedWAL(t, r, systemID(t, r))
	if after[0] != start || len(after) >= len(walBefore) {
		t.Fatalf("after the agent's prune WAL starts at %s (%d files, %d before); want it to start at the backup's %s",
			after[0], len(after), len(walBefore), start)
	}
}
