package pgtest

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// sqlTimeout bounds every helper query (a recovery that blocks a query must
// not hang the test binary until its global timeout).
const sqlTimeout = 2 * time.Minute

func (c *Cluster) connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.DSN())
}

// Conn opens a connection as postgres to database postgres; it is closed when
// the test ends.
func (c *Cluster) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := c.connect(ctx)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", c.DSN(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// Exec runs sql on a new connection. Without args it uses the simple query
// protocol, so sql may hold several statements; with args ($1, ...) it must
// be a single statement.
func (c *Cluster) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if err := c.TryExec(sql, args...); err != nil {
		t.Fatalf("pgtest: exec %q: %v", sql, err)
	}
}

// TryExec is Exec returning the error instead of failing the test.
func (c *Cluster) TryExec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if len(args) == 0 {
		args = []any{pgx.QueryExecModeSimpleProtocol}
	}
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// row is a pgx.Row that closes its connection once scanned.
type row struct {
	conn   *pgx.Conn
	cancel context.CancelFunc
	row    pgx.Row
	done   bool
}

func (r *row) Scan(dest ...any) error {
	if r.done {
		return errors.New("pgtest: row already scanned")
	}
	r.done = true
	err := r.row.Scan(dest...)
	_ = r.conn.Close(context.Background())
	r.cancel()
	return err
}

// QueryRow runs sql on a new connection; the connection is closed by Scan
// (or at the end of the test if Scan is never called). Scan's error is
// returned as usual (pgx.ErrNoRows when there is no row).
func (c *Cluster) QueryRow(t testing.TB, sql string, args ...any) pgx.Row {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	conn, err := c.connect(ctx)
	if err != nil {
		cancel()
		t.Fatalf("pgtest: connect to %s: %v", c.DSN(), err)
	}
	r := &row{conn: conn, cancel: cancel, row: conn.QueryRow(ctx, sql, args...)}
	t.Cleanup(func() {
		if !r.done {
			_ = r.Scan()
		}
	})
	return r
}

// QueryString returns the first column of the first row as text (the
// server's text output of any type; "" for NULL). It fails the test on error
// or when there is no row.
func (c *Cluster) QueryString(t testing.TB, sql string, args ...any) string {
	t.Helper()
	s, err := c.TryQueryString(sql, args...)
	if err != nil {
		t.Fatalf("pgtest: query %q: %v", sql, err)
	}
	return s
}

// TryQueryString is QueryString returning the error instead of failing the
// test (for example to poll a server that is still starting).
func (c *Cluster) TryQueryString(sql string, args ...any) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	conn, err := c.connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	// The simple protocol returns every value as text, so any type scans
	// into a string.
	var s *string
	err = conn.QueryRow(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...).Scan(&s)
	if err != nil {
		return "", err
	}
	if s == nil {
		return "", nil
	}
	return *s, nil
}

// QueryInt is QueryString parsed as an int64.
func (c *Cluster) QueryInt(t testing.TB, sql string, args ...any) int64 {
	t.Helper()
	s := c.QueryString(t, sql, args...)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("pgtest: query %q: %q is not an integer", sql, s)
	}
	return n
}

// SwitchWAL writes a WAL record (a non-transactional logical message, so no
// catalog change and no xid), runs pg_switch_wal() and returns the name of
// the segment that was just completed (pg_walfile_name of the switch point,
// on the current timeline). Primary only: it fails during recovery.
func (c *Cluster) SwitchWAL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	conn, err := c.connect(ctx)
	if err != nil {
		t.Fatalf("pgtest: SwitchWAL: connect: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, 'pgtest', 'switch')"); err != nil {
		t.Fatalf("pgtest: SwitchWAL: write: %v", err)
	}
	var name string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&name); err != nil {
		t.Fatalf("pgtest: SwitchWAL: %v", err)
	}
	return name
}

// CurrentWALFile is the name of the WAL segment being written now (primary
// only).
func (c *Cluster) CurrentWALFile(t testing.TB) string {
	t.Helper()
	return c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
}

// IsSegmentName reports whether name is a 24-hex-digit WAL segment name
// (not a .history, .partial or .backup file).
func IsSegmentName(name string) bool {
	if len(name) != 24 {
		return false
	}
	for _, r := range name {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return true
}

// ArchiverStats reads pg_stat_archiver (missing names are "").
func (c *Cluster) ArchiverStats(t testing.TB) (archived, failed int64, lastArchived, lastFailed string) {
	t.Helper()
	a, f, la, lf, err := c.archiverStats()
	if err != nil {
		t.Fatalf("pgtest: pg_stat_archiver: %v", err)
	}
	return a, f, la, lf
}

func (c *Cluster) archiverStats() (archived, failed int64, lastArchived, lastFailed string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), sqlTimeout)
	defer cancel()
	conn, err := c.connect(ctx)
	if err != nil {
		return 0, 0, "", "", err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, `SELECT archived_count, failed_count,
		coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '')
		FROM pg_stat_archiver`).Scan(&archived, &failed, &lastArchived, &lastFailed)
	return
}

// IsArchived reports whether the archiver has archived walName: its
// archive_status/<walName>.done exists (kept until the segment is recycled,
// and for history files for good), or last_archived_wal equals walName, or,
// when both are segment names, last_archived_wal sorts after walName (the
// archiver works in name order).
func (c *Cluster) IsArchived(walName string) (bool, error) {
	if fileExists(filepath.Join(c.dataDir, "pg_wal", "archive_status", walName+".done")) {
		return true, nil
	}
	_, _, last, _, err := c.archiverStats()
	if err != nil {
		return false, err
	}
	if last == walName {
		return true, nil
	}
	return IsSegmentName(walName) && IsSegmentName(last) && last > walName, nil
}

// WaitArchived waits until walName (a segment, .history or .partial name)
// has been archived; see IsArchived. On timeout the test fails with the
// archiver's counters.
func (c *Cluster) WaitArchived(t testing.TB, walName string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := c.IsArchived(walName)
		if ok {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	a, f, la, lf, err := c.archiverStats()
	if err != nil {
		t.Fatalf("pgtest: %s not archived within %v (pg_stat_archiver: %v; last error %v)", walName, timeout, err, lastErr)
	}
	ready, _ := filepath.Glob(filepath.Join(c.dataDir, "pg_wal", "archive_status", "*.ready"))
	t.Fatalf("pgtest: %s not archived within %v: archived_count=%d failed_count=%d last_archived_wal=%q last_failed_wal=%q, %d .ready files",
		walName, timeout, a, f, la, lf, len(ready))
}

// InRecovery reports pg_is_in_recovery().
func (c *Cluster) InRecovery(t testing.TB) bool {
	t.Helper()
	return c.QueryString(t, "SELECT pg_is_in_recovery()") == "t"
}

// Timeline returns the server's current timeline: on a primary the first
// eight hex digits of pg_walfile_name(pg_current_wal_lsn()) (the checkpoint's
// timeline_id lags after a promotion until the next checkpoint), during
// recovery pg_control_checkpoint().timeline_id.
func (c *Cluster) Timeline(t testing.TB) uint32 {
	t.Helper()
	var s string
	if c.InRecovery(t) {
		s = c.QueryString(t, "SELECT to_hex(timeline_id) FROM pg_control_checkpoint()")
	} else {
		s = c.QueryString(t, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
	}
	n, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		t.Fatalf("pgtest: timeline %q: %v", s, err)
	}
	return uint32(n)
}

// ControlData runs pg_controldata on the data directory (the server may be
// stopped) and returns its output.
func (c *Cluster) ControlData(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.run(ctx, "pg_controldata", "-D", c.dataDir)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return out
}
