package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/internal/s3test"
)

// streamer is a running `pitr stream` process.
type streamer struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (s *streamer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

func (s *streamer) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// startStream runs pitr stream against c with a 1 s upload interval, as the
// cluster user. Its output is logged if the test fails.
func startStream(t *testing.T, r *testRepo, c *pgtest.Cluster, extra ...string) *streamer {
	t.Helper()
	args := append([]string{"stream", "--dsn", c.DSN(), "--stream-interval", "1s", "--log-level", "debug"}, extra...)
	cmd := exec.Command(pitrBin, args...)
	cmd.Dir = c.BaseDir()
	cmd.Env = append(os.Environ(), "PITR_CONFIG="+r.configPath)
	pgtest.RunAs(cmd)
	s := &streamer{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s, s
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pitr stream: %v", err)
	}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("--- pitr stream output ---\n%s", lastLines(s.output(), 60))
		}
	})
	return s
}

func (s *streamer) kill() {
	select {
	case <-s.done:
	default:
		s.cmd.Process.Kill()
		<-s.done
	}
}

// stop sends SIGTERM and waits for the final upload.
func (s *streamer) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("pitr stream did not stop after SIGTERM")
	}
	if s.err != nil {
		t.Fatalf("pitr stream exited with %v:\n%s", s.err, lastLines(s.output(), 30))
	}
}

type streamState struct {
	Timeline uint32 `json:"timeline"`
	Durable  string `json:"durable_lsn"`
}

// readStreamState reads the streamer's state object from the repository.
func readStreamState(t *testing.T, r *testRepo, sysid string) (streamState, bool) {
	t.Helper()
	var b []byte
	var err error
	switch r.kind {
	case "file":
		b, err = os.ReadFile(filepath.Join(r.dir, sysid, "stream", "state.json"))
		if os.IsNotExist(err) {
			return streamState{}, false
		}
	default:
		t.Fatal("readStreamState: file repositories only")
	}
	if err != nil {
		t.Fatal(err)
	}
	var st streamState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state.json: %v\n%s", err, b)
	}
	return st, true
}

// waitDurable waits until the streamer reports WAL up to lsn durable in the
// repository (polling its state object, no blind sleep).
func waitDurable(t *testing.T, r *testRepo, c *pgtest.Cluster, s *streamer, lsn string) {
	t.Helper()
	sysid := c.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()")
	deadline := time.Now().Add(time.Minute)
	for {
		st, ok := readStreamState(t, r, sysid)
		if ok && st.Durable != "" && c.QueryString(t, "SELECT ($1::pg_lsn >= $2::pg_lsn)::text", st.Durable, lsn) == "true" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pitr stream did not make %s durable within a minute (state %+v)\n%s", lsn, st, lastLines(s.output(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// newStreamCluster starts an archiving cluster (1 MiB segments,
// archive_timeout off) with a table and a base backup.
func newStreamCluster(t *testing.T, r *testRepo) *pgtest.Cluster {
	t.Helper()
	c := pgtest.NewCluster(t, pgtest.Options{WalSegSizeMB: 1, ArchiveCommand: r.archiveCommand(),
		ExtraConf: map[string]string{"archive_timeout": "0"}})
	c.Start(t)
	c.Exec(t, "CREATE TABLE rpo (note text)")
	r.backup(t, c)
	return c
}

// Issue 9, RPO: with archive_timeout off, a committed row is in the
// repository one upload interval later (as pitr stream's .partial), and a
// restore to latest after the primary's crash has it. Without the partial
// (streaming off: only archive-push's complete segments) the row is lost.
func TestStreamRPO(t *testing.T) {
	r := newRepo(t, "file", nil)
	c := newStreamCluster(t, r)
	s := startStream(t, r, c)
	c.Exec(t, "INSERT INTO rpo VALUES ('streamed')")
	lsn := c.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	segment := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	waitDurable(t, r, c, s, lsn)
	// The machine dies: server and streamer at once.
	s.kill()
	c.Kill(t)
	sysid := filepath.Base(mustGlob(t, filepath.Join(r.dir, "[0-9]*"))[0])
	partial := filepath.Join(r.dir, sysid, "wal", segment[:16], segment+".partial")
	if _, err := os.Stat(filepath.Join(r.dir, sysid, "wal", segment[:16], segment)); err == nil {
		t.Fatalf("segment %s was archived complete; the test needs the commit in the segment in progress", segment)
	}
	if _, err := os.Stat(partial); err != nil {
		t.Fatalf("no .partial for the segment in progress: %v", err)
	}

	restoreLatest := func(t *testing.T) *pgtest.Cluster {
		dir := pgtest.SharedTempDir(t)
		pgdata := filepath.Join(dir, "data")
		res := r.pitr(t, dir, "restore", "--pgdata", pgdata, "--target", "latest")
		if res.code != 0 {
			t.Fatalf("pitr restore: %v", res)
		}
		rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{})
		rc.Start(t)
		waitPromoted(t, rc)
		return rc
	}
	rc := restoreLatest(t)
	if got := rc.QueryString(t, "SELECT coalesce(string_agg(note, ','), '') FROM rpo"); got != "streamed" {
		t.Fatalf("restored rows = %q, want the streamed commit", got)
	}
	if !rc.LogContains(`restored log file "` + segment + `" from archive`) {
		t.Fatalf("the restored server did not replay %s from the archive (the .partial)", segment)
	}
	rc.Stop(t)

	// Streaming off: only what archive-push stored, the complete segments.
	if err := os.Remove(partial); err != nil {
		t.Fatal(err)
	}
	rc = restoreLatest(t)
	if got := rc.QueryString(t, "SELECT coalesce(string_agg(note, ','), '') FROM rpo"); got != "" {
		t.Fatalf("without streaming, restored rows = %q; the commit should be lost (it never left the crashed server)", got)
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("glob %s: %v %v", pattern, m, err)
	}
	return m
}

// Issue 9: the streamer killed mid-segment and restarted leaves no gap, and
// archive-push of the same segments finds identical content (no conflict).
func TestStreamRestartNoGapWithArchivePush(t *testing.T) {
	r := newRepo(t, "file", nil)
	c := newStreamCluster(t, r)
	s := startStream(t, r, c)
	generateWAL(t, c, 2)
	c.Exec(t, "INSERT INTO rpo VALUES ('one')")
	waitDurable(t, r, c, s, c.QueryString(t, "SELECT pg_current_wal_lsn()::text"))
	s.kill() // mid-segment, no final upload
	generateWAL(t, c, 2)
	c.Exec(t, "INSERT INTO rpo VALUES ('two')")
	// A dead streamer with its slot holding WAL is an alarm, loudly.
	status := func() result {
		return r.pitr(t, c.BaseDir(), "status", "--dsn", c.DSN(), "--max-drill-age", "0")
	}
	res := status()
	if res.code == 0 || !strings.Contains(res.stdout, "PROBLEM: pitr stream is not running, but its replication slot pitr holds") ||
		!strings.Contains(res.stdout, "fills the server's disk") {
		t.Fatalf("pitr status with the streamer down and its slot holding WAL: %v", res)
	}
	s = startStream(t, r, c)
	generateWAL(t, c, 1)
	c.Exec(t, "INSERT INTO rpo VALUES ('three')")
	lsn := c.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	waitDurable(t, r, c, s, lsn)
	if res := status(); res.code != 0 || !strings.Contains(res.stdout, "slot:       pitr active") {
		t.Fatalf("pitr status with the streamer running: %v", res)
	}
	// A server restart breaks the connection: the streamer reconnects
	// (with backoff) and goes on.
	c.Restart(t)
	c.Exec(t, "INSERT INTO rpo VALUES ('four')")
	waitDurable(t, r, c, s, c.QueryString(t, "SELECT pg_current_wal_lsn()::text"))
	// Everything archive-push ships too must match what the streamer stored.
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	if failed := c.QueryInt(t, "SELECT failed_count FROM pg_stat_archiver"); failed != 0 {
		t.Fatalf("archive-push failed %d times next to the streamer (conflict?)\n%s", failed, c.Log())
	}
	s.stop(t)
	if out := s.output(); strings.Contains(out, "level=ERROR") || strings.Contains(out, "conflict") || strings.Contains(out, "different file") {
		t.Fatalf("pitr stream reported errors:\n%s", lastLines(out, 30))
	}
	c.Kill(t)
	dir := pgtest.SharedTempDir(t)
	pgdata := filepath.Join(dir, "data")
	if res := r.pitr(t, dir, "restore", "--pgdata", pgdata, "--target", "latest"); res.code != 0 {
		t.Fatalf("pitr restore: %v", res)
	}
	rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{})
	rc.Start(t)
	waitPromoted(t, rc)
	if got := rc.QueryString(t, "SELECT string_agg(note, ',' ORDER BY note) FROM rpo"); got != "four,one,three,two" {
		t.Fatalf("restored rows = %q, want four,one,three,two", got)
	}
}

// Issue 9: the server is told only about WAL that is in the repository, so
// while S3 is down the slot's restart_lsn stays put, and it advances once
// uploads succeed again.
func TestStreamSlotWaitsForUpload(t *testing.T) {
	server := s3test.Start(t)
	r := newRepo(t, "s3", server)
	c := newStreamCluster(t, r)
	s := startStream(t, r, c)
	restart := func() string {
		return c.QueryString(t, "SELECT coalesce(restart_lsn::text, '') FROM pg_replication_slots WHERE slot_name = 'pitr'")
	}
	lsn := c.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	c.WaitFor(t, time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT (restart_lsn >= $1::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = 'pitr'", lsn)
		return err == nil && v == "true"
	})
	server.Stop(t)
	failures := func() int { return strings.Count(s.output(), "failed; retrying") }
	waitFailures := func(n int) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for failures() < n {
			if time.Now().After(deadline) {
				t.Fatalf("pitr stream never reported %d failed uploads with S3 down\n%s", n, lastLines(s.output(), 20))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Once an upload has failed, nothing more can become durable.
	c.Exec(t, "INSERT INTO rpo VALUES ('outage starts')")
	waitFailures(1)
	held := restart()
	generateWAL(t, c, 3)
	c.Exec(t, "INSERT INTO rpo VALUES ('during outage')")
	end := c.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	// The streamer has received WAL past the slot (its write position is
	// ahead) and has tried, and failed, to store it more than once.
	c.WaitFor(t, time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT (write_lsn > $1::pg_lsn)::text FROM pg_stat_replication WHERE application_name = 'pitr stream'", held)
		return err == nil && v == "true"
	})
	waitFailures(failures() + 2)
	if got := restart(); got != held {
		t.Fatalf("slot restart_lsn moved from %s to %s while the repository was unreachable", held, got)
	}
	if flush := c.QueryString(t, "SELECT flush_lsn::text FROM pg_stat_replication WHERE application_name = 'pitr stream'"); flush != held {
		t.Fatalf("the streamer reported flush %s while the repository was down (slot at %s)", flush, held)
	}
	server.Restart(t)
	c.WaitFor(t, 2*time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT (restart_lsn >= $1::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = 'pitr'", end)
		return err == nil && v == "true"
	})
	s.stop(t)
}

// Issue 9: a standby promoted while the streamer follows it: the streamer
// ends the old timeline (its last segment stays a .partial), stores the new
// timeline's history and streams the new timeline.
func TestStreamFollowsPromotion(t *testing.T) {
	r := newRepo(t, "file", nil)
	primary := newStreamCluster(t, r)
	standby := pgtest.NewStandby(t, primary, pgtest.Options{})
	standby.Start(t)
	s := startStream(t, r, standby)
	primary.Exec(t, "INSERT INTO rpo VALUES ('tl1')")
	lsn := primary.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	standby.WaitFor(t, time.Minute, func() bool {
		v, err := standby.TryQueryString("SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", lsn)
		return err == nil && v == "true"
	})
	waitDurable(t, r, standby, s, lsn)
	primary.Kill(t)
	standby.Promote(t)
	waitPromoted(t, standby)
	standby.Exec(t, "INSERT INTO rpo VALUES ('tl2')")
	lsn2 := standby.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	sysid := standby.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()")
	waitDurable(t, r, standby, s, lsn2)
	if st, _ := readStreamState(t, r, sysid); st.Timeline != 2 {
		t.Fatalf("streamer is on timeline %d after the promotion, want 2", st.Timeline)
	}
	if _, err := os.Stat(filepath.Join(r.dir, sysid, "wal", "00000002.history")); err != nil {
		t.Fatalf("00000002.history is not in the repository: %v", err)
	}
	seg := standby.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	if !strings.HasPrefix(seg, "00000002") {
		t.Fatalf("standby writes %s, expected timeline 2", seg)
	}
	if _, err := os.Stat(filepath.Join(r.dir, sysid, "wal", seg[:16], seg+".partial")); err != nil {
		if _, err2 := os.Stat(filepath.Join(r.dir, sysid, "wal", seg[:16], seg)); err2 != nil {
			t.Fatalf("timeline 2's segment in progress %s is not in the repository: %v", seg, err)
		}
	}
	s.stop(t)
	_ = context.Background
	_ = fmt.Sprint
}

// Issue 9: SIGTERM uploads what was received (the final .partial; the upload
// interval here is an hour, so nothing else could have stored it), and a
// time target inside the .partial restores to that time.
func TestStreamShutdownUploadAndTimeTarget(t *testing.T) {
	r := newRepo(t, "file", nil)
	c := newStreamCluster(t, r)
	s := startStream(t, r, c, "--stream-interval", "1h")
	c.Exec(t, "INSERT INTO rpo VALUES ('A')")
	mid := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
	c.Exec(t, "INSERT INTO rpo VALUES ('B')")
	lsn := c.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	c.WaitFor(t, time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT (write_lsn >= $1::pg_lsn)::text FROM pg_stat_replication WHERE application_name = 'pitr stream'", lsn)
		return err == nil && v == "true"
	})
	s.stop(t)
	sysid := c.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()")
	st, ok := readStreamState(t, r, sysid)
	if !ok || c.QueryString(t, "SELECT ($1::pg_lsn >= $2::pg_lsn)::text", st.Durable, lsn) != "true" {
		t.Fatalf("after SIGTERM the repository holds WAL up to %q, want at least %s", st.Durable, lsn)
	}
	c.Kill(t)

	dir := pgtest.SharedTempDir(t)
	pgdata := filepath.Join(dir, "data")
	res := r.pitr(t, dir, "restore", "--pgdata", pgdata, "--target", mid+"+00:00")
	if res.code != 0 || !strings.Contains(res.stdout, ".partial") {
		t.Fatalf("pitr restore to a time inside the .partial: %v", res)
	}
	rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{})
	rc.Start(t)
	waitPromoted(t, rc)
	if got := rc.QueryString(t, "SELECT string_agg(note, ',')  FROM rpo"); got != "A" {
		t.Fatalf("restored rows = %q, want A only", got)
	}
	assertLog(t, rc, "recovery stopping before commit of transaction")
}

// Issue 9: stream: true runs the streamer inside pitr agent, and the agent's
// SIGTERM stops it with its final upload.
func TestAgentStreams(t *testing.T) {
	r := newRepo(t, "file", nil)
	c := newStreamCluster(t, r)
	cmd, log := startAgent(t, r, c, "--stream", "true", "--stream-interval", "1h", "--drill-schedule", "off")
	waitLog(t, log, "streaming", time.Minute)
	c.Exec(t, "INSERT INTO rpo VALUES ('agent')")
	lsn := c.QueryString(t, "SELECT pg_current_wal_lsn()::text")
	c.WaitFor(t, time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT (write_lsn >= $1::pg_lsn)::text FROM pg_stat_replication WHERE application_name = 'pitr stream'", lsn)
		return err == nil && v == "true"
	})
	stopAgent(t, cmd, log)
	if !strings.Contains(log.String(), "streaming stopped") || strings.Contains(log.String(), "level=ERROR") {
		t.Fatalf("agent log:\n%s", log.String())
	}
	sysid := c.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()")
	st, ok := readStreamState(t, r, sysid)
	if !ok || c.QueryString(t, "SELECT ($1::pg_lsn >= $2::pg_lsn)::text", st.Durable, lsn) != "true" {
		t.Fatalf("after the agent's SIGTERM the repository holds WAL up to %q, want at least %s", st.Durable, lsn)
	}
}
