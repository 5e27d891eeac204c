package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// agentFakeClock jumps to whatever time the agent sleeps until, and lets
// runners spend time.
type agentFakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Time
	// stop, if set and true, makes the next sleep end like a shutdown.
	stop func() bool
}

func (c *agentFakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *agentFakeClock) SleepUntil(ctx context.Context, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.stop != nil && c.stop() {
		return context.Canceled
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, t)
	if t.After(c.now) {
		c.now = t
	}
	return nil
}

func (c *agentFakeClock) spend(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// agentHarness runs an agent whose backup runner follows a script of
// outcomes (nil: success); the agent is shut down when it next waits after
// the last one.
type agentHarness struct {
	clock   *agentFakeClock
	logs    bytes.Buffer
	backups []time.Time // start time of every backup run
	prunes  []time.Time
}

func (h *agentHarness) run(t *testing.T, sched schedule, last time.Time, outcomes []error, pruneErr error, withPrune bool) error {
	t.Helper()
	h.clock.stop = func() bool { return len(h.backups) == len(outcomes) }
	a := &agent{
		sched: sched, clock: h.clock, lastSuccess: last,
		log: slog.New(slog.NewTextHandler(&h.logs, nil)),
		backup: func(ctx context.Context) error {
			h.backups = append(h.backups, h.clock.Now())
			h.clock.spend(10 * time.Minute)
			return outcomes[len(h.backups)-1]
		},
	}
	if withPrune {
		a.prune = func(context.Context) error {
			h.prunes = append(h.prunes, h.clock.Now())
			h.clock.spend(time.Minute)
			return pruneErr
		}
	}
	done := make(chan error, 1)
	go func() { done <- a.run(context.Background()) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop")
		return nil
	}
}

var agentT0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC) // a Friday

func TestAgentIntervalAnchoredOnLastBackup(t *testing.T) {
	h := &agentHarness{clock: &agentFakeClock{now: agentT0}}
	week := 7 * 24 * time.Hour
	last := agentT0.Add(-2 * 24 * time.Hour)
	if err := h.run(t, intervalSchedule{every: week}, last, []error{nil, nil, nil}, nil, true); err != nil {
		t.Fatal(err)
	}
	// A restart two days after the last backup waits the remaining five;
	// then one run a week, each measured from the previous run's start.
	want := []time.Time{last.Add(week), last.Add(2 * week), last.Add(3 * week)}
	if !equalTimes(h.backups, want) {
		t.Fatalf("backups at %v, want %v", h.backups, want)
	}
	if len(h.prunes) != 3 || !h.prunes[0].Equal(want[0].Add(10*time.Minute)) {
		t.Fatalf("prunes at %v, want one after each backup", h.prunes)
	}
	logs := h.logs.String()
	for _, s := range []string{"agent started", "next_run=" + want[0].Format("2006-01-02T15:04:05"), "scheduled backup starting",
		"scheduled backup succeeded", "duration=10m0s", "prune after backup succeeded", "next scheduled backup", "agent stopped"} {
		if !strings.Contains(logs, s) {
			t.Errorf("log lacks %q:\n%s", s, logs)
		}
	}
}

func TestAgentFirstBackupRunsAtOnce(t *testing.T) {
	h := &agentHarness{clock: &agentFakeClock{now: agentT0}}
	if err := h.run(t, intervalSchedule{every: 24 * time.Hour}, time.Time{}, []error{nil}, nil, true); err != nil {
		t.Fatal(err)
	}
	if len(h.backups) != 1 || !h.backups[0].Equal(agentT0) {
		t.Fatalf("backups at %v, want one at once", h.backups)
	}
}

// A failed backup is logged at ERROR, retried an hour later, and prune runs
// only after success; the schedule then continues from the success.
func TestAgentRetriesFailedBackup(t *testing.T) {
	h := &agentHarness{clock: &agentFakeClock{now: agentT0}}
	week := 7 * 24 * time.Hour
	boom := errors.New("pg_basebackup: connection refused")
	if err := h.run(t, intervalSchedule{every: week}, time.Time{}, []error{boom, boom, nil, nil}, nil, true); err != nil {
		t.Fatal(err)
	}
	retry1 := agentT0.Add(10 * time.Minute).Add(time.Hour)
	retry2 := retry1.Add(10 * time.Minute).Add(time.Hour)
	want := []time.Time{agentT0, retry1, retry2, retry2.Add(week)}
	if !equalTimes(h.backups, want) {
		t.Fatalf("backups at %v, want %v", h.backups, want)
	}
	if len(h.prunes) != 2 {
		t.Fatalf("%d prunes, want 2 (after each success only)", len(h.prunes))
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "level=ERROR msg=\"scheduled backup failed\"") || !strings.Contains(logs, "connection refused") {
		t.Errorf("failure not logged at ERROR with its cause:\n%s", logs)
	}
}

// With cron, a retry never lands after the next regular run.
func TestAgentCronRetryBeforeNextRun(t *testing.T) {
	sched, err := parseSchedule("*/30 * * * *", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	h := &agentHarness{clock: &agentFakeClock{now: agentT0}}
	boom := errors.New("boom")
	if err := h.run(t, sched, time.Time{}, []error{boom, nil}, nil, false); err != nil {
		t.Fatal(err)
	}
	want := []time.Time{agentT0.Add(30 * time.Minute), agentT0.Add(60 * time.Minute)}
	if !equalTimes(h.backups, want) {
		t.Fatalf("backups at %v, want %v", h.backups, want)
	}
}

func TestAgentPruneFailureKeepsSchedule(t *testing.T) {
	h := &agentHarness{clock: &agentFakeClock{now: agentT0}}
	day := 24 * time.Hour
	if err := h.run(t, intervalSchedule{every: day}, time.Time{}, []error{nil, nil}, errors.New("prune: repository is locked"), true); err != nil {
		t.Fatal(err)
	}
	if want := []time.Time{agentT0, agentT0.Add(day)}; !equalTimes(h.backups, want) {
		t.Fatalf("backups at %v, want %v", h.backups, want)
	}
	if !strings.Contains(h.logs.String(), "level=ERROR msg=\"prune after backup failed\"") {
		t.Errorf("prune failure not logged at ERROR:\n%s", h.logs.String())
	}
}

func TestAgentWithoutPolicyDoesNotPrune(t *testing.T) {
	h := &agentHarness{clock: &agentFakeClock{now: agentT0}}
	if err := h.run(t, intervalSchedule{every: time.Hour}, time.Time{}, []error{nil, nil}, nil, false); err != nil {
		t.Fatal(err)
	}
	if len(h.backups) != 2 || len(h.prunes) != 0 {
		t.Fatalf("%d backups, %d prunes", len(h.backups), len(h.prunes))
	}
}

// SIGTERM during a backup: the backup sees the cancelled context (and
// pg_basebackup is stopped by it); the agent exits cleanly, without pruning.
func TestAgentShutdownDuringBackup(t *testing.T) {
	clock := &agentFakeClock{now: agentT0}
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	pruned := false
	a := &agent{
		sched: intervalSchedule{every: time.Hour}, clock: clock, log: slog.New(slog.NewTextHandler(&logs, nil)),
		backup: func(ctx context.Context) error {
			cancel() // the signal arrives mid-backup
			<-ctx.Done()
			return errors.New("backup 20260501T120000Z: pg_basebackup: signal: terminated")
		},
		prune: func(context.Context) error { pruned = true; return nil },
	}
	if err := a.run(ctx); err != nil {
		t.Fatalf("run: %v, want a clean exit", err)
	}
	if pruned {
		t.Fatal("pruned after an interrupted backup")
	}
	if !strings.Contains(logs.String(), "interrupted by shutdown") || strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

// SIGTERM while waiting: the agent returns at once.
func TestAgentShutdownWhileWaiting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{
		sched: intervalSchedule{every: time.Hour}, clock: wallClock{}, log: slog.New(slog.DiscardHandler),
		lastSuccess: time.Now(), // next run in an hour
		backup:      func(context.Context) error { t.Error("backup ran"); return nil },
	}
	done := make(chan error, 1)
	go func() { done <- a.run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not stop while waiting")
	}
}

func TestWallClockSleepUntil(t *testing.T) {
	start := time.Now()
	if err := (wallClock{}).SleepUntil(context.Background(), start.Add(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("woke after %v", d)
	}
	if err := (wallClock{}).SleepUntil(context.Background(), start.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// SIGTERM during a scheduled drill: a clean exit that says so, like any
// other shutdown (it used to end silently).
func TestAgentShutdownDuringDrill(t *testing.T) {
	clock := &agentFakeClock{now: agentT0}
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	a := &agent{
		sched: intervalSchedule{every: 7 * 24 * time.Hour}, clock: clock, log: slog.New(slog.NewTextHandler(&logs, nil)),
		lastSuccess: agentT0, // no backup due now: the drill comes first
		backup:      func(context.Context) error { t.Error("backup ran"); return nil },
		drillSched:  intervalSchedule{every: 30 * 24 * time.Hour},
		drill: func(ctx context.Context) (bool, string, error) {
			cancel()
			<-ctx.Done()
			return false, "", ctx.Err()
		},
	}
	if err := a.run(ctx); err != nil {
		t.Fatalf("run: %v, want a clean exit", err)
	}
	out := logs.String()
	if !strings.Contains(out, "scheduled drill interrupted by shutdown") || !strings.Contains(out, "agent stopped") || strings.Contains(out, "level=ERROR") {
		t.Fatalf("logs:\n%s", out)
	}
}
