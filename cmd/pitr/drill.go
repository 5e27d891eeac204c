package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// errDrillFailed is returned after the drill's report has been printed.
var errDrillFailed = errors.New("drill failed")

func runDrill(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "drill", "drill [--target TIME|latest|immediate] [--keep] [--scratch DIR] [--port N] [flags]")
	load := configFlags(fs, "keep")
	target := fs.String("target", "latest", `what to restore: "latest" (the whole archive), "immediate" (the end of the newest backup) or a time "YYYY-MM-DD HH:MM[:SS] [zone]"`)
	tz := fs.String("tz", "", "time zone for a --target time without one (default: $TZ, else this machine's zone)")
	keep := fs.Bool("keep", false, "keep the scratch directory (the server is stopped either way)")
	scratch := fs.String("scratch", "", "directory in which the scratch directory is created (default $TMPDIR or /tmp); needs room for the restored cluster")
	port := fs.Int("port", 0, "port of the scratch server's Unix socket (default: a free port)")
	timeout := fs.Duration("timeout", 0, "give up waiting for recovery after this long (default: no limit)")
	tableTimeout := fs.Duration("table-timeout", 10*time.Minute, "limit for reading one table")
	role := fs.String("user", "", "role to connect to the restored server as (default: $PGUSER, this OS user, postgres)")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a summary")
	dumps := fs.Bool("dumps", false, "also restore the newest logical dump of each database (pitr dump) into the scratch server and check it")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: unexpected arguments %q (did you quote the --target time?)", errUsage, pos)
	}
	zone := time.Local
	if *tz != "" {
		if zone, err = time.LoadLocation(*tz); err != nil {
			return fmt.Errorf("%w: --tz %q: unknown time zone", errUsage, *tz)
		}
	}
	t, err := parseTarget(*target, "", "", "", zone)
	if err != nil {
		return err
	}
	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	if *scratch == "" {
		*scratch = cfg.DrillScratch
	}
	opts := pitr.DrillOptions{
		ScratchParent: *scratch, Keep: *keep, Port: *port, RecoveryTimeout: *timeout, TableTimeout: *tableTimeout, User: *role,
	}
	if *dumps {
		opts.Extra = dumpDrillChecks(env, st)
	}
	report, key, werr, err := drillOnce(ctx, env, cfg, st, t, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else {
		report.Summary(env.stdout)
		if report.Scratch != "" {
			fmt.Fprintf(env.stdout, "scratch directory kept: %s\n", report.Scratch)
		}
		if werr == nil {
			fmt.Fprintf(env.stdout, "report: %s\n", key)
		}
	}
	if werr != nil {
		return werr
	}
	if !report.OK {
		for _, c := range report.Failures() {
			env.log.Error("drill check failed", "check", c.Name, "reason", c.Detail)
		}
		return reportedError{errDrillFailed}
	}
	return nil
}

// drillOnce runs one drill for target t and stores its report. err is a
// failure before the drill could start; werr a failure to store the report.
func drillOnce(ctx context.Context, env *environment, cfg Config, st storage.Store, t pitr.Target, opts pitr.DrillOptions) (report pitr.DrillReport, key string, werr, err error) {
	marker, err := repo.ReadMarker(ctx, st)
	if err != nil {
		return report, "", nil, err
	}
	in, err := pitr.LoadInputs(ctx, st, marker.SystemIdentifier)
	if err != nil {
		return report, "", nil, err
	}
	in.Target = t
	if opts.RestoreCommand, _, err = restoreCommandFor(cfg); err != nil {
		return report, "", nil, err
	}
	opts.PGBin, opts.PitrVersion = cfg.PGBin, version
	report = pitr.RunDrill(ctx, st, marker.SystemIdentifier, in, opts, env.log)
	// Record the drill even when it was interrupted: a drill that never
	// finishes is itself news for pitr status.
	key, werr = pitr.WriteDrillReport(context.WithoutCancel(ctx), st, report)
	return report, key, werr, nil
}
