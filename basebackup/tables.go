package basebackup

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
)

// maxTables bounds the estimates kept in backup.json (about 100 bytes each).
const maxTables = 10000

// tableEstimates reads the row estimates of every permanent user table in
// every database that accepts connections. They are estimates from the last
// VACUUM/ANALYZE: free to read, and enough to tell thousands from none.
func tableEstimates(ctx context.Context, dsn string) ([]TableEstimate, error) {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1`)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("list databases: %w", err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	base, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("connection settings (--dsn or PG* environment) are not valid")
	}
	var out []TableEstimate
	for _, db := range dbs {
		cfg := base.Copy()
		cfg.Database = db
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = connectTimeout
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return out, fmt.Errorf("connect to database %s: %w", db, err)
		}
		rows, err := c.Query(ctx, `SELECT $1::text, n.nspname, c.relname, c.reltuples::bigint FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind = 'r' AND c.relpersistence = 'p'
			AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'`, db)
		if err == nil {
			var ts []TableEstimate
			ts, err = pgx.CollectRows(rows, pgx.RowToStructByPos[TableEstimate])
			out = append(out, ts...)
		}
		c.Close(context.WithoutCancel(ctx))
		if err != nil {
			return out, fmt.Errorf("table estimates of database %s: %w", db, err)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Rows > out[j].Rows })
	if len(out) > maxTables {
		out = out[:maxTables]
	}
	return out, nil
}
