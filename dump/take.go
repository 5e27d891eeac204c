package dump

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// Options configure Take.
type Options struct {
	Store storage.Store
	Codec codec.Options
	// DSN is a libpq connection string; "" uses the PG* environment. Its
	// database is where the list of databases is read; each dump connects
	// to its own database with the same settings.
	DSN string
	// PGBin is the directory of pg_dump and pg_dumpall; "" means
	// /usr/lib/postgresql/<server major>/bin.
	PGBin string
	// Databases to dump; empty means every database that allows
	// connections and is not a template.
	Databases []string
	// Exclude leaves these databases out of "every database" (they have
	// their own schedule).
	Exclude     []string
	PitrVersion string
	Log         *slog.Logger
}

// maxTables bounds the estimates kept per database.
const maxTables = 10000

// Take dumps the selected databases and the globals into a new run and
// returns its metadata once dump.json is written. On failure the run's
// objects are removed and nothing is listed.
func Take(ctx context.Context, o Options) (Run, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := connect(ctx, o.DSN, "", "pitr dump")
	if err != nil {
		return Run{}, err
	}
	srv, err := queryServer(ctx, conn)
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return Run{}, err
	}
	dbs, err := selectDatabases(ctx, conn, o.Databases)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return Run{}, err
	}
	dbs = slices.DeleteFunc(dbs, func(db string) bool { return len(o.Databases) == 0 && slices.Contains(o.Exclude, db) })
	if len(dbs) == 0 {
		return Run{}, fmt.Errorf("no database to dump (all are excluded or none accepts connections)")
	}
	// A wrong pg_dump must not get to write a single object.
	pgDump, dumpVersion, err := findTool(ctx, o.PGBin, "pg_dump", srv.VersionNum)
	if err != nil {
		return Run{}, err
	}
	pgDumpAll, _, err := findTool(ctx, o.PGBin, "pg_dumpall", srv.VersionNum)
	if err != nil {
		return Run{}, err
	}
	if _, err := repo.Init(ctx, o.Store, srv.SystemID, srv.Clock); err != nil {
		return Run{}, err
	}
	t := &take{o: &o, log: log, srv: srv}
	if err := t.begin(ctx); err != nil {
		return Run{}, err
	}
	t.log = log.With("dump", t.name)
	stop := t.heartbeat(ctx)
	run, err := t.dumpAll(ctx, pgDump, pgDumpAll, dumpVersion, dbs)
	stop()
	if err != nil {
		t.abandon(ctx)
		return Run{}, fmt.Errorf("dump %s: %w", t.name, err)
	}
	if err := o.Store.Delete(context.WithoutCancel(ctx), t.key(repo.DumpInProgressName)); err != nil {
		log.Warn("could not remove the heartbeat object of the completed dump", "err", err)
	}
	return run, nil
}

// selectDatabases returns the databases to dump: the named ones (each must
// exist and accept connections) or every connectable non-template one.
func selectDatabases(ctx context.Context, conn *pgx.Conn, want []string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	if len(want) == 0 {
		return all, nil
	}
	var out []string
	for _, db := range want {
		if !slices.Contains(all, db) {
			return nil, fmt.Errorf("database %q does not exist or does not accept connections (databases: %v)", db, all)
		}
		if !slices.Contains(out, db) {
			out = append(out, db)
		}
	}
	return out, nil
}

type take struct {
	o        *Options
	log      *slog.Logger
	srv      serverInfo
	name     string
	lastBeat atomic.Int64
}

func (t *take) key(object string) string { return repo.DumpKey(t.srv.SystemID, t.name, object) }

// begin picks a free name and claims it with the heartbeat object.
func (t *take) begin(ctx context.Context) error {
	base := t.srv.Clock.UTC().Format(NameLayout)
	for i := 1; ; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		objs, err := t.o.Store.List(ctx, repo.DumpPrefix(t.srv.SystemID)+name+"/")
		if err != nil {
			return fmt.Errorf("dump %s: %w", name, err)
		}
		if len(objs) == 0 {
			t.name = name
			break
		}
		if i >= 100 {
			return fmt.Errorf("dump names %s to %s are all taken", base, name)
		}
	}
	if err := t.writeHeartbeat(ctx); err != nil {
		return fmt.Errorf("dump %s: %w", t.name, err)
	}
	return nil
}

func (t *take) writeHeartbeat(ctx context.Context) error {
	host, _ := os.Hostname()
	b, _ := json.Marshal(map[string]any{"name": t.name, "host": host, "pid": os.Getpid(),
		"started_at": t.srv.Clock, "heartbeat_at": time.Now().UTC(), "pitr_version": t.o.PitrVersion})
	if _, err := codec.Put(ctx, t.o.Store, t.key(repo.DumpInProgressName), bytes.NewReader(b), int64(len(b)), t.o.Codec); err != nil {
		return fmt.Errorf("write heartbeat: %w", err)
	}
	t.lastBeat.Store(time.Now().UnixNano())
	return nil
}

// heartbeat refreshes the heartbeat object while the dump runs: prune
// deletes a run without metadata only once nothing in it has changed for
// incomplete_after, and one pg_dump of a large database writes a single
// object that (on S3) appears only when complete.
func (t *take) heartbeat(ctx context.Context) (stop func()) {
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(basebackup.HeartbeatInterval)
		defer tick.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-tick.C:
				if err := t.writeHeartbeat(hctx); err != nil && hctx.Err() == nil {
					t.log.Warn("could not refresh the dump's heartbeat", "err", err)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// abandon removes a failed run's objects, on a fresh context: the run's own
// may be what was cancelled.
func (t *take) abandon(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	objs, err := t.o.Store.List(ctx, repo.DumpPrefix(t.srv.SystemID)+t.name+"/")
	locked := 0
	if err == nil {
		locked, _, err = deleteRun(ctx, t.o.Store, t.srv.SystemID, t.name, objs)
	}
	if err == nil && locked > 0 {
		err = fmt.Errorf("%d objects are under retention (object lock)", locked)
	}
	if err != nil {
		t.log.Warn("could not remove the failed dump's objects; prune removes them later", "err", err)
	}
}

// pgDumpCompression is pg_dump's -Z: with zstd in the object format the
// data is compressed once, by zstd, instead of gzip inside then zstd over
// incompressible bytes; without it pg_dump compresses (its default).
func pgDumpCompression(c codec.Codec) int {
	if c == codec.None {
		return -1
	}
	return 0
}

func (t *take) dumpAll(ctx context.Context, pgDump, pgDumpAll, dumpVersion string, dbs []string) (Run, error) {
	host, _ := os.Hostname()
	run := Run{Version: MetadataVersion, Name: t.name, SystemIdentifier: t.srv.SystemID, PGVersionNum: t.srv.VersionNum,
		PGDumpVersion: dumpVersion, StartTime: t.srv.Clock, Codec: t.o.Codec.Codec.String(), Host: host,
		PitrVersion: t.o.PitrVersion, PGDumpCompression: pgDumpCompression(t.o.Codec.Codec)}
	// Roles and tablespaces first: a database dump without its roles does
	// not restore cleanly, and the globals are small.
	args := []string{"--globals-only", "--no-password"}
	if t.o.DSN != "" {
		args = append(args, "-d", t.o.DSN)
	}
	t.log.Info("dumping globals", "path", pgDumpAll)
	g, err := t.store(ctx, pgDumpAll, args, repo.DumpGlobalsName)
	if err != nil {
		return run, fmt.Errorf("globals: %w", err)
	}
	run.Globals = g
	for _, db := range dbs {
		d, err := t.dumpDatabase(ctx, pgDump, db, run.PGDumpCompression)
		if err != nil {
			return run, fmt.Errorf("database %s: %w", db, err)
		}
		run.Databases = append(run.Databases, d)
	}
	conn, err := connect(ctx, t.o.DSN, "", "pitr dump")
	if err != nil {
		return run, err
	}
	end, err := queryServer(ctx, conn)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return run, err
	}
	if end.SystemID != t.srv.SystemID {
		return run, fmt.Errorf("the server now reports database system %s, not %s as when the dump started", end.SystemID, t.srv.SystemID)
	}
	run.StopTime = end.Clock
	run.Size, run.StoredSize = run.Globals.Size, run.Globals.StoredSize
	for _, d := range run.Databases {
		run.Size += d.Size
		run.StoredSize += d.StoredSize
	}
	if err := run.Validate(); err != nil {
		return run, err
	}
	return run, t.finish(ctx, run)
}

func (t *take) dumpDatabase(ctx context.Context, pgDump, db string, z int) (Database, error) {
	d := Database{Name: db}
	tables, err := tableEstimates(ctx, t.o.DSN, db)
	if err != nil {
		t.log.Warn("could not read table row estimates; drills check this dump's rows less strictly", "database", db, "err", err)
	}
	d.Tables = tables
	dsn, err := withDatabase(t.o.DSN, db)
	if err != nil {
		return d, err
	}
	args := []string{"-Fc", "--no-password", "-d", dsn}
	if z >= 0 {
		args = append(args, fmt.Sprintf("-Z%d", z))
	}
	start := time.Now()
	t.log.Info("dumping database", "database", db)
	d.StartTime = time.Now().UTC()
	p, err := t.store(ctx, pgDump, args, repo.DumpObjectName(db))
	if err != nil {
		return d, err
	}
	d.StopTime = time.Now().UTC()
	d.Part = p
	t.log.Info("dumped database", "database", db, "size", p.Size, "stored", p.StoredSize,
		"duration", time.Since(start).Round(time.Millisecond))
	return d, nil
}

// store runs a client program and streams its stdout into one object: no
// local copy, memory bounded by the codec's pipe. The object is only
// trusted once the program exited 0; otherwise the run is abandoned.
func (t *take) store(ctx context.Context, path string, args []string, object string) (Part, error) {
	var stored codec.Stored
	err := runTool(ctx, path, args, nil, func(stdout io.Reader) error {
		var err error
		stored, err = codec.Put(ctx, t.o.Store, t.key(object), stdout, -1, t.o.Codec)
		if err != nil {
			return fmt.Errorf("store %s: %w", object, err)
		}
		return nil
	})
	if err != nil {
		return Part{}, err
	}
	part := Part{Object: object, Size: stored.Size, StoredSize: stored.StoredSize}
	part.SHA256, part.Checksum = stored.Record()
	return part, nil
}

// finish writes dump.json after checking that every object it describes is
// there (a prune that wrongly took the run for dead would have removed some).
func (t *take) finish(ctx context.Context, run Run) error {
	objects := []string{repo.DumpInProgressName, run.Globals.Object}
	for _, d := range run.Databases {
		objects = append(objects, d.Object)
	}
	for _, o := range objects {
		if _, err := t.o.Store.Stat(ctx, t.key(o)); err != nil {
			return fmt.Errorf("%s vanished from the repository before the dump completed: %w", o, err)
		}
	}
	data, err := json.MarshalIndent(run, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := t.o.Store.Put(ctx, t.key(repo.DumpMetadataName), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("write %s: %w", repo.DumpMetadataName, err)
	}
	return nil
}

// tableEstimates reads pg_class.reltuples of every permanent user table of
// db: free, and enough for a drill to tell thousands of rows from none.
func tableEstimates(ctx context.Context, dsn, db string) ([]Table, error) {
	conn, err := connect(ctx, dsn, db, "pitr dump")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT n.nspname::text, c.relname::text, c.reltuples::bigint FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
		AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'`)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Table])
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Rows > out[j].Rows })
	if len(out) > maxTables {
		out = out[:maxTables]
	}
	return out, nil
}
