package pitr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// DrillReportVersion is the version of the DrillReport JSON this pitr writes.
const DrillReportVersion = 1

// Check results.
const (
	CheckPass = "pass"
	CheckFail = "fail"
	CheckSkip = "skip"
)

// CheckResult is one verified property, with the evidence or the reason.
type CheckResult struct {
	Name   string `json:"name"`
	Result string `json:"result"` // pass, fail or skip
	Detail string `json:"detail,omitempty"`
}

// DrillReport is what a drill found. It is stored as plain JSON under
// repo.DrillKey; the field names are a stable schema.
type DrillReport struct {
	Version          int           `json:"report_version"`
	SystemIdentifier repo.SystemID `json:"system_identifier"`
	StartedAt        time.Time     `json:"started_at"`
	FinishedAt       time.Time     `json:"finished_at"`
	DurationSeconds  float64       `json:"duration_seconds"`
	Host             string        `json:"host,omitempty"`
	PitrVersion      string        `json:"pitr_version,omitempty"`
	Target           string        `json:"target"`
	Backup           string        `json:"backup,omitempty"`
	Timeline         uint32        `json:"timeline,omitempty"`
	// LastTransaction and RedoDone are the restored server's own words.
	LastTransaction string `json:"last_transaction,omitempty"`
	RedoDone        string `json:"redo_done,omitempty"`
	ReplayLSN       string `json:"replay_lsn,omitempty"`
	// Scratch is the kept scratch directory (--keep), else empty.
	Scratch string        `json:"scratch,omitempty"`
	OK      bool          `json:"ok"`
	Checks  []CheckResult `json:"checks"`
}

func (r *DrillReport) add(name, result, detail string) {
	r.Checks = append(r.Checks, CheckResult{Name: name, Result: result, Detail: detail})
}

func (r *DrillReport) pass(name, detail string) { r.add(name, CheckPass, detail) }
func (r *DrillReport) fail(name, detail string) { r.add(name, CheckFail, detail) }
func (r *DrillReport) skip(name, detail string) { r.add(name, CheckSkip, detail) }

// Failures returns the failed checks.
func (r *DrillReport) Failures() []CheckResult {
	var out []CheckResult
	for _, c := range r.Checks {
		if c.Result == CheckFail {
			out = append(out, c)
		}
	}
	return out
}

// Summary writes the report for a person: one line per check.
func (r *DrillReport) Summary(w io.Writer) {
	verdict := "PASSED"
	if !r.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "drill %s: target %s", verdict, r.Target)
	if r.Backup != "" {
		fmt.Fprintf(w, ", backup %s", r.Backup)
	}
	fmt.Fprintf(w, ", %.1fs\n", r.DurationSeconds)
	for _, c := range r.Checks {
		fmt.Fprintf(w, "  %-4s %-16s %s\n", c.Result, c.Name, c.Detail)
	}
}

// DrillOptions say where and how to run a drill.
type DrillOptions struct {
	// ScratchParent is where the scratch directory is created (default: the
	// system's temporary directory).
	ScratchParent string
	Keep          bool
	Port          int // 0: a free port
	// PGBin overrides /usr/lib/postgresql/<major>/bin.
	PGBin          string
	RestoreCommand string
	// RecoveryTimeout bounds the wait for recovery (0: no limit beyond ctx).
	RecoveryTimeout time.Duration
	// TableTimeout bounds the scan of one table (default 10 minutes).
	TableTimeout time.Duration
	// User is the role to connect as; default: $PGUSER, this OS user, postgres.
	User        string
	PitrVersion string
	Now         func() time.Time
	// Extra, if set, runs further checks on the promoted scratch server
	// (dsn reaches it as the drill's role; pgBin has the backup's major
	// version): pitr drill --dumps restores the logical dumps there.
	Extra func(ctx context.Context, dsn, pgBin string) []CheckResult
}

// drillSettings are appended to the scratch server's postgresql.auto.conf.
// They come after everything the backup brought, so they win over it: the
// scratch server must never archive into the production repository (it
// promotes onto a new timeline), must log where pitr reads, must not listen
// on the network, and must not need files outside its data directory.
func drillSettings(scratch, socketDir string) []Setting {
	return []Setting{
		{"archive_mode", "off"},
		{"listen_addresses", ""},
		{"unix_socket_directories", socketDir},
		{"hba_file", filepath.Join(scratch, "pg_hba.conf")},
		{"ident_file", filepath.Join(scratch, "pg_ident.conf")},
		{"external_pid_file", ""},
		{"logging_collector", "off"},
		{"log_destination", "stderr"},
		{"ssl", "off"},
		// A commit on the scratch server (CREATE EXTENSION amcheck) must
		// not wait for the production server's synchronous standbys.
		{"synchronous_standby_names", ""},
	}
}

// drillHBA lets only the OS user who can open the scratch directory (mode
// 0700) connect: trust on the Unix socket in that directory, nothing else.
const drillHBA = "# pitr drill: trust on the private Unix socket only\nlocal all all trust\n"

// maxSocketDir keeps <dir>/.s.PGSQL.<port> within sun_path (107 bytes).
const maxSocketDir = 80

// RunDrill plans a restore for in.Target (latest if unset), restores it
// into a scratch directory with the same code as pitr restore, starts the
// server, waits for recovery, checks the result, stops the server and
// removes the scratch directory unless opts.Keep. Every problem ends up as
// a failed check in the report; the error is only for the report's own
// bookkeeping (nothing to report at all).
func RunDrill(ctx context.Context, st storage.Store, id repo.SystemID, in Inputs, opts DrillOptions, log *slog.Logger) (rep DrillReport) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if in.Target.Kind == 0 {
		in.Target.Kind = TargetLatest
	}
	// The drill must be able to connect afterwards: always promote.
	in.Target.Action = ActionPromote
	rep = DrillReport{Version: DrillReportVersion, SystemIdentifier: id, StartedAt: now().UTC(),
		Target: describeTarget(in.Target), PitrVersion: opts.PitrVersion}
	rep.Host, _ = os.Hostname()
	defer func() {
		rep.FinishedAt = now().UTC()
		rep.DurationSeconds = rep.FinishedAt.Sub(rep.StartedAt).Round(time.Millisecond).Seconds()
		rep.OK = len(rep.Failures()) == 0 && len(rep.Checks) > 0
	}()
	d := &drill{st: st, opts: opts, log: log, rep: &rep}
	d.run(ctx, in)
	return rep
}

type drill struct {
	st      storage.Store
	opts    DrillOptions
	log     *slog.Logger
	rep     *DrillReport
	plan    Plan
	bin     string
	scratch string
	socket  string
	pgdata  string
	port    int
	user    string
	started bool
}

func (d *drill) run(ctx context.Context, in Inputs) {
	rep := d.rep
	if os.Geteuid() == 0 {
		rep.fail("environment", "PostgreSQL does not run as root; run pitr drill as the database's OS user (e.g. sudo -u postgres pitr drill)")
		return
	}
	plan, err := MakePlan(in)
	if err != nil {
		rep.fail("plan", err.Error())
		return
	}
	d.plan = plan
	rep.Backup, rep.Timeline = plan.Backup.Name, uint32(plan.Timeline)
	detail := fmt.Sprintf("backup %s, timeline %d", plan.Backup.Name, plan.Timeline)
	if n := len(plan.WAL); n > 0 {
		detail += fmt.Sprintf(", %d WAL segments %s .. %s all in the archive", n, plan.WAL[0].Name, plan.WAL[n-1].Name)
	}
	rep.pass("plan", detail)

	if d.bin, err = FindPGBin(d.opts.PGBin, plan.Backup.PGVersionNum); err != nil {
		rep.fail("binaries", err.Error())
		return
	}
	if err := d.makeScratch(); err != nil {
		rep.fail("scratch", err.Error())
		return
	}
	defer d.cleanup()

	err = Execute(ctx, d.st, plan, RestoreOptions{PGData: d.pgdata, RestoreCommand: d.opts.RestoreCommand}, d.log)
	if err != nil {
		rep.fail("restore", err.Error())
		return
	}
	rep.pass("restore", fmt.Sprintf("backup %s laid out in %s", plan.Backup.Name, d.pgdata))
	if err := d.configure(); err != nil {
		rep.fail("restore", "configure the scratch server: "+err.Error())
		return
	}

	d.port = d.opts.Port
	if d.port == 0 {
		if d.port, err = FreePort(); err != nil {
			rep.fail("recovery", err.Error())
			return
		}
	}
	d.started = true
	out, err := StartAndWait(ctx, StartOptions{PGBin: d.bin, PGData: d.pgdata, Port: d.port,
		LogFile: filepath.Join(d.scratch, "server.log"), Action: ActionPromote, Timeout: d.opts.RecoveryTimeout, FastPromote: true})
	rep.LastTransaction, rep.RedoDone = out.LastTransaction, out.RedoDone
	if err != nil {
		rep.fail("recovery", err.Error())
		return
	}
	how := "replayed the archive to its end"
	if out.StopLine != "" {
		how = out.StopLine
	}
	rep.pass("recovery", fmt.Sprintf("%s; promoted (last transaction %s, redo done at %s)", how, orNone(out.LastTransaction), orNone(out.RedoDone)))

	conn, err := d.connectFirst(ctx)
	if err != nil {
		rep.fail("connect", err.Error())
		return
	}
	rep.pass("connect", fmt.Sprintf("connected as %s to database %s", d.user, conn.Config().Database))
	d.checkRecoveryPoint(ctx, conn, out)
	dbs, err := databases(ctx, conn)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		rep.fail("databases", err.Error())
		return
	}
	d.checkDatabases(ctx, dbs)
	if d.opts.Extra != nil {
		dsn := fmt.Sprintf("host='%s' port=%d user='%s' dbname=postgres sslmode=disable", d.socket, d.port, d.user)
		rep.Checks = append(rep.Checks, d.opts.Extra(ctx, dsn, d.bin)...)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (d *drill) makeScratch() error {
	parent := d.opts.ScratchParent
	if parent != "" {
		if err := os.MkdirAll(parent, 0o700); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp(parent, "pitr-drill-")
	if err != nil {
		return err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	d.scratch, d.pgdata, d.socket = dir, filepath.Join(dir, "data"), dir
	if len(dir) > maxSocketDir {
		if d.socket, err = os.MkdirTemp("", "pitr-drill-sock-"); err != nil {
			return err
		}
	}
	for _, p := range []string{d.scratch, d.socket} {
		if strings.ContainsAny(p, "'\\") {
			return fmt.Errorf("scratch directory %q must not contain quotes or backslashes", p)
		}
	}
	return nil
}

// configure writes the drill's pg_hba.conf and settings next to and into
// the restored data directory.
func (d *drill) configure() error {
	if err := os.WriteFile(filepath.Join(d.scratch, "pg_hba.conf"), []byte(drillHBA), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d.scratch, "pg_ident.conf"), nil, 0o600); err != nil {
		return err
	}
	// Packaged clusters keep postgresql.conf outside the data directory
	// (Debian: /etc/postgresql); the server needs one to start.
	conf := filepath.Join(d.pgdata, "postgresql.conf")
	if _, err := os.Stat(conf); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(conf, []byte("# written by pitr drill: the backup had no postgresql.conf\n"), 0o600); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(d.pgdata, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("\n# pitr drill: scratch server settings\n")
	for _, s := range drillSettings(d.scratch, d.socket) {
		fmt.Fprintf(&b, "%s = %s\n", s.Name, quoteConf(s.Value))
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (d *drill) cleanup() {
	if d.started && postmasterRunning(d.pgdata) {
		cmd := exec.Command(filepath.Join(d.bin, "pg_ctl"), "-D", d.pgdata, "-m", "fast", "-w", "-t", "120", "stop")
		if out, err := cmd.CombinedOutput(); err != nil {
			d.rep.fail("stop", fmt.Sprintf("pg_ctl stop: %v: %s", err, strings.TrimSpace(string(out))))
			exec.Command(filepath.Join(d.bin, "pg_ctl"), "-D", d.pgdata, "-m", "immediate", "-w", "stop").Run()
		}
	}
	if d.opts.Keep {
		d.rep.Scratch = d.scratch
		return
	}
	if err := os.RemoveAll(d.scratch); err != nil {
		d.rep.fail("cleanup", err.Error())
	}
	if d.socket != d.scratch {
		os.RemoveAll(d.socket)
	}
}

// userCandidates are the roles tried in turn: the restored cluster's
// superuser is usually the OS user that ran initdb, or postgres.
func (d *drill) userCandidates() []string {
	var out []string
	seen := map[string]bool{}
	add := func(u string) {
		if u != "" && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	add(d.opts.User)
	add(os.Getenv("PGUSER"))
	if u, err := user.Current(); err == nil {
		add(u.Username)
	}
	add("postgres")
	return out
}

func (d *drill) connect(ctx context.Context, db, role string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port, cfg.Database, cfg.User, cfg.TLSConfig, cfg.Fallbacks = d.socket, uint16(d.port), db, role, nil, nil
	cfg.ConnectTimeout = 30 * time.Second
	cfg.RuntimeParams["application_name"] = "pitr drill"
	return pgx.ConnectConfig(ctx, cfg)
}

// connectFirst finds a role and database that work.
func (d *drill) connectFirst(ctx context.Context) (*pgx.Conn, error) {
	var errs []string
	for _, role := range d.userCandidates() {
		for _, db := range []string{"postgres", "template1"} {
			conn, err := d.connect(ctx, db, role)
			if err == nil {
				d.user = role
				return conn, nil
			}
			errs = append(errs, fmt.Sprintf("%s@%s: %v", role, db, err))
		}
	}
	return nil, fmt.Errorf("cannot connect to the restored server (set --user): %s", strings.Join(errs, "; "))
}

// checkRecoveryPoint verifies that recovery reached what the target asked.
// For latest: the end of the last replayed record lies in (or after) the
// newest archived segment the plan found, so no archived WAL was left out.
func (d *drill) checkRecoveryPoint(ctx context.Context, conn *pgx.Conn, out Outcome) {
	var replay *string
	var lastXact *time.Time
	err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()").Scan(&replay, &lastXact)
	if err != nil {
		d.rep.fail("recovery point", err.Error())
		return
	}
	var replayLSN wal.LSN
	if replay != nil {
		replayLSN, _ = wal.ParseLSN(*replay)
		d.rep.ReplayLSN = *replay
	}
	result, detail := evaluateRecoveryPoint(d.plan, replayLSN, lastXact, out)
	d.rep.add("recovery point", result, detail)
}

// evaluateRecoveryPoint is the pure part of checkRecoveryPoint.
func evaluateRecoveryPoint(plan Plan, replayEnd wal.LSN, lastXact *time.Time, out Outcome) (string, string) {
	xact := "no transaction replayed"
	if lastXact != nil {
		xact = "last replayed transaction committed " + FormatPGTime(*lastXact)
	}
	t := plan.Target
	switch t.Kind {
	case TargetLatest:
		if len(plan.WAL) == 0 {
			return CheckFail, "the plan lists no WAL"
		}
		size, err := plan.Backup.SegmentSize()
		if err != nil {
			return CheckFail, err.Error()
		}
		newest := plan.WAL[len(plan.WAL)-1]
		seg, err := size.ParseFileName(newest.Name)
		if err != nil {
			return CheckFail, err.Error()
		}
		if replayEnd == 0 {
			return CheckFail, "the server reports no replayed WAL (pg_last_wal_replay_lsn is NULL)"
		}
		got := size.SegmentOfEnd(replayEnd)
		if got < seg.No {
			return CheckFail, fmt.Sprintf("replay ended at %s in segment %s, before the newest archived segment %s: archived WAL was not replayed",
				replayEnd, size.FileName(wal.Segment{TLI: seg.TLI, No: got}), newest.Name)
		}
		return CheckPass, fmt.Sprintf("replayed to %s, inside the newest archived segment %s (archived %s); %s",
			replayEnd, newest.Name, FormatPGTime(newest.ArchivedAt), xact)
	case TargetImmediate:
		if !strings.Contains(out.StopLine, "consistency") {
			return CheckFail, "the server did not report stopping at consistency: " + orNone(out.StopLine)
		}
	case TargetTime:
		if out.StopLine == "" {
			return CheckFail, "the server did not report stopping at the target time"
		}
		if lastXact != nil && lastXact.After(t.Time) {
			return CheckFail, fmt.Sprintf("%s, after the target %s", xact, FormatPGTime(t.Time))
		}
	default:
		if out.StopLine == "" {
			return CheckFail, "the server did not report stopping at the target"
		}
	}
	return CheckPass, fmt.Sprintf("%s; %s", out.StopLine, xact)
}

func databases(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// tableScan is one table's row count next to the planner's estimate.
type tableScan struct {
	Name     string
	Estimate float64 // pg_class.reltuples: -1 never analyzed
	Count    int64
	// AtBackup is the estimate recorded in backup.json when the backup
	// started, for drills restored to exactly the backup; -1 otherwise or
	// when unknown (never analyzed, not recorded, an older backup).
	AtBackup int64
}

// implausible says why a table's row count is not believable, or "".
// pg_class.reltuples is the estimate of the last VACUUM/ANALYZE, as the
// backup carried it: a table estimated at many rows that reads as empty
// has lost its data (truncation resets the estimate to -1, so a truncated
// table is not flagged).
func (s tableScan) implausible() string {
	switch {
	case s.Count != 0:
	case s.Estimate >= 1000:
		return fmt.Sprintf("%s reads 0 rows but the server estimated %.0f", s.Name, s.Estimate)
	case s.AtBackup >= 1000:
		// The restored catalog may say little (truncate resets it, a lost
		// relation file does not touch it); the backup's own record says
		// the table was large.
		return fmt.Sprintf("%s reads 0 rows but had about %d when the backup was taken", s.Name, s.AtBackup)
	}
	return ""
}

// atBackup indexes the backup's recorded estimates by database and table.
func atBackup(tables []basebackup.TableEstimate) map[string]int64 {
	m := make(map[string]int64, len(tables))
	for _, t := range tables {
		m[t.Database+"\x00"+t.Schema+"."+t.Name] = t.Rows
	}
	return m
}

// checkDatabases connects to every database, runs amcheck when available
// and reads every user table.
func (d *drill) checkDatabases(ctx context.Context, dbs []string) {
	var connectErrs, amErrs, amSkips, tableErrs []string
	indexes, tables := 0, 0
	var rows int64
	recorded := atBackup(d.plan.Backup.Tables)
	// The backup's record describes the restored state only when the drill
	// restores exactly the backup; after later WAL a table may have been
	// truncated or dropped for good reasons, and a drill that cries wolf
	// gets switched off.
	exact := d.plan.Target.Kind == TargetImmediate
	for _, db := range dbs {
		conn, err := d.connect(ctx, db, d.user)
		if err != nil {
			connectErrs = append(connectErrs, fmt.Sprintf("%s: %v", db, err))
			continue
		}
		n, errs, skip := amcheckDatabase(ctx, conn)
		indexes += n
		for _, e := range errs {
			amErrs = append(amErrs, db+": "+e)
		}
		if skip != "" {
			amSkips = append(amSkips, db+": "+skip)
		}
		scans, errs := scanTables(ctx, conn, d.tableTimeout())
		for _, e := range errs {
			tableErrs = append(tableErrs, db+": "+e)
		}
		seen := map[string]bool{}
		for _, s := range scans {
			tables++
			rows += s.Count
			s.AtBackup = -1
			if n, ok := recorded[db+"\x00"+s.Name]; ok && exact {
				s.AtBackup = n
			}
			seen[s.Name] = true
			if why := s.implausible(); why != "" {
				tableErrs = append(tableErrs, db+": "+why)
			}
		}
		// Restored to the backup's own end, every large table it recorded
		// must be there; later targets may legitimately have dropped some.
		if exact {
			for _, t := range d.plan.Backup.Tables {
				if t.Database == db && t.Rows >= 1000 && !seen[t.Schema+"."+t.Name] {
					tableErrs = append(tableErrs, fmt.Sprintf("%s: %s.%s had about %d rows when the backup was taken and is missing", db, t.Schema, t.Name, t.Rows))
				}
			}
		}
		conn.Close(context.WithoutCancel(ctx))
	}
	if len(connectErrs) > 0 {
		d.rep.fail("databases", strings.Join(connectErrs, "; "))
	} else {
		d.rep.pass("databases", fmt.Sprintf("%d connectable: %s", len(dbs), strings.Join(dbs, ", ")))
	}
	switch {
	case len(amErrs) > 0:
		d.rep.fail("amcheck", strings.Join(amErrs, "; "))
	case indexes == 0 && len(amSkips) > 0:
		d.rep.skip("amcheck", strings.Join(amSkips, "; "))
	default:
		detail := fmt.Sprintf("bt_index_check found no corruption in %d B-tree indexes", indexes)
		if len(amSkips) > 0 {
			detail += "; not checked: " + strings.Join(amSkips, "; ")
		}
		d.rep.pass("amcheck", detail)
	}
	if len(tableErrs) > 0 {
		d.rep.fail("tables", strings.Join(tableErrs, "; "))
	} else {
		d.rep.pass("tables", fmt.Sprintf("%d user tables read in full, %d rows, counts consistent with the estimates", tables, rows))
	}
}

func (d *drill) tableTimeout() time.Duration {
	if d.opts.TableTimeout > 0 {
		return d.opts.TableTimeout
	}
	return 10 * time.Minute
}

// amcheckDatabase runs bt_index_check on every valid B-tree index of the
// connected database. It returns how many were checked, the corruption
// found, and why amcheck could not run ("" if it did).
func amcheckDatabase(ctx context.Context, conn *pgx.Conn) (int, []string, string) {
	var available bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck')").Scan(&available); err != nil {
		return 0, []string{err.Error()}, ""
	}
	if !available {
		return 0, nil, "the amcheck extension is not installed (postgresql-contrib)"
	}
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS amcheck"); err != nil {
		return 0, nil, "CREATE EXTENSION amcheck: " + err.Error()
	}
	var schema string
	if err := conn.QueryRow(ctx, "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'").Scan(&schema); err != nil {
		return 0, []string{err.Error()}, ""
	}
	rows, err := conn.Query(ctx, `SELECT c.oid::int8, c.oid::regclass::text FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
		WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'
		ORDER BY c.oid`)
	if err != nil {
		return 0, []string{err.Error()}, ""
	}
	type index struct {
		OID  int64
		Name string
	}
	idx, err := pgx.CollectRows(rows, pgx.RowToStructByPos[index])
	if err != nil {
		return 0, []string{err.Error()}, ""
	}
	fn := pgx.Identifier{schema, "bt_index_check"}.Sanitize()
	var errs []string
	for _, ix := range idx {
		if _, err := conn.Exec(ctx, "SELECT "+fn+"($1::int8::oid::regclass)", ix.OID); err != nil {
			errs = append(errs, fmt.Sprintf("index %s: %v", ix.Name, err))
		}
	}
	return len(idx), errs, ""
}

// scanTables counts the rows of every permanent user table with a forced
// sequential scan, which reads (and, with data checksums, verifies) every
// heap page.
func scanTables(ctx context.Context, conn *pgx.Conn, perTable time.Duration) ([]tableScan, []string) {
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname, c.reltuples::float8 FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
		ORDER BY 1, 2`)
	if err != nil {
		return nil, []string{err.Error()}
	}
	type table struct {
		Schema, Name string
		Estimate     float64
	}
	tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[table])
	if err != nil {
		return nil, []string{err.Error()}
	}
	for _, set := range []string{"SET enable_indexscan = off", "SET enable_indexonlyscan = off", "SET enable_bitmapscan = off",
		fmt.Sprintf("SET statement_timeout = %d", perTable.Milliseconds())} {
		if _, err := conn.Exec(ctx, set); err != nil {
			return nil, []string{err.Error()}
		}
	}
	var out []tableScan
	var errs []string
	for _, t := range tables {
		ident := pgx.Identifier{t.Schema, t.Name}.Sanitize()
		s := tableScan{Name: t.Schema + "." + t.Name, Estimate: t.Estimate}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+ident).Scan(&s.Count); err != nil {
			errs = append(errs, fmt.Sprintf("table %s: %v", s.Name, err))
			continue
		}
		out = append(out, s)
	}
	return out, errs
}

// WriteDrillReport stores r under repo.DrillKey.
func WriteDrillReport(ctx context.Context, st storage.Store, r DrillReport) (string, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	key := repo.DrillKey(r.SystemIdentifier, r.StartedAt)
	if err := st.Put(ctx, key, bytes.NewReader(append(b, '\n'))); err != nil {
		return "", fmt.Errorf("write drill report: %w", err)
	}
	return key, nil
}

// maxReportSize bounds a drill report read from the repository.
const maxReportSize = 4 << 20

// LastDrill returns the newest drill report, or nil if no drill ever ran.
func LastDrill(ctx context.Context, st storage.Store, id repo.SystemID) (*DrillReport, error) {
	objs, err := st.List(ctx, repo.DrillPrefix(id))
	if err != nil {
		return nil, fmt.Errorf("list drill reports: %w", err)
	}
	for i := len(objs) - 1; i >= 0; i-- {
		if !strings.HasSuffix(objs[i].Key, ".json") {
			continue
		}
		data, err := repo.ReadSmall(ctx, st, objs[i].Key, maxReportSize)
		if err != nil {
			return nil, fmt.Errorf("read drill report %s: %w", objs[i].Key, err)
		}
		var r DrillReport
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("drill report %s: %w", objs[i].Key, err)
		}
		return &r, nil
	}
	return nil, nil
}
