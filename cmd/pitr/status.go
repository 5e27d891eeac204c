package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pitr-dev/pitr/dump"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
)

// errStatusProblems is returned after status has printed its problems.
var errStatusProblems = errors.New("status: thresholds exceeded")

func runStatus(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "status", "status [--json] [--max-archive-lag 1h] [--max-backup-age 8d] [--max-drill-age 35d] [flags]")
	load := configFlags(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	maxLag := fs.String("max-archive-lag", "1h", "fail when completed WAL has waited longer than this to be archived (0: off)")
	maxBackup := fs.String("max-backup-age", "8d", "fail when the newest backup is older than this (0: off)")
	maxDrill := fs.String("max-drill-age", "35d", "fail when the last drill is older than this or failed (0: off)")
	maxStream := fs.String("max-stream-lag", "5m", "fail when pitr stream has WAL waiting and its last upload is older than this (0: off)")
	noServer := fs.Bool("no-server", false, "do not connect to the server (repository only)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: status takes no arguments (got %q)", errUsage, pos[0])
	}
	var th pitr.Thresholds
	for _, x := range []struct {
		flag string
		val  string
		dst  *time.Duration
	}{{"max-archive-lag", *maxLag, &th.MaxArchiveLag}, {"max-backup-age", *maxBackup, &th.MaxBackupAge}, {"max-drill-age", *maxDrill, &th.MaxDrillAge}, {"max-stream-lag", *maxStream, &th.MaxStreamLag}} {
		if *x.dst, err = parseThreshold(x.val); err != nil {
			return fmt.Errorf("%w: --%s: %v", errUsage, x.flag, err)
		}
	}
	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	marker, err := repo.ReadMarker(ctx, st)
	if err != nil {
		return err
	}
	id := marker.SystemIdentifier
	in, err := pitr.LoadInputs(ctx, st, id)
	if err != nil {
		return err
	}
	last, err := pitr.LastDrill(ctx, st, id)
	if err != nil {
		return err
	}
	s := pitr.ComputeStatus(id, in, last, time.Now())
	if !*noServer {
		s.Server = pitr.QueryServerStatus(ctx, cfg.DSN, s.NewestSegment)
	}
	if err := streamStatus(ctx, cfg, st, id, &s, !*noServer); err != nil {
		return err
	}
	s.AddConfigWarnings(in.Backups)
	if runs, err := dump.List(ctx, st, id); err != nil {
		s.Warnings = append(s.Warnings, "could not list dumps: "+err.Error())
	} else {
		s.AddDumps(runs)
	}
	s.Evaluate(th)
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return err
		}
	} else {
		s.Describe(env.stdout)
	}
	if len(s.Problems) > 0 {
		return reportedError{errStatusProblems}
	}
	return nil
}

// parseThreshold reads a threshold flag: a duration like 36h or 8d, or 0
// (or off) to disable it.
func parseThreshold(v string) (time.Duration, error) {
	if v == "0" || v == "off" || v == "" {
		return 0, nil
	}
	return parseDaysDuration(v)
}
