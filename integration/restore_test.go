package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/internal/s3test"
)

// probeOpts shape a probe scenario's source cluster.
type probeOpts struct {
	kind   string         // storage backend: "file" or "s3"
	server *s3test.Server // S3 server to use instead of the shared one (tests that stop it)
	segMB  int            // wal_segment_size in MiB (0: 1 MiB)
	// rollover starts the cluster three segments before LSN 1/00000000 and
	// switches WAL past it after the backup, so replay from the backup to
	// commits A and B crosses the rollover of the low 8 hex digits.
	rollover bool
	gap      time.Duration     // time between A and B (Mid is in the middle)
	conf     map[string]string // extra server settings
	// beforeBackup runs after the first row and before the backup.
	beforeBackup func(t *testing.T, c *pgtest.Cluster)
}

// probeScenario is PG-CONTRACTS §9's pattern: a backup, then row A, a gap
// with a recorded instant Mid, then row B, all archived; with the source's
// pg_dumpall at each of those points for the data-level proof.
type probeScenario struct {
	repo   *testRepo
	src    *pgtest.Cluster
	backup string    // the backup's name
	mid    time.Time // server clock between A and B
	lsnMid string    // WAL position between A and B
	xidA   string    // transaction id that committed A
	xidB   string    // transaction id that committed B

	atBackup dataState // right after the backup, before A
	afterA   dataState // after A, before Mid
	afterB   dataState // after B
}

// newProbeScenario starts an archiving cluster with 1 MiB segments (its
// timezone is not UTC, so any zone confusion shows), takes a backup, and
// commits A and B around mid.
func newProbeScenario(t *testing.T, kind string, gap time.Duration) *probeScenario {
	t.Helper()
	return newProbe(t, probeOpts{kind: kind, gap: gap})
}

func newProbe(t *testing.T, o probeOpts) *probeScenario {
	t.Helper()
	r := newRepo(t, o.kind, o.server)
	if o.segMB == 0 {
		o.segMB = 1
	}
	c := pgtest.NewCluster(t, pgtest.Options{
		WalSegSizeMB:   o.segMB,
		ArchiveCommand: r.archiveCommand(),
		Timezone:       "America/New_York",
		ExtraConf:      o.conf,
	})
	if o.rollover {
		startBeforeRollover(t, c, o.segMB)
	}
	c.Start(t)
	c.Exec(t, "CREATE TABLE pitr_probe (id serial, note text, committed_at timestamptz default clock_timestamp())")
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('before backup')")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	if o.beforeBackup != nil {
		o.beforeBackup(t, c)
	}
	s := &probeScenario{repo: r, src: c}
	s.backup = r.backup(t, c)
	s.atBackup = snapshot(t, c, "right after the backup")
	if o.rollover {
		switchPastRollover(t, c)
	}
	s.xidA = c.QueryString(t, "INSERT INTO pitr_probe (note) VALUES ('A') RETURNING pg_current_xact_id()::text")
	s.afterA = snapshot(t, c, "after commit A")
	time.Sleep(o.gap / 2)
	midText := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
	mid, err := time.Parse("2006-01-02 15:04:05.000000", midText)
	if err != nil {
		t.Fatal(err)
	}
	s.mid = mid
	s.lsnMid = c.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	time.Sleep(o.gap / 2)
	s.xidB = c.QueryString(t, "INSERT INTO pitr_probe (note) VALUES ('B') RETURNING pg_current_xact_id()::text")
	s.afterB = snapshot(t, c, "after commit B")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	if o.rollover {
		// The backup starts before LSN 1/0 and A is after it: replay
		// crosses …FFFFFFFF → 1/00000000 in the segment names.
		var start string
		for _, b := range r.listBackups(t) {
			if b.Name == s.backup {
				start = b.StartLSN.String()
			}
		}
		if !strings.HasPrefix(start, "0/") || !strings.HasPrefix(s.lsnMid, "1/") {
			t.Fatalf("no rollover between the backup (start %s) and the commits (mid %s)", start, s.lsnMid)
		}
	}
	return s
}

// prefetchSeed is the segment pitr restore told wal-fetch's prefetcher that
// recovery reads first (pg_wal/pitr_prefetch/wanted).
func prefetchSeed(t *testing.T, pgdata string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pgdata, "pg_wal", "pitr_prefetch", "wanted"))
	if err != nil {
		t.Fatalf("pitr restore left no prefetch seed: %v", err)
	}
	var w struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(b, &w); err != nil || len(w.Name) != 24 {
		t.Fatalf("prefetch seed %q: %v", b, err)
	}
	return w.Name
}

// midTarget is --target for Mid, in UTC with an explicit offset.
func (s *probeScenario) midTarget() string {
	return s.mid.Format("2006-01-02 15:04:05.000000") + "+00:00"
}

// restore runs pitr restore into a fresh directory and returns it, or the
// failed result.
func (s *probeScenario) restore(t *testing.T, args ...string) (string, result) {
	t.Helper()
	dir := pgtest.SharedTempDir(t)
	pgdata := filepath.Join(dir, "data")
	res := s.repo.pitr(t, dir, append([]string{"restore", "--pgdata", pgdata}, args...)...)
	return pgdata, res
}

// restoreAndStart restores and starts the server; the caller waits for
// promotion or pause.
func (s *probeScenario) restoreAndStart(t *testing.T, opts pgtest.Options, args ...string) *pgtest.Cluster {
	t.Helper()
	c := s.restoreOnly(t, opts, args...)
	c.Start(t)
	return c
}

// restoreOnly restores into a fresh directory and adopts it, without
// starting the server.
func (s *probeScenario) restoreOnly(t *testing.T, opts pgtest.Options, args ...string) *pgtest.Cluster {
	t.Helper()
	pgdata, res := s.restore(t, args...)
	if res.code != 0 {
		t.Fatalf("pitr restore %v: %v", args, res)
	}
	if !strings.Contains(res.stdout, "Recovery plan") {
		t.Fatalf("pitr restore printed no plan:\n%s", res.stdout)
	}
	return pgtest.RestoredCluster(t, pgdata, opts)
}

// probeRows returns the notes of the probe table, in order.
func probeRows(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	return c.QueryString(t, "SELECT string_agg(note, ',' ORDER BY id) FROM pitr_probe")
}

func timelineOf(t *testing.T, c *pgtest.Cluster) int {
	t.Helper()
	n, err := strconv.ParseInt(c.QueryString(t, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// assertLog fails unless the server log contains every want.
func assertLog(t *testing.T, c *pgtest.Cluster, want ...string) {
	t.Helper()
	for _, w := range want {
		if !c.LogContains(w) {
			t.Fatalf("server log lacks %q (the line naming where recovery stopped)", w)
		}
	}
}

// Scenarios 1 and 19: a time between commits A and B, given in UTC with an
// explicit offset, on both backends and on 1, 16 and 64 MiB segments with
// replay across the 0/FFFFFFFF → 1/00000000 rollover: A present, B absent, a
// new timeline, the server's own log says it stopped before B's commit, and
// the restored data equals the source's after A.
func TestRestoreToTimeBetweenCommits(t *testing.T) {
	for _, kind := range backends {
		for _, l := range walLayouts {
			t.Run(kind+"/"+l.name, func(t *testing.T) {
				t.Parallel()
				s := newProbe(t, probeOpts{kind: kind, segMB: l.segMB, rollover: true, gap: 2 * time.Second})
				c := s.restoreOnly(t, pgtest.Options{}, "--target", s.midTarget())
				seed := prefetchSeed(t, c.DataDir())
				c.Start(t)
				waitPromoted(t, c)
				if !strings.Contains(c.Log(), "msg=fetched file="+seed+" ") {
					t.Errorf("pitr restore seeded the prefetcher with %s, which recovery never fetched", seed)
				}
				if got := probeRows(t, c); got != "before backup,A" {
					t.Fatalf("restored rows %q, want A present and B absent", got)
				}
				if tl := timelineOf(t, c); tl != 2 {
					t.Fatalf("restored cluster is on timeline %d, want 2", tl)
				}
				assertLog(t, c, "starting point-in-time recovery to "+s.mid.Format("2006-01-02 15:04:05"),
					"recovery stopping before commit of transaction "+s.xidB, "selected new timeline ID: 2")
				assertRestoredData(t, c, s.afterA)
			})
		}
	}
}

// Scenario 1 at the granularity: "--target YYYY-MM-DD HH:MM", a
// minute boundary between A and B.
func TestRestoreToMinute(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := pgtest.NewCluster(t, pgtest.Options{WalSegSizeMB: 1, ArchiveCommand: r.archiveCommand()})
	c.Start(t)
	c.Exec(t, "CREATE TABLE pitr_probe (id serial, note text)")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	if res := r.pitr(t, c.BaseDir(), "backup", "--fast", "--dsn", c.DSN()); res.code != 0 {
		t.Fatalf("pitr backup: %v", res)
	}
	// Commit A at least 2 s before a minute boundary and B 2 s after it.
	now := time.Now().UTC()
	boundary := now.Truncate(time.Minute).Add(time.Minute)
	if boundary.Sub(now) < 3*time.Second {
		boundary = boundary.Add(time.Minute)
	}
	time.Sleep(time.Until(boundary.Add(-2 * time.Second)))
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('A')")
	afterA := snapshot(t, c, "after commit A")
	time.Sleep(time.Until(boundary.Add(2 * time.Second)))
	xidB := c.QueryString(t, "INSERT INTO pitr_probe (note) VALUES ('B') RETURNING pg_current_xact_id()::text")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	dir := pgtest.SharedTempDir(t)
	pgdata := filepath.Join(dir, "data")
	res := r.pitr(t, dir, "restore", "--pgdata", pgdata, "--tz", "UTC", "--target", boundary.Format("2006-01-02 15:04"))
	if res.code != 0 {
		t.Fatalf("restore: %v", res)
	}
	rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{})
	rc.Start(t)
	waitPromoted(t, rc)
	if got := rc.QueryString(t, "SELECT string_agg(note, ',' ORDER BY id) FROM pitr_probe"); got != "A" {
		t.Fatalf("rows %q, want A only", got)
	}
	assertLog(t, rc, "recovery stopping before commit of transaction "+xidB)
	assertRestoredData(t, rc, afterA)
}

// Scenario 2: the same instant given in UTC, as a zone name and as an offset
// (and without a zone, read in --tz), on a cluster whose timezone is
// America/New_York, lands on the same side of A/B every time. A zone
// abbreviation is refused before anything is written.
func TestRestoreTargetTimeZones(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", 2*time.Second)
	helsinki, _ := time.LoadLocation("Europe/Helsinki")
	local := s.mid.In(helsinki)
	forms := [][]string{
		{"--target", s.mid.Format("2006-01-02 15:04:05.000000") + " UTC"},
		{"--target", local.Format("2006-01-02 15:04:05.000000") + " Europe/Helsinki"},
		{"--target", local.Format("2006-01-02 15:04:05.000000") + local.Format("-07:00")},
		{"--tz", "Europe/Helsinki", "--target", local.Format("2006-01-02 15:04:05.000000")},
	}
	for _, args := range forms {
		c := s.restoreAndStart(t, pgtest.Options{}, args...)
		waitPromoted(t, c)
		if got := probeRows(t, c); got != "before backup,A" {
			t.Errorf("%v: rows %q, want A present and B absent", args, got)
		}
		if !c.LogContains("recovery stopping before commit of transaction " + s.xidB) {
			t.Errorf("%v: the server log does not say it stopped before B's commit", args)
		}
		assertRestoredData(t, c, s.afterA)
		c.Stop(t)
	}
	pgdata, res := s.restore(t, "--target", local.Format("2006-01-02 15:04:05")+" EEST")
	if res.code == 0 || !strings.Contains(res.stderr, "EEST") {
		t.Fatalf("abbreviation accepted: %v", res)
	}
	assertNotCreated(t, pgdata)
}

func assertNotCreated(t *testing.T, pgdata string) {
	t.Helper()
	if entries, err := os.ReadDir(pgdata); err == nil && len(entries) > 0 {
		t.Fatalf("a refused restore wrote %d entries into %s", len(entries), pgdata)
	}
}

// Scenario 3: with the target exactly equal to B's commit timestamp (from
// pg_xact_commit_timestamp, track_commit_timestamp = on), the default
// (inclusive) restore includes B and stops before the next commit C;
// --exclusive (recovery_target_inclusive = off) stops before B.
func TestRestoreInclusiveAtCommitTimestamp(t *testing.T) {
	t.Parallel()
	s := newProbe(t, probeOpts{kind: "file", gap: time.Second, conf: map[string]string{"track_commit_timestamp": "on"}})
	c := s.src
	commitB := c.QueryString(t, "SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM pitr_probe WHERE note = 'B'")
	time.Sleep(time.Second)
	xidC := c.QueryString(t, "INSERT INTO pitr_probe (note) VALUES ('C') RETURNING pg_current_xact_id()::text")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	target := commitB + "+00"

	rc := s.restoreAndStart(t, pgtest.Options{}, "--target", target)
	waitPromoted(t, rc)
	if got := probeRows(t, rc); got != "before backup,A,B" {
		t.Fatalf("inclusive restore to B's commit timestamp %s: rows %q, want B included", target, got)
	}
	assertLog(t, rc, "recovery stopping before commit of transaction "+xidC)
	assertRestoredData(t, rc, s.afterB)
	rc.Stop(t)

	rc = s.restoreAndStart(t, pgtest.Options{}, "--target", target, "--exclusive")
	waitPromoted(t, rc)
	if got := probeRows(t, rc); got != "before backup,A" {
		t.Fatalf("exclusive restore to B's commit timestamp %s: rows %q, want B excluded", target, got)
	}
	assertLog(t, rc, "recovery stopping before commit of transaction "+s.xidB)
	assertRestoredData(t, rc, s.afterA)
}

// Scenarios 7 and 8: a target inside a backup window (backup B2 taken while
// one commit every 20 ms runs) uses the previous backup and restores exactly
// the commits made up to the target; a target before the earliest backup and
// one past the end of the archive are refused before anything is written.
func TestRestoreBackupChoiceAndRefusals(t *testing.T) {
	t.Parallel()
	s := newProbe(t, probeOpts{kind: "file", gap: 2 * time.Second,
		conf: map[string]string{"track_commit_timestamp": "on", "autovacuum": "off"}})
	c := s.src
	c.Exec(t, "CREATE TABLE traffic (id serial primary key, at timestamptz default clock_timestamp())")
	// A second backup after B: a target between its start and stop must use the first.
	beforeSecond := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
	stopTraffic := startTraffic(t, c, "INSERT INTO traffic DEFAULT VALUES", 20*time.Millisecond)
	c.WaitFor(t, time.Minute, func() bool {
		n, err := c.TryQueryString("SELECT count(*) FROM traffic")
		return err == nil && n != "0"
	})
	second := s.repo.backup(t, c)
	time.Sleep(200 * time.Millisecond)
	stopTraffic()
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('C')")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	list := s.repo.pitr(t, c.BaseDir(), "backup", "list", "--json")
	if list.code != 0 {
		t.Fatalf("backup list: %v", list)
	}

	_, res := s.restore(t, "--dry-run", "--target", beforeSecond+"+00")
	if res.code != 0 {
		t.Fatalf("dry run before the second backup's start: %v", res)
	}
	first := strings.Count(res.stdout, "newest backup that ended before the target")
	if first != 1 || strings.Contains(res.stdout, "backup:    "+lastBackupName(t, list.stdout)) {
		t.Fatalf("target inside the second backup's window did not pick the first backup:\n%s", res.stdout)
	}

	// A target strictly inside the second backup's window, with commits of
	// the traffic on both sides of it.
	var b2Start, b2Stop time.Time
	for _, b := range s.repo.listBackups(t) {
		if b.Name == second {
			b2Start, b2Stop = b.StartTime, b.StopTime
		}
	}
	inside := b2Start.Add(b2Stop.Sub(b2Start) / 2).UTC().Format("2006-01-02 15:04:05.000000")
	const byCommitTime = "SELECT count(*) FROM traffic WHERE pg_xact_commit_timestamp(xmin) %s $1::timestamptz"
	if c.QueryInt(t, strings.Replace(byCommitTime, "%s", "<=", 1), inside+"+00") == 0 ||
		c.QueryInt(t, strings.Replace(byCommitTime, "%s", ">", 1), b2Start.Format(time.RFC3339Nano)) == 0 {
		t.Fatalf("no traffic committed before %s or during the second backup (%s .. %s)", inside, b2Start, b2Stop)
	}
	_, res = s.restore(t, "--dry-run", "--target", inside+"+00")
	if res.code != 0 || !strings.Contains(res.stdout, "backup:    "+s.backup+":") || strings.Contains(res.stdout, "backup:    "+second) {
		t.Fatalf("target %s inside backup %s's window (%s .. %s) did not pick the first backup %s: %v",
			inside, second, b2Start, b2Stop, s.backup, res)
	}
	rc := s.restoreAndStart(t, pgtest.Options{}, "--target", inside+"+00")
	waitPromoted(t, rc)
	if got := probeRows(t, rc); got != "before backup,A,B" {
		t.Fatalf("restored rows %q, want A and B, not C", got)
	}
	// Data-level proof: exactly the traffic that committed by the target.
	// (No pg_dumpall of the source exists for an instant under traffic.)
	want := c.QueryString(t, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM traffic WHERE pg_xact_commit_timestamp(xmin) <= $1::timestamptz", inside+"+00")
	if got := rc.QueryString(t, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM traffic"); got != want {
		t.Fatalf("restored traffic rows %q, want those committed by %s: %q", got, inside, want)
	}
	assertLog(t, rc, "recovery stopping before commit of transaction")
	amcheck(t, rc)
	rc.Stop(t)

	pgdata, res := s.restore(t, "--target", "2001-01-01 00:00:00+00")
	if res.code == 0 || !strings.Contains(res.stderr, "before the end of the earliest backup") {
		t.Fatalf("target before the earliest backup: %v", res)
	}
	assertNotCreated(t, pgdata)

	future := time.Now().UTC().Add(time.Hour).Format("2006-01-02 15:04:05") + "+00"
	pgdata, res = s.restore(t, "--target", future)
	if res.code == 0 || !strings.Contains(res.stderr, "later than anything archived") {
		t.Fatalf("target past the archive: %v", res)
	}
	assertNotCreated(t, pgdata)
}

// startTraffic runs sql on its own connection every interval until the
// returned function is called (which also fails the test if a statement
// failed).
func startTraffic(t *testing.T, c *pgtest.Cluster, sql string, interval time.Duration) (stop func()) {
	t.Helper()
	conn := c.Conn(t)
	quit := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-quit:
				done <- nil
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := conn.Exec(ctx, sql)
			cancel()
			if err != nil {
				done <- err
				return
			}
			time.Sleep(interval)
		}
	}()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		close(quit)
		if err := <-done; err != nil {
			t.Fatalf("traffic %q: %v", sql, err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// Scenario 7, the server's own check: a transaction that commits while the
// backup streams is before the backup's consistent point. pitr cannot place
// an xid in time, so it restores the newest backup; PostgreSQL refuses to
// stop there, and pitr restore --start reports the server's FATAL.
func TestRestoreStopBeforeConsistency(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := pgtest.NewCluster(t, pgtest.Options{WalSegSizeMB: 1, ArchiveCommand: r.archiveCommand()})
	c.Start(t)
	c.Exec(t, "CREATE TABLE pitr_probe (id serial, note text)")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	conn := c.Conn(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	var xid string
	if err := conn.QueryRow(ctx, "INSERT INTO pitr_probe (note) VALUES ('during the backup') RETURNING pg_current_xact_id()::text").Scan(&xid); err != nil {
		t.Fatal(err)
	}
	// 4 MB/s makes the ~25 MB stream last several seconds.
	cmd := exec.Command(pitrBin, "backup", "--dsn", c.DSN(), "--fast", "--backup-max-rate", "4M")
	cmd.Dir = c.BaseDir()
	cmd.Env = append(os.Environ(), "PITR_CONFIG="+r.configPath)
	pgtest.RunAs(cmd)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, time.Minute, func() bool {
		n, err := c.TryQueryString("SELECT coalesce(max(backup_streamed), 0) FROM pg_stat_progress_basebackup")
		v, _ := strconv.ParseInt(n, 10, 64)
		return err == nil && v > 1<<20
	})
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if still, _ := c.TryQueryString("SELECT count(*) FROM pg_stat_progress_basebackup"); still != "1" {
		t.Fatalf("the backup ended before the commit; the test needs a commit inside the backup window")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pitr backup: %v\n%s", err, out.String())
	}
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	dir := pgtest.SharedTempDir(t)
	pgdata := filepath.Join(dir, "data")
	stopOnCleanup(t, c, pgdata)
	res := r.pitr(t, dir, "restore", "--pgdata", pgdata, "--start", "--target-xid", xid)
	if res.code == 0 || !strings.Contains(res.stderr, "requested recovery stop point is before consistent recovery point") {
		t.Fatalf("restore --start to xid %s, committed inside the only backup's window: %v", xid, res)
	}
}

// stopOnCleanup stops (immediate) a server that pitr restore --start
// started on pgdata, whatever the test's outcome.
func stopOnCleanup(t *testing.T, c *pgtest.Cluster, pgdata string) {
	t.Cleanup(func() { c.RunAsUser(t, "pg_ctl", "-D", pgdata, "-m", "immediate", "-w", "stop") })
}

// Scenario 6: on an idle database, a target after the last commit.
//   - After the newest archived segment too: pitr's pre-check refuses before
//     writing anything.
//   - Between the last commit and the last WAL switch: pitr scans the WAL
//     after the target (pg_waldump), finds no commit and refuses, naming the
//     newest commit. With the scan skipped, PostgreSQL replays everything
//     and stops with FATAL "recovery ended before configured recovery
//     target was reached"; pitr restore --start reports that, and the data
//     directory stays usable: without the target it recovers to the end.
func TestRestoreTargetAfterLastCommit(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", time.Second)
	c := s.src
	time.Sleep(1500 * time.Millisecond)
	afterLast := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')") + "+00"
	time.Sleep(1500 * time.Millisecond)
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute) // WAL, but no commit, after the target

	dir := pgtest.SharedTempDir(t)
	pgdata := filepath.Join(dir, "data")
	stopOnCleanup(t, c, pgdata)
	res := s.repo.pitr(t, dir, "restore", "--pgdata", pgdata, "--start", "--skip-target-check", "--target", afterLast)
	if res.code == 0 || !strings.Contains(res.stderr, "recovery ended before configured recovery target was reached") {
		t.Fatalf("restore --start to %s, after the last commit: %v", afterLast, res)
	}
	rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{})
	if rc.Running() {
		t.Fatalf("the server is still running after a failed recovery")
	}
	rc.AppendAutoConf(t, "recovery_target_time = ''   # test: recover to the end instead")
	rc.Start(t)
	waitPromoted(t, rc)
	if got := probeRows(t, rc); got != "before backup,A,B" {
		t.Fatalf("restarted without a target: rows %q", got)
	}
	assertRestoredData(t, rc, s.afterB)

	now := time.Now().UTC().Add(2*time.Second).Format("2006-01-02 15:04:05.000000") + "+00"
	time.Sleep(2500 * time.Millisecond)
	pgdata, res = s.restore(t, "--target", now)
	if res.code == 0 || !strings.Contains(res.stderr, "later than anything archived") {
		t.Fatalf("target %s after the newest archived segment: %v", now, res)
	}
	assertNotCreated(t, pgdata)

	// The scan of the WAL after the target finds no commit: refused, with
	// nothing written. A target just before B's commit is accepted.
	pgdata, res = s.restore(t, "--target", afterLast)
	if res.code == 0 || !strings.Contains(res.stderr, "no transaction committed after the target") {
		t.Fatalf("target %s after the last commit: %v", afterLast, res)
	}
	assertNotCreated(t, pgdata)
	if _, res := s.restore(t, "--dry-run", "--target", s.mid.Format("2006-01-02 15:04:05.000000")+"+00"); res.code != 0 || !strings.Contains(res.stdout, "a transaction committed after the target is in the archive") {
		t.Fatalf("target between A and B: %v", res)
	}
}

func lastBackupName(t *testing.T, listJSON string) string {
	t.Helper()
	i := strings.LastIndex(listJSON, `"name": "`)
	if i < 0 {
		i = strings.LastIndex(listJSON, `"name":"`)
	}
	if i < 0 {
		t.Fatalf("no backup name in %s", listJSON)
	}
	rest := listJSON[i:]
	rest = rest[strings.Index(rest, `:`)+1:]
	rest = strings.TrimLeft(rest, ` "`)
	return rest[:strings.Index(rest, `"`)]
}

// Scenario 9: a segment deleted from the middle of the archive makes restore
// refuse, naming that segment, with nothing written; so does a segment
// inside the backup's own start..end range (the backup's first segment),
// named as needed to make the backup consistent. On both backends and every
// segment size, across the rollover.
func TestRestoreRefusesWALGap(t *testing.T) {
	for _, kind := range backends {
		for _, l := range walLayouts {
			t.Run(kind+"/"+l.name, func(t *testing.T) {
				t.Parallel()
				s := newProbe(t, probeOpts{kind: kind, segMB: l.segMB, rollover: true, gap: time.Second})
				// Move well past the backup so the gap is after its end.
				for range 3 {
					generateWAL(t, s.src, 1)
					s.src.SwitchWAL(t)
				}
				last := s.src.SwitchWAL(t)
				s.src.WaitArchived(t, last, time.Minute)
				names := archivedNames(t, s.src)
				var segs []string
				for _, n := range names {
					if pgtest.IsSegmentName(n) {
						segs = append(segs, n)
					}
				}
				victim := segs[len(segs)-3]
				deleteObject(t, s.repo, victim)
				pgdata, res := s.restore(t, "--target", "latest")
				if res.code == 0 || !strings.Contains(res.stderr, victim) || !strings.Contains(res.stderr, "missing") {
					t.Fatalf("restore across a gap at %s: %v", victim, res)
				}
				assertNotCreated(t, pgdata)

				var first string
				for _, b := range s.repo.listBackups(t) {
					if b.Name == s.backup {
						size, err := b.SegmentSize()
						if err != nil {
							t.Fatal(err)
						}
						first = size.FileName(wal.Segment{TLI: b.StartTimeline, No: size.SegmentOf(b.StartLSN)})
					}
				}
				deleteObject(t, s.repo, first)
				pgdata, res = s.restore(t, "--target", "latest")
				if res.code == 0 || !strings.Contains(res.stderr, first) || !strings.Contains(res.stderr, "to make backup "+s.backup+" consistent") {
					t.Fatalf("restore without the backup's first segment %s: %v", first, res)
				}
				assertNotCreated(t, pgdata)
			})
		}
	}
}

// Scenarios 4 and 5: LSN, xid (inclusive and exclusive), restore point (the
// first of a duplicated name), immediate and latest targets: each lands on
// the expected rows, the server log names the stop point, and the data
// equals the source's at that point.
func TestRestoreOtherTargets(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", time.Second)
	c := s.src
	// Two restore points named p1: recovery must stop at the first, after C.
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('C')")
	afterC := snapshot(t, c, "after commit C (restore point p1)")
	c.Exec(t, "SELECT pg_create_restore_point('p1')")
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('D')")
	c.Exec(t, "SELECT pg_create_restore_point('p1')")
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('E')")
	afterE := snapshot(t, c, "after commit E (the end of the archive)")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	for _, tc := range []struct {
		args []string
		want string
		log  string // "" for latest: no stop line at all
		data dataState
	}{
		{[]string{"--target-lsn", s.lsnMid}, "before backup,A", `recovery stopping after WAL location (LSN) "` + s.lsnMid + `"`, s.afterA},
		{[]string{"--target-xid", s.xidB}, "before backup,A,B", "recovery stopping after commit of transaction " + s.xidB, s.afterB},
		{[]string{"--target-xid", s.xidB, "--exclusive"}, "before backup,A", "recovery stopping before commit of transaction " + s.xidB, s.afterA},
		{[]string{"--target-name", "p1"}, "before backup,A,B,C", `recovery stopping at restore point "p1"`, afterC},
		{[]string{"--target", "immediate"}, "before backup", "recovery stopping after reaching consistency", s.atBackup},
		{[]string{"--target", "latest"}, "before backup,A,B,C,D,E", "", afterE},
	} {
		rc := s.restoreAndStart(t, pgtest.Options{}, tc.args...)
		waitPromoted(t, rc)
		if got := probeRows(t, rc); got != tc.want {
			t.Errorf("%v: rows %q, want %q", tc.args, got, tc.want)
		}
		switch {
		case tc.log != "" && rc.LogCount(tc.log) != 1:
			t.Errorf("%v: server log has %d lines %q, want 1", tc.args, rc.LogCount(tc.log), tc.log)
		case tc.log == "" && (rc.LogContains("recovery stopping") || !rc.LogContains("redo done at")):
			t.Errorf("%v: recovery did not replay to the end of the archive", tc.args)
		}
		assertRestoredData(t, rc, tc.data)
		rc.Stop(t)
	}
}

// Scenario 23: --target-action pause leaves the server paused at the target,
// read-only queries work, and pg_wal_replay_resume() promotes it.
func TestRestoreTargetActionPause(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", 2*time.Second)
	c := s.restoreAndStart(t, pgtest.Options{}, "--target", s.mid.Format("2006-01-02 15:04:05.000000")+"+00", "--target-action", "pause")
	c.WaitFor(t, 2*time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT pg_get_wal_replay_pause_state()")
		return err == nil && v == "paused"
	})
	if got := probeRows(t, c); got != "before backup,A" {
		t.Fatalf("paused at rows %q", got)
	}
	assertLog(t, c, "recovery stopping before commit of transaction "+s.xidB, "pausing at the end of recovery")
	c.Exec(t, "SELECT pg_wal_replay_resume()")
	waitPromoted(t, c)
	assertRestoredData(t, c, s.afterA)
}

// Scenario 23: with hot_standby = off, --target-action pause acts as
// shutdown; --target-action shutdown stops the server at the target with
// recovery.signal left in place, and a restart without changes stops there
// again; switching the action to promote then finishes the restore.
func TestRestoreTargetActionShutdown(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", 2*time.Second)
	stopsAtTarget := func(c *pgtest.Cluster, times int) {
		t.Helper()
		_ = c.TryStart(t) // pg_ctl -w may see the server go away before it is ready
		c.WaitStopped(t, 2*time.Minute)
		if n := c.LogCount("shutdown at recovery target"); n != times {
			t.Fatalf("server log has %d lines \"shutdown at recovery target\", want %d", n, times)
		}
		if n := c.LogCount("recovery stopping before commit of transaction " + s.xidB); n != times {
			t.Fatalf("server log has %d lines naming B's commit as the stop point, want %d", n, times)
		}
		if c.LogContains("archive recovery complete") || c.LogContains("selected new timeline") {
			t.Fatalf("the server promoted instead of shutting down")
		}
		if _, err := os.Stat(filepath.Join(c.DataDir(), "recovery.signal")); err != nil {
			t.Fatalf("recovery.signal is gone after a shutdown at the target: %v", err)
		}
	}

	paused := s.restoreOnly(t, pgtest.Options{ExtraConf: map[string]string{"hot_standby": "off"}},
		"--target", s.midTarget(), "--target-action", "pause")
	stopsAtTarget(paused, 1)

	c := s.restoreOnly(t, pgtest.Options{}, "--target", s.midTarget(), "--target-action", "shutdown")
	stopsAtTarget(c, 1)
	stopsAtTarget(c, 2)
	c.AppendAutoConf(t, "recovery_target_action = 'promote'   # test: finish the restore")
	c.Start(t)
	waitPromoted(t, c)
	if got := probeRows(t, c); got != "before backup,A" {
		t.Fatalf("rows %q after promoting at the target", got)
	}
	assertRestoredData(t, c, s.afterA)
}

// deleteObject removes an archived WAL file from the repository.
func deleteObject(t *testing.T, r *testRepo, name string) {
	t.Helper()
	key := archivedKey(t, r, name)
	switch r.kind {
	case "file":
		if err := os.Remove(filepath.Join(r.dir, filepath.FromSlash(key))); err != nil {
			t.Fatal(err)
		}
	case "s3":
		deleteS3Object(t, r, key)
	}
}

// --start: pitr starts the restored server, waits for the target (however
// long pg_ctl would wait) and prints where recovery stopped; when the server gives up with a FATAL, pitr prints
// the server's reason in one line and exits non-zero. Scenario 28: the
// source's data directory holds a stray recovery.conf (which makes
// PostgreSQL 12+ refuse to start); the backup carries it, and restore
// removes it with a warning.
func TestRestoreStart(t *testing.T) {
	t.Parallel()
	s := newProbe(t, probeOpts{kind: "file", gap: 2 * time.Second, beforeBackup: func(t *testing.T, c *pgtest.Cluster) {
		if out, err := c.RunAsUser(t, "sh", "-c", "echo \"restore_command = 'false'\" > "+filepath.Join(c.DataDir(), "recovery.conf")); err != nil {
			t.Fatalf("write recovery.conf: %v %s", err, out)
		}
	}})
	startedIn := func(pgdata string) { stopOnCleanup(t, s.src, pgdata) }

	// PGCTLTIMEOUT=0: pg_ctl start's own wait for the server to accept
	// connections ends at once, as its default 60 s ends when the way to
	// consistency (or, without hot standby, the whole recovery) is longer.
	// pitr waits on its own terms.
	dir := pgtest.SharedTempDir(t)
	pgdata := filepath.Join(dir, "data")
	res := s.repo.pitrEnv(t, dir, []string{"PGCTLTIMEOUT=0"}, "restore", "--pgdata", pgdata, "--start", "--target", s.mid.Format("2006-01-02 15:04:05.000000")+"+00")
	startedIn(pgdata)
	if res.code != 0 || !strings.Contains(res.stdout, "recovery stopping before commit of transaction "+s.xidB) || !strings.Contains(res.stdout, "server promoted") {
		t.Fatalf("restore --start: %v", res)
	}
	if !strings.Contains(res.stderr, "recovery.conf") {
		t.Fatalf("restore did not say it removed the backup's recovery.conf: %v", res)
	}
	// The promotion is pitr's (pg_ctl promote, requested during replay),
	// acted on where recovery paused at the target, never before it; the
	// server opens without waiting for an end-of-recovery checkpoint.
	serverLog, err := os.ReadFile(filepath.Join(pgdata, "pitr-restore.log"))
	if err != nil {
		t.Fatal(err)
	}
	stop := strings.Index(string(serverLog), "recovery stopping before commit of transaction "+s.xidB)
	pause := strings.Index(string(serverLog), "pausing at the end of recovery")
	promote := strings.Index(string(serverLog), "received promote request")
	if !strings.Contains(res.stdout, "pitr promoted it where recovery paused at the target") {
		t.Fatalf("restore --start did not say how the server was promoted: %v", res)
	}
	if stop < 0 || pause < stop || promote < pause || strings.Contains(string(serverLog), "end-of-recovery") {
		t.Fatalf("want the stop at B's commit, a pause there, the promotion after it and no end-of-recovery checkpoint; server log:\n%s", serverLog)
	}
	if _, err := os.Stat(filepath.Join(pgdata, "recovery.conf")); !os.IsNotExist(err) {
		t.Fatalf("recovery.conf is still in the restored directory: %v", err)
	}
	if out, err := s.src.RunAsUser(t, "pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"); err != nil {
		t.Fatalf("stop the server pitr started: %v %s", err, out)
	}
	rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{})
	rc.Start(t)
	waitPromoted(t, rc)
	assertRestoredData(t, rc, s.afterA)
	rc.Stop(t)

	// An xid that never commits: the archive ends before the target.
	pgdata, res = s.restore(t, "--start", "--target-xid", "4000000000")
	startedIn(pgdata)
	if res.code == 0 || !strings.Contains(res.stderr, "recovery ended before configured recovery target was reached") {
		t.Fatalf("restore --start to an unreachable xid: %v", res)
	}
}

// Without hot standby the server accepts connections only when recovery
// has ended, and cannot pause (PostgreSQL would shut down instead): --start
// leaves recovery_target_action = 'promote', waits for the whole recovery
// however long pg_ctl's own wait is (PGCTLTIMEOUT=0 ends that at once),
// and reports the promotion at the target.
func TestRestoreStartWithoutHotStandby(t *testing.T) {
	t.Parallel()
	s := newProbe(t, probeOpts{kind: "file", gap: 2 * time.Second, conf: map[string]string{"hot_standby": "off"}})
	dir := pgtest.SharedTempDir(t)
	pgdata := filepath.Join(dir, "data")
	res := s.repo.pitrEnv(t, dir, []string{"PGCTLTIMEOUT=0"}, "restore", "--pgdata", pgdata, "--start", "--target", s.midTarget())
	stopOnCleanup(t, s.src, pgdata)
	if res.code != 0 || !strings.Contains(res.stdout, "recovery stopping before commit of transaction "+s.xidB) || !strings.Contains(res.stdout, "server promoted") {
		t.Fatalf("restore --start without hot standby: %v", res)
	}
	conf, err := os.ReadFile(filepath.Join(pgdata, "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	serverLog, err := os.ReadFile(filepath.Join(pgdata, "pitr-restore.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "recovery_target_action = 'promote'\n") || strings.Contains(string(conf), "'pause'") ||
		strings.Contains(res.stdout, "paused at the target") ||
		strings.Contains(string(serverLog), "pausing at the end of recovery") {
		t.Fatalf("want recovery_target_action left at promote and no pause;\npostgresql.auto.conf:\n%s\nserver log:\n%s", conf, serverLog)
	}
	if out, err := s.src.RunAsUser(t, "pg_ctl", "-D", pgdata, "-m", "fast", "-w", "stop"); err != nil {
		t.Fatalf("stop the server pitr started: %v %s", err, out)
	}
	rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{})
	rc.Start(t)
	assertRestoredData(t, rc, s.afterA)
	rc.Stop(t)
}
