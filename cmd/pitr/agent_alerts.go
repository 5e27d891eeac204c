package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// notifyTimeout bounds one webhook or dead man's switch request.
const notifyTimeout = 10 * time.Second

// notification is the JSON body sent to notify_url. "text" is what Slack
// (and Mattermost, Rocket.Chat, Teams' Slack-compatible hooks) display.
type notification struct {
	Text            string    `json:"text"`
	Job             string    `json:"job"`
	OK              bool      `json:"ok"`
	Detail          string    `json:"detail,omitempty"`
	Host            string    `json:"host"`
	Repository      string    `json:"repository"`
	Start           time.Time `json:"start"`
	DurationSeconds float64   `json:"duration_seconds"`
}

// notifier sends agent events to the webhook, pings the dead man's switch
// and feeds the metrics.
type notifier struct {
	webhook   string
	onSuccess bool
	deadman   string
	repo      string
	host      string
	client    *http.Client
	log       *slog.Logger
	metrics   *agentMetrics // nil: no metrics
}

func newNotifier(cfg Config, log *slog.Logger, m *agentMetrics) *notifier {
	host, _ := os.Hostname()
	return &notifier{webhook: cfg.NotifyURL, onSuccess: cfg.NotifySuccess, deadman: cfg.DeadmanURL, repo: cfg.Repo,
		host: host, client: &http.Client{Timeout: notifyTimeout}, log: log, metrics: m}
}

func (n *notifier) handle(ctx context.Context, ev agentEvent) {
	if n.metrics != nil {
		n.metrics.record(ev)
	}
	if n.webhook != "" && (!ev.OK || n.onSuccess) {
		verdict := "succeeded"
		if !ev.OK {
			verdict = "FAILED"
		}
		text := fmt.Sprintf("pitr on %s: scheduled %s %s (repository %s)", n.host, ev.Job, verdict, n.repo)
		if ev.Detail != "" {
			text += ": " + ev.Detail
		}
		body, _ := json.Marshal(notification{Text: text, Job: ev.Job, OK: ev.OK, Detail: ev.Detail, Host: n.host, Repository: n.repo,
			Start: ev.Start.UTC(), DurationSeconds: ev.Duration.Seconds()})
		if err := n.send(ctx, http.MethodPost, n.webhook, body); err != nil {
			n.log.Error("notification webhook failed", "err", err)
		}
	}
	// Dumps do not ping: hourly dumps would keep the switch quiet while
	// backups no longer run.
	if n.deadman != "" && ev.OK && (ev.Job == "backup" || ev.Job == "drill") {
		if err := n.send(ctx, http.MethodGet, n.deadman, nil); err != nil {
			n.log.Error("dead man's switch ping failed", "err", err)
		}
	}
}

// send makes one request. Errors never contain the URL: webhook URLs are
// credentials.
func (n *notifier) send(ctx context.Context, method, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return errors.New("the URL is not valid")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "pitr/"+version)
	resp, err := n.client.Do(req)
	if err != nil {
		var uerr interface{ Unwrap() error }
		if errors.As(err, &uerr) {
			err = uerr.Unwrap()
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return nil
}

// agentMetrics are the Prometheus metrics of the agent: its own runs, and
// the repository's and server's state, refreshed periodically.
type agentMetrics struct {
	reg *prometheus.Registry

	runs        *prometheus.CounterVec
	lastRun     *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	lastResult  *prometheus.GaugeVec
	lastDur     *prometheus.GaugeVec

	walNewest, walFiles, walBytes, walGaps        prometheus.Gauge
	backups, backupBytes, backupNewest            prometheus.Gauge
	windowStart, windowEnd                        prometheus.Gauge
	drillLast, drillOK                            prometheus.Gauge
	serverUp, archived, failed, pending, lagBytes prometheus.Gauge
	problems                                      prometheus.Gauge
	refreshErrors                                 prometheus.Counter
	refreshMu                                     sync.Mutex
}

// metricNames are the documented metrics (README); the test checks that
// every one is served.
var metricNames = []string{
	"pitr_agent_runs_total", "pitr_agent_last_run_timestamp_seconds", "pitr_agent_last_success_timestamp_seconds",
	"pitr_agent_last_run_success", "pitr_agent_last_run_duration_seconds",
	"pitr_wal_newest_archived_timestamp_seconds", "pitr_wal_files", "pitr_wal_stored_bytes", "pitr_wal_gaps",
	"pitr_backups", "pitr_backups_stored_bytes", "pitr_backup_newest_timestamp_seconds",
	"pitr_recovery_window_start_timestamp_seconds", "pitr_recovery_window_end_timestamp_seconds",
	"pitr_drill_last_timestamp_seconds", "pitr_drill_last_success",
	"pitr_server_up", "pitr_archiver_archived_count", "pitr_archiver_failed_count",
	"pitr_archive_pending_segments", "pitr_archive_lag_bytes",
	"pitr_status_problems", "pitr_metrics_refresh_errors_total",
}

func newAgentMetrics() *agentMetrics {
	m := &agentMetrics{reg: prometheus.NewRegistry()}
	job := []string{"job"}
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pitr_agent_runs_total", Help: "Scheduled runs by job (backup, prune, drill) and result (success, failure)."}, []string{"job", "result"})
	m.lastRun = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pitr_agent_last_run_timestamp_seconds", Help: "Start of the last scheduled run of each job."}, job)
	m.lastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pitr_agent_last_success_timestamp_seconds", Help: "Start of the last successful scheduled run of each job."}, job)
	m.lastResult = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pitr_agent_last_run_success", Help: "1 if the last scheduled run of the job succeeded, else 0."}, job)
	m.lastDur = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pitr_agent_last_run_duration_seconds", Help: "Duration of the last scheduled run of each job."}, job)
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m.walNewest = g("pitr_wal_newest_archived_timestamp_seconds", "When the newest archived WAL segment reached the repository.")
	m.walFiles = g("pitr_wal_files", "Archived WAL files in the repository.")
	m.walBytes = g("pitr_wal_stored_bytes", "Stored bytes of archived WAL.")
	m.walGaps = g("pitr_wal_gaps", "Missing WAL segments between a backup's start and the end of the archive.")
	m.backups = g("pitr_backups", "Completed base backups.")
	m.backupBytes = g("pitr_backups_stored_bytes", "Stored bytes of all base backups.")
	m.backupNewest = g("pitr_backup_newest_timestamp_seconds", "End of the newest base backup.")
	m.windowStart = g("pitr_recovery_window_start_timestamp_seconds", "Earliest restorable point (0: nothing restorable).")
	m.windowEnd = g("pitr_recovery_window_end_timestamp_seconds", "Archive time of the newest segment a restore can reach (0: nothing restorable).")
	m.drillLast = g("pitr_drill_last_timestamp_seconds", "Start of the last drill (0: never).")
	m.drillOK = g("pitr_drill_last_success", "1 if the last drill passed, else 0.")
	m.serverUp = g("pitr_server_up", "1 if the server answered the last refresh, else 0.")
	m.archived = g("pitr_archiver_archived_count", "pg_stat_archiver.archived_count: WAL files archive_command pushed.")
	m.failed = g("pitr_archiver_failed_count", "pg_stat_archiver.failed_count: failed archive_command runs.")
	m.pending = g("pitr_archive_pending_segments", "Completed WAL segments not yet in the repository.")
	m.lagBytes = g("pitr_archive_lag_bytes", "WAL written since the end of the newest archived segment.")
	m.problems = g("pitr_status_problems", "Problems pitr status reports with its default thresholds.")
	m.refreshErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "pitr_metrics_refresh_errors_total", Help: "Failed reads of the repository for these metrics."})
	m.reg.MustRegister(m.runs, m.lastRun, m.lastSuccess, m.lastResult, m.lastDur,
		m.walNewest, m.walFiles, m.walBytes, m.walGaps, m.backups, m.backupBytes, m.backupNewest, m.windowStart, m.windowEnd,
		m.drillLast, m.drillOK, m.serverUp, m.archived, m.failed, m.pending, m.lagBytes, m.problems, m.refreshErrors)
	for _, j := range []string{"backup", "prune", "drill"} {
		for _, r := range []string{"success", "failure"} {
			m.runs.WithLabelValues(j, r)
		}
	}
	return m
}

func (m *agentMetrics) record(ev agentEvent) {
	result, ok := "failure", 0.0
	if ev.OK {
		result, ok = "success", 1
		m.lastSuccess.WithLabelValues(ev.Job).Set(unix(ev.Start))
	}
	m.runs.WithLabelValues(ev.Job, result).Inc()
	m.lastRun.WithLabelValues(ev.Job).Set(unix(ev.Start))
	m.lastResult.WithLabelValues(ev.Job).Set(ok)
	m.lastDur.WithLabelValues(ev.Job).Set(ev.Duration.Seconds())
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// refresh reads the repository (and the server, when dsn reaches it) into
// the gauges, the way pitr status does.
func (m *agentMetrics) refresh(ctx context.Context, st storage.Store, dsn string) error {
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	err := m.refreshLocked(ctx, st, dsn)
	if err != nil {
		m.refreshErrors.Inc()
	}
	return err
}

func (m *agentMetrics) refreshLocked(ctx context.Context, st storage.Store, dsn string) error {
	marker, err := repo.ReadMarker(ctx, st)
	if err != nil {
		return err
	}
	in, err := pitr.LoadInputs(ctx, st, marker.SystemIdentifier)
	if err != nil {
		return err
	}
	last, err := pitr.LastDrill(ctx, st, marker.SystemIdentifier)
	if err != nil {
		return err
	}
	s := pitr.ComputeStatus(marker.SystemIdentifier, in, last, time.Now())
	s.Server = pitr.QueryServerStatus(ctx, dsn, s.NewestSegment)
	s.Evaluate(defaultThresholds)
	m.walNewest.Set(unix(s.NewestArchivedAt))
	m.walFiles.Set(float64(s.WALFiles))
	m.walBytes.Set(float64(s.WALStoredBytes))
	m.walGaps.Set(float64(len(s.Gaps)))
	m.backups.Set(float64(len(s.Backups)))
	var bytes int64
	var newest time.Time
	for _, b := range s.Backups {
		bytes += b.StoredSize
		if b.StopTime.After(newest) {
			newest = b.StopTime
		}
	}
	m.backupBytes.Set(float64(bytes))
	m.backupNewest.Set(unix(newest))
	if w := s.Window; w != nil {
		m.windowStart.Set(unix(w.Earliest))
		m.windowEnd.Set(unix(w.Latest))
	} else {
		m.windowStart.Set(0)
		m.windowEnd.Set(0)
	}
	if last != nil {
		m.drillLast.Set(unix(last.StartedAt))
		m.drillOK.Set(map[bool]float64{true: 1, false: 0}[last.OK])
	}
	srv := s.Server
	if srv.Reachable && srv.Error == "" {
		m.serverUp.Set(1)
		m.archived.Set(float64(srv.ArchivedCount))
		m.failed.Set(float64(srv.FailedCount))
		m.pending.Set(float64(srv.PendingSegments))
		m.lagBytes.Set(float64(srv.LagBytes))
	} else {
		m.serverUp.Set(0)
	}
	m.problems.Set(float64(len(s.Problems)))
	return nil
}

// defaultThresholds are pitr status's defaults, for pitr_status_problems.
var defaultThresholds = pitr.Thresholds{MaxArchiveLag: time.Hour, MaxBackupAge: 8 * 24 * time.Hour, MaxDrillAge: 35 * 24 * time.Hour}

// metricsRefreshInterval is how often the agent rereads the repository for
// its gauges (a listing of the WAL archive: cheap on a file system, one
// LIST per 1000 objects on S3).
const metricsRefreshInterval = time.Minute

// serveMetrics listens on addr (an error now, not at the first scrape) and
// serves /metrics until ctx ends.
func serveMetrics(ctx context.Context, addr string, m *agentMetrics, log *slog.Logger) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	log.Info("serving metrics", "address", l.Addr().String(), "path", "/metrics")
	return l.Addr(), nil
}

// refreshMetrics rereads the repository and server into m until ctx ends.
func refreshMetrics(ctx context.Context, m *agentMetrics, st storage.Store, dsn string, log *slog.Logger) {
	tick := time.NewTicker(metricsRefreshInterval)
	defer tick.Stop()
	for {
		if err := m.refresh(ctx, st, dsn); err != nil && ctx.Err() == nil {
			log.Warn("metrics: could not read the repository", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// defaultDrillSchedule is monthly: often enough that a broken backup chain
// is found within the retention window of most setups.
const defaultDrillSchedule = "30d"

// setupAgentExtras adds scheduled drills, notifications and metrics to the
// agent from the configuration, checking all of it now.
func setupAgentExtras(ctx context.Context, env *environment, cfg Config, st storage.Store, a *agent) error {
	var m *agentMetrics
	if cfg.MetricsAddress != "" {
		m = newAgentMetrics()
		if _, err := serveMetrics(ctx, cfg.MetricsAddress, m, env.log); err != nil {
			return err
		}
		go refreshMetrics(ctx, m, st, cfg.DSN, env.log)
	}
	n := newNotifier(cfg, env.log, m)
	a.notify = n.handle
	spec := cfg.DrillSchedule
	if spec == "off" {
		env.log.Info("scheduled drills are off (drill_schedule: off)")
		return nil
	}
	if spec == "" {
		spec = defaultDrillSchedule
	}
	sched, err := parseSchedule(spec, time.Local)
	if err != nil {
		return fmt.Errorf("drill_schedule: %w", err)
	}
	a.drillSched = sched
	a.drill = func(ctx context.Context) (bool, string, error) {
		rep, _, werr, err := drillOnce(ctx, env, cfg, st, pitr.Target{Kind: pitr.TargetLatest}, pitr.DrillOptions{ScratchParent: cfg.DrillScratch, Extra: agentDumpDrill(env, cfg, st)})
		if err != nil {
			return false, "", err
		}
		if werr != nil {
			env.log.Error("could not store the drill report", "err", werr)
		}
		var failed []string
		for _, c := range rep.Failures() {
			failed = append(failed, c.Name+": "+c.Detail)
		}
		return rep.OK, strings.Join(failed, "; "), nil
	}
	if m, err := repo.ReadMarker(ctx, st); err == nil {
		if last, err := pitr.LastDrill(ctx, st, m.SystemIdentifier); err == nil && last != nil && last.OK {
			a.lastDrill = last.StartedAt
		}
	}
	return nil
}
