package pitr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/internal/units"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// DefaultIncompleteAfter is how old the newest object of a backup without
// metadata must be before prune deletes it as the leftover of a dead backup.
// A running backup refreshes its heartbeat object every 30 s, so this is very
// conservative; `pitr backup` itself removes leftovers much sooner.
const DefaultIncompleteAfter = 24 * time.Hour

// backupClockMargin allows for the database server's clock (which names a
// backup after its start time) and the repository's clock (which stamps
// archived WAL) to disagree.
const backupClockMargin = time.Hour

// ErrNoRetentionPolicy refuses a prune without --keep or --keep-within:
// pruning with no policy would mean "delete everything but the newest".
var ErrNoRetentionPolicy = errors.New("no retention policy configured (set keep and/or keep_within)")

// RetentionPolicy says which backups to keep. KeepCount and KeepWithin may be
// combined; a backup either of them keeps is kept.
type RetentionPolicy struct {
	// KeepCount keeps the newest KeepCount backups (by stop time).
	KeepCount int
	// KeepWithin keeps every backup that ended within this long before now,
	// and the newest backup that ended before that window: a recovery
	// target inside the window needs a backup that ended before it.
	KeepWithin time.Duration
	// IncompleteAfter is how long after its last write (on the repository's
	// clock) a backup without metadata is taken for dead and its leftovers
	// deleted; 0 means DefaultIncompleteAfter. A running backup rewrites its
	// heartbeat every basebackup.HeartbeatInterval and gives up when it
	// cannot, so anything at least basebackup.StaleAfter is safe.
	IncompleteAfter time.Duration
}

func (p RetentionPolicy) incompleteAfter() time.Duration {
	if p.IncompleteAfter <= 0 {
		return DefaultIncompleteAfter
	}
	return p.IncompleteAfter
}

// Validate refuses an empty or negative policy.
func (p RetentionPolicy) Validate() error {
	switch {
	case p.KeepCount < 0:
		return fmt.Errorf("keep %d: must be at least 1", p.KeepCount)
	case p.KeepWithin < 0:
		return fmt.Errorf("keep_within %s: must be positive", p.KeepWithin)
	case p.IncompleteAfter < 0 || p.IncompleteAfter > 0 && p.IncompleteAfter < basebackup.StaleAfter:
		return fmt.Errorf("incomplete_after %s: must be at least %s, or a running backup could be taken for dead", p.IncompleteAfter, basebackup.StaleAfter)
	case p.KeepCount == 0 && p.KeepWithin == 0:
		return ErrNoRetentionPolicy
	}
	return nil
}

func (p RetentionPolicy) String() string {
	var parts []string
	switch {
	case p.KeepCount == 1:
		parts = append(parts, "the newest backup")
	case p.KeepCount > 1:
		parts = append(parts, fmt.Sprintf("the newest %d backups", p.KeepCount))
	}
	if p.KeepWithin > 0 {
		parts = append(parts, "backups that ended within "+FormatDays(p.KeepWithin)+" (and the newest before that)")
	}
	return "keep " + strings.Join(parts, ", and ")
}

// FormatDays prints a duration in whole days when it is one, as --keep-within
// is usually given ("30d"), else as Go prints it.
func FormatDays(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// PruneInputs is everything PlanPrune looks at. It does no I/O.
type PruneInputs struct {
	System repo.SystemID
	// RepoNow is the time on the repository's clock, which stamps the
	// modification times incomplete backups are judged by: the
	// modification time of an object prune just wrote (its lock). Zero
	// means the now given to PlanPrune.
	RepoNow time.Time
	// Backups are the completed backups (those with metadata).
	Backups []basebackup.Backup
	// BackupObjects is the listing of repo.BackupPrefix(System): the parts
	// of complete backups and the leftovers of incomplete ones.
	BackupObjects []storage.ObjectInfo
	// WAL is the archive listing (every valid WAL file name).
	WAL []WALFile
	// Histories are the parsed NNNNNNNN.history files.
	Histories map[wal.TimelineID][]wal.HistoryEntry
}

// LoadPruneInputs reads what PlanPrune needs from the repository. The
// backups directory is listed again after the WAL: a backup whose WAL is in
// the WAL listing then shows up in BackupObjects, complete or running, even
// if it was not among Backups yet.
func LoadPruneInputs(ctx context.Context, st storage.Store, id repo.SystemID) (PruneInputs, error) {
	in, err := LoadInputs(ctx, st, id)
	if err != nil {
		return PruneInputs{}, err
	}
	objs, err := st.List(ctx, repo.BackupPrefix(id))
	if err != nil {
		return PruneInputs{}, fmt.Errorf("list backups: %w", err)
	}
	return PruneInputs{System: id, Backups: in.Backups, BackupObjects: objs, WAL: in.WAL, Histories: in.Histories}, nil
}

// KeptBackup is a backup the policy keeps, and why.
type KeptBackup struct {
	Backup  basebackup.Backup
	Reasons []string
}

// PrunedBackup is a complete backup to delete. Keys start with its metadata,
// so it stops existing for every other command before any part goes.
type PrunedBackup struct {
	Backup     basebackup.Backup
	Keys       []string
	StoredSize int64
}

// Leftover is what an incomplete backup (no metadata) left in the repository.
type Leftover struct {
	Name        string
	Keys        []string
	StoredSize  int64
	LastWritten time.Time // newest object
}

// PrunedWAL is one WAL file to delete.
type PrunedWAL struct {
	Name       string
	Key        string
	StoredSize int64
}

// TimelineCut summarises the WAL of one timeline: what goes and where the
// kept WAL starts.
type TimelineCut struct {
	TLI                       wal.TimelineID
	Deleted                   int
	DeletedBytes              int64
	FirstDeleted, LastDeleted string
	FirstKept                 string // "" when nothing of this timeline is kept
}

// PrunePlan is what a prune deletes and keeps, decided before anything is
// deleted.
type PrunePlan struct {
	System  repo.SystemID
	Policy  RetentionPolicy
	Now     time.Time
	RepoNow time.Time

	Keep          []KeptBackup   // oldest first
	DeleteBackups []PrunedBackup // oldest first
	Leftovers     []Leftover     // incomplete backups older than IncompleteAfter
	// InProgress names incomplete backups younger than IncompleteAfter: they
	// may be running and are not touched.
	InProgress []string

	DeleteWAL []PrunedWAL // ascending by name
	WALBytes  int64
	Timelines []TimelineCut
	// Notes explain WAL kept although the cut alone would delete it.
	Notes []string
}

// Empty reports whether the plan deletes nothing.
func (p PrunePlan) Empty() bool {
	return len(p.DeleteBackups) == 0 && len(p.Leftovers) == 0 && len(p.DeleteWAL) == 0
}

// PlanPrune applies policy to the repository contents in in.
//
// Backups: the newest KeepCount backups and those that ended within
// KeepWithin of now are kept (plus, for KeepWithin, the newest backup that
// ended before the window, so that every point of the window stays
// recoverable); the newest backup is always kept. The rest are deleted.
// Backups without metadata are deleted when nothing was written to them for
// IncompleteAfter; younger ones may be running and are not touched.
//
// WAL: a kept backup K that started on timeline T at LSN S reads, on T and on
// every timeline descending from T, only segments from S's segment onwards.
// So on each timeline X the cut is the lowest start segment of the kept
// backups whose start timeline is X or an ancestor of X; on a timeline no kept
// backup descends to, it is the lowest start segment of all kept backups.
// Files below the cut go, except:
//   - .history files, which are never deleted;
//   - files of a timeline (other than 1) whose history file is missing, since
//     its ancestry, and so whether a kept backup needs it, is unknown;
//   - names that do not parse with the backups' segment size;
//   - while a backup is running, files archived since it started (less an
//     hour for clocks): it needs its WAL from its start, on a timeline and
//     at an LSN prune cannot know until it completes. A backup that starts
//     after the listing needs only WAL that is not archived yet.
//
// Without any complete backup no WAL is deleted.
func PlanPrune(in PruneInputs, policy RetentionPolicy, now time.Time) (PrunePlan, error) {
	if err := policy.Validate(); err != nil {
		return PrunePlan{}, err
	}
	repoNow := in.RepoNow
	if repoNow.IsZero() {
		repoNow = now
	}
	plan := PrunePlan{System: in.System, Policy: policy, Now: now, RepoNow: repoNow}
	size, err := commonSegmentSize(in.Backups)
	if err != nil {
		return PrunePlan{}, err
	}

	kept, deleted := chooseBackups(in.Backups, policy, now)
	plan.Keep = kept

	objects := groupBackupObjects(in.System, in.BackupObjects)
	complete := map[string]bool{}
	for _, b := range in.Backups {
		complete[b.Name] = true
	}
	for _, b := range deleted {
		plan.DeleteBackups = append(plan.DeleteBackups, prunedBackup(b, objects[b.Name]))
	}
	var incomplete []string
	for name := range objects {
		if !complete[name] {
			incomplete = append(incomplete, name)
		}
	}
	sort.Strings(incomplete)
	for _, name := range incomplete {
		objs := objects[name]
		lo := Leftover{Name: name}
		for _, o := range objs {
			lo.Keys = append(lo.Keys, o.Key)
			lo.StoredSize += o.Size
			if o.ModTime.After(lo.LastWritten) {
				lo.LastWritten = o.ModTime
			}
		}
		if hasMetadata(objs) || lo.LastWritten.IsZero() || repoNow.Sub(lo.LastWritten) < policy.incompleteAfter() {
			// Metadata that did not read as a backup would have failed
			// the listing already; a zero time is unknown, not old.
			plan.InProgress = append(plan.InProgress, name)
			continue
		}
		plan.Leftovers = append(plan.Leftovers, lo)
	}

	if len(kept) > 0 {
		planWAL(&plan, in, size)
	}
	return plan, nil
}

// commonSegmentSize returns the backups' WAL segment size; every backup of a
// system has the same one, and WAL names are only meaningful with it.
func commonSegmentSize(backups []basebackup.Backup) (wal.SegmentSize, error) {
	var size wal.SegmentSize
	for _, b := range backups {
		s, err := b.SegmentSize()
		if err != nil {
			return 0, fmt.Errorf("backup %s: %w", b.Name, err)
		}
		if size != 0 && s != size {
			return 0, fmt.Errorf("backups disagree on wal_segment_size (%s and %s in %s); refusing to prune WAL whose names cannot be interpreted", size, s, b.Name)
		}
		size = s
	}
	return size, nil
}

// newestFirst orders backups by when they ended: "newest" is about time, not
// LSN, because after a restore to an earlier point a new timeline's backups
// have lower LSNs than older backups of the abandoned timeline.
func newestFirst(backups []basebackup.Backup) []basebackup.Backup {
	out := append([]basebackup.Backup(nil), backups...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.StopTime.Equal(b.StopTime) {
			return a.StopTime.After(b.StopTime)
		}
		if a.StartLSN != b.StartLSN {
			return a.StartLSN > b.StartLSN
		}
		return a.Name > b.Name
	})
	return out
}

func chooseBackups(backups []basebackup.Backup, policy RetentionPolicy, now time.Time) (kept []KeptBackup, deleted []basebackup.Backup) {
	ordered := newestFirst(backups)
	windowStart := now.Add(-policy.KeepWithin)
	anchorFound := false
	for i, b := range ordered {
		var why []string
		if i == 0 {
			why = append(why, "newest backup")
		}
		if i < policy.KeepCount && policy.KeepCount > 1 {
			why = append(why, fmt.Sprintf("one of the newest %d", policy.KeepCount))
		}
		if policy.KeepWithin > 0 {
			switch {
			case !b.StopTime.Before(windowStart):
				why = append(why, "ended within "+FormatDays(policy.KeepWithin))
			case !anchorFound:
				anchorFound = true
				why = append(why, "newest backup that ended before the "+FormatDays(policy.KeepWithin)+" window: recovery to the start of the window needs it")
			}
		}
		if len(why) > 0 {
			kept = append(kept, KeptBackup{Backup: b, Reasons: why})
		} else {
			deleted = append(deleted, b)
		}
	}
	// Report oldest first, as a person reads a catalog.
	slices.Reverse(kept)
	slices.Reverse(deleted)
	return kept, deleted
}

// groupBackupObjects maps backup names to the objects under their prefix.
// Objects directly under the backups prefix are not any backup's and stay.
func groupBackupObjects(id repo.SystemID, objs []storage.ObjectInfo) map[string][]storage.ObjectInfo {
	prefix := repo.BackupPrefix(id)
	out := map[string][]storage.ObjectInfo{}
	for _, o := range objs {
		name, rest, ok := strings.Cut(strings.TrimPrefix(o.Key, prefix), "/")
		if !ok || name == "" || rest == "" || !strings.HasPrefix(o.Key, prefix) {
			continue
		}
		out[name] = append(out[name], o)
	}
	return out
}

func hasMetadata(objs []storage.ObjectInfo) bool {
	for _, o := range objs {
		if path.Base(o.Key) == repo.BackupMetadataName {
			return true
		}
	}
	return false
}

func prunedBackup(b basebackup.Backup, objs []storage.ObjectInfo) PrunedBackup {
	meta := b.Key(repo.BackupMetadataName)
	pb := PrunedBackup{Backup: b, Keys: []string{meta}}
	for _, o := range objs {
		pb.StoredSize += o.Size
		if o.Key != meta {
			pb.Keys = append(pb.Keys, o.Key)
		}
	}
	return pb
}

// pruneAncestry returns the timelines on tli's path (tli included), or false
// when its history file is missing and the path is unknown.
func pruneAncestry(tli wal.TimelineID, histories map[wal.TimelineID][]wal.HistoryEntry) (map[wal.TimelineID]bool, bool) {
	var spans []wal.TimelineSpan
	switch entries, ok := histories[tli]; {
	case tli == 1:
		spans = wal.Ancestry(1, nil)
	case ok:
		spans = wal.Ancestry(tli, entries)
	default:
		return nil, false
	}
	on := map[wal.TimelineID]bool{}
	for _, s := range spans {
		on[s.TLI] = true
	}
	return on, true
}

// runningSince returns the earliest archive time from which a running
// backup may need WAL: its start time (on the database server's clock, as
// its name says) less backupClockMargin for the repository's clock. ok is
// false when a running backup's start is unknown (not a name pitr gives).
func runningSince(names []string) (since time.Time, ok bool) {
	for _, name := range names {
		// Names are the UTC start time on the server's clock, possibly
		// with a "-N" suffix when two backups started in one second.
		stamp, _, _ := strings.Cut(name, "-")
		start, err := time.Parse(basebackup.NameLayout, stamp)
		if err != nil {
			return time.Time{}, false
		}
		start = start.Add(-backupClockMargin)
		if since.IsZero() || start.Before(since) {
			since = start
		}
	}
	return since, true
}

func planWAL(plan *PrunePlan, in PruneInputs, size wal.SegmentSize) {
	kept := plan.Keep
	globalCut := size.SegmentOf(kept[0].Backup.StartLSN)
	for _, k := range kept {
		globalCut = min(globalCut, size.SegmentOf(k.Backup.StartLSN))
	}
	running, runningKnown := runningSince(plan.InProgress)
	if !runningKnown {
		plan.Notes = append(plan.Notes, fmt.Sprintf("no WAL deleted: a backup is in progress (%s) and its start time is unknown",
			strings.Join(plan.InProgress, ", ")))
		return
	}

	type tlCut struct {
		known      bool
		cut        wal.SegNo
		summary    *TimelineCut
		noHistory  int
		forRunning int
	}
	cuts := map[wal.TimelineID]*tlCut{}
	cutFor := func(tli wal.TimelineID) *tlCut {
		if c, ok := cuts[tli]; ok {
			return c
		}
		on, known := pruneAncestry(tli, in.Histories)
		c := &tlCut{known: known, cut: globalCut, summary: &TimelineCut{TLI: tli}}
		reached := false
		for _, k := range kept {
			if !on[k.Backup.StartTimeline] {
				continue
			}
			if s := size.SegmentOf(k.Backup.StartLSN); !reached || s < c.cut {
				c.cut = s
			}
			reached = true
		}
		cuts[tli] = c
		return c
	}

	files := append([]WALFile(nil), in.WAL...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	var unparseable []string
	for _, f := range files {
		kind, err := wal.Classify(f.Name)
		if err != nil || kind == wal.KindTimelineHistory {
			continue // never deleted; invalid names are not in the listing
		}
		prefix, _ := wal.SegmentPrefix(f.Name)
		seg, err := size.ParseFileName(prefix)
		if err != nil {
			unparseable = append(unparseable, f.Name)
			continue
		}
		c := cutFor(seg.TLI)
		switch {
		case !c.known:
			c.noHistory++
			continue
		case seg.No >= c.cut:
			if c.summary.FirstKept == "" {
				c.summary.FirstKept = f.Name
			}
			continue
		case !running.IsZero() && (f.ArchivedAt.IsZero() || !f.ArchivedAt.Before(running)):
			c.forRunning++
			continue
		}
		key, err := repo.WALKey(plan.System, f.Name)
		if err != nil {
			unparseable = append(unparseable, f.Name)
			continue
		}
		plan.DeleteWAL = append(plan.DeleteWAL, PrunedWAL{Name: f.Name, Key: key, StoredSize: f.StoredSize})
		plan.WALBytes += f.StoredSize
		s := c.summary
		if s.Deleted == 0 {
			s.FirstDeleted = f.Name
		}
		s.Deleted++
		s.DeletedBytes += f.StoredSize
		s.LastDeleted = f.Name
	}

	tlis := make([]wal.TimelineID, 0, len(cuts))
	for tli := range cuts {
		tlis = append(tlis, tli)
	}
	slices.Sort(tlis)
	for _, tli := range tlis {
		c := cuts[tli]
		plan.Timelines = append(plan.Timelines, *c.summary)
		if c.noHistory > 0 {
			plan.Notes = append(plan.Notes, fmt.Sprintf("timeline %d: kept all %d files because %s is missing, so its ancestry is unknown",
				tli, c.noHistory, wal.HistoryFileName(tli)))
		}
		if c.forRunning > 0 {
			plan.Notes = append(plan.Notes, fmt.Sprintf("timeline %d: kept %d files archived since %s for the backup in progress (%s)",
				tli, c.forRunning, FormatPGTime(running), strings.Join(plan.InProgress, ", ")))
		}
	}
	if len(unparseable) > 0 {
		plan.Notes = append(plan.Notes, fmt.Sprintf("kept %d files whose names do not fit %s segments (first: %s)", len(unparseable), size, unparseable[0]))
	}
}

// PruneResult counts what ExecutePrune deleted.
type PruneResult struct {
	Backups      int
	Leftovers    int
	WAL          int
	DeletedBytes int64
	// Skipped names leftovers found active again when about to delete them.
	Skipped []string
	// Locked counts objects the repository refused to delete because of
	// their retention (S3 Object Lock); they go in a prune after it ends.
	// LockedBackups names complete backups kept whole for that reason.
	Locked        int
	LockedBackups []string
}

// walDeleteWorkers bounds concurrent WAL deletions: enough to hide S3
// round-trip times, few enough not to be throttled.
const walDeleteWorkers = 8

// ExecutePrune deletes what plan says, in an order that keeps the repository
// consistent if it stops at any point: each backup's metadata before its
// parts (an interrupted deletion leaves an incomplete backup, which a later
// prune removes), and all backups before any WAL (so no backup that still
// exists ever lacks its WAL). ctx should be the prune lock's context, which
// is cancelled when the lock is lost; deletion stops at the next step.
func ExecutePrune(ctx context.Context, st storage.Store, plan PrunePlan, log *slog.Logger) (PruneResult, error) {
	var res PruneResult
	stopped := func() error {
		if ctx.Err() == nil {
			return nil
		}
		return fmt.Errorf("prune stopped: %w", context.Cause(ctx))
	}
	for _, b := range plan.DeleteBackups {
		if err := stopped(); err != nil {
			return res, err
		}
		locked := 0
		for i, key := range b.Keys {
			err := st.Delete(ctx, key)
			if errors.Is(err, storage.ErrLocked) {
				locked++
				if i == 0 {
					// The metadata goes first: while it stays, the backup
					// is complete and stays whole.
					break
				}
				continue
			}
			if err != nil {
				if stop := stopped(); stop != nil {
					return res, stop
				}
				return res, fmt.Errorf("delete backup %s: %w", b.Backup.Name, err)
			}
		}
		res.Locked += locked
		if locked > 0 {
			if _, err := st.Stat(ctx, b.Keys[0]); err == nil {
				res.LockedBackups = append(res.LockedBackups, b.Backup.Name)
				log.Warn("backup is under retention (object lock); kept until it ends", "backup", b.Backup.Name)
				continue
			}
			log.Warn("backup deleted, but some of its objects are under retention (object lock); a later prune removes them", "backup", b.Backup.Name, "locked", locked)
		}
		res.Backups++
		res.DeletedBytes += b.StoredSize
		log.Info("deleted backup", "backup", b.Backup.Name, "stop_time", b.Backup.StopTime, "stored", b.StoredSize)
	}
	for _, lo := range plan.Leftovers {
		if err := stopped(); err != nil {
			return res, err
		}
		outcome, err := deleteLeftover(ctx, st, plan, lo)
		if errors.Is(err, storage.ErrLocked) {
			res.Locked++
			log.Warn("incomplete backup is under retention (object lock); left for a later prune", "backup", lo.Name)
			continue
		}
		if err != nil {
			if stop := stopped(); stop != nil {
				return res, stop
			}
			return res, err
		}
		switch outcome {
		case leftoverGone: // removed meanwhile, by a backup's own cleanup
			continue
		case leftoverAlive:
			res.Skipped = append(res.Skipped, lo.Name)
			log.Warn("incomplete backup was written to since prune listed it; left alone", "backup", lo.Name)
			continue
		}
		res.Leftovers++
		res.DeletedBytes += lo.StoredSize
		log.Info("deleted incomplete backup", "backup", lo.Name, "last_written", lo.LastWritten, "stored", lo.StoredSize)
	}
	if len(res.LockedBackups) > 0 {
		// WAL is written before the backups that need it, so its retention
		// may have ended while theirs has not: deleting it now would leave
		// a complete backup that cannot be restored.
		if len(plan.DeleteWAL) > 0 {
			log.Warn("no WAL deleted: backups it belongs to are under retention", "backups", strings.Join(res.LockedBackups, ", "))
		}
		return res, nil
	}
	n, locked, bytes, err := deleteWAL(ctx, st, plan.DeleteWAL, stopped)
	res.WAL, res.DeletedBytes = n, res.DeletedBytes+bytes
	res.Locked += locked
	if locked > 0 {
		log.Warn("WAL files under retention (object lock) left for a later prune", "files", locked)
	}
	if n > 0 {
		log.Info("deleted WAL", "files", n, "stored", bytes, "first", plan.DeleteWAL[0].Name, "last", plan.DeleteWAL[len(plan.DeleteWAL)-1].Name)
	}
	return res, err
}

// deleteLeftover lists the incomplete backup again right before deleting it:
// if it completed or wrote anything recent since the plan was made, it is
// alive and stays. basebackup.DeleteIncomplete removes the heartbeat last, so
// an interrupted deletion still looks like leftovers.
func deleteLeftover(ctx context.Context, st storage.Store, plan PrunePlan, lo Leftover) (leftoverOutcome, error) {
	objs, err := st.List(ctx, repo.BackupKey(plan.System, lo.Name, ""))
	if err != nil {
		return 0, fmt.Errorf("list incomplete backup %s: %w", lo.Name, err)
	}
	if len(objs) == 0 {
		return leftoverGone, nil
	}
	recentSince := plan.RepoNow.Add(-plan.Policy.incompleteAfter())
	for _, o := range objs {
		if path.Base(o.Key) == repo.BackupMetadataName || o.ModTime.IsZero() || o.ModTime.After(recentSince) {
			return leftoverAlive, nil
		}
	}
	if err := basebackup.DeleteIncomplete(ctx, st, plan.System, basebackup.Incomplete{Name: lo.Name, Objects: objs}); err != nil {
		return 0, fmt.Errorf("delete incomplete backup %s: %w", lo.Name, err)
	}
	return leftoverDeleted, nil
}

type leftoverOutcome int

const (
	leftoverDeleted leftoverOutcome = iota + 1
	leftoverAlive
	leftoverGone
)

// deleteWAL deletes files with a few workers, oldest first in batches, and
// checks stopped between batches. The order is only tidiness: every file in
// the list is unneeded, so a partial run leaves no hole anything relies on.
func deleteWAL(ctx context.Context, st storage.Store, files []PrunedWAL, stopped func() error) (deleted, locked int, bytes int64, err error) {
	const batch = 64
	for start := 0; start < len(files); start += batch {
		if err := stopped(); err != nil {
			return deleted, locked, bytes, err
		}
		part := files[start:min(start+batch, len(files))]
		errs := make([]error, len(part))
		var wg sync.WaitGroup
		next := make(chan int)
		for range min(walDeleteWorkers, len(part)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					errs[i] = st.Delete(ctx, part[i].Key)
				}
			}()
		}
		for i := range part {
			next <- i
		}
		close(next)
		wg.Wait()
		for i, err := range errs {
			if errors.Is(err, storage.ErrLocked) {
				locked++
				continue
			}
			if err != nil {
				if stop := stopped(); stop != nil {
					return deleted, locked, bytes, stop
				}
				return deleted, locked, bytes, fmt.Errorf("delete WAL file %s: %w", part[i].Name, err)
			}
			deleted++
			bytes += part[i].StoredSize
		}
	}
	return deleted, locked, bytes, nil
}

// Describe writes the plan for a person: what goes, what stays and why.
// dryRun changes "Delete" into "Would delete".
func (p PrunePlan) Describe(w io.Writer, dryRun bool) {
	verb := "Delete"
	if dryRun {
		verb = "Would delete"
	}
	fmt.Fprintf(w, "Retention: %s\n", p.Policy)
	fmt.Fprintf(w, "Keep %d %s:\n", len(p.Keep), prunePlural(len(p.Keep), "backup", "backups"))
	for _, k := range p.Keep {
		b := k.Backup
		fmt.Fprintf(w, "  %-20s ended %s  %9s  %s\n", b.Name, FormatPGTime(b.StopTime), units.Bytes(b.StoredSize), strings.Join(k.Reasons, "; "))
	}
	if len(p.DeleteBackups) > 0 {
		fmt.Fprintf(w, "%s %d %s:\n", verb, len(p.DeleteBackups), prunePlural(len(p.DeleteBackups), "backup", "backups"))
		for _, d := range p.DeleteBackups {
			b := d.Backup
			fmt.Fprintf(w, "  %-20s ended %s  %9s\n", b.Name, FormatPGTime(b.StopTime), units.Bytes(d.StoredSize))
		}
	}
	if len(p.Leftovers) > 0 {
		fmt.Fprintf(w, "%s %d incomplete %s (no %s, nothing written for over %s):\n", verb, len(p.Leftovers),
			prunePlural(len(p.Leftovers), "backup", "backups"), repo.BackupMetadataName, FormatDays(p.Policy.incompleteAfter()))
		for _, lo := range p.Leftovers {
			fmt.Fprintf(w, "  %-20s last written %s  %d objects  %s\n", lo.Name, FormatPGTime(lo.LastWritten), len(lo.Keys), units.Bytes(lo.StoredSize))
		}
	}
	if len(p.InProgress) > 0 {
		fmt.Fprintf(w, "Leave %d incomplete %s alone (written within %s, may be in progress): %s\n", len(p.InProgress),
			prunePlural(len(p.InProgress), "backup", "backups"), FormatDays(p.Policy.incompleteAfter()), strings.Join(p.InProgress, ", "))
	}
	if n := len(p.DeleteWAL); n > 0 {
		fmt.Fprintf(w, "%s %d WAL %s (%s): %s .. %s\n", verb, n, prunePlural(n, "file", "files"), units.Bytes(p.WALBytes), p.DeleteWAL[0].Name, p.DeleteWAL[n-1].Name)
	} else {
		fmt.Fprintf(w, "%s no WAL\n", verb)
	}
	for _, t := range p.Timelines {
		switch {
		case t.Deleted > 0 && t.FirstKept != "":
			fmt.Fprintf(w, "  timeline %d: %d files %s .. %s; kept from %s\n", t.TLI, t.Deleted, t.FirstDeleted, t.LastDeleted, t.FirstKept)
		case t.Deleted > 0:
			fmt.Fprintf(w, "  timeline %d: %d files %s .. %s; nothing kept\n", t.TLI, t.Deleted, t.FirstDeleted, t.LastDeleted)
		case t.FirstKept != "":
			fmt.Fprintf(w, "  timeline %d: nothing; kept from %s\n", t.TLI, t.FirstKept)
		}
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func prunePlural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
