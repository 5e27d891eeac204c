package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pitr-dev/pitr/internal/lazyre"
	"github.com/pitr-dev/pitr/internal/units"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

func runPrune(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "prune", "prune [--keep N] [--keep-within 30d] [--dry-run] [flags]")
	load := configFlags(fs)
	dryRun := fs.Bool("dry-run", false, "show what would be deleted, and delete nothing")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: prune takes no arguments (got %q)", errUsage, pos[0])
	}
	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	policy, err := retentionPolicy(cfg)
	if _, derr := dumpRetention(cfg); derr == nil && errors.Is(err, pitr.ErrNoRetentionPolicy) {
		// Only dumps have a retention policy: base backups stay.
		return pruneDumpsIfConfigured(ctx, env, cfg, st, *dryRun)
	}
	if err != nil {
		return err
	}
	if _, err = pruneRepository(ctx, env, st, policy, *dryRun); err != nil {
		return err
	}
	return pruneDumpsIfConfigured(ctx, env, cfg, st, *dryRun)
}

// retentionPolicy reads keep, keep_within and incomplete_after. A missing
// policy is pitr.ErrNoRetentionPolicy: prune refuses to guess one.
func retentionPolicy(cfg Config) (pitr.RetentionPolicy, error) {
	p := pitr.RetentionPolicy{KeepCount: cfg.Keep}
	var err error
	if cfg.KeepWithin != "" {
		if p.KeepWithin, err = parseDaysDuration(cfg.KeepWithin); err != nil {
			return p, fmt.Errorf("keep_within: %w", err)
		}
	}
	if cfg.IncompleteAfter != "" {
		if p.IncompleteAfter, err = parseDaysDuration(cfg.IncompleteAfter); err != nil {
			return p, fmt.Errorf("incomplete_after: %w", err)
		}
	}
	return p, p.Validate()
}

// daysPattern splits "30d", "1d12h" into days and a Go duration rest.
var daysPattern = lazyre.New(`^(\d+)d(.*)$`)

// parseDaysDuration parses a positive Go duration that may start with whole
// days ("30d", "1d12h", "36h", "90m"): retention is thought of in days, and
// Go's time.ParseDuration stops at hours.
func parseDaysDuration(s string) (time.Duration, error) {
	var days time.Duration
	rest := s
	if m := daysPattern().FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("%q: too many days", s)
		}
		days, rest = time.Duration(n)*24*time.Hour, m[2]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil || d < 0 {
			return 0, fmt.Errorf("%q is not a duration (examples: 30d, 1d12h, 36h, 90m)", s)
		}
	}
	if d += days; d <= 0 {
		return 0, fmt.Errorf("%q: must be positive", s)
	}
	return d, nil
}

// pruneRepository is `pitr prune`, also run by the agent after each backup:
// take the prune lock, plan, print the plan, delete. A dry run takes no lock
// and deletes nothing.
func pruneRepository(ctx context.Context, env *environment, st storage.Store, policy pitr.RetentionPolicy, dryRun bool) (pitr.PruneResult, error) {
	m, err := repo.ReadMarker(ctx, st)
	if err != nil {
		return pitr.PruneResult{}, err
	}
	work, repoNow := ctx, time.Time{}
	if !dryRun {
		lock, err := pitr.AcquireLock(ctx, st, pitr.LockOptions{Purpose: "prune", Log: env.log})
		if err != nil {
			return pitr.PruneResult{}, fmt.Errorf("prune: %w", err)
		}
		held, release := lock.Hold(ctx)
		defer release()
		work = held
		if lock.TookOver != nil {
			env.log.Warn("took over the lock of a prune that did not finish", "host", lock.TookOver.Host, "pid", lock.TookOver.PID,
				"expired_at", lock.TookOver.ExpiresAt)
		}
		// The lock object was just written: its modification time is the
		// repository's clock, which incomplete backups are judged by.
		if info, err := st.Stat(work, pitr.PruneLockKey); err == nil {
			repoNow = info.ModTime
		}
	}
	in, err := pitr.LoadPruneInputs(work, st, m.SystemIdentifier)
	if err != nil {
		return pitr.PruneResult{}, lockCause(work, err)
	}
	in.RepoNow = repoNow
	plan, err := pitr.PlanPrune(in, policy, time.Now())
	if err != nil {
		return pitr.PruneResult{}, err
	}
	plan.Describe(env.stdout, dryRun)
	if !dryRun {
		// Temp files of uploads killed mid-way (fs repositories) are never
		// listed, so nothing else would remove them. Idle as long as an
		// incomplete backup must be before it counts as dead.
		after := policy.IncompleteAfter
		if after == 0 {
			after = pitr.DefaultIncompleteAfter
		}
		if n, err := storage.SweepTemp(work, st, after); err != nil {
			env.log.Warn("could not remove stale temporary files", "err", err)
		} else if n > 0 {
			env.log.Info("removed temporary files of uploads that never finished", "files", n)
		}
	}
	if dryRun || plan.Empty() {
		return pitr.PruneResult{}, nil
	}
	start := time.Now()
	res, err := pitr.ExecutePrune(work, st, plan, env.log)
	fmt.Fprintf(env.stdout, "Deleted %d %s, %d incomplete, %d WAL files: %s\n",
		res.Backups, plural(res.Backups, "backup", "backups"), res.Leftovers, res.WAL, units.Bytes(res.DeletedBytes))
	if res.Locked > 0 {
		// Not a failure: retention (S3 Object Lock) is doing its job.
		fmt.Fprintf(env.stdout, "Skipped %d %s under retention (object lock); a prune after it ends removes them\n",
			res.Locked, plural(res.Locked, "object", "objects"))
	}
	if err != nil {
		return res, err
	}
	env.log.Info("prune complete", "backups", res.Backups, "incomplete", res.Leftovers, "wal_files", res.WAL, "locked", res.Locked,
		"stored", res.DeletedBytes, "kept", len(plan.Keep), "duration", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// lockCause reports a lost lock rather than the "context canceled" it
// caused further down.
func lockCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && errors.Is(cause, pitr.ErrLockLost) {
		return fmt.Errorf("prune stopped: %w", cause)
	}
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
