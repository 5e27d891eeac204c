package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/dump"
	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/repo"
)

// dumpSource makes a cluster with three databases holding data, and a role
// that owns objects in them (so a restore without the globals could not
// recreate the ownership).
func dumpSource(t *testing.T) *pgtest.Cluster {
	t.Helper()
	c := pgtest.NewCluster(t, pgtest.Options{})
	c.Start(t)
	c.Exec(t, "CREATE ROLE app_owner LOGIN PASSWORD 'secret'; CREATE ROLE reporter NOLOGIN")
	for _, db := range []string{"shop", "hr", "analytics"} {
		c.Exec(t, "CREATE DATABASE "+db)
	}
	exec := func(db, sql string) {
		t.Helper()
		ctx := context.Background()
		conn := connectDB(t, c, db)
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %s: %v", db, sql, err)
		}
	}
	exec("shop", `CREATE TABLE orders (id int primary key, item text);
		INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 5000) g;
		ALTER TABLE orders OWNER TO app_owner;
		CREATE TABLE customers (id int, name text);
		INSERT INTO customers SELECT g, md5(g::text) FROM generate_series(1, 120) g;
		GRANT SELECT ON orders TO reporter; ANALYZE`)
	exec("hr", `CREATE SCHEMA staff AUTHORIZATION app_owner;
		CREATE TABLE staff.people (id int, name text);
		INSERT INTO staff.people SELECT g, 'person ' || g FROM generate_series(1, 300) g;
		ALTER TABLE staff.people OWNER TO app_owner; ANALYZE`)
	exec("analytics", `CREATE TABLE events (id bigint, payload text);
		INSERT INTO events SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g; ANALYZE`)
	return c
}

// connectDB connects to database db of c as postgres.
func connectDB(t *testing.T, c *pgtest.Cluster, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), strings.Replace(c.DSN(), "dbname=postgres", "dbname="+db, 1))
	if err != nil {
		t.Fatalf("connect to %s: %v", db, err)
	}
	return conn
}

// dbState is what must survive a dump and restore: per table its owner and
// row count, per schema its owner.
func dbState(t *testing.T, c *pgtest.Cluster, db string) string {
	t.Helper()
	ctx := context.Background()
	conn := connectDB(t, c, db)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT n.nspname || '.' || c.relname || ' owner=' || pg_get_userbyid(c.relowner)
		|| ' acl=' || coalesce(c.relacl::text, '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, s)
	}
	rows.Close()
	for i, l := range lines {
		table, _, _ := strings.Cut(l, " ")
		schema, name, _ := strings.Cut(table, ".")
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM "`+schema+`"."`+name+`"`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		lines[i] += " rows=" + strconv.FormatInt(n, 10)
	}
	var schemaOwners string
	if err := conn.QueryRow(ctx, `SELECT string_agg(nspname || '=' || pg_get_userbyid(nspowner), ',' ORDER BY nspname) FROM pg_namespace
		WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'`).Scan(&schemaOwners); err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n") + "\nschemas " + schemaOwners
}

// Contract (issue 10): pitr dump stores pg_dump -Fc of every database and
// pg_dumpall --globals-only; restored into a fresh cluster (globals first),
// every table has the same rows, owner and grants. An existing non-empty
// database is refused without --clean. On both backends.
func TestDumpRestoresIntoFreshCluster(t *testing.T) {
	t.Parallel()
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			src := dumpSource(t)
			res := r.pitr(t, src.BaseDir(), "dump", "--dsn", src.DSN(), "--pg-bin", src.BinDir())
			if res.code != 0 {
				t.Fatalf("pitr dump: %v", res)
			}
			name := strings.TrimSpace(res.stdout)

			res = r.pitr(t, src.BaseDir(), "dump", "list", "--json")
			if res.code != 0 {
				t.Fatalf("pitr dump list: %v", res)
			}
			var runs []dump.Run
			if err := json.Unmarshal([]byte(res.stdout), &runs); err != nil {
				t.Fatalf("dump list --json: %v\n%s", err, res.stdout)
			}
			if len(runs) != 1 || runs[0].Name != name {
				t.Fatalf("dump list: want one run %s, got %+v", name, runs)
			}
			var dbs []string
			for _, d := range runs[0].Databases {
				dbs = append(dbs, d.Name)
				if (d.SHA256 == "" && d.Checksum == "") || d.Size == 0 {
					t.Fatalf("database %s: no size or checksum recorded: %+v", d.Name, d)
				}
			}
			if strings.Join(dbs, ",") != "analytics,hr,postgres,shop" {
				t.Fatalf("dumped databases %v, want analytics, hr, postgres, shop (templates excluded)", dbs)
			}
			if d, _ := runs[0].Database("analytics"); len(d.Tables) == 0 || d.Tables[0].Rows < 1000 {
				t.Fatalf("analytics: row estimates not recorded: %+v", d.Tables)
			}

			dst := pgtest.NewCluster(t, pgtest.Options{})
			dst.Start(t)
			for i, db := range []string{"shop", "hr", "analytics"} {
				args := []string{"dump", "restore", name + "/" + db, "--db", db, "--dsn", dst.DSN(), "--pg-bin", dst.BinDir()}
				if i == 0 {
					args = append(args, "--globals")
				}
				if db == "analytics" {
					args[2] = db // a database name alone: its newest dump
				}
				res := r.pitr(t, dst.BaseDir(), args...)
				if res.code != 0 {
					t.Fatalf("pitr dump restore %s: %v", db, res)
				}
				if !strings.Contains(res.stdout, "into new database "+db) {
					t.Fatalf("restore output: %v", res)
				}
			}
			for _, db := range []string{"shop", "hr", "analytics"} {
				want, got := dbState(t, src, db), dbState(t, dst, db)
				if want != got {
					t.Fatalf("database %s after dump and restore:\n%s\nwant (source):\n%s", db, got, want)
				}
			}
			if v := dst.QueryString(t, "SELECT rolcanlogin::text FROM pg_roles WHERE rolname = 'app_owner'"); v != "true" {
				t.Fatalf("role app_owner not restored with its attributes: rolcanlogin %q", v)
			}

			res = r.pitr(t, dst.BaseDir(), "dump", "restore", name+"/shop", "--db", "shop", "--dsn", dst.DSN(), "--pg-bin", dst.BinDir())
			if res.code != 1 || !strings.Contains(res.stderr, "exists and is not empty") {
				t.Fatalf("restore into a non-empty database: %v; want a refusal", res)
			}
			res = r.pitr(t, dst.BaseDir(), "dump", "restore", name+"/shop", "--db", "shop", "--clean", "--dsn", dst.DSN(), "--pg-bin", dst.BinDir())
			if res.code != 0 {
				t.Fatalf("restore --clean: %v", res)
			}
			if want, got := dbState(t, src, "shop"), dbState(t, dst, "shop"); want != got {
				t.Fatalf("shop after restore --clean:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// Contract (issue 10): a pg_dump of another major version than the server
// is refused before anything is written, naming both versions; a pg_dump
// that fails leaves no listed dump and no objects, and its error line is
// the reason given.
func TestDumpRefusals(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := pgtest.NewCluster(t, pgtest.Options{})
	c.Start(t)
	server := c.QueryString(t, "SELECT current_setting('server_version')")
	server, _, _ = strings.Cut(server, " ")

	fake := pgtest.SharedTempDir(t)
	for _, tool := range []string{"pg_dump", "pg_dumpall"} {
		script := "#!/bin/sh\necho '" + tool + " (PostgreSQL) 14.9'\n"
		if err := os.WriteFile(filepath.Join(fake, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	res := r.pitr(t, c.BaseDir(), "dump", "--dsn", c.DSN(), "--pg-bin", fake)
	if res.code != 1 || !strings.Contains(res.stderr, "version 14.9") || !strings.Contains(res.stderr, "PostgreSQL "+server) {
		t.Fatalf("dump with pg_dump 14.9 against %s: %v; want both versions named", server, res)
	}
	assertNoRepository(t, r)

	res = r.pitr(t, c.BaseDir(), "dump", "--dsn", c.DSN(), "--pg-bin", c.BinDir(), "--db", "nosuchdb")
	if res.code != 1 || !strings.Contains(res.stderr, `database \"nosuchdb\" does not exist`) {
		t.Fatalf("dump of a missing database: %v", res)
	}

	// A pg_dump of the right version that fails once it runs.
	failing := pgtest.SharedTempDir(t)
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) " + server + "'; exit 0; fi\n" +
		"echo 'partial output'\necho 'pg_dump: warning: something' >&2\necho 'pg_dump: error: query failed: ERROR:  permission denied for table secret' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(failing, "pg_dump"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(c.BinDir(), "pg_dumpall"), filepath.Join(failing, "pg_dumpall")); err != nil {
		t.Fatal(err)
	}
	res = r.pitr(t, c.BaseDir(), "dump", "--dsn", c.DSN(), "--pg-bin", failing, "--db", "postgres")
	if res.code != 1 || !strings.Contains(res.stderr, "pg_dump: error: query failed: ERROR:  permission denied for table secret") {
		t.Fatalf("dump with a failing pg_dump: %v; want exit 1 with its error line", res)
	}
	res = r.pitr(t, c.BaseDir(), "dump", "list", "--json")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "[]" || res.stderr != "" {
		t.Fatalf("after a failed dump, dump list: %v; want nothing listed and nothing left over", res)
	}
	st := r.openStore(t)
	m, err := repo.ReadMarker(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if objs, err := st.List(context.Background(), repo.DumpPrefix(m.SystemIdentifier)); err != nil || len(objs) != 0 {
		t.Fatalf("a failed dump left objects: %v %v", objs, err)
	}
}

// Contract (issue 10): pitr drill --dumps restores the newest dump of each
// database into the drill's scratch server and checks that it loads and
// that its tables hold rows where the dump recorded thousands; a damaged
// dump object fails the drill, naming the database.
func TestDrillDumps(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", time.Second)
	r, c := s.repo, s.src
	c.Exec(t, "CREATE ROLE app_owner LOGIN")
	c.Exec(t, "CREATE DATABASE shop OWNER app_owner")
	conn := connectDB(t, c, "shop")
	if _, err := conn.Exec(context.Background(), `CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g;
		ALTER TABLE orders OWNER TO app_owner; ANALYZE orders`); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	res := r.pitr(t, c.BaseDir(), "dump", "--dsn", c.DSN(), "--pg-bin", c.BinDir())
	if res.code != 0 {
		t.Fatalf("pitr dump: %v", res)
	}
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	res = r.drill(t, "--dumps")
	flat := strings.Join(strings.Fields(res.stdout), " ")
	if res.code != 0 || !strings.Contains(flat, "pass dump shop") || !strings.Contains(flat, "pass dump postgres") {
		t.Fatalf("drill --dumps on a healthy repository: %v", res)
	}
	if !strings.Contains(flat, "5000 rows") {
		t.Fatalf("drill --dumps does not report the restored rows: %v", res)
	}

	objs, _ := filepath.Glob(filepath.Join(r.dir, "*", "dumps", "*", repo.DumpObjectName("shop")))
	if len(objs) != 1 {
		t.Fatalf("shop dump objects: %v", objs)
	}
	b, err := os.ReadFile(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+32 && i < len(b); i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(objs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // report keys have one-second resolution
	res = r.drill(t, "--dumps")
	flat = strings.Join(strings.Fields(res.stdout), " ")
	if res.code == 0 || !strings.Contains(flat, "fail dump shop") || !strings.Contains(flat, "pass dump postgres") {
		t.Fatalf("drill --dumps with a damaged dump: %v", res)
	}
	t.Logf("drill --dumps with a damaged dump:\n%s", res.stdout)
}

// Contract (issue 10): prune applies the dump retention (here dump_keep
// alone, with no base backup policy): a dry run deletes nothing, then the
// older run goes, metadata first, and the newest dump of every database
// stays.
func TestDumpPrune(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := pgtest.NewCluster(t, pgtest.Options{})
	c.Start(t)
	c.Exec(t, "CREATE DATABASE only_once")
	var names []string
	for _, args := range [][]string{nil, {"--db", "postgres"}, {"--db", "postgres"}} {
		res := r.pitr(t, c.BaseDir(), append([]string{"dump", "--dsn", c.DSN(), "--pg-bin", c.BinDir()}, args...)...)
		if res.code != 0 {
			t.Fatalf("pitr dump: %v", res)
		}
		names = append(names, strings.TrimSpace(res.stdout))
	}
	res := r.pitr(t, c.BaseDir(), "prune", "--dump-keep", "1", "--dry-run")
	if res.code != 0 || !strings.Contains(res.stdout, "Would delete 1 dump runs") || !strings.Contains(res.stdout, names[1]) {
		t.Fatalf("prune --dump-keep 1 --dry-run: %v", res)
	}
	res = r.pitr(t, c.BaseDir(), "prune", "--dump-keep", "1")
	if res.code != 0 || !strings.Contains(res.stdout, "Deleted 1 dump run") {
		t.Fatalf("prune --dump-keep 1: %v", res)
	}
	res = r.pitr(t, c.BaseDir(), "dump", "list", "--json")
	var runs []dump.Run
	if err := json.Unmarshal([]byte(res.stdout), &runs); err != nil {
		t.Fatalf("dump list: %v: %v", res, err)
	}
	var left []string
	for _, r := range runs {
		left = append(left, r.Name)
	}
	// The first run holds only_once's newest (and only) dump; the last
	// holds postgres's newest.
	if strings.Join(left, ",") != names[0]+","+names[2] {
		t.Fatalf("runs left %v, want %s and %s", left, names[0], names[2])
	}
	if dirs, _ := filepath.Glob(filepath.Join(r.dir, "*", "dumps", names[1])); len(dirs) != 0 {
		if objs, _ := filepath.Glob(filepath.Join(dirs[0], "*")); len(objs) != 0 {
			t.Fatalf("objects of the pruned run are left: %v", objs)
		}
	}
}

// Issue 10 with issue 8: dumps in an encrypted repository are taken on a
// database host that holds only the public key, no dump object holds a
// row value or a readable header, and the restore host restores them with
// the private key.
func TestDumpEncrypted(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	h := newEncryptedHosts(t, r)
	src := pgtest.NewCluster(t, pgtest.Options{})
	src.Start(t)
	src.Exec(t, "CREATE TABLE secrets (v text)")
	src.Exec(t, "INSERT INTO secrets SELECT $1 || g FROM generate_series(1, 100) g", secretRow)
	res := r.pitr(t, src.BaseDir(), "dump", "--dsn", src.DSN(), "--pg-bin", src.BinDir())
	if res.code != 0 {
		t.Fatalf("pitr dump on the public-key host: %v", res)
	}
	name := strings.TrimSpace(res.stdout)
	st := r.openStore(t)
	objs, err := st.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	dumps := 0
	for _, o := range objs {
		if !strings.Contains(o.Key, "/dumps/") {
			continue
		}
		dumps++
		b, err := os.ReadFile(filepath.Join(r.dir, o.Key))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("PAGE")) || bytes.Contains(b, []byte(secretRow)) || bytes.Contains(b, []byte("CREATE ROLE")) {
			t.Errorf("%s is not encrypted (starts %q)", o.Key, b[:min(8, len(b))])
		}
	}
	if dumps != 3 { // globals.sql, postgres.dump, dump.json
		t.Fatalf("%d dump objects, want 3", dumps)
	}
	if res := r.pitr(t, src.BaseDir(), "dump", "list"); res.code == 0 {
		t.Fatalf("dump list without the private key: %v; want a failure", res)
	}
	dst := pgtest.NewCluster(t, pgtest.Options{})
	dst.Start(t)
	res = r.pitr(t, dst.BaseDir(), "dump", "restore", name+"/postgres", "--db", "copy", "--globals",
		"--config", h.restoreConf, "--dsn", dst.DSN(), "--pg-bin", dst.BinDir())
	if res.code != 0 {
		t.Fatalf("dump restore with the private key: %v", res)
	}
	conn := connectDB(t, dst, "copy")
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM secrets WHERE v LIKE $1", secretRow+"%").Scan(&n); err != nil || n != 100 {
		t.Fatalf("restored secrets: %d rows, %v; want 100", n, err)
	}
}

// The agent's dumps with the real binary: with dump_schedule, a fresh agent
// backs up first (backups win ties), then dumps every database, and logs
// the next dump a schedule away; a restarted agent anchors its schedule on
// that dump in the repository, so it neither dumps again at once nor waits
// a whole schedule from its own start.
func TestAgentScheduledDumps(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := archivingCluster(t, r, 1)
	c.Exec(t, "CREATE DATABASE shop")
	conn := connectDB(t, c, "shop")
	if _, err := conn.Exec(context.Background(), "CREATE TABLE orders (id int primary key); INSERT INTO orders SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())

	agentArgs := []string{"--backup-fast-checkpoint", "true", "--drill-schedule", "off", "--dump-schedule", "1d"}
	cmd, log := startAgent(t, r, c, agentArgs...)
	waitLog(t, log, "scheduled dump succeeded", 3*time.Minute)
	stopAgent(t, cmd, log)
	first := log.String()
	backupAt, dumpAt := strings.Index(first, "scheduled backup succeeded"), strings.Index(first, "scheduled dump starting")
	if backupAt < 0 || dumpAt < backupAt {
		t.Fatalf("want the backup, then the dump:\n%s", first)
	}

	res := r.pitr(t, c.BaseDir(), "dump", "list", "--json")
	if res.code != 0 {
		t.Fatalf("pitr dump list: %v", res)
	}
	var runs []dump.Run
	if err := json.Unmarshal([]byte(res.stdout), &runs); err != nil {
		t.Fatalf("dump list --json: %v\n%s", err, res.stdout)
	}
	if len(runs) != 1 {
		t.Fatalf("want the agent's one dump run, got %+v", runs)
	}
	if d, ok := runs[0].Database("shop"); !ok || d.Size == 0 {
		t.Fatalf("the agent's dump lacks database shop: %+v", runs[0])
	}

	cmd, log = startAgent(t, r, c, agentArgs...)
	waitLog(t, log, "scheduled dumps", time.Minute)
	time.Sleep(3 * time.Second) // time to start a dump it should not start
	stopAgent(t, cmd, log)
	second := log.String()
	if strings.Contains(second, "scheduled dump starting") {
		t.Fatalf("a restarted agent dumped again at once:\n%s", second)
	}
	m := regexp.MustCompile(`msg="scheduled dumps".*next_dump=(\S+)`).FindStringSubmatch(second)
	if m == nil {
		t.Fatalf("no next_dump in the restarted agent's log:\n%s", second)
	}
	next, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		t.Fatalf("next_dump %q: %v", m[1], err)
	}
	if until := time.Until(next); until < 23*time.Hour || until > 24*time.Hour {
		t.Fatalf("a restarted agent's next dump is in %v, want a day after the first dump", until)
	}
}
