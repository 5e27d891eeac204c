package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/dump"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// dumpJob is one dump schedule of the agent: every database except those
// with their own schedule (dbs empty), or one database.
type dumpJob struct {
	db      string   // "" for the all-databases job
	exclude []string // the all-databases job leaves these to their own jobs
	sched   schedule
	last    time.Time // start of the last successful dump of this job's databases
	next    time.Time
}

func (j *dumpJob) String() string {
	if j.db == "" {
		return "all databases"
	}
	return "database " + j.db
}

// parseDumpSchedules reads dump_schedule (every database; default off) and
// dump_schedule_db ("db=spec; db2=spec": ';' separates entries because cron
// fields use commas). A database set to off is not dumped on a schedule.
func parseDumpSchedules(all, perDB string, loc *time.Location) ([]*dumpJob, error) {
	var jobs []*dumpJob
	var overridden []string
	for _, entry := range strings.Split(perDB, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		db, spec, ok := strings.Cut(entry, "=")
		db, spec = strings.TrimSpace(db), strings.TrimSpace(spec)
		if !ok || db == "" || spec == "" {
			return nil, fmt.Errorf("dump_schedule_db: %q is not db=schedule (entries separated by ';')", entry)
		}
		if slices.Contains(overridden, db) {
			return nil, fmt.Errorf("dump_schedule_db: database %s is listed twice", db)
		}
		overridden = append(overridden, db)
		if strings.EqualFold(spec, "off") {
			continue
		}
		s, err := parseSchedule(spec, loc)
		if err != nil {
			return nil, fmt.Errorf("dump_schedule_db %s: %w", db, err)
		}
		jobs = append(jobs, &dumpJob{db: db, sched: s})
	}
	all = strings.TrimSpace(all)
	if all != "" && !strings.EqualFold(all, "off") {
		s, err := parseSchedule(all, loc)
		if err != nil {
			return nil, fmt.Errorf("dump_schedule: %w", err)
		}
		jobs = append([]*dumpJob{{sched: s, exclude: overridden}}, jobs...)
	}
	return jobs, nil
}

// anchorDumpJobs sets each job's last success from the repository: the
// newest run holding the job's database (or, for the all-databases job,
// any database it covers), so a restarted agent neither dumps again at once
// nor waits a whole interval.
func anchorDumpJobs(ctx context.Context, log *slog.Logger, st storage.Store, jobs []*dumpJob) {
	m, err := repo.ReadMarker(ctx, st)
	if err != nil {
		if !errors.Is(err, repo.ErrNoRepository) {
			log.Warn("could not read the repository; scheduling dumps as if there were none", "err", err)
		}
		return
	}
	var written []dump.Written
	runs, err := dump.List(ctx, st, m.SystemIdentifier)
	if err == nil {
		for _, r := range runs {
			w := dump.Written{Name: r.Name, At: r.StartTime}
			for _, d := range r.Databases {
				w.Databases = append(w.Databases, d.Name)
			}
			written = append(written, w)
		}
	} else {
		// A database host of an encrypted repository holds only the
		// public key and cannot read dump.json; the listing still says
		// which databases each run holds and when it completed.
		log.Info("cannot read dump metadata; scheduling dumps by when each was written", "err", err)
		if written, err = dump.ListWritten(ctx, st, m.SystemIdentifier); err != nil {
			log.Warn("could not list dumps; scheduling dumps as if there were none", "err", err)
			return
		}
	}
	for _, j := range jobs {
		for _, w := range written {
			for _, db := range w.Databases {
				covered := db == j.db || j.db == "" && !slices.Contains(j.exclude, db)
				if covered && w.At.After(j.last) {
					j.last = w.At
				}
			}
		}
	}
}

// setupAgentDumps configures the agent's dump jobs (none by default).
func setupAgentDumps(ctx context.Context, env *environment, cfg Config, st storage.Store, a *agent) error {
	jobs, err := parseDumpSchedules(cfg.DumpSchedule, cfg.DumpScheduleDB, time.Local)
	if err != nil {
		return err
	}
	if len(jobs) == 0 {
		return nil
	}
	if _, err := codecOptions(cfg); err != nil {
		return err
	}
	anchorDumpJobs(ctx, env.log, st, jobs)
	a.dumps = jobs
	a.dump = func(ctx context.Context, j *dumpJob) error {
		var dbs []string
		if j.db != "" {
			dbs = []string{j.db}
		}
		copts, err := codecOptions(cfg)
		if err != nil {
			return err
		}
		copts.Concurrency = backupCodecConcurrency
		_, err = dump.Take(ctx, dump.Options{Store: st, Codec: copts, DSN: cfg.DSN, PGBin: cfg.PGBin,
			Databases: dbs, Exclude: j.exclude, PitrVersion: version, Log: env.log})
		if err != nil {
			return err
		}
		// Dump retention runs after each successful dump, as prune does
		// after each backup.
		if err := pruneDumpsIfConfigured(ctx, env, cfg, st, false); err != nil {
			env.log.Error("dump prune failed", "err", err)
		}
		return nil
	}
	return nil
}

// dueDump returns the dump job that runs before the next backup (and the
// next drill, if drills are on), or nil: backups and drills win ties.
func (a *agent) dueDump(nextBackup, nextDrill time.Time) *dumpJob {
	var best *dumpJob
	for _, j := range a.dumps {
		if !j.next.Before(nextBackup) || a.drill != nil && !j.next.Before(nextDrill) {
			continue
		}
		if best == nil || j.next.Before(best.next) {
			best = j
		}
	}
	return best
}

// runDumpJob runs one scheduled dump and sets when the job runs next: on
// failure an hour later (or at its next scheduled time, if sooner).
func (a *agent) runDumpJob(ctx context.Context, j *dumpJob) {
	start := a.clock.Now()
	a.log.Info("scheduled dump starting", "of", j.String())
	err := a.dump(ctx, j)
	took := a.clock.Now().Sub(start).Round(time.Millisecond)
	if ctx.Err() != nil {
		a.log.Info("scheduled dump interrupted by shutdown; it was not completed and will not be listed", "of", j.String(), "duration", took)
		return
	}
	if err != nil {
		now := a.clock.Now()
		j.next = now.Add(agentRetryInterval)
		if n := j.sched.next(j.last, now); n.After(now) && n.Before(j.next) {
			j.next = n
		}
		a.log.Error("scheduled dump failed", "of", j.String(), "err", err, "duration", took, "next_dump", j.next)
		a.emit(ctx, agentEvent{Job: "dump", Detail: err.Error(), Start: start, Duration: took})
		return
	}
	j.last = start
	j.next = a.due(j.sched.next(j.last, a.clock.Now()))
	a.log.Info("scheduled dump succeeded", "of", j.String(), "duration", took, "next_dump", j.next)
	a.emit(ctx, agentEvent{Job: "dump", OK: true, Start: start, Duration: took})
}

// agentDumpDrill makes the agent's drills cover dumps when it takes them.
func agentDumpDrill(env *environment, cfg Config, st storage.Store) func(ctx context.Context, dsn, pgBin string) []pitr.CheckResult {
	if jobs, err := parseDumpSchedules(cfg.DumpSchedule, cfg.DumpScheduleDB, time.Local); err != nil || len(jobs) == 0 {
		return nil
	}
	return dumpDrillChecks(env, st)
}
