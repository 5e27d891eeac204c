// Package dump takes logical dumps (pg_dump -Fc per database, plus
// pg_dumpall --globals-only) into the repository, lists them, restores them
// with pg_restore, and plans their retention.
//
// A dump run is a directory <system id>/dumps/<UTC start>/ holding one
// <db>.dump object per database and globals.sql, all in the repository's
// object format (storage/codec: compression, SHA-256, encryption when the
// store does it), and dump.json, plain JSON written last: a run without it
// does not exist for list, restore, drills or retention.
package dump

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// MetadataVersion is the version of the Run JSON this pitr writes.
const MetadataVersion = 1

// NameLayout formats a run's name from its UTC start time, like backups.
const NameLayout = basebackup.NameLayout

// Run describes one completed dump run: dump.json. Its field names are a
// stable schema (pitr dump list --json).
type Run struct {
	Version          int           `json:"metadata_version"`
	Name             string        `json:"name"`
	SystemIdentifier repo.SystemID `json:"system_identifier"`
	PGVersionNum     int           `json:"pg_version_num"`
	PGDumpVersion    string        `json:"pg_dump_version"` // pg_dump --version's number, e.g. 15.8
	StartTime        time.Time     `json:"start_time"`      // server clock
	StopTime         time.Time     `json:"stop_time"`       // server clock
	Codec            string        `json:"codec"`
	// PGDumpCompression is the -Z given to pg_dump: 0 when the repository
	// compresses (zstd once, not gzip then zstd).
	PGDumpCompression int        `json:"pg_dump_compression"`
	Size              int64      `json:"size"`
	StoredSize        int64      `json:"stored_size"`
	Globals           Part       `json:"globals"`
	Databases         []Database `json:"databases"`
	Host              string     `json:"host,omitempty"`
	PitrVersion       string     `json:"pitr_version"`
}

// Part is one stored object of a run.
type Part struct {
	Object     string `json:"object"`
	Size       int64  `json:"size"`
	StoredSize int64  `json:"stored_size"`
	// The checksum of the original bytes: hex SHA-256, or (since object
	// format version 2) the codec's Digest in Checksum.
	SHA256   string `json:"sha256,omitempty"`
	Checksum string `json:"checksum,omitempty"`
}

// Database is one database's dump in a run.
type Database struct {
	Name string `json:"name"`
	Part
	StartTime time.Time `json:"start_time"`
	StopTime  time.Time `json:"stop_time"`
	// Tables are pg_class.reltuples estimates read just before pg_dump
	// started (largest first, at most maxTables); drills compare them with
	// the restored row counts.
	Tables []Table `json:"tables,omitempty"`
}

// Table is one table's estimated row count (-1: never analyzed).
type Table struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Rows   int64  `json:"rows"`
}

// Database returns the run's dump of db, if it has one.
func (r *Run) Database(db string) (Database, bool) {
	for _, d := range r.Databases {
		if d.Name == db {
			return d, true
		}
	}
	return Database{}, false
}

// Key returns the repository key of one of the run's objects.
func (r *Run) Key(object string) string { return repo.DumpKey(r.SystemIdentifier, r.Name, object) }

// Validate checks what readers rely on.
func (r *Run) Validate() error {
	switch {
	case r.Version != MetadataVersion:
		return fmt.Errorf("dump %s: metadata version %d not supported (want %d)", r.Name, r.Version, MetadataVersion)
	case r.Name == "" || strings.ContainsAny(r.Name, "/\\") || strings.HasPrefix(r.Name, "."):
		return fmt.Errorf("dump name %q is not valid", r.Name)
	case r.SystemIdentifier == 0:
		return fmt.Errorf("dump %s: no system identifier", r.Name)
	case r.StartTime.IsZero() || r.StopTime.Before(r.StartTime):
		return fmt.Errorf("dump %s: bad times %s..%s", r.Name, r.StartTime, r.StopTime)
	case r.Globals.Object != repo.DumpGlobalsName:
		return fmt.Errorf("dump %s: no globals", r.Name)
	}
	for _, d := range r.Databases {
		if d.Object != repo.DumpObjectName(d.Name) {
			return fmt.Errorf("dump %s: database %q has object %q", r.Name, d.Name, d.Object)
		}
	}
	return nil
}

// ErrNoDump means the named run does not exist (or never completed).
var ErrNoDump = errors.New("no such dump")

const maxMetadataSize = 16 << 20

// Read returns the metadata of one completed run.
func Read(ctx context.Context, st storage.Store, id repo.SystemID, name string) (Run, error) {
	data, err := repo.ReadSmall(ctx, st, repo.DumpKey(id, name, repo.DumpMetadataName), maxMetadataSize)
	if errors.Is(err, storage.ErrNotExist) {
		return Run{}, fmt.Errorf("dump %s: %w", name, ErrNoDump)
	}
	if err != nil {
		return Run{}, fmt.Errorf("read dump %s: %w", name, err)
	}
	var r Run
	if err := json.Unmarshal(data, &r); err != nil {
		return Run{}, fmt.Errorf("dump %s: metadata: %w", name, err)
	}
	if r.Name != name || r.SystemIdentifier != id {
		return Run{}, fmt.Errorf("dump %s: metadata describes %s of system %s", name, r.Name, r.SystemIdentifier)
	}
	return r, r.Validate()
}

// Listing is what List finds: completed runs (oldest first) and the
// directories without metadata (running or interrupted) with their objects.
type Listing struct {
	Runs       []Run
	Incomplete []Incomplete
}

// Incomplete is a run directory without dump.json.
type Incomplete struct {
	Name      string
	Objects   []storage.ObjectInfo
	LastWrite time.Time
}

// List returns every completed run of a system, oldest first.
func List(ctx context.Context, st storage.Store, id repo.SystemID) ([]Run, error) {
	l, err := ListAll(ctx, st, id)
	return l.Runs, err
}

// ListAll lists completed and incomplete runs.
func ListAll(ctx context.Context, st storage.Store, id repo.SystemID) (Listing, error) {
	objs, err := st.List(ctx, repo.DumpPrefix(id))
	if err != nil {
		return Listing{}, fmt.Errorf("list dumps: %w", err)
	}
	byName := map[string][]storage.ObjectInfo{}
	var names []string
	for _, o := range objs {
		name, _, ok := strings.Cut(strings.TrimPrefix(o.Key, repo.DumpPrefix(id)), "/")
		if !ok {
			continue
		}
		if _, seen := byName[name]; !seen {
			names = append(names, name)
		}
		byName[name] = append(byName[name], o)
	}
	sort.Strings(names)
	var l Listing
	for _, name := range names {
		complete := false
		inc := Incomplete{Name: name, Objects: byName[name]}
		for _, o := range byName[name] {
			if o.Key == repo.DumpKey(id, name, repo.DumpMetadataName) {
				complete = true
			}
			if o.ModTime.After(inc.LastWrite) {
				inc.LastWrite = o.ModTime
			}
		}
		if !complete {
			l.Incomplete = append(l.Incomplete, inc)
			continue
		}
		r, err := Read(ctx, st, id, name)
		if err != nil {
			return l, err
		}
		l.Runs = append(l.Runs, r)
	}
	sort.SliceStable(l.Runs, func(i, j int) bool { return l.Runs[i].StartTime.Before(l.Runs[j].StartTime) })
	return l, nil
}

// Newest returns, for each database, the newest run that holds its dump.
func Newest(runs []Run) map[string]Run {
	out := map[string]Run{}
	for _, r := range runs {
		for _, d := range r.Databases {
			if cur, ok := out[d.Name]; !ok || !r.StartTime.Before(cur.StartTime) {
				out[d.Name] = r
			}
		}
	}
	return out
}

// deleteRun removes a run's objects, metadata first so that from the first
// deletion on it no longer exists for any reader. Objects under retention
// (S3 Object Lock, storage.ErrLocked) are skipped and counted: if that is
// the metadata, the run stays whole (kept), otherwise a later prune removes
// the rest once the retention ends.
func deleteRun(ctx context.Context, st storage.Store, id repo.SystemID, name string, objs []storage.ObjectInfo) (locked int, kept bool, err error) {
	meta := repo.DumpKey(id, name, repo.DumpMetadataName)
	heartbeat := repo.DumpKey(id, name, repo.DumpInProgressName)
	del := func(key string) error {
		err := st.Delete(ctx, key)
		if errors.Is(err, storage.ErrLocked) {
			locked++
			return nil
		}
		if err != nil {
			return fmt.Errorf("delete dump %s: %w", name, err)
		}
		return nil
	}
	hasMeta := false
	for _, o := range objs {
		hasMeta = hasMeta || o.Key == meta
	}
	if hasMeta {
		if err := del(meta); err != nil {
			return locked, false, err
		}
		if locked > 0 {
			return locked, true, nil
		}
	}
	for _, o := range objs {
		if o.Key == meta || o.Key == heartbeat {
			continue
		}
		if err := del(o.Key); err != nil {
			return locked, false, err
		}
	}
	return locked, false, del(heartbeat)
}

// Written is what the object listing alone says about a completed run:
// its databases (from the object names) and when dump.json was written.
// A database host that holds only the public key of an encrypted
// repository cannot read dump.json, but can schedule by this.
type Written struct {
	Name      string
	Databases []string
	At        time.Time
}

// ListWritten lists completed runs without reading their metadata.
func ListWritten(ctx context.Context, st storage.Store, id repo.SystemID) ([]Written, error) {
	objs, err := st.List(ctx, repo.DumpPrefix(id))
	if err != nil {
		return nil, fmt.Errorf("list dumps: %w", err)
	}
	byName := map[string]*Written{}
	var order []string
	complete := map[string]bool{}
	for _, o := range objs {
		name, object, ok := strings.Cut(strings.TrimPrefix(o.Key, repo.DumpPrefix(id)), "/")
		if !ok {
			continue
		}
		w := byName[name]
		if w == nil {
			w = &Written{Name: name}
			byName[name] = w
			order = append(order, name)
		}
		if object == repo.DumpMetadataName {
			complete[name] = true
			w.At = o.ModTime
		} else if db, ok := repo.DumpDatabaseOf(object); ok {
			w.Databases = append(w.Databases, db)
		}
	}
	var out []Written
	for _, n := range order {
		if complete[n] {
			out = append(out, *byName[n])
		}
	}
	return out, nil
}
