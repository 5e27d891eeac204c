package pitr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/internal/units"
	"github.com/pitr-dev/pitr/repo"
)

// Status is the state of one repository, and of its server when reachable.
// The JSON field names are a stable schema (pitr status --json).
type Status struct {
	SystemIdentifier repo.SystemID `json:"system_identifier"`
	CheckedAt        time.Time     `json:"checked_at"`

	WALFiles         int       `json:"wal_files"`
	WALStoredBytes   int64     `json:"wal_stored_bytes"`
	NewestSegment    string    `json:"newest_segment,omitempty"`
	NewestArchivedAt time.Time `json:"newest_archived_at,omitzero"`
	// Gaps are segments missing between a backup's start and the end of
	// the archive on the timeline recovery would follow.
	Gaps []Gap `json:"gaps"`

	Backups []BackupStatus `json:"backups"`
	// Window is the span of restorable targets: from the end of the oldest
	// backup whose WAL is complete, to the contents of the newest archived
	// segment (its archive time bounds them from above).
	Window *Window `json:"recovery_window,omitempty"`

	LastDrill *DrillReport  `json:"last_drill,omitempty"`
	Server    *ServerStatus `json:"server,omitempty"`
	// Stream is pitr stream's progress and slot; nil when not asked.
	Stream *StreamStatus `json:"stream,omitempty"`
	// Dumps is the newest logical dump of each database (pitr dump).
	Dumps []DumpStatus `json:"dumps,omitempty"`
	// Warnings need attention but exceed no threshold (configuration files
	// the newest backup could not capture).
	Warnings []string `json:"warnings,omitempty"`

	// Problems are the exceeded thresholds and failures, one line each.
	Problems []string `json:"problems"`
}

// Gap is one missing WAL segment.
type Gap struct {
	Missing string `json:"missing"`
	After   string `json:"after,omitempty"`
	// Backups are the backups that cannot be restored past it.
	Backups []string `json:"backups"`
}

// BackupStatus summarises one backup.
type BackupStatus struct {
	Name       string    `json:"name"`
	StopTime   time.Time `json:"stop_time"`
	StoredSize int64     `json:"stored_size"`
	// Restorable says the backup's own WAL is in the archive (a restore to
	// its end would succeed).
	Restorable bool `json:"restorable"`
}

// Window is the recovery window.
type Window struct {
	Earliest       time.Time `json:"earliest"`
	EarliestBackup string    `json:"earliest_backup"`
	Latest         time.Time `json:"latest"`
	LatestSegment  string    `json:"latest_segment"`
}

// ServerStatus is what the server says about archiving.
type ServerStatus struct {
	Reachable        bool       `json:"reachable"`
	Error            string     `json:"error,omitempty"`
	InRecovery       bool       `json:"in_recovery"`
	CurrentLSN       string     `json:"current_lsn,omitempty"`
	CurrentSegment   string     `json:"current_segment,omitempty"`
	ArchivedCount    int64      `json:"archived_count"`
	LastArchivedWAL  string     `json:"last_archived_wal,omitempty"`
	LastArchivedTime *time.Time `json:"last_archived_time,omitempty"`
	FailedCount      int64      `json:"failed_count"`
	LastFailedWAL    string     `json:"last_failed_wal,omitempty"`
	LastFailedTime   *time.Time `json:"last_failed_time,omitempty"`
	// PendingSegments is how many completed segments the repository does
	// not have yet; LagBytes the WAL written since the newest archived one.
	PendingSegments int64 `json:"pending_segments"`
	LagBytes        int64 `json:"lag_bytes"`
}

// Thresholds turn a Status into a check; zero disables one.
type Thresholds struct {
	MaxArchiveLag time.Duration
	MaxBackupAge  time.Duration
	MaxDrillAge   time.Duration
	MaxStreamLag  time.Duration
}

// ComputeStatus describes the repository from what LoadInputs read. It does
// no I/O; Server and LastDrill are filled in by the caller.
func ComputeStatus(id repo.SystemID, in Inputs, lastDrill *DrillReport, now time.Time) Status {
	s := Status{SystemIdentifier: id, CheckedAt: now.UTC(), LastDrill: lastDrill, Gaps: []Gap{}, Backups: []BackupStatus{}, Problems: []string{}}
	var newest WALFile
	for _, f := range in.WAL {
		s.WALFiles++
		s.WALStoredBytes += f.StoredSize
		if k, err := wal.Classify(f.Name); err != nil || k != wal.KindSegment {
			continue
		}
		// Names sort by timeline, then position: the highest is the newest.
		if f.Name > newest.Name {
			newest = f
		}
	}
	s.NewestSegment, s.NewestArchivedAt = newest.Name, newest.ArchivedAt

	backups := append(in.Backups[:0:0], in.Backups...)
	sort.Slice(backups, func(i, j int) bool { return backups[i].StopLSN < backups[j].StopLSN })
	gaps := map[string]*Gap{}
	var gapOrder []string
	for _, b := range backups {
		bs := BackupStatus{Name: b.Name, StopTime: b.StopTime, StoredSize: b.StoredSize}
		imm := in
		imm.Backup, imm.Target = b.Name, Target{Kind: TargetImmediate, Timeline: CurrentTimeline}
		_, err := MakePlan(imm)
		bs.Restorable = err == nil
		latest := in
		latest.Backup, latest.Target = b.Name, Target{Kind: TargetLatest}
		p, lerr := MakePlan(latest)
		if err == nil {
			err = lerr
		}
		var gap *GapError
		switch {
		case errors.As(err, &gap):
			g, ok := gaps[gap.Missing]
			if !ok {
				g = &Gap{Missing: gap.Missing, After: gap.After}
				gaps[gap.Missing] = g
				gapOrder = append(gapOrder, gap.Missing)
			}
			g.Backups = append(g.Backups, b.Name)
			if bs.Restorable && gap.After != "" {
				s.widen(b, gap.After, in.WAL)
			}
		case err != nil:
			s.Problems = append(s.Problems, fmt.Sprintf("backup %s cannot be restored: %v", b.Name, err))
		case len(p.WAL) > 0:
			last := p.WAL[len(p.WAL)-1]
			s.widen(b, last.Name, in.WAL)
		}
		s.Backups = append(s.Backups, bs)
	}
	for _, m := range gapOrder {
		s.Gaps = append(s.Gaps, *gaps[m])
	}
	return s
}

// widen extends the recovery window with backup b restorable up to the
// segment named last.
func (s *Status) widen(b basebackup.Backup, last string, files []WALFile) {
	var at time.Time
	for _, f := range files {
		if f.Name == last {
			at = f.ArchivedAt
		}
	}
	if s.Window == nil {
		s.Window = &Window{Earliest: b.StopTime, EarliestBackup: b.Name, Latest: at, LatestSegment: last}
		return
	}
	if b.StopTime.Before(s.Window.Earliest) {
		s.Window.Earliest, s.Window.EarliestBackup = b.StopTime, b.Name
	}
	if at.After(s.Window.Latest) {
		s.Window.Latest, s.Window.LatestSegment = at, last
	}
}

// Evaluate fills s.Problems from the thresholds and what the server said.
func (s *Status) Evaluate(th Thresholds) {
	now := s.CheckedAt
	if len(s.Backups) == 0 {
		s.Problems = append(s.Problems, "no base backup in the repository (run pitr backup)")
	} else {
		nb := s.Backups[len(s.Backups)-1]
		if age := now.Sub(nb.StopTime); th.MaxBackupAge > 0 && age > th.MaxBackupAge {
			s.Problems = append(s.Problems, fmt.Sprintf("newest backup %s is %s old (max %s)", nb.Name, age2(age), age2(th.MaxBackupAge)))
		}
	}
	for _, g := range s.Gaps {
		s.Problems = append(s.Problems, fmt.Sprintf("WAL segment %s is missing from the archive: backups %s cannot be restored past it", g.Missing, strings.Join(g.Backups, ", ")))
	}
	if s.NewestSegment == "" {
		s.Problems = append(s.Problems, "no WAL segment has been archived (is archive_command set to pitr archive-push?)")
	}
	srv := s.Server
	switch {
	case srv != nil && srv.Reachable && srv.Error == "" && !srv.InRecovery:
		if failing(srv) {
			s.Problems = append(s.Problems, fmt.Sprintf("archive_command is failing: %s failed at %s (%d failures; see the server log)",
				srv.LastFailedWAL, FormatPGTime(*srv.LastFailedTime), srv.FailedCount))
		}
		if th.MaxArchiveLag > 0 && srv.PendingSegments > 0 && s.NewestSegment != "" && now.Sub(s.NewestArchivedAt) > th.MaxArchiveLag {
			s.Problems = append(s.Problems, fmt.Sprintf("archiving is behind: %d completed segment(s) not in the repository, newest archived %s is %s old (max %s)",
				srv.PendingSegments, s.NewestSegment, age2(now.Sub(s.NewestArchivedAt)), age2(th.MaxArchiveLag)))
		}
	default:
		// Without the server, age is all there is: an idle server with
		// archive_timeout below the threshold still archives in time.
		if th.MaxArchiveLag > 0 && s.NewestSegment != "" && now.Sub(s.NewestArchivedAt) > th.MaxArchiveLag {
			s.Problems = append(s.Problems, fmt.Sprintf("newest archived segment %s is %s old (max %s; the server was not reachable to tell whether it is idle)",
				s.NewestSegment, age2(now.Sub(s.NewestArchivedAt)), age2(th.MaxArchiveLag)))
		}
	}
	if s.Stream != nil {
		s.Problems = append(s.Problems, s.Stream.problems(th.MaxStreamLag)...)
	}
	if th.MaxDrillAge > 0 {
		switch d := s.LastDrill; {
		case d == nil:
			s.Problems = append(s.Problems, "no restore drill has ever run (run pitr drill)")
		case !d.OK:
			reason := "no checks ran"
			if f := d.Failures(); len(f) > 0 {
				reason = f[0].Name + ": " + f[0].Detail
			}
			s.Problems = append(s.Problems, fmt.Sprintf("last drill at %s failed: %s", FormatPGTime(d.StartedAt), reason))
		case now.Sub(d.StartedAt) > th.MaxDrillAge:
			s.Problems = append(s.Problems, fmt.Sprintf("last drill is %s old (max %s)", age2(now.Sub(d.StartedAt)), age2(th.MaxDrillAge)))
		}
	}
}

// failing reports whether the archiver's last attempt failed: a failure
// newer than the last success.
func failing(srv *ServerStatus) bool {
	if srv.LastFailedTime == nil {
		return false
	}
	return srv.LastArchivedTime == nil || srv.LastFailedTime.After(*srv.LastArchivedTime)
}

// age2 renders a duration the way thresholds are given: 3d4h, 2h5m, 40s.
func age2(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 24*time.Hour:
		h := int64(d / time.Hour)
		if h%24 == 0 {
			return fmt.Sprintf("%dd", h/24)
		}
		return fmt.Sprintf("%dd%dh", h/24, h%24)
	case d >= time.Hour:
		m := int64(d / time.Minute)
		if m%60 == 0 {
			return fmt.Sprintf("%dh", m/60)
		}
		return fmt.Sprintf("%dh%dm", m/60, m%60)
	}
	return d.String()
}

// QueryServerStatus reads pg_stat_archiver and the WAL position. A server
// that cannot be reached is reported, not an error.
func QueryServerStatus(ctx context.Context, dsn string, newestSegment string) *ServerStatus {
	srv := &ServerStatus{}
	conn, err := ConnectServer(ctx, dsn, "pitr status")
	if err != nil {
		srv.Error = err.Error()
		return srv
	}
	defer conn.Close(context.WithoutCancel(ctx))
	srv.Reachable = true
	var lastArchived, lastFailed *string
	var segSize int64
	err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), archived_count, last_archived_wal, last_archived_time,
		failed_count, last_failed_wal, last_failed_time, (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size')
		FROM pg_stat_archiver`).Scan(&srv.InRecovery, &srv.ArchivedCount, &lastArchived, &srv.LastArchivedTime,
		&srv.FailedCount, &lastFailed, &srv.LastFailedTime, &segSize)
	if err != nil {
		srv.Error = err.Error()
		return srv
	}
	if lastArchived != nil {
		srv.LastArchivedWAL = *lastArchived
	}
	if lastFailed != nil {
		srv.LastFailedWAL = *lastFailed
	}
	if srv.InRecovery {
		return srv
	}
	var lsnText string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())").Scan(&lsnText, &srv.CurrentSegment); err != nil {
		srv.Error = err.Error()
		return srv
	}
	srv.CurrentLSN = lsnText
	lsn, err1 := wal.ParseLSN(lsnText)
	size, err2 := wal.NewSegmentSize(uint64(segSize))
	if err1 != nil || err2 != nil {
		return srv
	}
	srv.PendingSegments, srv.LagBytes = archiveLag(size, lsn, newestSegment)
	return srv
}

// archiveLag returns how many completed segments before the one holding lsn
// are newer than the newest archived segment, and how many bytes of WAL
// were written after the end of that segment.
func archiveLag(size wal.SegmentSize, lsn wal.LSN, newest string) (int64, int64) {
	cur := size.SegmentOf(lsn)
	if newest == "" {
		return int64(cur), int64(lsn)
	}
	seg, err := size.ParseFileName(newest)
	if err != nil || seg.No >= cur {
		return 0, 0
	}
	end := size.StartLSN(seg.No + 1)
	return int64(cur - seg.No - 1), int64(lsn - end)
}

// Describe writes the status for a person.
func (s Status) Describe(w io.Writer) {
	now := s.CheckedAt
	fmt.Fprintf(w, "repository of system %s\n", s.SystemIdentifier)
	if s.NewestSegment != "" {
		fmt.Fprintf(w, "  WAL:        %d files, %s; newest segment %s archived %s (%s ago)\n", s.WALFiles, units.Bytes(s.WALStoredBytes),
			s.NewestSegment, FormatPGTime(s.NewestArchivedAt), age2(now.Sub(s.NewestArchivedAt)))
	} else {
		fmt.Fprintf(w, "  WAL:        nothing archived\n")
	}
	if len(s.Gaps) == 0 {
		fmt.Fprintf(w, "  gaps:       none since the oldest backup\n")
	}
	for _, g := range s.Gaps {
		fmt.Fprintf(w, "  gap:        %s missing (after %s; affects %s)\n", g.Missing, orNone(g.After), strings.Join(g.Backups, ", "))
	}
	var total int64
	for _, b := range s.Backups {
		total += b.StoredSize
	}
	if n := len(s.Backups); n > 0 {
		fmt.Fprintf(w, "  backups:    %d, %s; newest %s (%s ago), oldest %s (%s ago)\n", n, units.Bytes(total),
			s.Backups[n-1].Name, age2(now.Sub(s.Backups[n-1].StopTime)), s.Backups[0].Name, age2(now.Sub(s.Backups[0].StopTime)))
	} else {
		fmt.Fprintf(w, "  backups:    none\n")
	}
	if s.Window != nil {
		fmt.Fprintf(w, "  window:     %s (end of backup %s) .. %s (segment %s)\n", FormatPGTime(s.Window.Earliest), s.Window.EarliestBackup,
			FormatPGTime(s.Window.Latest), s.Window.LatestSegment)
	} else {
		fmt.Fprintf(w, "  window:     nothing is restorable\n")
	}
	switch d := s.LastDrill; {
	case d == nil:
		fmt.Fprintf(w, "  last drill: never\n")
	case d.OK:
		fmt.Fprintf(w, "  last drill: passed %s (%s ago), backup %s, target %s\n", FormatPGTime(d.StartedAt), age2(now.Sub(d.StartedAt)), d.Backup, d.Target)
	default:
		fmt.Fprintf(w, "  last drill: FAILED %s (%s ago)\n", FormatPGTime(d.StartedAt), age2(now.Sub(d.StartedAt)))
	}
	switch srv := s.Server; {
	case srv == nil:
	case !srv.Reachable:
		fmt.Fprintf(w, "  server:     not reachable: %s\n", srv.Error)
	case srv.Error != "":
		fmt.Fprintf(w, "  server:     query failed: %s\n", srv.Error)
	case srv.InRecovery:
		fmt.Fprintf(w, "  server:     in recovery (a standby); archiver: %d archived, %d failed\n", srv.ArchivedCount, srv.FailedCount)
	default:
		fmt.Fprintf(w, "  server:     writing %s; %d segment(s), %s not yet archived\n", srv.CurrentSegment, srv.PendingSegments, units.Bytes(srv.LagBytes))
		fmt.Fprintf(w, "  archiver:   %d archived (last %s), %d failed", srv.ArchivedCount, orNone(srv.LastArchivedWAL), srv.FailedCount)
		if srv.LastFailedTime != nil {
			fmt.Fprintf(w, " (last %s at %s)", srv.LastFailedWAL, FormatPGTime(*srv.LastFailedTime))
		}
		fmt.Fprintln(w)
	}
	if s.Stream != nil {
		s.Stream.describe(w)
	}
	for _, d := range s.Dumps {
		fmt.Fprintf(w, "  dump:       %s: newest %s (%s ago), %s\n", d.Database, d.Newest, age2(now.Sub(d.StopTime)), units.Bytes(d.StoredSize))
	}
	for _, wn := range s.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", wn)
	}
	if len(s.Problems) == 0 {
		fmt.Fprintf(w, "OK\n")
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
}
