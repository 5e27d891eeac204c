package dump

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
	"github.com/pitr-dev/pitr/storage/fs"
)

func TestObjectNames(t *testing.T) {
	seen := map[string]string{}
	for _, db := range []string{"shop", "Shop", "my db", "my.db", "my.2Edb", "..", "ünï", "a/b", "globals", "dump", "in-progress", "x_y-z"} {
		name := repo.DumpObjectName(db)
		if prev, ok := seen[name]; ok {
			t.Errorf("%q and %q share object %q", prev, db, name)
		}
		seen[name] = db
		if strings.ContainsAny(name, "/\\ ") || strings.Contains(name, "..") || name == repo.DumpGlobalsName || name == repo.DumpMetadataName {
			t.Errorf("database %q: object %q is not a safe key segment", db, name)
		}
		for _, c := range name {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-", c)) {
				t.Errorf("database %q: object %q has %q", db, name, c)
			}
		}
	}
	if got := repo.DumpObjectName("my db"); got != "my.20db.dump" {
		t.Errorf("my db → %s", got)
	}
}

func TestWithDatabase(t *testing.T) {
	for _, c := range []struct{ dsn, db, want string }{
		{"", "shop", "dbname='shop'"},
		{"host=/run/pg user=postgres dbname=postgres", "o'brien", `host=/run/pg user=postgres dbname=postgres dbname='o\'brien'`},
		{"postgres://u@h:5432/postgres?sslmode=disable", "my db", "postgres://u@h:5432/my%20db?sslmode=disable"},
	} {
		got, err := withDatabase(c.dsn, c.db)
		if err != nil || got != c.want {
			t.Errorf("withDatabase(%q, %q) = %q, %v; want %q", c.dsn, c.db, got, err, c.want)
		}
	}
}

func TestFirstErrorLine(t *testing.T) {
	in := "pg_dump: warning: there are circular foreign-key constraints\npg_dump: error: query failed: ERROR:  permission denied for table secret\npg_dump: detail: Query was: LOCK TABLE\n"
	if got := firstErrorLine(in); got != "pg_dump: error: query failed: ERROR:  permission denied for table secret" {
		t.Errorf("got %q", got)
	}
	if got := firstErrorLine("\n  something odd\nmore\n"); got != "something odd" {
		t.Errorf("got %q", got)
	}
	if got := firstErrorLine(""); got != "no message on stderr" {
		t.Errorf("got %q", got)
	}
}

func run(name string, start time.Time, dbs ...string) Run {
	r := Run{Version: MetadataVersion, Name: name, SystemIdentifier: 7, StartTime: start, StopTime: start.Add(time.Minute),
		Globals: Part{Object: repo.DumpGlobalsName}}
	for _, db := range dbs {
		r.Databases = append(r.Databases, Database{Name: db, Part: Part{Object: repo.DumpObjectName(db)}})
	}
	return r
}

func TestPlanPrune(t *testing.T) {
	now := time.Date(2026, 4, 30, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	// Nightly runs of every database, hourly runs of busy in between,
	// and a database (old) that was last dumped long ago.
	l := Listing{Runs: []Run{
		run("d1", now.Add(-40*day), "busy", "old", "shop"),
		run("d2", now.Add(-3*day), "busy", "shop"),
		run("d3", now.Add(-2*day), "busy", "shop"),
		run("h1", now.Add(-2*day+time.Hour), "busy"),
		run("h2", now.Add(-2*day+2*time.Hour), "busy"),
		run("d4", now.Add(-day), "busy", "shop"),
		run("h3", now.Add(-day+time.Hour), "busy"),
	}, Incomplete: []Incomplete{
		{Name: "dead", LastWrite: now.Add(-25 * time.Hour)},
		{Name: "running", LastWrite: now.Add(-time.Minute)},
	}}
	plan, err := PlanPrune(l, Policy{Keep: 2}, now, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var kept, deleted []string
	for _, k := range plan.Keep {
		kept = append(kept, k.Run.Name)
	}
	for _, d := range plan.Delete {
		deleted = append(deleted, d.Name)
	}
	// busy: h3, d4 newest two; shop: d4, d3; old: d1 (its only, newest dump).
	if got := strings.Join(kept, ","); got != "d1,d3,d4,h3" {
		t.Errorf("kept %s, want d1,d3,d4,h3", got)
	}
	if got := strings.Join(deleted, ","); got != "d2,h1,h2" {
		t.Errorf("deleted %s, want d2,h1,h2", got)
	}
	if len(plan.Incomplete) != 1 || plan.Incomplete[0].Name != "dead" {
		t.Errorf("incomplete to delete: %+v, want only dead", plan.Incomplete)
	}

	plan, err = PlanPrune(l, Policy{KeepWithin: 2*day + 30*time.Minute}, now, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	kept = nil
	for _, k := range plan.Keep {
		kept = append(kept, k.Run.Name)
	}
	if got := strings.Join(kept, ","); got != "d1,d3,h1,h2,d4,h3" {
		t.Errorf("keep_within 2d30m kept %s, want d1 (newest of old),d3,h1,h2,d4,h3", got)
	}
	if _, err := PlanPrune(l, Policy{}, now, time.Time{}); err != ErrNoPolicy {
		t.Errorf("empty policy: %v, want ErrNoPolicy", err)
	}
}

func TestResolve(t *testing.T) {
	t0 := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	runs := []Run{run("r1", t0, "shop", "hr"), run("r2", t0.Add(time.Hour), "shop"), run("r3", t0.Add(2*time.Hour), "hr")}
	for name, want := range map[string]string{"r1/hr": "r1/hr", "shop": "r2/shop", "hr": "r3/hr", "r2": "r2/shop"} {
		r, d, err := Resolve(runs, name)
		if err != nil || r.Name+"/"+d.Name != want {
			t.Errorf("Resolve(%q) = %s/%s, %v; want %s", name, r.Name, d.Name, err, want)
		}
	}
	for _, bad := range []string{"r1", "r1/nope", "nope", "r9/shop"} {
		if _, _, err := Resolve(runs, bad); err == nil {
			t.Errorf("Resolve(%q) accepted", bad)
		}
	}
}

// Listing reads only runs with dump.json; ExecutePrune removes a run's
// metadata first and leaves an incomplete run alone once it changed.
func TestListAndExecutePrune(t *testing.T) {
	ctx := context.Background()
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(run, object, content string) {
		t.Helper()
		if _, err := codec.Put(ctx, st, repo.DumpKey(7, run, object), strings.NewReader(content), int64(len(content)), codec.Options{Codec: codec.Zstd}); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	for i, name := range []string{"20260401T000000Z", "20260402T000000Z"} {
		r := run(name, t0.Add(time.Duration(i)*24*time.Hour), "shop")
		put(name, repo.DumpGlobalsName, "CREATE ROLE x;")
		put(name, repo.DumpObjectName("shop"), "PGDMP...")
		data, _ := json.Marshal(r)
		if err := st.Put(ctx, repo.DumpKey(7, name, repo.DumpMetadataName), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	put("20260403T000000Z", repo.DumpInProgressName, "{}")
	l, err := ListAll(ctx, st, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Runs) != 2 || len(l.Incomplete) != 1 {
		t.Fatalf("listing %+v", l)
	}
	plan, err := PlanPrune(l, Policy{Keep: 1, IncompleteAfter: time.Nanosecond}, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	runs, inc, err := ExecutePrune(ctx, st, 7, plan, slog.New(slog.DiscardHandler))
	if err != nil || runs != 1 || inc != 1 {
		t.Fatalf("ExecutePrune: %d runs, %d incomplete, %v", runs, inc, err)
	}
	objs, _ := st.List(ctx, repo.DumpPrefix(7))
	var keys []string
	for _, o := range objs {
		keys = append(keys, strings.TrimPrefix(o.Key, repo.DumpPrefix(7)))
	}
	if got := strings.Join(keys, " "); got != "20260402T000000Z/dump.json 20260402T000000Z/globals.sql 20260402T000000Z/shop.dump" {
		t.Fatalf("left: %s", got)
	}
}

func TestDumpDatabaseOf(t *testing.T) {
	for _, db := range []string{"shop", "my db", "my.db", "..", "ünï", "a/b", "x_y-z", ".00"} {
		got, ok := repo.DumpDatabaseOf(repo.DumpObjectName(db))
		if !ok || got != db {
			t.Errorf("round trip of %q: %q %v", db, got, ok)
		}
	}
	for _, bad := range []string{"globals.sql", "dump.json", ".dump", "a.2.dump", "a.ZZ.dump"} {
		if db, ok := repo.DumpDatabaseOf(bad); ok {
			t.Errorf("%q read as database %q", bad, db)
		}
	}
}

// lockedStore refuses to delete keys ending in one of locked, as a bucket
// with S3 Object Lock does while their retention lasts.
type lockedStore struct {
	storage.Store
	locked []string
}

func (l lockedStore) Delete(ctx context.Context, key string) error {
	for _, s := range l.locked {
		if strings.HasSuffix(key, s) {
			return fmt.Errorf("delete %s: %w", key, storage.ErrLocked)
		}
	}
	return l.Store.Delete(ctx, key)
}

// A run whose dump.json is under retention stays whole; one whose other
// objects are locked is deleted (it no longer exists) and the rest waits.
func TestPruneSkipsLockedObjects(t *testing.T) {
	ctx := context.Background()
	base, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	var runs []Run
	for i, name := range []string{"20260401T000000Z", "20260402T000000Z", "20260403T000000Z"} {
		r := run(name, t0.Add(time.Duration(i)*24*time.Hour), "shop")
		for _, o := range []string{repo.DumpGlobalsName, repo.DumpObjectName("shop")} {
			if err := base.Put(ctx, repo.DumpKey(7, name, o), strings.NewReader("x")); err != nil {
				t.Fatal(err)
			}
		}
		data, _ := json.Marshal(r)
		if err := base.Put(ctx, repo.DumpKey(7, name, repo.DumpMetadataName), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	st := lockedStore{Store: base, locked: []string{"20260401T000000Z/dump.json", "20260402T000000Z/globals.sql"}}
	plan, err := PlanPrune(Listing{Runs: runs}, Policy{Keep: 1}, time.Now(), time.Time{})
	if err != nil || len(plan.Delete) != 2 {
		t.Fatalf("plan %+v %v", plan, err)
	}
	n, _, err := ExecutePrune(ctx, st, 7, plan, slog.New(slog.DiscardHandler))
	if err != nil || n != 1 {
		t.Fatalf("ExecutePrune: %d runs deleted, %v; want 1 (the other kept whole by its locked metadata)", n, err)
	}
	left, err := List(ctx, base, 7)
	if err != nil || len(left) != 2 || left[0].Name != "20260401T000000Z" {
		t.Fatalf("runs left %+v %v", left, err)
	}
	objs, _ := base.List(ctx, repo.DumpPrefix(7)+"20260402T000000Z/")
	if len(objs) != 1 || !strings.HasSuffix(objs[0].Key, repo.DumpGlobalsName) {
		t.Fatalf("of the deleted run, left: %+v; want only the locked globals.sql", objs)
	}
}
