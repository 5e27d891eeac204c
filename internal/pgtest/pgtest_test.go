package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestArchiveAndPromote: archive_command runs as the cluster user into a
// shared directory with 1 MiB segments; a standby is promoted to timeline 2.
func TestArchiveAndPromote(t *testing.T) {
	t.Parallel()
	archive := SharedTempDir(t)
	p := NewCluster(t, Options{
		WalSegSizeMB:   1,
		ArchiveCommand: fmt.Sprintf("test ! -f %[1]s/%%f && cp %%p %[1]s/%%f", archive),
		Timezone:       "America/New_York",
		DataChecksums:  true,
	})
	p.Start(t)

	if got := p.QueryString(t, "SHOW wal_segment_size"); got != "1MB" {
		t.Fatalf("wal_segment_size = %q, want 1MB", got)
	}
	if got := p.QueryString(t, "SHOW timezone"); got != "America/New_York" {
		t.Fatalf("timezone = %q", got)
	}
	if got := p.QueryString(t, "SHOW data_checksums"); got != "on" {
		t.Fatalf("data_checksums = %q", got)
	}
	if got := p.QueryString(t, "SELECT current_setting('unix_socket_directories')"); got != p.BaseDir() {
		t.Fatalf("unix_socket_directories = %q, want %q", got, p.BaseDir())
	}
	if isRoot() {
		if got := p.QueryString(t, "SELECT pg_read_file('PG_VERSION') IS NOT NULL"); got != "t" {
			t.Fatalf("pg_read_file: %q", got)
		}
	}

	p.Exec(t, "CREATE TABLE probe(id int primary key, note text); INSERT INTO probe VALUES (1, 'a')")
	p.Exec(t, "INSERT INTO probe VALUES ($1, $2)", 2, "b")
	var n int
	if err := p.QueryRow(t, "SELECT count(*) FROM probe WHERE id > $1", 0).Scan(&n); err != nil || n != 2 {
		t.Fatalf("count = %d, %v", n, err)
	}

	seg := p.SwitchWAL(t)
	if !IsSegmentName(seg) || !strings.HasPrefix(seg, "00000001") {
		t.Fatalf("SwitchWAL returned %q", seg)
	}
	p.WaitArchived(t, seg, 30*time.Second)
	fi, err := os.Stat(filepath.Join(archive, seg))
	if err != nil {
		t.Fatalf("archived segment: %v", err)
	}
	if fi.Size() != 1<<20 {
		t.Fatalf("archived %s is %d bytes, want 1 MiB", seg, fi.Size())
	}
	if isRoot() {
		if uid := fileUID(t, filepath.Join(archive, seg)); uid != int(userCached.uid) {
			t.Fatalf("archived file owned by uid %d, want %s (%d)", uid, UserName(), userCached.uid)
		}
	}
	archived, failed, last, _ := p.ArchiverStats(t)
	if archived < 1 || failed != 0 || last < seg {
		t.Fatalf("archiver stats: archived=%d failed=%d last=%q", archived, failed, last)
	}
	// A second switch moves to the next segment.
	if seg2 := p.SwitchWAL(t); seg2 <= seg {
		t.Fatalf("second SwitchWAL returned %q after %q", seg2, seg)
	}

	// Tools run as the cluster user with PGHOST/PGPORT set.
	out, err := p.RunAsUser(t, "psql", "-XAtc", "SELECT current_user")
	if err != nil || strings.TrimSpace(out) != "postgres" {
		t.Fatalf("psql: %q, %v", out, err)
	}
	if _, err := p.RunAsUser(t, "psql", "-XAtc", "SELECT nonsense"); err == nil ||
		!strings.Contains(err.Error(), "nonsense") {
		t.Fatalf("psql error should include stderr, got %v", err)
	}

	s := NewStandby(t, p, Options{ArchiveCommand: p.opts.ArchiveCommand})
	s.Start(t)
	if !s.InRecovery(t) {
		t.Fatal("standby is not in recovery")
	}
	p.Exec(t, "INSERT INTO probe VALUES (3, 'c')")
	s.WaitFor(t, 30*time.Second, func() bool {
		v, err := s.TryQueryString("SELECT count(*) FROM probe")
		return err == nil && v == "3"
	})
	s.Promote(t)
	if s.InRecovery(t) {
		t.Fatal("still in recovery after promote")
	}
	if tl := s.Timeline(t); tl != 2 {
		t.Fatalf("timeline after promote = %d, want 2", tl)
	}
	s.Exec(t, "CHECKPOINT")
	if got := s.QueryString(t, "SELECT timeline_id FROM pg_control_checkpoint()"); got != "2" {
		t.Fatalf("checkpoint timeline_id = %q, want 2", got)
	}
	s.WaitArchived(t, "00000002.history", 30*time.Second)
	if _, err := os.Stat(filepath.Join(archive, "00000002.history")); err != nil {
		t.Fatalf("history file not archived: %v", err)
	}
	if !s.LogContains("selected new timeline ID: 2") {
		t.Fatal("standby log lacks the new timeline message")
	}

	s.Kill(t)
	if s.Running() {
		t.Fatal("running after Kill")
	}
	s.Start(t) // crash recovery
	if got := s.QueryString(t, "SELECT count(*) FROM probe"); got != "3" {
		t.Fatalf("after crash recovery count = %s", got)
	}
	s.Restart(t)
	p.Stop(t)
	if p.Running() {
		t.Fatal("primary running after Stop")
	}
}

// TestRestoredCluster: a plain base backup written by the cluster user into a
// root-only t.TempDir() is adopted and started on a new port.
func TestRestoredCluster(t *testing.T) {
	t.Parallel()
	p := NewCluster(t, Options{})
	p.Start(t)
	p.Exec(t, "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")

	staging := SharedTempDir(t)
	if _, err := p.RunAsUser(t, "pg_basebackup", "-D", filepath.Join(staging, "b"), "-X", "stream", "-c", "fast", "-N"); err != nil {
		t.Fatal(err)
	}
	// Copy it as root into a directory only root can reach, like a restore
	// run by the test process would.
	dst := filepath.Join(t.TempDir(), "restored")
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(staging, "b"))); err != nil {
		t.Fatal(err)
	}
	// A postmaster.pid copied from a running server must not make pg_ctl
	// signal that server.
	pid, err := os.ReadFile(filepath.Join(p.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "postmaster.pid"), pid, 0o600); err != nil {
		t.Fatal(err)
	}
	r := RestoredCluster(t, dst, Options{ExtraConf: map[string]string{"work_mem": "8MB", "application_name": "it's"}})
	if r.Port() == p.Port() {
		t.Fatal("restored cluster reuses the primary's port")
	}
	r.Start(t)
	if got := r.QueryString(t, "SELECT sum(g) FROM t"); got != "500500" {
		t.Fatalf("sum = %q", got)
	}
	if got := r.QueryString(t, "SHOW work_mem"); got != "8MB" {
		t.Fatalf("work_mem = %q", got)
	}
	if got := r.QueryString(t, "SHOW application_name"); got != "it's" {
		t.Fatalf("application_name = %q", got)
	}
	if got := r.QueryString(t, "SELECT NULL::text"); got != "" {
		t.Fatalf("NULL = %q", got)
	}
	if got := r.QueryInt(t, "SELECT 40 + $1::int", 2); got != 42 {
		t.Fatalf("QueryInt = %d", got)
	}
	if err := r.TryExec("SELECT 1/0"); err == nil {
		t.Fatal("TryExec: want division by zero")
	}
	if !strings.Contains(r.ControlData(t), "in production") {
		t.Fatal("pg_controldata: not in production")
	}
	// The copy holds the same data: pg_dumpall reads the same.
	if got, want := r.DumpAll(t), p.DumpAll(t); got != want || !strings.Contains(got, "COPY public.t") {
		t.Fatalf("pg_dumpall of the copy differs from the original's (or has no table t)")
	}
	// postgresql.auto.conf wins over pgtest's settings, a later line over an earlier one.
	r.AppendAutoConf(t, "work_mem = '4MB'", "work_mem = '16MB'")
	r.Restart(t)
	if got := r.QueryString(t, "SHOW work_mem"); got != "16MB" {
		t.Fatalf("work_mem after AppendAutoConf = %q", got)
	}
	r.Stop(t)
	if !p.Running() {
		t.Fatal("stopping the restored cluster stopped the primary")
	}
}

// TestMakeShared: a script and a directory inside root-only t.TempDir()
// become usable by the cluster user.
func TestMakeShared(t *testing.T) {
	t.Parallel()
	p := NewCluster(t, Options{})
	tmp := t.TempDir()
	script := filepath.Join(tmp, "bin", "whoami.sh")
	if err := os.MkdirAll(filepath.Dir(script), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("#!/bin/sh\nid -un\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(tmp, "repo")
	if err := os.MkdirAll(filepath.Join(repo, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	MakeShared(t, script)
	MakeShared(t, repo)
	out, err := p.RunAsUser(t, script)
	if err != nil || strings.TrimSpace(out) != UserName() {
		t.Fatalf("script: %q, %v", out, err)
	}
	if _, err := p.RunAsUser(t, "touch", filepath.Join(repo, "sub", "x")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("id", "-un")
	RunAs(cmd)
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != UserName() {
		t.Fatalf("RunAs: %q, %v", out, err)
	}
}

// TestTryStartReportsFailure: a start that fails returns the server's
// complaint.
func TestTryStartReportsFailure(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Options{ExtraConf: map[string]string{"shared_buffers": "nonsense"}})
	err := c.TryStart(t)
	if err == nil {
		t.Fatal("start with a bad setting succeeded")
	}
	if !strings.Contains(err.Error(), "shared_buffers") {
		t.Fatalf("error lacks the server log: %v", err)
	}
	if c.Running() {
		t.Fatal("Running after failed start")
	}
}

func fileUID(t *testing.T, p string) int {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatal("no Stat_t")
	}
	return int(st.Uid)
}
