package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/crypt"
)

// agentRetryInterval is how soon a failed backup is tried again (never later
// than the next scheduled run): a weekly schedule must not turn one failure
// into a two-week-old newest backup, and hourly ERROR lines keep it visible.
const agentRetryInterval = time.Hour

func runAgent(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "agent", "agent [flags]   (backups on a schedule, each followed by prune; runs in the foreground)")
	load := configFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: agent takes no arguments (got %q)", errUsage, pos[0])
	}
	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	// Everything that can be wrong in the configuration is reported now,
	// not at the first scheduled run days later.
	sched, err := parseSchedule(cfg.Schedule, time.Local)
	if err != nil {
		return err
	}
	if _, err := backupOptions(cfg, st); err != nil {
		return err
	}
	a := &agent{
		sched: sched,
		clock: wallClock{},
		log:   env.log,
		backup: func(ctx context.Context) error {
			_, err := takeBackup(ctx, env, cfg, st, "")
			return err
		},
	}
	policy, err := retentionPolicy(cfg)
	switch {
	case errors.Is(err, pitr.ErrNoRetentionPolicy):
		env.log.Warn("no retention policy (keep, keep_within): backups are not pruned and the repository grows without bound")
	case err != nil:
		return err
	default:
		a.prune = func(ctx context.Context) error {
			_, err := pruneRepository(ctx, env, st, policy, false)
			return err
		}
	}
	a.lastSuccess = newestBackupStart(ctx, env.log, st)
	if err := setupAgentExtras(ctx, env, cfg, st, a); err != nil {
		return err
	}
	if err := setupAgentDumps(ctx, env, cfg, st, a); err != nil {
		return err
	}
	if !cfg.Stream {
		return a.run(ctx)
	}
	s, err := newStreamer(env, cfg, st)
	if err != nil {
		return err
	}
	streamDone := make(chan error, 1)
	go func() {
		err := s.Run(ctx)
		if err != nil {
			env.log.Error("WAL streaming stopped; the agent goes on without it", "err", err)
		}
		streamDone <- err
	}()
	err = a.run(ctx)
	// The streamer's final .partial upload finishes before the agent exits.
	<-streamDone
	return err
}

// newestBackupStart anchors an interval schedule on the repository, so a
// restarted agent neither backs up again at once nor waits a whole interval.
func newestBackupStart(ctx context.Context, log *slog.Logger, st storage.Store) time.Time {
	m, err := repo.ReadMarker(ctx, st)
	if err != nil {
		if !errors.Is(err, repo.ErrNoRepository) {
			log.Warn("could not read the repository; scheduling as if there were no backup", "err", err)
		}
		return time.Time{}
	}
	backups, err := basebackup.List(ctx, st, m.SystemIdentifier)
	if errors.Is(err, crypt.ErrNoIdentity) {
		return newestBackupWritten(ctx, log, st, m.SystemIdentifier)
	}
	if err != nil {
		log.Warn("could not list backups; scheduling as if there were no backup", "err", err)
		return time.Time{}
	}
	var newest time.Time
	for _, b := range backups {
		if b.StartTime.After(newest) {
			newest = b.StartTime
		}
	}
	return newest
}

// newestBackupWritten serves a database host that holds only public keys
// and so cannot read backup.json: when the newest one was written (its
// backup's end) anchors the schedule nearly as well as its start.
func newestBackupWritten(ctx context.Context, log *slog.Logger, st storage.Store, id repo.SystemID) time.Time {
	objs, err := st.List(ctx, repo.BackupPrefix(id))
	if err != nil {
		log.Warn("could not list backups; scheduling as if there were no backup", "err", err)
		return time.Time{}
	}
	var newest time.Time
	for _, o := range objs {
		if strings.HasSuffix(o.Key, "/"+repo.BackupMetadataName) && o.ModTime.After(newest) {
			newest = o.ModTime
		}
	}
	return newest
}

// agentClock is the agent's view of time, replaced in tests.
type agentClock interface {
	Now() time.Time
	// SleepUntil returns when the wall clock reaches t, or ctx's error.
	SleepUntil(ctx context.Context, t time.Time) error
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// SleepUntil naps at most a minute at a time and rereads the wall clock, so
// a suspended machine or a clock step does not shift a run by the same amount.
func (wallClock) SleepUntil(ctx context.Context, t time.Time) error {
	for {
		d := time.Until(t.Round(0))
		if d <= 0 {
			return nil
		}
		timer := time.NewTimer(min(d, time.Minute))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// agent runs backups on a schedule, each successful one followed by prune.
type agent struct {
	sched       schedule
	clock       agentClock
	log         *slog.Logger
	backup      func(ctx context.Context) error
	prune       func(ctx context.Context) error // nil: no retention policy
	lastSuccess time.Time                       // start of the last successful backup
	retry       time.Duration                   // 0: agentRetryInterval

	// Scheduled drills; drill nil disables them. drill reports whether the
	// drill passed and, if not, why.
	drillSched schedule
	drill      func(ctx context.Context) (ok bool, detail string, err error)
	lastDrill  time.Time // start of the last passed drill
	// notify, if set, hears about every run: webhook, dead man's switch,
	// metrics.
	notify func(ctx context.Context, ev agentEvent)

	// Scheduled logical dumps (agent_dumps.go); none by default.
	dumps []*dumpJob
	dump  func(ctx context.Context, j *dumpJob) error
}

// agentEvent is the outcome of one scheduled run.
type agentEvent struct {
	Job      string // backup, prune or drill
	OK       bool
	Detail   string // the error or the failed checks
	Start    time.Time
	Duration time.Duration
}

func (a *agent) emit(ctx context.Context, ev agentEvent) {
	if a.notify != nil {
		a.notify(ctx, ev)
	}
}

// agentDrillRetryInterval is how soon a failed drill runs again: its
// failure has been reported, and a corrupt backup does not heal in an hour.
const agentDrillRetryInterval = 24 * time.Hour

// runDrill runs one scheduled drill and returns when the next is due.
func (a *agent) runDrill(ctx context.Context) time.Time {
	start := a.clock.Now()
	a.log.Info("scheduled drill starting")
	ok, detail, err := a.drill(ctx)
	took := a.clock.Now().Sub(start).Round(time.Millisecond)
	if ctx.Err() != nil {
		a.log.Info("scheduled drill interrupted by shutdown", "duration", took)
		return time.Time{}
	}
	if err == nil && ok {
		a.lastDrill = start
		a.log.Info("scheduled drill passed", "duration", took)
		a.emit(ctx, agentEvent{Job: "drill", OK: true, Detail: detail, Start: start, Duration: took})
		return a.due(a.drillSched.next(a.lastDrill, a.clock.Now()))
	}
	if err != nil {
		detail = err.Error()
	}
	now := a.clock.Now()
	next := now.Add(agentDrillRetryInterval)
	if n := a.drillSched.next(a.lastDrill, now); n.After(now) && n.Before(next) {
		next = n
	}
	a.log.Error("scheduled drill failed", "reason", detail, "duration", took, "next_drill", next)
	a.emit(ctx, agentEvent{Job: "drill", Detail: detail, Start: start, Duration: took})
	return next
}

// run loops until ctx is cancelled (SIGTERM, SIGINT), which is a clean
// shutdown: a backup in progress is cancelled by the same ctx, which stops
// pg_basebackup and leaves no metadata, so nothing half-written looks
// complete. Failures are logged here, at the edge, and retried.
func (a *agent) run(ctx context.Context) error {
	retry := a.retry
	if retry <= 0 {
		retry = agentRetryInterval
	}
	next := a.due(a.sched.next(a.lastSuccess, a.clock.Now()))
	a.log.Info("agent started", "schedule", a.sched.String(), "prune", a.prune != nil, "next_run", next)
	// Every way out is a shutdown; say so once, whatever was running.
	defer a.log.Info("agent stopped")
	var nextDrill time.Time
	if a.drill != nil {
		nextDrill = a.due(a.drillSched.next(a.lastDrill, a.clock.Now()))
		a.log.Info("scheduled drills", "schedule", a.drillSched.String(), "next_drill", nextDrill)
	}
	for _, j := range a.dumps {
		j.next = a.due(j.sched.next(j.last, a.clock.Now()))
		a.log.Info("scheduled dumps", "of", j.String(), "schedule", strings.Replace(j.sched.String(), "backup", "dump", 1), "next_dump", j.next)
	}
	for {
		if j := a.dueDump(next, nextDrill); j != nil {
			if err := a.clock.SleepUntil(ctx, j.next); err != nil {
				return nil
			}
			if a.runDumpJob(ctx, j); ctx.Err() != nil {
				return nil
			}
			continue
		}
		// A backup due at the same time goes first: the drill restores it.
		if a.drill != nil && nextDrill.Before(next) {
			if err := a.clock.SleepUntil(ctx, nextDrill); err != nil {
				return nil
			}
			if nextDrill = a.runDrill(ctx); ctx.Err() != nil {
				return nil
			}
			continue
		}
		if err := a.clock.SleepUntil(ctx, next); err != nil {
			return nil
		}
		start := a.clock.Now()
		a.log.Info("scheduled backup starting")
		err := a.backup(ctx)
		took := a.clock.Now().Sub(start).Round(time.Millisecond)
		if ctx.Err() != nil {
			a.log.Info("scheduled backup interrupted by shutdown; it was not completed and will not be listed", "duration", took, "err", err)
			return nil
		}
		if err != nil {
			now := a.clock.Now()
			next = now.Add(retry)
			if n := a.sched.next(a.lastSuccess, now); n.After(now) && n.Before(next) {
				next = n
			}
			a.log.Error("scheduled backup failed", "err", err, "duration", took, "next_run", next)
			a.emit(ctx, agentEvent{Job: "backup", Detail: err.Error(), Start: start, Duration: took})
			continue
		}
		a.lastSuccess = start
		a.log.Info("scheduled backup succeeded", "duration", took)
		a.emit(ctx, agentEvent{Job: "backup", OK: true, Start: start, Duration: took})
		if a.prune != nil {
			pstart := a.clock.Now()
			err := a.prune(ctx)
			ptook := a.clock.Now().Sub(pstart).Round(time.Millisecond)
			switch {
			case ctx.Err() != nil:
				a.log.Info("prune interrupted by shutdown", "duration", ptook, "err", err)
				return nil
			case err != nil:
				// The next successful backup prunes again; retrying
				// sooner would not fix a configuration problem.
				a.log.Error("prune after backup failed", "err", err, "duration", ptook)
				a.emit(ctx, agentEvent{Job: "prune", Detail: err.Error(), Start: pstart, Duration: ptook})
			default:
				a.log.Info("prune after backup succeeded", "duration", ptook)
				a.emit(ctx, agentEvent{Job: "prune", OK: true, Start: pstart, Duration: ptook})
			}
		}
		next = a.due(a.sched.next(a.lastSuccess, a.clock.Now()))
		a.log.Info("next scheduled backup", "next_run", next)
	}
}

// due turns "already past" into "now", for logging a real time.
func (a *agent) due(t time.Time) time.Time {
	if now := a.clock.Now(); t.Before(now) {
		return now
	}
	return t
}
