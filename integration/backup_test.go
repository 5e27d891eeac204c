package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/fs"
	"github.com/pitr-dev/pitr/storage/s3"
)

// openStore opens the test repository the way pitr does, for tests that call
// library code (basebackup.Extract) directly.
func (r *testRepo) openStore(t *testing.T) storage.Store {
	t.Helper()
	var st storage.Store
	var err error
	switch r.kind {
	case "file":
		st, err = fs.New(r.dir)
	case "s3":
		st, err = s3.New(context.Background(), s3.Config{Bucket: r.s3.Bucket, Prefix: r.s3Prefix, Region: r.s3.Region,
			Endpoint: r.s3.Endpoint, AccessKeyID: r.s3.AccessKey, SecretAccessKey: r.s3.SecretKey, AllowHTTP: r.s3.External()})
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// backup runs pitr backup against c and returns the new backup's name.
func (r *testRepo) backup(t *testing.T, c *pgtest.Cluster, args ...string) string {
	t.Helper()
	res := r.pitr(t, c.BaseDir(), append([]string{"backup", "--dsn", c.DSN(), "--fast"}, args...)...)
	if res.code != 0 {
		t.Fatalf("pitr backup: %v", res)
	}
	name := strings.TrimSpace(res.stdout)
	if name == "" {
		t.Fatalf("pitr backup printed no name: %v", res)
	}
	return name
}

// listBackups runs pitr backup list --json.
func (r *testRepo) listBackups(t *testing.T) []basebackup.Backup {
	t.Helper()
	res := r.pitr(t, pgtest.SharedTempDir(t), "backup", "list", "--json")
	if res.code != 0 {
		t.Fatalf("pitr backup list --json: %v", res)
	}
	var out []basebackup.Backup
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("backup list --json: %v\n%s", err, res.stdout)
	}
	return out
}

// restoreBackup extracts a backup with basebackup.Extract, checks the copy
// with pg_verifybackup while it is pristine, and starts it with recovery to
// the backup's consistent point (recovery_target = 'immediate') through
// wal-fetch, as restore would.
func restoreBackup(t *testing.T, r *testRepo, src *pgtest.Cluster, name string, tsMap map[uint32]string) *pgtest.Cluster {
	t.Helper()
	ctx := context.Background()
	st := r.openStore(t)
	m, err := repo.ReadMarker(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	b, err := basebackup.Read(ctx, st, m.SystemIdentifier, name)
	if err != nil {
		t.Fatal(err)
	}
	pgdata := filepath.Join(pgtest.SharedTempDir(t), "data")
	if err := basebackup.Extract(ctx, st, b, pgdata, tsMap); err != nil {
		t.Fatalf("extract %s: %v", name, err)
	}
	// The server's own manifest check, on the files as extracted (WAL is
	// not in the backup: -n). A moved tablespace rewrites tablespace_map,
	// on purpose.
	args := []string{"-n", pgdata}
	if len(tsMap) > 0 {
		args = append(args, "-i", "tablespace_map")
	}
	verify := exec.Command(filepath.Join(src.BinDir(), "pg_verifybackup"), args...)
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("pg_verifybackup: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(pgdata, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := pgtest.RestoredCluster(t, pgdata, pgtest.Options{
		RestoreCommand: r.restoreCommand(),
		ExtraConf:      map[string]string{"recovery_target": "immediate", "recovery_target_action": "promote"},
	})
	c.Start(t)
	c.WaitFor(t, 2*time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT pg_is_in_recovery()::text")
		return err == nil && v == "false"
	})
	if !c.LogContains("starting backup recovery with redo LSN") || !c.LogContains("consistent recovery state reached") {
		t.Fatalf("the restored server did not recover from the backup label:\n%s", c.Log())
	}
	return c
}

const pgbenchInvariant = `SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(bbalance) FROM pgbench_branches)
	AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT sum(tbalance) FROM pgbench_tellers)
	AND (SELECT sum(tbalance) FROM pgbench_tellers) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)`

const staticDigest = `SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM static`

// Contract (issue 3): a backup of a cluster under write load restores to a
// consistent cluster: a table not written during the backup is identical,
// pgbench's balances agree with its history, the history holds every
// transaction committed before the backup started and none after it ended,
// the files match the server's manifest (pg_verifybackup) and amcheck finds
// no corruption. On both backends.
func TestBackupUnderLoadRestores(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			c := archivingCluster(t, r, 0)
			if out, err := c.RunAsUser(t, "pgbench", "-i", "-q", "-s", "5"); err != nil {
				t.Fatalf("pgbench -i: %v\n%s", err, out)
			}
			c.Exec(t, "CREATE TABLE static AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
			wantStatic := c.QueryString(t, staticDigest)

			ctx, stopLoad := context.WithCancel(context.Background())
			load := c.Command(ctx, "pgbench", "-n", "-c", "2", "-T", "600")
			if err := load.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { stopLoad(); load.Wait() }()
			c.WaitFor(t, time.Minute, func() bool {
				n, err := c.TryQueryString("SELECT count(*) FROM pgbench_history")
				return err == nil && n != "0"
			})
			before := c.QueryInt(t, "SELECT count(*) FROM pgbench_history")
			name := r.backup(t, c)
			after := c.QueryInt(t, "SELECT count(*) FROM pgbench_history")
			stopLoad()
			load.Wait()
			if after <= before {
				t.Fatalf("no transactions committed during the backup (%d before, %d after): not a backup under load", before, after)
			}

			list := r.listBackups(t)
			if len(list) != 1 || list[0].Name != name || list[0].Method != basebackup.MethodPGBaseBackup || list[0].StoredSize >= list[0].Size {
				t.Fatalf("backup list: %+v", list)
			}
			if res := r.pitr(t, c.BaseDir(), "backup", "show", name); res.code != 0 || !strings.Contains(res.stdout, "WAL needed") {
				t.Fatalf("backup show: %v", res)
			}
			// Row estimates for drills: pgbench -i analyzed its tables.
			var accounts int64 = -2
			for _, tb := range list[0].Tables {
				if tb.Database == "postgres" && tb.Schema == "public" && tb.Name == "pgbench_accounts" {
					accounts = tb.Rows
				}
			}
			if accounts < 1000 {
				t.Fatalf("backup.json records pgbench_accounts with %d rows (tables: %d)", accounts, len(list[0].Tables))
			}

			restored := restoreBackup(t, r, c, name, nil)
			if got := restored.QueryString(t, staticDigest); got != wantStatic {
				t.Fatalf("static table differs after restore: %s, want %s", got, wantStatic)
			}
			if ok := restored.QueryString(t, pgbenchInvariant); ok != "t" {
				t.Fatalf("pgbench balances disagree with the history after restore")
			}
			n := restored.QueryInt(t, "SELECT count(*) FROM pgbench_history")
			if n < before || n > after {
				t.Fatalf("restored history has %d rows; want between %d (before the backup) and %d (after it)", n, before, after)
			}
			amcheck(t, restored)
			t.Logf("backup %s: %d of %d transactions of the load in the restored copy; %d bytes stored for %d",
				name, n-before, after-before, list[0].StoredSize, list[0].Size)
		})
	}
}

// Contract: a backup is refused before anything starts, with nothing written
// to the repository, when archiving is off (the WAL it needs would never be
// archived), when pg_basebackup is missing or of another major version (the
// message names both versions), or when the repository belongs to another
// database system.
func TestBackupRefusals(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := pgtest.NewCluster(t, pgtest.Options{})
	c.Start(t)
	res := r.pitr(t, c.BaseDir(), "backup", "--dsn", c.DSN())
	if res.code != 1 || !strings.Contains(res.stderr, "archive_mode is off") {
		t.Fatalf("backup with archiving off: %v", res)
	}
	assertNoRepository(t, r)

	c.Exec(t, "ALTER SYSTEM SET archive_mode = on")
	c.Exec(t, "ALTER SYSTEM SET archive_command = '/bin/true'")
	c.Restart(t)
	server := c.QueryString(t, "SELECT current_setting('server_version')")
	server, _, _ = strings.Cut(server, " ")

	fake := pgtest.SharedTempDir(t)
	script := "#!/bin/sh\necho 'pg_basebackup (PostgreSQL) 14.9'\n"
	if err := os.WriteFile(filepath.Join(fake, "pg_basebackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	res = r.pitr(t, c.BaseDir(), "backup", "--dsn", c.DSN(), "--pg-bin", fake)
	if res.code != 1 || !strings.Contains(res.stderr, "version 14.9") || !strings.Contains(res.stderr, "PostgreSQL "+server) {
		t.Fatalf("backup with pg_basebackup 14.9 against %s: %v; want both versions named", server, res)
	}
	res = r.pitr(t, c.BaseDir(), "backup", "--dsn", c.DSN(), "--pg-bin", filepath.Join(fake, "missing"))
	if res.code != 1 || !strings.Contains(res.stderr, "not found") || !strings.Contains(res.stderr, server) {
		t.Fatalf("backup without pg_basebackup: %v", res)
	}
	assertNoRepository(t, r)

	// A repository that belongs to another database system.
	if _, err := repo.Init(context.Background(), r.openStore(t), 12345, time.Now()); err != nil {
		t.Fatal(err)
	}
	pgtest.MakeShared(t, r.dir)
	res = r.pitr(t, c.BaseDir(), "backup", "--dsn", c.DSN())
	if res.code != 1 || !strings.Contains(res.stderr, "does not match this repository's 12345") {
		t.Fatalf("backup into another system's repository: %v", res)
	}
	if entries, _ := os.ReadDir(r.dir); len(entries) != 1 {
		t.Fatalf("a refused backup wrote into the repository: %v", entries)
	}
}

func assertNoRepository(t *testing.T, r *testRepo) {
	t.Helper()
	entries, err := os.ReadDir(r.dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("a refused backup wrote %s into the repository", e.Name())
	}
}

// lockedBuffer collects a child's stderr while the test polls it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Contract: a backup killed mid-stream (SIGKILL, no chance to clean up)
// never appears in backup list; the server's backup ends with it; the next
// backup works and leaves fresh leftovers alone (they could be a running
// backup), and a later backup removes them once they are stale.
func TestBackupKilledMidStream(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := archivingCluster(t, r, 0)
	if out, err := c.RunAsUser(t, "pgbench", "-i", "-q", "-s", "10"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}

	// 2 MB/s makes the 150 MB stream last over a minute: long enough to be
	// killed in the middle.
	cmd := exec.Command(pitrBin, "backup", "--dsn", c.DSN(), "--fast", "--backup-max-rate", "2M")
	cmd.Dir = c.BaseDir()
	cmd.Env = append(os.Environ(), "PITR_CONFIG="+r.configPath)
	pgtest.RunAs(cmd)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, time.Minute, func() bool {
		n, err := c.TryQueryString("SELECT coalesce(max(backup_streamed), 0) FROM pg_stat_progress_basebackup")
		v, _ := strconv.ParseInt(n, 10, 64)
		return err == nil && v > 4<<20
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("killed pitr backup mid-stream; its log:\n%s", stderr.String())

	if list := r.listBackups(t); len(list) != 0 {
		t.Fatalf("a killed backup is listed: %+v", list)
	}
	res := r.pitr(t, c.BaseDir(), "backup", "list")
	if res.code != 0 || strings.Count(strings.TrimSpace(res.stdout), "\n") != 0 || !strings.Contains(res.stderr, "1 incomplete backup") {
		t.Fatalf("backup list after the kill: %v", res)
	}
	// pg_basebackup died with pitr, so the server ends the backup.
	c.WaitFor(t, 30*time.Second, func() bool {
		n, err := c.TryQueryString("SELECT count(*) FROM pg_stat_progress_basebackup")
		return err == nil && n == "0"
	})

	first := r.backup(t, c)
	inc := incompleteNames(t, r)
	if len(inc) != 1 || inc[0] == first {
		t.Fatalf("fresh leftovers of the killed backup: %v (they might be a running backup and must stay)", inc)
	}
	// Age the leftovers past StaleAfter: the next backup removes them.
	dir := filepath.Join(r.dir, filepath.FromSlash(repo.BackupPrefix(systemID(t, r))+inc[0]))
	old := time.Now().Add(-2 * basebackup.StaleAfter)
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	res = r.pitr(t, c.BaseDir(), "backup", "--dsn", c.DSN(), "--fast")
	if res.code != 0 || !strings.Contains(res.stderr, "removed the leftovers of an interrupted backup") {
		t.Fatalf("backup after stale leftovers: %v", res)
	}
	if inc := incompleteNames(t, r); len(inc) != 0 {
		t.Fatalf("stale leftovers remain: %v", inc)
	}
	if list := r.listBackups(t); len(list) != 2 {
		t.Fatalf("want the two completed backups, got %+v", list)
	}
}

func systemID(t *testing.T, r *testRepo) repo.SystemID {
	t.Helper()
	m, err := repo.ReadMarker(context.Background(), r.openStore(t))
	if err != nil {
		t.Fatal(err)
	}
	return m.SystemIdentifier
}

func incompleteNames(t *testing.T, r *testRepo) []string {
	t.Helper()
	inc, err := basebackup.ListIncomplete(context.Background(), r.openStore(t), systemID(t, r))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range inc {
		names = append(names, i.Name)
	}
	return names
}

// Contract: a cluster with a tablespace is backed up without local disk (one
// repository object per tablespace, streamed) and restores with the
// tablespace moved to a new location: tablespace_map and pg_tblspc point
// there and the table in it is intact.
func TestBackupTablespaceRestoresRemapped(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			c := archivingCluster(t, r, 0)
			tsDir := pgtest.SharedTempDir(t)
			c.Exec(t, "CREATE TABLESPACE ts1 LOCATION '"+tsDir+"'")
			c.Exec(t, "CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
			c.Exec(t, "CREATE INDEX in_ts_v ON in_ts (v) TABLESPACE ts1")
			oid := c.QueryInt(t, "SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
			want := c.QueryString(t, "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM in_ts")

			name := r.backup(t, c)
			atBackup := snapshot(t, c, "right after the backup")
			list := r.listBackups(t)
			if len(list) != 1 || list[0].Method != basebackup.MethodReplication || len(list[0].Tablespaces) != 1 ||
				list[0].Tablespaces[0].OID != uint32(oid) || list[0].Tablespaces[0].Location != tsDir || list[0].Tablespaces[0].Name != "ts1" {
				t.Fatalf("backup list: %+v", list)
			}

			moved := filepath.Join(pgtest.SharedTempDir(t), "moved ts")
			restored := restoreBackup(t, r, c, name, map[uint32]string{uint32(oid): moved})
			if loc := restored.QueryString(t, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"); loc != moved {
				t.Fatalf("restored tablespace is at %q, want %q", loc, moved)
			}
			if got := restored.QueryString(t, "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM in_ts"); got != want {
				t.Fatalf("table in the tablespace differs after restore")
			}
			if n := restored.QueryInt(t, "SELECT count(*) FROM in_ts WHERE v = md5('777')"); n != 1 {
				t.Fatalf("index lookup in the moved tablespace found %d rows", n)
			}
			// The dump names the tablespace's location: the one move allowed.
			assertRestoredData(t, restored, atBackup, "LOCATION '"+moved+"'", "LOCATION '"+tsDir+"'")
		})
	}
}

// Scenario 24: a backup taken from a streaming standby (pitr backup --dsn
// pointing at the standby) restores. The standby does not archive; its
// primary does, into the same repository. pg_basebackup cannot switch WAL
// on a standby, so the backup's last segment reaches the repository only
// once the primary finishes it, and pitr waits for it: here the primary
// switches WAL every 200 ms meanwhile, as archive_timeout or traffic would.
// The backup records that it was taken from a standby, and a restore of it
// reaches consistency with the primary's data.
func TestBackupFromStandbyRestores(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	primary := archivingCluster(t, r, 0)
	primary.Exec(t, "CREATE TABLE static AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g")
	wantStatic := primary.QueryString(t, staticDigest)
	standby := pgtest.NewStandby(t, primary, pgtest.Options{})
	standby.Start(t)
	standby.WaitFor(t, time.Minute, func() bool {
		got, err := standby.TryQueryString(staticDigest)
		return err == nil && got == wantStatic
	})

	stop := make(chan struct{})
	switched := make(chan struct{})
	go func() {
		defer close(switched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				_ = primary.TryExec("SELECT pg_switch_wal()")
			}
		}
	}()
	name := r.backup(t, standby)
	close(stop)
	<-switched

	list := r.listBackups(t)
	if len(list) != 1 || list[0].Name != name || list[0].BackupFrom != "standby" {
		t.Fatalf("backup list after a backup of the standby: %+v", list)
	}
	restored := restoreBackup(t, r, primary, name, nil)
	if got := restored.QueryString(t, staticDigest); got != wantStatic {
		t.Fatalf("static table differs after restoring the standby's backup: %s, want %s", got, wantStatic)
	}
	amcheck(t, restored)
}
