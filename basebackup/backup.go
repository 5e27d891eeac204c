// Package basebackup takes base backups of a running cluster into a
// repository and describes the backups that exist.
package basebackup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// MetadataVersion is the version of the Backup JSON this pitr writes.
const MetadataVersion = 1

// Backup is what a base backup needs to be restored and what the recovery
// planner reasons about. It is stored as repo.BackupMetadataName, written
// after every other object of the backup, so a backup without it does not
// exist. The JSON field names are a stable schema (pitr backup list --json).
type Backup struct {
	Version int    `json:"metadata_version"`
	Name    string `json:"name"` // sortable: UTC start time, e.g. 20260408T141301Z
	Label   string `json:"label"`

	SystemIdentifier repo.SystemID `json:"system_identifier"`
	PGVersionNum     int           `json:"pg_version_num"` // server_version_num, e.g. 150018
	WALSegmentSize   uint64        `json:"wal_segment_size"`
	DataChecksums    bool          `json:"data_checksums"`

	// The WAL range the backup needs: replay from StartLSN (the redo point
	// of the backup's checkpoint) on StartTimeline must reach StopLSN on
	// StopTimeline before the cluster is consistent.
	StartLSN      wal.LSN        `json:"start_lsn"`
	StopLSN       wal.LSN        `json:"stop_lsn"`
	CheckpointLSN wal.LSN        `json:"checkpoint_lsn"`
	StartTimeline wal.TimelineID `json:"start_timeline"`
	StopTimeline  wal.TimelineID `json:"stop_timeline"`
	// StartTime and StopTime are the server's clock (UTC) just before the
	// backup began and just after it ended; recovery targets before StopTime
	// cannot use this backup.
	StartTime time.Time `json:"start_time"`
	StopTime  time.Time `json:"stop_time"`

	// WALIncluded says whether the backup carries its own WAL (pg_wal.tar);
	// when false, the archive held StartLSN..StopLSN when the backup completed.
	WALIncluded bool `json:"wal_included"`

	Codec       string       `json:"codec"`
	Size        int64        `json:"size"`        // original bytes of all parts
	StoredSize  int64        `json:"stored_size"` // bytes in the repository
	Parts       []Part       `json:"parts"`
	Tablespaces []Tablespace `json:"tablespaces,omitempty"`

	PitrVersion string `json:"pitr_version"`

	// Tables are the planner's row estimates (pg_class.reltuples) of the
	// user tables when the backup started, so a drill can tell a table that
	// lost its rows from one that was always small. At most maxTables,
	// largest first; empty when they could not be read.
	Tables []TableEstimate `json:"tables,omitempty"`

	// Method is how the backup was taken: "pg_basebackup", or
	// "replication-protocol" (BASE_BACKUP spoken by pitr itself, for
	// clusters with tablespaces).
	Method string `json:"method,omitempty"`
	// BackupFrom is backup_label's BACKUP FROM: primary or standby.
	BackupFrom string `json:"backup_from,omitempty"`

	// ConfigFiles are the server's configuration files (config_file,
	// hba_file, ident_file and their includes); those outside the data
	// directory are objects of the backup. See ConfigFile.
	ConfigFiles []ConfigFile `json:"config_files,omitempty"`
}

// TableEstimate is one table's estimated row count at backup time.
type TableEstimate struct {
	Database string `json:"database"`
	Schema   string `json:"schema"`
	Name     string `json:"name"`
	Rows     int64  `json:"rows"` // -1: never analyzed
}

// Part is one object of a backup: base.tar, <oid>.tar, backup_manifest.
type Part struct {
	Name       string `json:"name"`
	Size       int64  `json:"size"`
	StoredSize int64  `json:"stored_size"`
	// The checksum of the original bytes: hex SHA-256, or (since object
	// format version 2) the codec's Digest in Checksum.
	SHA256   string `json:"sha256,omitempty"`
	Checksum string `json:"checksum,omitempty"`
}

// Tablespace is a user tablespace in the backup.
type Tablespace struct {
	OID      uint32 `json:"oid"`
	Name     string `json:"name"`
	Location string `json:"location"` // on the source server
	Part     string `json:"part"`     // "<oid>.tar"
}

// Key returns the repository key of one of the backup's objects.
func (b *Backup) Key(part string) string {
	return repo.BackupPrefix(b.SystemIdentifier) + b.Name + "/" + part
}

// SegmentSize returns the backup's WAL segment size as a value type.
func (b *Backup) SegmentSize() (wal.SegmentSize, error) {
	return wal.NewSegmentSize(b.WALSegmentSize)
}

// Validate checks what every consumer relies on, so metadata damaged or
// written by a buggy version is refused before anything trusts it.
func (b *Backup) Validate() error {
	switch {
	case b.Version != MetadataVersion:
		return fmt.Errorf("backup %s: metadata version %d not supported (want %d)", b.Name, b.Version, MetadataVersion)
	case b.Name == "" || strings.ContainsAny(b.Name, "/\\") || strings.HasPrefix(b.Name, "."):
		return fmt.Errorf("backup name %q is not valid", b.Name)
	case b.SystemIdentifier == 0:
		return fmt.Errorf("backup %s: no system identifier", b.Name)
	case b.StartTimeline == 0 || b.StopTimeline < b.StartTimeline:
		return fmt.Errorf("backup %s: bad timelines %d..%d", b.Name, b.StartTimeline, b.StopTimeline)
	case b.StopLSN < b.StartLSN || b.StartLSN == 0:
		return fmt.Errorf("backup %s: bad WAL range %s..%s", b.Name, b.StartLSN, b.StopLSN)
	case b.StopTime.Before(b.StartTime) || b.StartTime.IsZero():
		return fmt.Errorf("backup %s: bad times %s..%s", b.Name, b.StartTime, b.StopTime)
	case len(b.Parts) == 0:
		return fmt.Errorf("backup %s: no parts", b.Name)
	}
	if _, err := b.SegmentSize(); err != nil {
		return fmt.Errorf("backup %s: %w", b.Name, err)
	}
	return b.validateObjects()
}

// ErrNoBackup means the named backup does not exist (or never completed).
var ErrNoBackup = errors.New("no such backup")

// maxMetadataSize bounds what we read from the repository before parsing.
const maxMetadataSize = 4 << 20

// Read returns the metadata of one completed backup.
func Read(ctx context.Context, st storage.Store, id repo.SystemID, name string) (Backup, error) {
	key := repo.BackupPrefix(id) + name + "/" + repo.BackupMetadataName
	data, err := repo.ReadSmall(ctx, st, key, maxMetadataSize)
	if errors.Is(err, storage.ErrNotExist) {
		return Backup{}, fmt.Errorf("backup %s: %w", name, ErrNoBackup)
	}
	if err != nil {
		return Backup{}, fmt.Errorf("read backup %s: %w", name, err)
	}
	var b Backup
	if err := json.Unmarshal(data, &b); err != nil {
		return Backup{}, fmt.Errorf("backup %s: metadata: %w", name, err)
	}
	if b.Name != name || b.SystemIdentifier != id {
		return Backup{}, fmt.Errorf("backup %s: metadata describes %s of system %s", name, b.Name, b.SystemIdentifier)
	}
	return b, b.Validate()
}

// List returns every completed backup of a system, oldest first. Backups
// without metadata (running, or interrupted) are not listed.
func List(ctx context.Context, st storage.Store, id repo.SystemID) ([]Backup, error) {
	objs, err := st.List(ctx, repo.BackupPrefix(id))
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	var out []Backup
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, repo.BackupPrefix(id))
		name, file, ok := strings.Cut(rest, "/")
		if !ok || file != repo.BackupMetadataName {
			continue
		}
		b, err := Read(ctx, st, id, name)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartLSN < out[j].StartLSN })
	return out, nil
}
