package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// RestoreOptions say what to restore where.
type RestoreOptions struct {
	Store storage.Store
	// DSN reaches the target server (its database is used for CREATE
	// DATABASE and the globals); "" uses the PG* environment.
	DSN string
	// PGBin is the directory of pg_restore and psql; "" means the target
	// server's /usr/lib/postgresql/<major>/bin.
	PGBin string
	// Target is the database to restore into; created if absent.
	Target string
	// Globals restores the run's roles and tablespaces first.
	Globals bool
	// Clean lets the restore into an existing non-empty database drop the
	// dump's objects first (pg_restore --clean --if-exists).
	Clean bool
	Log   *slog.Logger
}

// Restored says what Restore did.
type Restored struct {
	Run      string
	Database string // the source database
	Target   string
	Created  bool // the target database was created
	Globals  bool
	Bytes    int64
}

// Resolve finds the dump a user named: "RUN/DB", a run name holding
// exactly one database, or a database name (its newest dump).
func Resolve(runs []Run, name string) (Run, Database, error) {
	if runName, db, ok := strings.Cut(name, "/"); ok {
		for _, r := range runs {
			if r.Name == runName {
				if d, ok := r.Database(db); ok {
					return r, d, nil
				}
				return Run{}, Database{}, fmt.Errorf("dump %s has no database %q", runName, db)
			}
		}
		return Run{}, Database{}, fmt.Errorf("%w: %s (see pitr dump list)", ErrNoDump, runName)
	}
	for _, r := range runs {
		if r.Name == name {
			if len(r.Databases) != 1 {
				return Run{}, Database{}, fmt.Errorf("dump %s holds %d databases; name one as %s/DATABASE", name, len(r.Databases), name)
			}
			return r, r.Databases[0], nil
		}
	}
	if r, ok := Newest(runs)[name]; ok {
		d, _ := r.Database(name)
		return r, d, nil
	}
	return Run{}, Database{}, fmt.Errorf("%w: no dump run or database named %q (see pitr dump list)", ErrNoDump, name)
}

// Restore restores one database's dump into o.Target with pg_restore,
// streaming the object from the repository (no local copy). The target
// is created if absent; an existing database that holds anything is
// refused unless o.Clean. With o.Globals the run's globals.sql goes first
// through psql; "already exists" errors there (the bootstrap role, roles a
// previous restore created) are expected and ignored, any other error fails.
func Restore(ctx context.Context, run Run, d Database, o RestoreOptions) (Restored, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := Restored{Run: run.Name, Database: d.Name, Target: o.Target, Globals: o.Globals}
	if o.Target == "" {
		return res, errors.New("no target database")
	}
	conn, err := connect(ctx, o.DSN, "", "pitr dump restore")
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	srv, err := queryServer(ctx, conn)
	if err != nil {
		return res, err
	}
	if srv.VersionNum/10000 < run.PGVersionNum/10000 {
		return res, fmt.Errorf("dump %s is of PostgreSQL %s; the target server is PostgreSQL %s, and pg_restore cannot load a dump into an older major version",
			run.Name, versionString(run.PGVersionNum), versionString(srv.VersionNum))
	}
	pgRestore, _, err := findTool(ctx, o.PGBin, "pg_restore", srv.VersionNum)
	if err != nil {
		return res, err
	}
	var psql string
	if o.Globals {
		if psql, _, err = findTool(ctx, o.PGBin, "psql", srv.VersionNum); err != nil {
			return res, err
		}
	}
	// Check the target before changing anything, globals included.
	exists, err := databaseExists(ctx, conn, o.Target)
	if err != nil {
		return res, err
	}
	if exists && !o.Clean {
		tconn, err := connect(ctx, o.DSN, o.Target, "pitr dump restore")
		if err != nil {
			return res, err
		}
		n, err := userObjects(ctx, tconn)
		tconn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return res, err
		}
		if n > 0 {
			return res, fmt.Errorf("database %s exists and is not empty (%d objects); restore into a new database, or pass --clean to drop and recreate the dump's objects in it", o.Target, n)
		}
	}
	if o.Globals {
		log.Info("restoring globals (roles, tablespaces)", "dump", run.Name)
		if err := restoreGlobals(ctx, o.Store, run, psql, o.DSN); err != nil {
			return res, err
		}
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{o.Target}.Sanitize()+" TEMPLATE template0"); err != nil {
			return res, fmt.Errorf("create database %s: %w", o.Target, err)
		}
		res.Created = true
		log.Info("created database", "database", o.Target)
	}
	dsn, err := withDatabase(o.DSN, o.Target)
	if err != nil {
		return res, err
	}
	args := []string{"--exit-on-error", "--no-password", "-d", dsn}
	if o.Clean {
		args = append(args, "--clean", "--if-exists")
	}
	log.Info("restoring database", "dump", run.Name, "database", d.Name, "target", o.Target, "size", d.Size)
	n, err := feed(ctx, o.Store, run, d.Part, pgRestore, args, nil)
	res.Bytes = n
	return res, err
}

// feed streams one object into a program's stdin, then reads the object to
// its end so the codec verifies size and SHA-256, and compares them with
// the metadata. check, if set, inspects the program's stderr after success.
func feed(ctx context.Context, st storage.Store, run Run, p Part, path string, args []string, check func(stderr string) error) (int64, error) {
	obj, err := codec.Open(ctx, st, run.Key(p.Object))
	if err != nil {
		return 0, fmt.Errorf("open %s of dump %s: %w", p.Object, run.Name, err)
	}
	defer obj.Close()
	// dump.json says how large the object is: a crafted object that
	// decodes to more is refused before it can fill the target's disk.
	obj.SetLimit(p.Size)
	stderr := &stderrBuf{}
	src := &errReader{r: obj}
	err = runToolWith(ctx, path, args, src, stderr)
	if src.err != nil {
		// The program only saw its input end early; the repository's
		// reason is the real one.
		return 0, fmt.Errorf("%s of dump %s: %w", p.Object, run.Name, src.err)
	}
	if err != nil {
		return 0, err
	}
	if check != nil {
		if err := check(stderr.String()); err != nil {
			return 0, err
		}
	}
	// The program may stop reading before the trailer; the checksum is
	// only verified at the end.
	if _, err := io.Copy(io.Discard, obj); err != nil {
		return 0, fmt.Errorf("%s of dump %s: %w (it was loaded; do not trust the result)", p.Object, run.Name, err)
	}
	info := obj.Info()
	if !info.Matches(p.SHA256, p.Checksum) || info.Size != p.Size {
		return info.Size, fmt.Errorf("%s of dump %s: %w: content differs from dump.json (it was loaded; do not trust the result)", p.Object, run.Name, codec.ErrCorrupt)
	}
	return info.Size, nil
}

func restoreGlobals(ctx context.Context, st storage.Store, run Run, psql, dsn string) error {
	args := []string{"-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0", "-f", "-"}
	if dsn != "" {
		args = append(args, "-d", dsn)
	}
	_, err := feed(ctx, st, run, run.Globals, psql, args, func(stderr string) error {
		for _, l := range strings.Split(stderr, "\n") {
			if strings.Contains(l, "ERROR:") && !strings.Contains(l, "already exists") {
				return fmt.Errorf("restore globals of dump %s: %s", run.Name, strings.TrimSpace(l))
			}
		}
		return nil
	})
	return err
}

func databaseExists(ctx context.Context, conn *pgx.Conn, db string) (bool, error) {
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, db).Scan(&n); err != nil {
		return false, fmt.Errorf("look up database %s: %w", db, err)
	}
	return n > 0, nil
}

// userObjects counts what makes a database "not empty": relations,
// functions and types in user schemas, schemas besides public, and
// extensions besides plpgsql.
func userObjects(ctx context.Context, conn *pgx.Conn) (int, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
			WHERE s.nspname NOT IN ('pg_catalog', 'information_schema') AND s.nspname NOT LIKE 'pg\_toast%' AND s.nspname NOT LIKE 'pg\_temp%')
		+ (SELECT count(*) FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace
			WHERE s.nspname NOT IN ('pg_catalog', 'information_schema'))
		+ (SELECT count(*) FROM pg_namespace
			WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp%')
		+ (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("check that the target database is empty: %w", err)
	}
	return n, nil
}

// errReader remembers the first read error other than EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}
