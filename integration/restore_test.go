package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// probeScenario is PG-CONTRACTS §9's pattern: a backup, then row A, a gap
// with a recorded instant Mid, then row B, all archived.
type probeScenario struct {
	repo   *testRepo
	src    *pgtest.Cluster
	mid    time.Time // server clock between A and B
	lsnMid string    // WAL position between A and B
	xidB   string    // transaction id that committed B
}

// newProbeScenario starts an archiving cluster (its timezone is not UTC, so
// any zone confusion shows), takes a backup, and commits A and B around mid.
func newProbeScenario(t *testing.T, kind string, gap time.Duration) *probeScenario {
	t.Helper()
	r := newRepo(t, kind, nil)
	c := pgtest.NewCluster(t, pgtest.Options{
		WalSegSizeMB:   1,
		ArchiveCommand: r.archiveCommand(),
		Timezone:       "America/New_York",
	})
	c.Start(t)
	c.Exec(t, "CREATE TABLE pitr_probe (id serial, note text, committed_at timestamptz default clock_timestamp())")
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('before backup')")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	if res := r.pitr(t, c.BaseDir(), "backup", "--fast", "--dsn", c.DSN()); res.code != 0 {
		t.Fatalf("pitr backup: %v", res)
	}
	s := &probeScenario{repo: r, src: c}
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('A')")
	time.Sleep(gap / 2)
	midText := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
	mid, err := time.Parse("2006-01-02 15:04:05.000000", midText)
	if err != nil {
		t.Fatal(err)
	}
	s.mid = mid
	s.lsnMid = c.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	time.Sleep(gap / 2)
	s.xidB = c.QueryString(t, "INSERT INTO pitr_probe (note) VALUES ('B') RETURNING pg_current_xact_id()::text")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	return s
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

// restoreAndStart restores, starts the server and waits until recovery has
// finished (promoted) or paused, depending on wantPaused.
func (s *probeScenario) restoreAndStart(t *testing.T, opts pgtest.Options, args ...string) *pgtest.Cluster {
	t.Helper()
	pgdata, res := s.restore(t, args...)
	if res.code != 0 {
		t.Fatalf("pitr restore %v: %v", args, res)
	}
	if !strings.Contains(res.stdout, "Recovery plan") {
		t.Fatalf("pitr restore printed no plan:\n%s", res.stdout)
	}
	c := pgtest.RestoredCluster(t, pgdata, opts)
	c.Start(t)
	return c
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

// Scenario 1: a time between commits A and B, given in UTC with an explicit
// offset: A present, B absent, a new timeline, and the server's own log says
// it stopped before B's commit.
func TestRestoreToTimeBetweenCommits(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newProbeScenario(t, kind, 2*time.Second)
			c := s.restoreAndStart(t, pgtest.Options{}, "--target", s.mid.Format("2006-01-02 15:04:05.000000")+"+00:00")
			waitPromoted(t, c)
			if got := probeRows(t, c); got != "before backup,A" {
				t.Fatalf("restored rows %q, want A present and B absent", got)
			}
			if tl := timelineOf(t, c); tl != 2 {
				t.Fatalf("restored cluster is on timeline %d, want 2", tl)
			}
			if !c.LogContains("recovery stopping before commit of transaction " + s.xidB) {
				t.Fatalf("server log does not name the stop point (commit of %s):\n%s", s.xidB, c.Log())
			}
		})
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
	time.Sleep(time.Until(boundary.Add(2 * time.Second)))
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('B')")
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

// Scenarios 7 and 8: a target inside a backup window uses the previous
// backup; before the earliest backup and past the end of the archive are
// refused before anything is written.
func TestRestoreBackupChoiceAndRefusals(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", 2*time.Second)
	c := s.src
	// A second backup after B: a target between its start and stop must use the first.
	beforeSecond := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
	if res := s.repo.pitr(t, c.BaseDir(), "backup", "--fast", "--dsn", c.DSN()); res.code != 0 {
		t.Fatalf("second backup: %v", res)
	}
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('C')")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	list := s.repo.pitr(t, c.BaseDir(), "backup", "list", "--json")
	if list.code != 0 {
		t.Fatalf("backup list: %v", list)
	}

	_, res := s.restore(t, "--dry-run", "--target", beforeSecond+"+00")
	if res.code != 0 {
		t.Fatalf("dry run inside the second backup's window: %v", res)
	}
	first := strings.Count(res.stdout, "newest backup that ended before the target")
	if first != 1 || strings.Contains(res.stdout, "backup:    "+lastBackupName(t, list.stdout)) {
		t.Fatalf("target inside the second backup's window did not pick the first backup:\n%s", res.stdout)
	}

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
// refuse, naming that segment, with nothing written.
func TestRestoreRefusesWALGap(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newProbeScenario(t, kind, 2*time.Second)
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
		})
	}
}

// Scenario 4 and 5: LSN, xid, restore point (the first of a duplicated name)
// and immediate targets.
func TestRestoreOtherTargets(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", time.Second)
	c := s.src
	// Two restore points named p1: recovery must stop at the first, after C.
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('C')")
	c.Exec(t, "SELECT pg_create_restore_point('p1')")
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('D')")
	c.Exec(t, "SELECT pg_create_restore_point('p1')")
	c.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('E')")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--target-lsn", s.lsnMid}, "before backup,A"},
		{[]string{"--target-xid", s.xidB}, "before backup,A,B"},
		{[]string{"--target-xid", s.xidB, "--exclusive"}, "before backup,A"},
		{[]string{"--target-name", "p1"}, "before backup,A,B,C"},
		{[]string{"--target", "immediate"}, "before backup"},
		{[]string{"--target", "latest"}, "before backup,A,B,C,D,E"},
	} {
		rc := s.restoreAndStart(t, pgtest.Options{}, tc.args...)
		waitPromoted(t, rc)
		if got := probeRows(t, rc); got != tc.want {
			t.Errorf("%v: rows %q, want %q", tc.args, got, tc.want)
		}
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
	c.Exec(t, "SELECT pg_wal_replay_resume()")
	waitPromoted(t, c)
}

// Scenarios 14 and 15: restore from a timeline-1 backup to a time on timeline
// 2 (after a standby's promotion, with the .history and .partial archived);
// then a second restore from the same repository creates timeline 4, never a
// second 3, because the first restore's .history was archived.
func TestRestoreAcrossTimelines(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	primary := pgtest.NewCluster(t, pgtest.Options{WalSegSizeMB: 1, ArchiveCommand: r.archiveCommand()})
	primary.Start(t)
	primary.Exec(t, "CREATE TABLE pitr_probe (id serial, note text)")
	primary.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl1')")
	primary.WaitArchived(t, primary.SwitchWAL(t), time.Minute)
	if res := r.pitr(t, primary.BaseDir(), "backup", "--fast", "--dsn", primary.DSN()); res.code != 0 {
		t.Fatalf("backup: %v", res)
	}
	standby := pgtest.NewStandby(t, primary, pgtest.Options{ArchiveCommand: r.archiveCommand()})
	standby.Start(t)
	primary.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl1 streamed')")
	standby.WaitFor(t, time.Minute, func() bool {
		v, err := standby.TryQueryString("SELECT count(*)::text FROM pitr_probe")
		return err == nil && v == "2"
	})
	primary.Stop(t)
	standby.Promote(t)
	standby.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl2 A')")
	time.Sleep(time.Second)
	mid := standby.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
	time.Sleep(time.Second)
	standby.Exec(t, "INSERT INTO pitr_probe (note) VALUES ('tl2 B')")
	standby.WaitArchived(t, "00000002.history", time.Minute)
	standby.WaitArchived(t, standby.SwitchWAL(t), time.Minute)

	dir := pgtest.SharedTempDir(t)
	restore := func(name string) *pgtest.Cluster {
		pgdata := filepath.Join(dir, name)
		res := r.pitr(t, dir, "restore", "--pgdata", pgdata, "--target", mid+"+00")
		if res.code != 0 {
			t.Fatalf("restore %s: %v", name, res)
		}
		if !strings.Contains(res.stdout, "timeline:  2") {
			t.Fatalf("plan does not follow timeline 2:\n%s", res.stdout)
		}
		rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{ArchiveCommand: r.archiveCommand()})
		rc.Start(t)
		waitPromoted(t, rc)
		if got := probeRows(t, rc); got != "tl1,tl1 streamed,tl2 A" {
			t.Fatalf("%s: rows %q", name, got)
		}
		return rc
	}
	first := restore("first")
	if tl := timelineOf(t, first); tl != 3 {
		t.Fatalf("first restore is on timeline %d, want 3", tl)
	}
	first.WaitArchived(t, "00000003.history", time.Minute)
	first.Stop(t)
	second := restore("second")
	if tl := timelineOf(t, second); tl != 4 {
		t.Fatalf("second restore is on timeline %d, want 4 (a new timeline, not a second 3)", tl)
	}
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

// --start: pitr starts the restored server, waits for the target and prints
// where recovery stopped; when the server gives up with a FATAL, pitr prints
// the server's reason in one line and exits non-zero.
func TestRestoreStart(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", 2*time.Second)
	startedIn := func(pgdata string) {
		t.Cleanup(func() { s.src.RunAsUser(t, "pg_ctl", "-D", pgdata, "-m", "immediate", "stop") })
	}

	pgdata, res := s.restore(t, "--start", "--target", s.mid.Format("2006-01-02 15:04:05.000000")+"+00")
	startedIn(pgdata)
	if res.code != 0 || !strings.Contains(res.stdout, "recovery stopping before commit of transaction "+s.xidB) || !strings.Contains(res.stdout, "server promoted") {
		t.Fatalf("restore --start: %v", res)
	}

	// An xid that never commits: the archive ends before the target.
	pgdata, res = s.restore(t, "--start", "--target-xid", "4000000000")
	startedIn(pgdata)
	if res.code == 0 || !strings.Contains(res.stderr, "recovery ended before configured recovery target was reached") {
		t.Fatalf("restore --start to an unreachable xid: %v", res)
	}
}
