package basebackup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// NameLayout formats a backup's name from its UTC start time; names sort in
// time order and are unique per second (a suffix "-2", "-3" otherwise).
const NameLayout = "20060102T150405Z"

// Defaults of Options.
const (
	DefaultManifestChecksums = "CRC32C"
	// DefaultWALTimeout bounds the wait for the backup's WAL to appear in
	// the repository after the server reported it archived. The server has
	// already waited for its archiver by then, so this only matters for
	// backups from a standby or a slow or misconfigured archive_command.
	DefaultWALTimeout = 5 * time.Minute
)

// Heartbeat timing. A running backup rewrites its in-progress object every
// HeartbeatInterval; a backup directory without metadata whose newest object
// is older than StaleAfter (measured on the repository's clock) belongs to a
// backup that died, and may be deleted. A backup that cannot refresh its
// heartbeat for StaleAfter/2 gives up on its own, so it is never still
// running when someone else considers it dead.
var (
	HeartbeatInterval = 30 * time.Second
	StaleAfter        = 10 * time.Minute
)

// progressInterval is how often a running backup logs its progress.
const progressInterval = 30 * time.Second

// Errors a caller may want to tell apart.
var (
	// ErrArchivingOff: the server does not archive WAL, so a backup could
	// never be made consistent from the repository.
	ErrArchivingOff = errors.New("WAL archiving is not enabled")
	// ErrWALNotArchived: the WAL the backup needs did not reach the
	// repository in time; the backup was discarded.
	ErrWALNotArchived = errors.New("WAL needed by the backup is not in the repository")
)

// Options configure Take.
type Options struct {
	Store storage.Store // the repository root
	Codec codec.Options
	// DSN is a libpq connection string (keyword/value or URI); "" uses the
	// PGHOST, PGPORT, PGUSER, ... environment, as pg_basebackup does.
	DSN string
	// PGBin is the directory of pg_basebackup; "" means
	// DefaultPGBinDir(server major version).
	PGBin          string
	Label          string // "" means "pitr backup <name>"
	FastCheckpoint bool   // CHECKPOINT 'fast' instead of spreading it out
	// MaxRate limits the transfer rate (pg_basebackup -r syntax: kB/s,
	// or with a k or M suffix); "" is unlimited.
	MaxRate string
	// ManifestChecksums is the per-file checksum of backup_manifest
	// (CRC32C, SHA224, SHA256, SHA384, SHA512 or NONE); "" means CRC32C.
	ManifestChecksums string
	WALTimeout        time.Duration // 0 means DefaultWALTimeout
	PitrVersion       string
	Log               *slog.Logger
}

func (o *Options) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Take takes a base backup of the server o.DSN reaches into the repository
// and returns its metadata once it is complete: every part stored and
// verified against the server's backup_manifest, every WAL segment from the
// backup's start to its end present in the repository, and backup.json
// written last. On any failure the backup's objects are removed (or left
// for the next backup or prune to remove) and no metadata exists.
func Take(ctx context.Context, o Options) (Backup, error) {
	log := o.log()
	srv, err := QueryServer(ctx, o.DSN)
	if err != nil {
		return Backup{}, err
	}
	log.Info("connected", "server_version", srv.VersionString(), "system_identifier", srv.SystemID,
		"timeline", srv.Timeline, "wal_segment_size", srv.WALSegmentSize, "data_checksums", srv.DataChecksums,
		"standby", srv.InRecovery, "tablespaces", len(srv.Tablespaces))
	if srv.Major() < 13 {
		return Backup{}, fmt.Errorf("the server is PostgreSQL %s; pitr backup needs 13 or later (backup manifests)", srv.VersionString())
	}
	if err := checkArchiving(srv); err != nil {
		return Backup{}, err
	}
	// Before anything else: a wrong pg_basebackup must not get to write
	// a single object.
	pgBaseBackup, err := checkPGBaseBackup(ctx, o.PGBin, srv)
	if err != nil {
		return Backup{}, err
	}
	alg := strings.ToUpper(o.ManifestChecksums)
	if alg == "" {
		alg = DefaultManifestChecksums
	}
	if alg != "NONE" {
		if _, err := newFileChecksum(alg); err != nil {
			return Backup{}, fmt.Errorf("manifest checksums: %w", err)
		}
	}
	rateKB, err := maxRateKB(o.MaxRate)
	if err != nil {
		return Backup{}, err
	}
	if err := checkLabel(o.Label); err != nil {
		return Backup{}, err
	}
	// Row estimates for drills. Not needed to restore, so a failure to read
	// them (a database refusing this role, say) costs only that check.
	tables, err := tableEstimates(ctx, o.DSN)
	if err != nil {
		log.Warn("could not read table row estimates; drills of this backup check rows less strictly", "err", err)
	}
	useProtocol := len(srv.Tablespaces) > 0
	if useProtocol && srv.Major() < 15 {
		return Backup{}, fmt.Errorf("the cluster has tablespaces and the server is PostgreSQL %s: pitr backs up clusters with tablespaces from PostgreSQL 15 on", srv.VersionString())
	}
	if _, err := repo.Init(ctx, o.Store, srv.SystemID, srv.Clock); err != nil {
		return Backup{}, err
	}
	preflightArchive(ctx, o.Store, srv, log)

	r := &run{o: &o, srv: srv, log: log, alg: alg, startTime: srv.Clock, tables: tables}
	if err := r.begin(ctx); err != nil {
		return Backup{}, err
	}
	log = log.With("backup", r.name)
	r.log = log

	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopHeartbeat := r.heartbeat(ctx, cancel)
	r.cleanupLeftovers(ctx)
	r.config = r.captureConfig(ctx)

	b, err := r.take(ctx, pgBaseBackup, useProtocol, rateKB)
	stopHeartbeat()
	if err != nil {
		r.abandon(ctx)
		if parent.Err() != nil {
			// A signal: say so plainly rather than through whichever
			// read or write noticed first.
			return Backup{}, fmt.Errorf("backup %s interrupted (%v); nothing was recorded: %w", r.name, context.Cause(parent), err)
		}
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		return Backup{}, fmt.Errorf("backup %s: %w", r.name, err)
	}
	// The backup exists from here on; the heartbeat object is just noise.
	if err := o.Store.Delete(context.WithoutCancel(ctx), r.key(repo.BackupInProgressName)); err != nil {
		log.Warn("could not remove the heartbeat object of the completed backup", "err", err)
	}
	return b, nil
}

func checkArchiving(s Server) error {
	if s.InRecovery {
		// A standby's WAL is archived by its primary (or by the standby
		// with archive_mode = always); the check after the backup is what
		// proves the WAL arrived.
		return nil
	}
	if s.ArchiveMode == "off" {
		return fmt.Errorf("%w: archive_mode is off, so the WAL that makes a backup consistent would never reach the repository "+
			"and the backup could not be restored; set archive_mode = on and archive_command = 'pitr archive-push %%p' (needs a restart)", ErrArchivingOff)
	}
	if s.ArchiveCommand == "" && s.ArchiveLibrary == "" {
		return fmt.Errorf("%w: archive_mode is %s but archive_command is empty; set archive_command = 'pitr archive-push %%p'", ErrArchivingOff, s.ArchiveMode)
	}
	return nil
}

func checkLabel(l string) error {
	if strings.ContainsAny(l, "\n\r\x00") {
		return fmt.Errorf("backup label %q must be one line", l)
	}
	if len(l) > 1000 {
		return fmt.Errorf("backup label is %d bytes; PostgreSQL takes at most 1000", len(l))
	}
	return nil
}

// preflightArchive warns early about an archive that will make the backup
// fail at its end, hours later: the last file the server archived is not in
// this repository, or archiving is failing right now.
func preflightArchive(ctx context.Context, st storage.Store, srv Server, log *slog.Logger) {
	if !srv.LastFailedTime.IsZero() && srv.LastFailedTime.After(srv.LastArchivedTime) {
		log.Warn("WAL archiving is failing on the server; the backup cannot complete until it works again",
			"last_failed_wal", srv.LastFailedWAL, "last_failed_time", srv.LastFailedTime)
	}
	// Any kind of file will do (after a backup it is the .backup file).
	key, err := repo.WALKey(srv.SystemID, srv.LastArchivedWAL)
	if err != nil {
		return
	}
	if _, err := st.Stat(ctx, key); errors.Is(err, storage.ErrNotExist) {
		log.Warn("the last WAL file the server archived is not in this repository: is archive_command 'pitr archive-push %p' "+
			"with this repository? The backup fails at its end if its WAL does not arrive", "last_archived_wal", srv.LastArchivedWAL)
	}
}

// run is one backup in progress.
type run struct {
	o         *Options
	srv       Server
	log       *slog.Logger
	alg       string
	name      string
	label     string
	startTime time.Time
	tables    []TableEstimate
	config    []ConfigFile
	lastBeat  atomic.Int64 // unix nanos (local monotonic-free clock) of the last heartbeat written
	streamed  atomic.Int64 // bytes read from the server so far
}

func (r *run) key(object string) string { return repo.BackupKey(r.srv.SystemID, r.name, object) }

// inProgress is the content of the heartbeat object, for people looking at
// the repository; liveness is judged by the object's modification time.
type inProgress struct {
	Name        string    `json:"name"`
	Host        string    `json:"host"`
	PID         int       `json:"pid"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	PitrVersion string    `json:"pitr_version"`
}

// begin picks a free name and claims it with the heartbeat object.
func (r *run) begin(ctx context.Context) error {
	base := r.startTime.UTC().Format(NameLayout)
	for i := 1; ; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		objs, err := r.o.Store.List(ctx, repo.BackupPrefix(r.srv.SystemID)+name+"/")
		if err != nil {
			return fmt.Errorf("backup %s: %w", name, err)
		}
		if len(objs) == 0 {
			r.name = name
			break
		}
		if i >= 100 {
			return fmt.Errorf("backup names %s to %s are all taken", base, name)
		}
	}
	r.label = r.o.Label
	if r.label == "" {
		r.label = "pitr backup " + r.name
	}
	if err := r.writeHeartbeat(ctx); err != nil {
		return fmt.Errorf("backup %s: %w", r.name, err)
	}
	return nil
}

func (r *run) writeHeartbeat(ctx context.Context) error {
	host, _ := os.Hostname()
	now := time.Now()
	b, err := json.MarshalIndent(inProgress{Name: r.name, Host: host, PID: os.Getpid(), StartedAt: r.startTime,
		HeartbeatAt: now.UTC(), PitrVersion: r.o.PitrVersion}, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := codec.Put(ctx, r.o.Store, r.key(repo.BackupInProgressName), bytes.NewReader(b), int64(len(b)), r.o.Codec); err != nil {
		return fmt.Errorf("write heartbeat: %w", err)
	}
	r.lastBeat.Store(now.UnixNano())
	return nil
}

// heartbeat refreshes the heartbeat object until stopped, and cancels the
// backup if it cannot for StaleAfter/2: past that, another backup or prune
// may take this one for dead and delete its objects.
func (r *run) heartbeat(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	hctx, hcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(HeartbeatInterval)
		defer tick.Stop()
		progress := time.NewTicker(progressInterval)
		defer progress.Stop()
		started := time.Now()
		for {
			select {
			case <-hctx.Done():
				return
			case <-progress.C:
				n := r.streamed.Load()
				r.log.Info("backup progress", "streamed", n,
					"rate_mb_s", fmt.Sprintf("%.1f", float64(n)/time.Since(started).Seconds()/(1<<20)))
			case <-tick.C:
				if err := r.writeHeartbeat(hctx); err != nil && hctx.Err() == nil {
					r.log.Warn("could not refresh the backup's heartbeat", "err", err)
				}
				if err := r.checkHeartbeat(); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	return func() {
		hcancel()
		<-done
	}
}

func (r *run) checkHeartbeat() error {
	since := time.Since(time.Unix(0, r.lastBeat.Load()))
	if since > StaleAfter/2 {
		return fmt.Errorf("could not refresh the backup's heartbeat in the repository for %v; "+
			"another pitr could consider this backup dead and delete it", since.Round(time.Second))
	}
	return nil
}

// cleanupLeftovers deletes what interrupted backups left behind. Only
// directories without metadata whose newest object is older than
// StaleAfter on the repository's own clock (the modification time of the
// heartbeat this backup just wrote) go: a backup that is still running
// refreshes its heartbeat far more often. Failures are warnings; prune and
// later backups try again.
func (r *run) cleanupLeftovers(ctx context.Context) {
	info, err := r.o.Store.Stat(ctx, r.key(repo.BackupInProgressName))
	if err != nil || info.ModTime.IsZero() {
		r.log.Warn("cannot tell the repository's time; leftovers of interrupted backups are not cleaned up this time", "err", err)
		return
	}
	incomplete, err := ListIncomplete(ctx, r.o.Store, r.srv.SystemID)
	if err != nil {
		r.log.Warn("could not look for leftovers of interrupted backups", "err", err)
		return
	}
	for _, inc := range incomplete {
		if inc.Name == r.name || !inc.Stale(info.ModTime) {
			continue
		}
		if err := DeleteIncomplete(ctx, r.o.Store, r.srv.SystemID, inc); err != nil {
			r.log.Warn("could not remove the leftovers of an interrupted backup", "leftover", inc.Name, "err", err)
			continue
		}
		r.log.Info("removed the leftovers of an interrupted backup", "leftover", inc.Name,
			"objects", len(inc.Objects), "last_write", inc.LastWrite)
	}
}

// abandon removes the objects of a failed backup. It runs on a fresh
// context: the backup's own may be what was cancelled.
func (r *run) abandon(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	inc := Incomplete{Name: r.name}
	objs, err := r.o.Store.List(ctx, repo.BackupPrefix(r.srv.SystemID)+r.name+"/")
	if err == nil {
		inc.Objects = objs
		err = DeleteIncomplete(ctx, r.o.Store, r.srv.SystemID, inc)
	}
	if err != nil {
		r.log.Warn("could not remove the failed backup's objects; the next backup or prune removes them", "err", err)
	}
}

// take streams the backup into the repository and checks it.
func (r *run) take(ctx context.Context, pgBaseBackup string, useProtocol bool, rateKB int) (Backup, error) {
	check, err := newStreamCheck(r.alg)
	if err != nil {
		return Backup{}, err
	}
	sink := &repoSink{ctx: ctx, r: r, check: check}
	var manifestData []byte
	method := ""
	if useProtocol {
		method = MethodReplication
		r.log.Info("starting backup over the replication protocol (the cluster has tablespaces)",
			"label", r.label, "checkpoint", checkpointMode(r.o.FastCheckpoint))
		res, err := runProtocolBackup(ctx, r.o.DSN, baseBackupCommand(r.o, r.label, r.alg, rateKB), r.log, sink)
		if err != nil {
			return Backup{}, err
		}
		manifestData = res.manifest
	} else {
		method = MethodPGBaseBackup
		args := pgBaseBackupArgs(r.o, r.label, r.alg)
		r.log.Info("starting pg_basebackup", "path", pgBaseBackup, "label", r.label, "checkpoint", checkpointMode(r.o.FastCheckpoint))
		err := runPGBaseBackup(ctx, pgBaseBackup, args, r.log, func(stdout io.Reader) error {
			return sink.archive(repo.BackupBaseTarName, 0, stdout)
		})
		if err != nil {
			return Backup{}, err
		}
		manifestData = check.manifest
		if len(manifestData) == 0 {
			return Backup{}, fmt.Errorf("pg_basebackup's stream ended without a backup_manifest")
		}
	}
	stopTime, err := serverClock(ctx, r.o.DSN, r.srv.SystemID)
	if err != nil {
		return Backup{}, err
	}

	m, err := ParseManifest(manifestData)
	if err != nil {
		return Backup{}, err
	}
	if err := check.check(m); err != nil {
		return Backup{}, err
	}
	label, tsMap, err := r.checkContents(check, m, sink)
	if err != nil {
		return Backup{}, err
	}
	manifestPart, err := r.putPart(ctx, repo.BackupManifestName, bytes.NewReader(manifestData), int64(len(manifestData)))
	if err != nil {
		return Backup{}, err
	}

	b := Backup{
		Version:          MetadataVersion,
		Name:             r.name,
		Label:            r.label,
		SystemIdentifier: r.srv.SystemID,
		PGVersionNum:     r.srv.VersionNum,
		WALSegmentSize:   uint64(r.srv.WALSegmentSize),
		DataChecksums:    r.srv.DataChecksums,
		StartLSN:         label.StartLSN,
		CheckpointLSN:    label.CheckpointLSN,
		StartTimeline:    label.StartTLI,
		StopLSN:          m.WALRanges[len(m.WALRanges)-1].End,
		StopTimeline:     m.WALRanges[len(m.WALRanges)-1].Timeline,
		StartTime:        r.startTime,
		StopTime:         stopTime,
		Codec:            r.o.Codec.Codec.String(),
		Method:           method,
		BackupFrom:       label.From,
		PitrVersion:      r.o.PitrVersion,
		Tables:           r.tables,
		ConfigFiles:      r.config,
	}
	b.Parts = append(sink.parts, manifestPart)
	for _, p := range b.Parts {
		b.Size += p.Size
		b.StoredSize += p.StoredSize
	}
	b.Tablespaces = tablespacesOf(tsMap, r.srv.Tablespaces)
	if err := b.Validate(); err != nil {
		return Backup{}, err
	}

	r.log.Info("backup streamed; checking that its WAL is in the repository",
		"start_lsn", b.StartLSN, "stop_lsn", b.StopLSN, "timeline", b.StopTimeline, "size", b.Size, "stored", b.StoredSize)
	if err := r.waitForWAL(ctx, m.WALRanges); err != nil {
		return Backup{}, err
	}
	if err := r.finish(ctx, b); err != nil {
		return Backup{}, err
	}
	return b, nil
}

// Values of Backup.Method.
const (
	MethodPGBaseBackup = "pg_basebackup"
	MethodReplication  = "replication-protocol"
)

func checkpointMode(fast bool) string {
	if fast {
		return "fast"
	}
	return "spread"
}

// checkContents cross-checks the captured files with each other, with the
// server and with the archives that were stored.
func (r *run) checkContents(check *streamCheck, m *Manifest, sink *repoSink) (wal.BackupLabel, []TablespaceMapEntry, error) {
	label, err := r.checkLabelAndManifest(check, m)
	if err != nil {
		return label, nil, err
	}
	entries, err := ParseTablespaceMap(check.tablespaceMap)
	if err != nil {
		return label, nil, err
	}
	inMap := map[uint32]bool{}
	for _, e := range entries {
		inMap[e.OID] = true
		if !sink.hasTablespace(e.OID) {
			return label, nil, fmt.Errorf("tablespace_map lists tablespace %d (%s), but the server sent no archive for it", e.OID, e.Path)
		}
	}
	for _, oid := range sink.oids {
		if !inMap[oid] {
			return label, nil, fmt.Errorf("the server sent an archive for tablespace %d, which tablespace_map does not list", oid)
		}
	}
	return label, entries, nil
}

func (r *run) checkLabelAndManifest(check *streamCheck, m *Manifest) (wal.BackupLabel, error) {
	if check.label == nil {
		return wal.BackupLabel{}, fmt.Errorf("the backup has no backup_label")
	}
	label, err := wal.ParseBackupLabel(check.label)
	if err != nil {
		return wal.BackupLabel{}, err
	}
	if label.Label != r.label {
		return label, fmt.Errorf("backup_label says LABEL %q, pitr asked for %q", label.Label, r.label)
	}
	first := m.WALRanges[0]
	if first.Start != label.StartLSN || first.Timeline != label.StartTLI {
		return label, fmt.Errorf("backup_manifest starts WAL at %s on timeline %d, backup_label at %s on timeline %d",
			first.Start, first.Timeline, label.StartLSN, label.StartTLI)
	}
	if id := check.systemIdentifier(); repo.SystemID(id) != r.srv.SystemID {
		return label, fmt.Errorf("the backup's global/pg_control names database system %d, the server said %s", id, r.srv.SystemID)
	}
	if m.SystemIdentifier != 0 && repo.SystemID(m.SystemIdentifier) != r.srv.SystemID {
		return label, fmt.Errorf("backup_manifest names database system %d, the server said %s", m.SystemIdentifier, r.srv.SystemID)
	}
	return label, nil
}

// waitForWAL waits (at most WALTimeout) until every segment from the
// backup's start to its end is in the repository. Segments are named with
// the end-pointer rule for the last one: a stop LSN on a segment boundary
// does not need the next file.
func (r *run) waitForWAL(ctx context.Context, ranges []WALRange) error {
	timeout := r.o.WALTimeout
	if timeout <= 0 {
		timeout = DefaultWALTimeout
	}
	deadline := time.Now().Add(timeout)
	seg := r.srv.WALSegmentSize
	checked := 0
	for _, rg := range ranges {
		first, last := seg.SegmentOf(rg.Start), seg.SegmentOfEnd(rg.End)
		if last < first {
			last = first
		}
		for n := first; n <= last; n++ {
			name := seg.FileName(wal.Segment{TLI: rg.Timeline, No: n})
			key, err := repo.WALKey(r.srv.SystemID, name)
			if err != nil {
				return err
			}
			waited := false
			for {
				_, err := r.o.Store.Stat(ctx, key)
				if err == nil {
					break
				}
				if !errors.Is(err, storage.ErrNotExist) {
					return fmt.Errorf("check archived WAL %s: %w", name, err)
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%w: %s (the backup needs %s to %s on timeline %d) did not arrive within %v; "+
						"is archive_command 'pitr archive-push %%p' with this repository, and is it succeeding (pg_stat_archiver)?",
						ErrWALNotArchived, name, rg.Start, rg.End, rg.Timeline, timeout)
				}
				if !waited {
					r.log.Info("waiting for WAL to be archived", "file", name, "timeout", timeout)
					waited = true
				}
				select {
				case <-ctx.Done():
					return context.Cause(ctx)
				case <-time.After(time.Second):
				}
			}
			checked++
		}
	}
	r.log.Info("the backup's WAL is in the repository", "segments", checked)
	return nil
}

// finish writes backup.json after making sure that everything it describes
// is still there: a concurrent cleanup that wrongly took this backup for dead
// would have deleted parts, and then the backup must fail, not be recorded.
func (r *run) finish(ctx context.Context, b Backup) error {
	if err := r.checkHeartbeat(); err != nil {
		return err
	}
	for _, p := range append([]Part{{Name: repo.BackupInProgressName}}, b.Parts...) {
		if _, err := r.o.Store.Stat(ctx, r.key(p.Name)); err != nil {
			return fmt.Errorf("%s vanished from the repository before the backup completed: %w", p.Name, err)
		}
	}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := r.o.Store.Put(ctx, r.key(repo.BackupMetadataName), bytes.NewReader(data)); err != nil {
		return fmt.Errorf("write %s: %w", repo.BackupMetadataName, err)
	}
	return nil
}

// putPart stores one part through the codec.
func (r *run) putPart(ctx context.Context, name string, src io.Reader, size int64) (Part, error) {
	opts := r.o.Codec
	if size < 0 {
		// A streamed archive: its SHA-256 on its own goroutine keeps the
		// stream's goroutine to reading, checking and feeding zstd.
		opts.HashAside = true
	}
	stored, err := codec.Put(ctx, r.o.Store, r.key(name), src, size, opts)
	if err != nil {
		return Part{}, fmt.Errorf("store %s: %w", name, err)
	}
	part := Part{Name: name, Size: stored.Size, StoredSize: stored.StoredSize}
	part.SHA256, part.Checksum = stored.Record()
	return part, nil
}

// repoSink stores each archive as one part while streamCheck reads the same
// bytes: the stream is read once, through a TeeReader into a pipe, so memory
// stays bounded whatever the size of the database.
type repoSink struct {
	ctx   context.Context
	r     *run
	check *streamCheck

	mu    sync.Mutex
	parts []Part
	oids  []uint32
}

func (s *repoSink) archive(name string, oid uint32, src io.Reader) error {
	prefix := ""
	if oid != 0 {
		prefix = fmt.Sprintf("pg_tblspc/%d/", oid)
		name = repo.BackupTablespaceTarName(oid)
	}
	pr, pw := io.Pipe()
	var putDone atomic.Bool
	verifyErr := make(chan error, 1)
	verifyFirst := make(chan bool, 1)
	go func() {
		err := s.check.readArchive(pr, prefix)
		// A verification failure while the upload is still reading is the
		// root cause: failing the pipe makes the upload fail too, so no
		// object that failed verification is ever completed.
		verifyFirst <- err != nil && !putDone.Load()
		pr.CloseWithError(err)
		verifyErr <- err
	}()
	counted := &countingReader{r: src, n: &s.r.streamed}
	part, perr := s.r.putPart(s.ctx, name, io.TeeReader(counted, pw), -1)
	putDone.Store(true)
	pw.CloseWithError(perr)
	first := <-verifyFirst
	verr := <-verifyErr
	switch {
	case verr != nil && first:
		return fmt.Errorf("%s: %w", name, verr)
	case perr != nil:
		return perr
	case verr != nil:
		return fmt.Errorf("%s: %w", name, verr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts = append(s.parts, part)
	if oid != 0 {
		s.oids = append(s.oids, oid)
	}
	s.r.log.Info("stored", "part", name, "size", part.Size, "stored", part.StoredSize)
	return nil
}

func (s *repoSink) hasTablespace(oid uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.oids {
		if o == oid {
			return true
		}
	}
	return false
}

// tablespacesOf describes the backup's tablespaces: locations from
// tablespace_map (the server's view at backup start), names from the catalog
// where it knew them.
func tablespacesOf(entries []TablespaceMapEntry, known []Tablespace) []Tablespace {
	var out []Tablespace
	for _, e := range entries {
		ts := Tablespace{OID: e.OID, Location: e.Path, Part: repo.BackupTablespaceTarName(e.OID)}
		for _, k := range known {
			if k.OID == e.OID {
				ts.Name = k.Name
			}
		}
		out = append(out, ts)
	}
	return out
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
