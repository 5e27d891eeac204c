package dump

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// Check is one verified property of a dump drill.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// minPlausibleRows is the estimate from which an empty restored table is a
// failure (the same threshold as the physical drill).
const minPlausibleRows = 1000

// drillPrefix names the scratch databases a dump drill restores into.
const drillPrefix = "pitr_dump_drill_"

// VerifyNewest restores the newest dump of every database into the
// (scratch) server dsn reaches, each into a new database, globals first,
// and checks that it loads without errors and that every table recorded at
// ≥ 1000 estimated rows exists and is not empty. One Check per database.
func VerifyNewest(ctx context.Context, st storage.Store, id repo.SystemID, dsn, pgBin string, log *slog.Logger) []Check {
	runs, err := List(ctx, st, id)
	if err != nil {
		return []Check{{Name: "dumps", Detail: err.Error()}}
	}
	newest := Newest(runs)
	if len(newest) == 0 {
		return []Check{{Name: "dumps", OK: true, Detail: "no dumps in the repository; nothing to check"}}
	}
	var dbs []string
	for db := range newest {
		dbs = append(dbs, db)
	}
	sort.Strings(dbs)
	var out []Check
	globalsDone := map[string]bool{}
	for i, db := range dbs {
		run := newest[db]
		d, _ := run.Database(db)
		name := "dump " + db
		target := fmt.Sprintf("%s%d", drillPrefix, i+1)
		_, err := Restore(ctx, run, d, RestoreOptions{Store: st, DSN: dsn, PGBin: pgBin, Target: target,
			Globals: !globalsDone[run.Name], Log: log})
		globalsDone[run.Name] = true
		if err != nil {
			out = append(out, Check{Name: name, Detail: fmt.Sprintf("dump %s: %v", run.Name, err)})
			continue
		}
		detail, err := checkRows(ctx, dsn, target, d.Tables)
		if err != nil {
			out = append(out, Check{Name: name, Detail: fmt.Sprintf("dump %s: %v", run.Name, err)})
			continue
		}
		out = append(out, Check{Name: name, OK: true, Detail: fmt.Sprintf("dump %s restored (%s)", run.Name, detail)})
	}
	return out
}

// checkRows counts every user table of db and compares with the estimates
// recorded when the dump started.
func checkRows(ctx context.Context, dsn, db string, recorded []Table) (string, error) {
	conn, err := connect(ctx, dsn, db, "pitr drill")
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT n.nspname::text, c.relname::text FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'`)
	if err != nil {
		return "", fmt.Errorf("list tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ Schema, Name string }])
	if err != nil {
		return "", fmt.Errorf("list tables: %w", err)
	}
	counts := map[string]int64{}
	var total int64
	for _, t := range tables {
		var n int64
		q := "SELECT count(*) FROM " + pgx.Identifier{t.Schema, t.Name}.Sanitize()
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			return "", fmt.Errorf("count %s.%s: %w", t.Schema, t.Name, err)
		}
		counts[t.Schema+"."+t.Name] = n
		total += n
	}
	var bad []string
	for _, r := range recorded {
		if r.Rows < minPlausibleRows {
			continue
		}
		n, ok := counts[r.Schema+"."+r.Name]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s.%s (estimated %d rows) is missing", r.Schema, r.Name, r.Rows))
		case n == 0:
			bad = append(bad, fmt.Sprintf("%s.%s (estimated %d rows) is empty", r.Schema, r.Name, r.Rows))
		}
	}
	if len(bad) > 0 {
		return "", fmt.Errorf("implausible row counts: %s", strings.Join(bad, "; "))
	}
	return fmt.Sprintf("%d tables, %d rows, consistent with the recorded estimates", len(tables), total), nil
}
