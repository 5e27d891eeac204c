package pitr

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
)

// WALFile is one archived WAL file as listed in the repository.
type WALFile struct {
	Name       string
	StoredSize int64
	// ArchivedAt is when the repository received the file. A segment is
	// archived only after it is complete, so no record in it is younger than
	// ArchivedAt: it is an upper bound on the time of its contents.
	ArchivedAt time.Time
}

// Inputs is everything the planner looks at. It does no I/O.
type Inputs struct {
	Backups   []basebackup.Backup                   // completed backups of one system
	WAL       []WALFile                             // the archive listing
	Histories map[wal.TimelineID][]wal.HistoryEntry // parsed NNNNNNNN.history files
	// Tablespaces are the tablespaces archive-push has seen in the data
	// directory over time.
	Tablespaces []archive.Tablespace
	Target      Target
	// Backup forces a backup by name instead of choosing one.
	Backup string
}

// Setting is one recovery parameter for postgresql.auto.conf.
type Setting struct{ Name, Value string }

// Plan is a checked recipe for a restore: which backup, which timeline, which
// WAL (all of it present), and what to tell PostgreSQL.
type Plan struct {
	Backup       basebackup.Backup
	BackupReason string
	Target       Target
	Timeline     wal.TimelineID     // written as recovery_target_timeline
	Path         []wal.TimelineSpan // the timeline's ancestry, oldest first
	// WAL lists, in replay order, the segments recovery needs; every one is
	// in the archive. For targets whose position in WAL is not known in
	// advance (time, xid, name, latest) recovery may read further.
	WAL []WALFile
	// Tail, for a time target, is where the first commit after the target
	// must be: the segments from the first one archived after the target to
	// the newest on the path, in order (see CheckCommitAfterTarget).
	Tail        []WALFile
	MayReadMore bool
	// Partial is the .partial (uploaded by pitr stream) that recovery reads
	// as the segment after the last complete one, so a restore to "latest",
	// or to a time after the last complete segment, reaches to within
	// seconds of a crash. wal-fetch serves it only when restore_command
	// names it (--partial), zero-filled past its end, which replay reads as
	// the end of WAL. Empty: none.
	Partial string

	DownloadBytes int64 // backup plus listed WAL, as stored
	// LateTablespaces were created after the backup started: replay
	// recreates them at their original absolute location on this host.
	LateTablespaces []archive.Tablespace
	Settings        []Setting
	Notes           []string
}

// GapError reports a WAL segment that recovery needs and the archive lacks.
type GapError struct {
	Missing string // the first missing segment
	After   string // the last segment present before it, if any
	Needed  string // why it is needed
}

func (e *GapError) Error() string {
	msg := fmt.Sprintf("WAL segment %s is missing from the archive", e.Missing)
	if e.After != "" {
		msg += " (the archive has " + e.After + " before it)"
	}
	if e.Needed != "" {
		msg += "; it is needed " + e.Needed
	}
	return msg
}

// ErrNoUsableBackup means no backup can serve the target.
var ErrNoUsableBackup = errors.New("no usable base backup")

// MakePlan chooses a backup and timeline for in.Target and proves that the
// WAL from the backup's start to the target is complete, before anything is
// written anywhere.
func MakePlan(in Inputs) (Plan, error) {
	t := in.Target
	if t.Action == "" {
		t.Action = ActionPromote
	}
	if t.Exclusive && t.Kind != TargetTime && t.Kind != TargetLSN && t.Kind != TargetXID {
		return Plan{}, fmt.Errorf("--exclusive applies to time, LSN and xid targets, not %s", t.Kind)
	}
	if len(in.Backups) == 0 {
		return Plan{}, fmt.Errorf("%w: the repository has no completed base backup (run pitr backup)", ErrNoUsableBackup)
	}
	backups := append([]basebackup.Backup(nil), in.Backups...)
	sort.Slice(backups, func(i, j int) bool { return backups[i].StopLSN > backups[j].StopLSN }) // newest first

	archive := make(map[string]WALFile, len(in.WAL))
	for _, f := range in.WAL {
		archive[f.Name] = f
	}

	var reasons []string
	for _, b := range backups {
		if in.Backup != "" && b.Name != in.Backup {
			continue
		}
		if why := ineligible(b, t); why != "" {
			if in.Backup != "" {
				return Plan{}, fmt.Errorf("%w: backup %s %s", ErrNoUsableBackup, b.Name, why)
			}
			reasons = append(reasons, b.Name+" "+why)
			continue
		}
		tli, path, skipped, err := chooseTimeline(b, t, in.Histories, historyTimes(archive))
		if err != nil {
			if in.Backup != "" {
				return Plan{}, err
			}
			reasons = append(reasons, b.Name+": "+err.Error())
			continue
		}
		p := Plan{Backup: b, Target: t, Timeline: tli, Path: path}
		p.BackupReason = backupReason(b, t, in.Backup != "")
		for _, s := range skipped {
			p.Notes = append(p.Notes, s)
		}
		if err := p.collectWAL(archive); err != nil {
			return Plan{}, err
		}
		p.LateTablespaces = lateTablespaces(b, in.Tablespaces)
		for _, ts := range p.LateTablespaces {
			p.Notes = append(p.Notes, fmt.Sprintf("tablespace %d at %s was created after this backup; replay recreates it at that absolute path on this host",
				ts.OID, ts.Location))
		}
		p.Settings = settings(t, tli)
		p.DownloadBytes = b.StoredSize
		for _, f := range p.WAL {
			p.DownloadBytes += f.StoredSize
		}
		return p, nil
	}
	if in.Backup != "" {
		return Plan{}, fmt.Errorf("%w: backup %s does not exist", ErrNoUsableBackup, in.Backup)
	}
	oldest := backups[len(backups)-1]
	switch t.Kind {
	case TargetTime:
		if !t.Time.After(oldest.StopTime) {
			return Plan{}, fmt.Errorf("%w: target %s is before the end of the earliest backup %s (%s); a backup cannot be restored to a time while it was being taken",
				ErrNoUsableBackup, FormatPGTime(t.Time), oldest.Name, FormatPGTime(oldest.StopTime))
		}
	case TargetLSN:
		if t.LSN < oldest.StopLSN {
			return Plan{}, fmt.Errorf("%w: target LSN %s is before the end of the earliest backup %s (%s)", ErrNoUsableBackup, t.LSN, oldest.Name, oldest.StopLSN)
		}
	}
	return Plan{}, fmt.Errorf("%w for this target: %v", ErrNoUsableBackup, reasons)
}

// lateTablespaces returns the recorded tablespaces that b does not contain
// and that were seen after b started (so created during or after it).
func lateTablespaces(b basebackup.Backup, seen []archive.Tablespace) []archive.Tablespace {
	inBackup := map[uint32]bool{}
	for _, ts := range b.Tablespaces {
		inBackup[ts.OID] = true
	}
	var late []archive.Tablespace
	for _, ts := range seen {
		if !inBackup[ts.OID] && !ts.SeenAt.Before(b.StartTime) {
			late = append(late, ts)
		}
	}
	sort.Slice(late, func(i, j int) bool { return late[i].OID < late[j].OID })
	return late
}

// ineligible says why b cannot serve t, or "" if it can. A backup is usable
// only for targets after its end: recovery must pass the backup's end before
// it may stop ("requested recovery stop point is before consistent recovery
// point").
func ineligible(b basebackup.Backup, t Target) string {
	switch t.Kind {
	case TargetTime:
		if !b.StopTime.Before(t.Time) {
			return fmt.Sprintf("ended at %s, not before the target", FormatPGTime(b.StopTime))
		}
	case TargetLSN:
		if b.StopLSN > t.LSN {
			return fmt.Sprintf("ended at %s, after the target LSN", b.StopLSN)
		}
	}
	return ""
}

func backupReason(b basebackup.Backup, t Target, forced bool) string {
	if forced {
		return "chosen with --backup"
	}
	switch t.Kind {
	case TargetTime:
		return fmt.Sprintf("newest backup that ended before the target (ended %s)", FormatPGTime(b.StopTime))
	case TargetLSN:
		return fmt.Sprintf("newest backup that ended before the target LSN (ended at %s)", b.StopLSN)
	case TargetXID, TargetName:
		return "newest backup (an xid or restore point cannot be placed in time in advance; use --backup to pick an older one if the target precedes it)"
	}
	return "newest backup"
}

// chooseTimeline picks the timeline recovery follows from backup b: the
// requested number, the backup's own (CurrentTimeline), or for 0 the newest
// timeline that b can reach.
//
// PostgreSQL's own "latest" takes the highest timeline in the archive even
// when it forked off before the backup, and then fails ("requested timeline
// is not a child of this server's history"); only reachable timelines are
// considered here. For a time target, a timeline created after the target
// (its .history archived later) is not followed either: it did not exist at
// that moment, and following it would replace the parent's history after
// the fork with whatever was written after that timeline's promotion. This
// is what an operator means when, after restoring to 13:55, they restore
// again to 13:58. The skipped timelines are returned as notes.
func chooseTimeline(b basebackup.Backup, t Target, histories map[wal.TimelineID][]wal.HistoryEntry, created map[wal.TimelineID]time.Time) (wal.TimelineID, []wal.TimelineSpan, []string, error) {
	pathOf := func(tli wal.TimelineID) ([]wal.TimelineSpan, error) {
		if tli == 1 {
			return wal.Ancestry(1, nil), nil
		}
		entries, ok := histories[tli]
		if !ok {
			return nil, fmt.Errorf("timeline %d does not exist in the archive (no %s)", tli, wal.HistoryFileName(tli))
		}
		return wal.Ancestry(tli, entries), nil
	}
	switch t.Timeline {
	case CurrentTimeline:
		path, err := pathOf(b.StopTimeline)
		if err != nil {
			return 0, nil, nil, err
		}
		return b.StopTimeline, path, nil, reachable(b, b.StopTimeline, path)
	case 0:
		candidates := []wal.TimelineID{b.StopTimeline}
		for tli := range histories {
			if tli != b.StopTimeline {
				candidates = append(candidates, tli)
			}
		}
		sort.Slice(candidates, func(i, j int) bool { return candidates[i] > candidates[j] })
		var firstErr error
		var notes []string
		for _, tli := range candidates {
			path, err := pathOf(tli)
			if err == nil {
				err = reachable(b, tli, path)
			}
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			if t.Kind == TargetTime {
				if late := createdAfter(path, b.StopTimeline, created, t.Time); late != 0 {
					notes = append(notes, fmt.Sprintf("not following timeline %d: timeline %d was created %s, after the target (use --target-timeline %d to follow it anyway)",
						tli, late, FormatPGTime(created[late]), tli))
					continue
				}
			}
			return tli, path, notes, nil
		}
		return 0, nil, nil, firstErr
	default:
		path, err := pathOf(t.Timeline)
		if err != nil {
			return 0, nil, nil, err
		}
		return t.Timeline, path, nil, reachable(b, t.Timeline, path)
	}
}

// createdAfter returns the first timeline on path, after the backup's
// timeline from, whose history file was archived after instant, or 0.
func createdAfter(path []wal.TimelineSpan, from wal.TimelineID, created map[wal.TimelineID]time.Time, instant time.Time) wal.TimelineID {
	for _, span := range path {
		if span.TLI <= from {
			continue
		}
		if at, ok := created[span.TLI]; ok && at.After(instant) {
			return span.TLI
		}
	}
	return 0
}

// historyTimes maps each timeline to when its history file was archived,
// which is when the timeline came into being (PostgreSQL archives it at
// once, at promotion).
func historyTimes(archive map[string]WALFile) map[wal.TimelineID]time.Time {
	out := map[wal.TimelineID]time.Time{}
	for name, f := range archive {
		if kind, err := wal.Classify(name); err == nil && kind == wal.KindTimelineHistory {
			if tli, err := wal.TimelineOfName(name); err == nil {
				out[tli] = f.ArchivedAt
			}
		}
	}
	return out
}

// reachable checks that replay from b can follow path to timeline tli: b's
// timeline must be in the path and the path may leave it only after b's end.
func reachable(b basebackup.Backup, tli wal.TimelineID, path []wal.TimelineSpan) error {
	for _, span := range path {
		if span.TLI != b.StopTimeline {
			continue
		}
		if span.End != 0 && span.End < b.StopLSN {
			return fmt.Errorf("timeline %d forked off timeline %d at %s, before backup %s ended at %s; it cannot be reached from this backup",
				tli, b.StopTimeline, span.End, b.Name, b.StopLSN)
		}
		return nil
	}
	return fmt.Errorf("timeline %d does not descend from timeline %d of backup %s", tli, b.StopTimeline, b.Name)
}

// collectWAL lists the segments from the backup's start to the end point the
// target requires, following the timeline path, and fails on the first gap.
func (p *Plan) collectWAL(archive map[string]WALFile) error {
	b := p.Backup
	size, err := b.SegmentSize()
	if err != nil {
		return err
	}
	name := func(n wal.SegNo) string {
		return size.FileName(wal.Segment{TLI: size.SegmentTimeline(p.Path, n), No: n})
	}
	start := size.SegmentOf(b.StartLSN)
	backupEnd := size.SegmentOfEnd(b.StopLSN)
	if backupEnd < start {
		backupEnd = start
	}

	// The newest segment on the path: where replay runs out of archive.
	last, haveLast := wal.SegNo(0), false
	for fname := range archive {
		if kind, err := wal.Classify(fname); err != nil || kind != wal.KindSegment {
			continue
		}
		seg, err := size.ParseFileName(fname)
		if err != nil || seg.No < start || size.SegmentTimeline(p.Path, seg.No) != seg.TLI {
			continue
		}
		if !haveLast || seg.No > last {
			last, haveLast = seg.No, true
		}
	}

	// A .partial right after the newest complete segment, on the path's
	// timeline: the streamer's segment in progress.
	partialSeg := start
	if haveLast {
		partialSeg = last + 1
	}
	partial, havePartial := archive[name(partialSeg)+".partial"]
	if partialSeg <= backupEnd {
		havePartial = false // the backup's own WAL must be complete segments
	}

	var end wal.SegNo
	need := "to reach the target"
	switch p.Target.Kind {
	case TargetImmediate:
		end, need = backupEnd, "to make backup "+b.Name+" consistent"
	case TargetLSN:
		end = max(backupEnd, size.SegmentOf(p.Target.LSN))
		p.MayReadMore = true
		if !haveLast || last < end {
			return fmt.Errorf("target LSN %s is beyond the end of the archive (newest segment on timeline %d: %s); recovery could not reach it",
				p.Target.LSN, p.Timeline, lastName(haveLast, last, name))
		}
	case TargetTime:
		// Recovery stops at the first commit after the target, so some WAL
		// written after the target must be archived. The first segment
		// archived after the target is the earliest that can hold it.
		found := false
		for n := start; haveLast && n <= last; n++ {
			f, ok := archive[name(n)]
			if ok && n >= backupEnd && f.ArchivedAt.After(p.Target.Time) {
				end, found = n, true
				break
			}
		}
		for n := end; found && n <= last; n++ {
			f, ok := archive[name(n)]
			if !ok {
				break
			}
			p.Tail = append(p.Tail, f)
		}
		if !found && havePartial && partial.ArchivedAt.After(p.Target.Time) {
			end, found = partialSeg-1, true
			p.Partial = partial.Name
		}
		if !found {
			newest := lastName(haveLast, last, name)
			at := ""
			if f, ok := archive[newest]; ok {
				at = " archived " + FormatPGTime(f.ArchivedAt)
			}
			return fmt.Errorf("target %s is later than anything archived (newest segment on timeline %d: %s%s); recovery would end before reaching it. Switch WAL on the server (SELECT pg_switch_wal()) and wait for it to be archived, or choose an earlier target",
				FormatPGTime(p.Target.Time), p.Timeline, newest, at)
		}
		p.MayReadMore = true
	default: // latest, xid, name: the stop point is somewhere in the whole archive
		end = backupEnd
		if haveLast && last > end {
			end = last
		}
		need = "to replay the archive to its end"
		p.MayReadMore = p.Target.Kind != TargetLatest
		if havePartial {
			p.Partial = partial.Name
		}
	}
	if end < backupEnd {
		end = backupEnd
	}

	prev := ""
	for n := start; n <= end; n++ {
		nm := name(n)
		f, ok := archive[nm]
		if !ok {
			why := need
			if n <= backupEnd {
				why = "to make backup " + b.Name + " consistent"
			}
			return &GapError{Missing: nm, After: prev, Needed: why}
		}
		p.WAL = append(p.WAL, f)
		prev = nm
	}
	if p.Partial != "" {
		p.WAL = append(p.WAL, partial)
	}
	return nil
}

func lastName(have bool, last wal.SegNo, name func(wal.SegNo) string) string {
	if !have {
		return "none"
	}
	return name(last)
}

// settings renders the recovery parameters, timeline always explicit.
func settings(t Target, tli wal.TimelineID) []Setting {
	s := []Setting{{"recovery_target_timeline", strconv.FormatUint(uint64(tli), 10)}}
	switch t.Kind {
	case TargetTime:
		s = append(s, Setting{"recovery_target_time", FormatPGTime(t.Time)})
	case TargetLSN:
		s = append(s, Setting{"recovery_target_lsn", t.LSN.String()})
	case TargetXID:
		s = append(s, Setting{"recovery_target_xid", strconv.FormatUint(t.XID, 10)})
	case TargetName:
		s = append(s, Setting{"recovery_target_name", t.Name})
	case TargetImmediate:
		s = append(s, Setting{"recovery_target", "immediate"})
	case TargetLatest:
		return s // no target: recovery_target_action would have no effect
	}
	if t.Exclusive {
		s = append(s, Setting{"recovery_target_inclusive", "off"})
	}
	return append(s, Setting{"recovery_target_action", string(t.Action)})
}
