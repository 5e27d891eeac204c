package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// hookRecorder is a local HTTP listener standing in for Slack and a dead
// man's switch.
type hookRecorder struct {
	mu    sync.Mutex
	posts []notification
	pings int
}

func (h *hookRecorder) serve(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		switch r.URL.Path {
		case "/hook":
			var n notification
			if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&n) != nil {
				t.Errorf("webhook: bad request %s %s", r.Method, r.Header.Get("Content-Type"))
			}
			h.posts = append(h.posts, n)
		case "/ping":
			h.pings++
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A failed scheduled backup is posted to the webhook with its reason; the
// successful retry pings the dead man's switch (and, without
// notify_success, is not posted); the metrics count both.
func TestAgentWebhookOnFailedBackup(t *testing.T) {
	var h hookRecorder
	srv := h.serve(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	m := newAgentMetrics()
	n := newNotifier(Config{NotifyURL: srv.URL + "/hook", DeadmanURL: srv.URL + "/ping", Repo: "file:///var/lib/pitr"}, log, m)
	clock := &agentFakeClock{now: agentT0}
	outcomes := []error{errors.New("pg_basebackup: could not connect"), nil}
	runs := 0
	clock.stop = func() bool { return runs == len(outcomes) }
	a := &agent{sched: intervalSchedule{every: 7 * 24 * time.Hour}, clock: clock, log: log, notify: n.handle,
		backup: func(context.Context) error { runs++; clock.spend(time.Minute); return outcomes[runs-1] }}
	if err := a.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.posts) != 1 || h.posts[0].OK || h.posts[0].Job != "backup" ||
		!strings.Contains(h.posts[0].Text, "scheduled backup FAILED") || !strings.Contains(h.posts[0].Text, "could not connect") {
		t.Fatalf("webhook posts: %+v", h.posts)
	}
	if h.pings != 1 {
		t.Fatalf("dead man's switch pinged %d times, want 1 (after the success)", h.pings)
	}
	if strings.Contains(logs.String(), srv.URL) {
		t.Fatalf("a webhook URL was logged:\n%s", logs.String())
	}
	body := scrape(t, m)
	for _, want := range []string{`pitr_agent_runs_total{job="backup",result="failure"} 1`, `pitr_agent_runs_total{job="backup",result="success"} 1`, `pitr_agent_last_run_success{job="backup"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// A webhook that is down is logged, and the agent carries on.
func TestAgentWebhookDown(t *testing.T) {
	var logs bytes.Buffer
	n := newNotifier(Config{NotifyURL: "http://127.0.0.1:1/hook", NotifySuccess: true}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	n.handle(context.Background(), agentEvent{Job: "backup", OK: true})
	if !strings.Contains(logs.String(), "notification webhook failed") || strings.Contains(logs.String(), "127.0.0.1:1/hook") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

// Drills run on their own schedule, after a backup due at the same time;
// a failed one is notified and retried a day later.
func TestAgentScheduledDrills(t *testing.T) {
	var h hookRecorder
	srv := h.serve(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clock := &agentFakeClock{now: agentT0}
	var backups, drills []time.Time
	drillOK := []bool{true, false, true}
	clock.stop = func() bool { return len(drills) == len(drillOK) }
	a := &agent{sched: intervalSchedule{every: 7 * 24 * time.Hour}, clock: clock, log: log,
		notify: newNotifier(Config{NotifyURL: srv.URL + "/hook"}, log, nil).handle,
		backup: func(context.Context) error {
			backups = append(backups, clock.Now())
			clock.spend(10 * time.Minute)
			return nil
		},
		drillSched: intervalSchedule{every: 30 * 24 * time.Hour},
		drill: func(context.Context) (bool, string, error) {
			drills = append(drills, clock.Now())
			clock.spend(20 * time.Minute)
			ok := drillOK[len(drills)-1]
			if !ok {
				return false, "plan: WAL segment 000000010000000000000012 is missing", nil
			}
			return true, "", nil
		},
	}
	if err := a.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(backups) == 0 || drills[0].Before(backups[0].Add(10*time.Minute)) {
		t.Fatalf("first drill at %s, first backup at %s: the backup must go first", drills[0], backups[0])
	}
	if got := drills[1].Sub(drills[0]); got != 30*24*time.Hour {
		t.Errorf("second drill %s after the first, want 30d", got)
	}
	if got := drills[2].Sub(drills[1]); got != 24*time.Hour+20*time.Minute {
		t.Errorf("retry of a failed drill %s later, want a day after it ended", got)
	}
	if len(h.posts) != 1 || h.posts[0].Job != "drill" || !strings.Contains(h.posts[0].Text, "000000010000000000000012") {
		t.Fatalf("webhook posts: %+v", h.posts)
	}
}

func scrape(t *testing.T, m *agentMetrics) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := serveMetrics(ctx, "127.0.0.1:0", m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The metrics endpoint serves every documented metric, with the
// repository's state.
func TestMetricsEndpoint(t *testing.T) {
	isolate(t)
	_, st := pruneFixture(t)
	m := newAgentMetrics()
	if err := m.refresh(context.Background(), st, "host=/nonexistent port=1 connect_timeout=1"); err != nil {
		t.Fatal(err)
	}
	m.record(agentEvent{Job: "drill", OK: true, Start: agentT0, Duration: time.Minute})
	body := scrape(t, m)
	for _, name := range metricNames {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("metric %s is not served", name)
		}
	}
	for _, want := range []string{"pitr_backups 3", "pitr_wal_files 30", "pitr_wal_gaps 0", "pitr_server_up 0", `pitr_agent_last_run_success{job="drill"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
