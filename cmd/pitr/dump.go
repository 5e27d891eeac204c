package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pitr-dev/pitr/dump"
	"github.com/pitr-dev/pitr/internal/units"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

func runDump(ctx context.Context, env *environment, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "list":
			return runDumpList(ctx, env, args[1:])
		case "restore":
			return runDumpRestore(ctx, env, args[1:])
		}
	}
	fs := newFlagSet(env, "dump", "dump [--db NAME ...] [flags]   (pg_dump -Fc of each database; also: dump list, dump restore NAME --db TARGET)")
	load := configFlags(fs)
	var dbs repeatedFlag
	fs.Var(&dbs, "db", "database to dump (repeatable; default: every database that allows connections, templates excluded)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: unexpected argument %q (subcommands come first: pitr dump list, pitr dump restore NAME)", errUsage, pos[0])
	}
	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	run, err := takeDump(ctx, env, cfg, st, dbs)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, run.Name)
	return nil
}

// takeDump runs one dump of dbs (all when empty); pitr dump and the agent
// both use it.
func takeDump(ctx context.Context, env *environment, cfg Config, st storage.Store, dbs []string) (dump.Run, error) {
	copts, err := codecOptions(cfg)
	if err != nil {
		return dump.Run{}, err
	}
	copts.Concurrency = backupCodecConcurrency
	start := time.Now()
	run, err := dump.Take(ctx, dump.Options{Store: st, Codec: copts, DSN: cfg.DSN, PGBin: cfg.PGBin,
		Databases: dbs, PitrVersion: version, Log: env.log})
	if err != nil {
		return run, err
	}
	env.log.Info("dump complete", "dump", run.Name, "databases", len(run.Databases), "size", run.Size,
		"stored", run.StoredSize, "ratio", ratio(run.Size, run.StoredSize), "duration", time.Since(start).Round(time.Millisecond))
	return run, nil
}

func runDumpList(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "dump list", "dump list [--json]")
	load := configFlags(fs)
	asJSON := fs.Bool("json", false, "print the dump runs as a JSON array (the dump.json of each; stable schema, see DESIGN.md)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: dump list takes no arguments", errUsage)
	}
	st, id, err := openBackupCatalog(ctx, env, load)
	if err != nil {
		return err
	}
	l, err := dump.ListAll(ctx, st, id)
	if err != nil {
		return err
	}
	if *asJSON {
		if l.Runs == nil {
			l.Runs = []dump.Run{}
		}
		return writeJSON(env.stdout, l.Runs)
	}
	writeDumpTable(env.stdout, l.Runs)
	if len(l.Incomplete) > 0 {
		var names []string
		for _, i := range l.Incomplete {
			names = append(names, i.Name)
		}
		fmt.Fprintf(env.stderr, "not listed: %d incomplete dump(s), running or interrupted: %s\n", len(names), strings.Join(names, ", "))
	}
	return nil
}

func writeDumpTable(w io.Writer, runs []dump.Run) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDATABASE\tSTART (UTC)\tSIZE\tSTORED\tPG\tPG_DUMP")
	for _, r := range runs {
		for _, d := range r.Databases {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, d.Name, d.StartTime.UTC().Format(tableTime),
				units.Bytes(d.Size), units.Bytes(d.StoredSize), units.PGVersion(r.PGVersionNum), r.PGDumpVersion)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, "(globals)", r.StartTime.UTC().Format(tableTime),
			units.Bytes(r.Globals.Size), units.Bytes(r.Globals.StoredSize), units.PGVersion(r.PGVersionNum), r.PGDumpVersion)
	}
	tw.Flush()
}

func runDumpRestore(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "dump restore", "dump restore NAME --db TARGET [--globals] [--clean] [flags]   (NAME: RUN/DATABASE, a database (its newest dump), or a run holding one database)")
	load := configFlags(fs)
	target := fs.String("db", "", "database to restore into; created if absent, refused if it exists and is not empty (unless --clean)")
	globals := fs.Bool("globals", false, "restore the dump's roles and tablespaces (pg_dumpall --globals-only) first")
	clean := fs.Bool("clean", false, "restore into an existing non-empty database, dropping the dump's objects there first (pg_restore --clean --if-exists)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want exactly one dump NAME (see pitr dump list)", errUsage)
	}
	if *target == "" {
		return fmt.Errorf("%w: --db TARGET is required (the database to restore into)", errUsage)
	}
	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	m, err := repo.ReadMarker(ctx, st)
	if err != nil {
		return err
	}
	runs, err := dump.List(ctx, st, m.SystemIdentifier)
	if err != nil {
		return err
	}
	run, d, err := dump.Resolve(runs, pos[0])
	if err != nil {
		return err
	}
	res, err := dump.Restore(ctx, run, d, dump.RestoreOptions{Store: st, DSN: cfg.DSN, PGBin: cfg.PGBin, Target: *target,
		Globals: *globals, Clean: *clean, Log: env.log})
	if err != nil {
		return err
	}
	how := "into existing database"
	if res.Created {
		how = "into new database"
	}
	fmt.Fprintf(env.stdout, "restored database %s from dump %s %s %s (%s)", d.Name, run.Name, how, *target, units.Bytes(res.Bytes))
	if res.Globals {
		fmt.Fprint(env.stdout, ", globals first")
	}
	fmt.Fprintln(env.stdout)
	return nil
}

// dumpRetention reads dump_keep and dump_keep_within (and incomplete_after).
// Without either, dumps are not pruned: dump.ErrNoPolicy.
func dumpRetention(cfg Config) (dump.Policy, error) {
	p := dump.Policy{Keep: cfg.DumpKeep}
	var err error
	if cfg.DumpKeepWithin != "" {
		if p.KeepWithin, err = parseDaysDuration(cfg.DumpKeepWithin); err != nil {
			return p, fmt.Errorf("dump_keep_within: %w", err)
		}
	}
	if cfg.IncompleteAfter != "" {
		if p.IncompleteAfter, err = parseDaysDuration(cfg.IncompleteAfter); err != nil {
			return p, fmt.Errorf("incomplete_after: %w", err)
		}
	}
	return p, p.Validate()
}

// pruneDumps applies the dump retention; prune runs it under its lock,
// after the base backups.
func pruneDumps(ctx context.Context, env *environment, st storage.Store, id repo.SystemID, p dump.Policy, repoNow time.Time, dryRun bool) error {
	l, err := dump.ListAll(ctx, st, id)
	if err != nil {
		return err
	}
	if len(l.Runs) == 0 && len(l.Incomplete) == 0 {
		return nil
	}
	plan, err := dump.PlanPrune(l, p, time.Now(), repoNow)
	if err != nil {
		return err
	}
	plan.Describe(env.stdout, dryRun)
	if dryRun || plan.Empty() {
		return nil
	}
	runs, inc, err := dump.ExecutePrune(ctx, st, id, plan, env.log)
	fmt.Fprintf(env.stdout, "Deleted %d dump %s, %d incomplete\n", runs, plural(runs, "run", "runs"), inc)
	return err
}

// pruneDumpsIfConfigured runs pruneDumps when a dump retention policy is
// configured; without one, existing dumps are mentioned, never deleted.
func pruneDumpsIfConfigured(ctx context.Context, env *environment, cfg Config, st storage.Store, dryRun bool) error {
	p, err := dumpRetention(cfg)
	if errors.Is(err, dump.ErrNoPolicy) {
		return nil
	}
	if err != nil {
		return err
	}
	m, err := repo.ReadMarker(ctx, st)
	if err != nil {
		return err
	}
	return pruneDumps(ctx, env, st, m.SystemIdentifier, p, time.Time{}, dryRun)
}

// dumpDrillChecks is the drill hook of pitr drill --dumps: the newest dump
// of each database is restored into the promoted scratch server and
// checked, one "dump DB" check each.
func dumpDrillChecks(env *environment, st storage.Store) func(ctx context.Context, dsn, pgBin string) []pitr.CheckResult {
	return func(ctx context.Context, dsn, pgBin string) []pitr.CheckResult {
		m, err := repo.ReadMarker(ctx, st)
		if err != nil {
			return []pitr.CheckResult{{Name: "dumps", Result: pitr.CheckFail, Detail: err.Error()}}
		}
		var out []pitr.CheckResult
		for _, c := range dump.VerifyNewest(ctx, st, m.SystemIdentifier, dsn, pgBin, env.log) {
			r := pitr.CheckPass
			if !c.OK {
				r = pitr.CheckFail
			}
			out = append(out, pitr.CheckResult{Name: c.Name, Result: r, Detail: c.Detail})
		}
		return out
	}
}
