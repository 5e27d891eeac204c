package basebackup

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/repo"
)

// connectTimeout bounds connecting to the server when the DSN sets none.
const connectTimeout = 30 * time.Second

// Server is what pitr learns about the cluster before a backup.
type Server struct {
	VersionNum     int // server_version_num, e.g. 150008
	SystemID       repo.SystemID
	WALSegmentSize wal.SegmentSize
	DataChecksums  bool
	InRecovery     bool
	Timeline       wal.TimelineID
	ArchiveMode    string // off, on, always
	ArchiveCommand string
	ArchiveLibrary string // PostgreSQL 15+; "" otherwise
	// From pg_stat_archiver; "" and zero times when nothing happened yet.
	LastArchivedWAL  string
	LastArchivedTime time.Time
	LastFailedWAL    string
	LastFailedTime   time.Time
	Tablespaces      []Tablespace // user tablespaces (Part not set)
	Clock            time.Time    // clock_timestamp(), UTC
}

// Major is the server's major version (15 for 150008).
func (s Server) Major() int { return s.VersionNum / 10000 }

// VersionString is "15.8" for 150008.
func (s Server) VersionString() string { return versionString(s.VersionNum) }

func versionString(num int) string {
	return fmt.Sprintf("%d.%d", num/10000, num%10000)
}

// connect opens a connection with the libpq settings in dsn, falling back,
// like libpq, to PGHOST, PGPORT, PGUSER, PGPASSWORD, ... for anything dsn
// does not set ("" uses the environment alone).
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx puts the whole DSN (and so a password) in some parse errors.
		return nil, fmt.Errorf("connection settings (--dsn or PG* environment) are not valid")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	cfg.RuntimeParams["application_name"] = "pitr backup"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return conn, nil
}

// QueryServer connects and reads the server's identity and settings.
func QueryServer(ctx context.Context, dsn string) (Server, error) {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return Server{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var s Server
	var sysid, segSize int64
	var checksums string
	var archiveLibrary *string
	err = conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int,
		(SELECT system_identifier FROM pg_control_system()),
		(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
		current_setting('data_checksums'), pg_is_in_recovery(),
		current_setting('archive_mode'), current_setting('archive_command'),
		current_setting('archive_library', true),
		clock_timestamp()`).Scan(&s.VersionNum, &sysid, &segSize, &checksums, &s.InRecovery,
		&s.ArchiveMode, &s.ArchiveCommand, &archiveLibrary, &s.Clock)
	if err != nil {
		return Server{}, fmt.Errorf("query server settings: %w", err)
	}
	// system_identifier is a uint64 that PostgreSQL exposes as bigint; the
	// bits are what pg_controldata prints unsigned.
	s.SystemID = repo.SystemID(uint64(sysid))
	s.DataChecksums = checksums == "on"
	s.Clock = s.Clock.UTC()
	if archiveLibrary != nil {
		s.ArchiveLibrary = *archiveLibrary
	}
	if s.WALSegmentSize, err = wal.NewSegmentSize(uint64(segSize)); err != nil {
		return Server{}, fmt.Errorf("server wal_segment_size: %w", err)
	}

	// On a primary the timeline is in the name of the WAL file being written;
	// pg_control's checkpoint timeline lags after a promotion. A standby has
	// no current WAL file: its checkpoint's timeline is the best it can say.
	var tliText string
	if s.InRecovery {
		err = conn.QueryRow(ctx, `SELECT lpad(to_hex(timeline_id), 8, '0') FROM pg_control_checkpoint()`).Scan(&tliText)
	} else {
		err = conn.QueryRow(ctx, `SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)`).Scan(&tliText)
	}
	if err != nil {
		return Server{}, fmt.Errorf("query server timeline: %w", err)
	}
	if s.Timeline, err = wal.ParseTimelineID(upper(tliText)); err != nil {
		return Server{}, fmt.Errorf("server timeline: %w", err)
	}

	var lastArchived, lastFailed *string
	var lastArchivedTime, lastFailedTime *time.Time
	err = conn.QueryRow(ctx, `SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time
		FROM pg_stat_archiver`).Scan(&lastArchived, &lastArchivedTime, &lastFailed, &lastFailedTime)
	if err != nil {
		return Server{}, fmt.Errorf("query pg_stat_archiver: %w", err)
	}
	if lastArchived != nil {
		s.LastArchivedWAL = *lastArchived
	}
	if lastArchivedTime != nil {
		s.LastArchivedTime = lastArchivedTime.UTC()
	}
	if lastFailed != nil {
		s.LastFailedWAL = *lastFailed
	}
	if lastFailedTime != nil {
		s.LastFailedTime = lastFailedTime.UTC()
	}

	rows, err := conn.Query(ctx, `SELECT oid::bigint, spcname::text, pg_tablespace_location(oid)
		FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid`)
	if err != nil {
		return Server{}, fmt.Errorf("query tablespaces: %w", err)
	}
	for rows.Next() {
		var ts Tablespace
		var oid int64
		if err := rows.Scan(&oid, &ts.Name, &ts.Location); err != nil {
			rows.Close()
			return Server{}, fmt.Errorf("query tablespaces: %w", err)
		}
		ts.OID = uint32(oid)
		s.Tablespaces = append(s.Tablespaces, ts)
	}
	if err := rows.Err(); err != nil {
		return Server{}, fmt.Errorf("query tablespaces: %w", err)
	}
	return s, nil
}

// serverClock returns the server's clock_timestamp() and checks that the
// DSN still reaches the same database system.
func serverClock(ctx context.Context, dsn string, id repo.SystemID) (time.Time, error) {
	conn, err := connect(ctx, dsn)
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var t time.Time
	var sysid int64
	if err := conn.QueryRow(ctx, `SELECT clock_timestamp(), (SELECT system_identifier FROM pg_control_system())`).Scan(&t, &sysid); err != nil {
		return time.Time{}, fmt.Errorf("query server clock: %w", err)
	}
	if got := repo.SystemID(uint64(sysid)); got != id {
		return time.Time{}, fmt.Errorf("the server now reports database system %s, not %s as when the backup started", got, id)
	}
	return t.UTC(), nil
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// replicationConfig returns the connection settings of dsn for a physical
// replication connection (the walsender protocol BASE_BACKUP needs).
func replicationConfig(dsn string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("connection settings (--dsn or PG* environment) are not valid")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	cfg.RuntimeParams["replication"] = "true"
	cfg.RuntimeParams["application_name"] = "pitr backup"
	return cfg, nil
}
