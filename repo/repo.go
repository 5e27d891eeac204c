// Package repo owns the repository layout: the format marker at the root and
// the key of every object, so that no other package formats a key by hand.
//
//	pitr-repository.json                          format marker (plain JSON, written once, never encrypted)
//	<system id>/wal/<TTTTTTTTXXXXXXXX>/<segment>  WAL segments, .partial and .backup files
//	<system id>/wal/<TTTTTTTT>.history            timeline history files
//	<system id>/basebackups/<name>/base.tar       base backup: the data directory's tar stream
//	<system id>/basebackups/<name>/<oid>.tar      one per user tablespace
//	<system id>/basebackups/<name>/backup_manifest  the server's manifest
//	<system id>/basebackups/<name>/in-progress.json heartbeat of a running backup
//	<system id>/basebackups/<name>/backup.json    metadata, written last (plain JSON)
//	<system id>/drills/<UTC time>.json             report of one pitr drill (plain JSON)
//	<system id>/stream/state.json                 pitr stream's progress (plain JSON)
//	<system id>/basebackups/<name>/config/<n>-<file>  a configuration file of the server (postgresql.conf, ...)
//	<system id>/dumps/<UTC time>/<db>.dump          pg_dump -Fc of one database
//	<system id>/dumps/<UTC time>/globals.sql        pg_dumpall --globals-only
//	<system id>/dumps/<UTC time>/dump.json          dump metadata, written last (plain JSON)
//
// Every object below <system id>/ is in the codec format (storage/codec),
// except the plain-JSON backup.json, dump.json and drill reports.
// In an encrypted repository (storage/crypt) every object below <system id>/
// is encrypted, whatever its format, and the marker records that (Encryption).
// Keying by the database system identifier means two clusters can never mix
// their WAL, even if the marker check were bypassed; the marker binds the
// repository to one system so archive-push refuses a foreign cluster loudly.
package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/storage"
)

// MarkerKey is the object at the repository root that says "this is a pitr
// repository, in this format, for this database system".
const MarkerKey = "pitr-repository.json"

// FormatVersion is the layout version this pitr writes and reads.
const FormatVersion = 1

const formatName = "pitr-repository"

// ErrNoRepository means the marker is absent: nothing was ever archived here,
// or the repository URL is wrong. It is not the same as "file not archived".
var ErrNoRepository = errors.New("no pitr repository at this location")

// Marker is the content of MarkerKey.
type Marker struct {
	Format           string    `json:"format"`
	Version          int       `json:"version"`
	SystemIdentifier SystemID  `json:"system_identifier"`
	CreatedAt        time.Time `json:"created_at"`
	// Encryption is set when the repository's objects are encrypted. Absent
	// means plaintext; pitr never mixes the two in one repository.
	Encryption *Encryption `json:"encryption,omitempty"`
}

// Encryption records how a repository is encrypted. Recipients are the
// public keys it was created with, for people reading the marker: after a
// key rotation new objects go to other keys, and that is fine.
type Encryption struct {
	Scheme     string   `json:"scheme"`
	Recipients []string `json:"recipients,omitempty"`
}

// encrypter is implemented by the storage/crypt wrapper; a store with one in
// its stack (see storage.Unwrapper) reads and writes encrypted objects.
type encrypter interface {
	EncryptionScheme() string
	EncryptionRecipients() []string
}

func encryptionOf(st storage.Store) *Encryption {
	for st != nil {
		if e, ok := st.(encrypter); ok {
			return &Encryption{Scheme: e.EncryptionScheme(), Recipients: e.EncryptionRecipients()}
		}
		u, ok := st.(storage.Unwrapper)
		if !ok {
			return nil
		}
		st = u.Unwrap()
	}
	return nil
}

// ErrEncryptionMismatch means the configuration and the repository disagree
// about encryption: writing would mix plaintext and encrypted objects, and
// reading cannot work.
var ErrEncryptionMismatch = errors.New("encryption mismatch")

// checkEncryption refuses a store whose encryption disagrees with the marker.
func checkEncryption(m Marker, st storage.Store) error {
	have := encryptionOf(st)
	switch {
	case m.Encryption != nil && have == nil:
		return fmt.Errorf("%w: this repository is encrypted (%s) but no encryption is configured here: "+
			"set encryption_recipients (to archive and back up) or encryption_identity_file (to restore)", ErrEncryptionMismatch, m.Encryption.Scheme)
	case m.Encryption == nil && have != nil:
		return fmt.Errorf("%w: encryption is configured but this repository is not encrypted; "+
			"pitr does not mix plaintext and encrypted objects: use a new repository (or prefix) for encrypted archives, or remove the encryption settings", ErrEncryptionMismatch)
	case m.Encryption != nil && m.Encryption.Scheme != have.Scheme:
		return fmt.Errorf("%w: repository is encrypted with %q, this pitr encrypts with %q", ErrEncryptionMismatch, m.Encryption.Scheme, have.Scheme)
	}
	return nil
}

// EncryptedKey reports whether the object under key is encrypted in an
// encrypted repository: everything below a database system's directory,
// except pitr stream's state (LSNs, host and pid, no data), which the
// streamer must read back on a database host that holds only public keys.
// The marker, prune's lock and check's probe are outside any system's
// directory and hold no data either.
func EncryptedKey(key string) bool {
	first, _, ok := strings.Cut(key, "/")
	if !ok || first == "" {
		return false
	}
	id, err := strconv.ParseUint(first, 10, 64)
	return err == nil && key != StreamStateKey(SystemID(id))
}

// SystemID is a database system identifier. It is written as a decimal
// string, as pg_controldata prints it, because JSON numbers lose precision
// above 2^53 in many readers.
type SystemID uint64

func (s SystemID) String() string { return strconv.FormatUint(uint64(s), 10) }

func (s SystemID) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

func (s *SystemID) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("system identifier: %w", err)
	}
	v, err := strconv.ParseUint(str, 10, 64)
	if err != nil {
		return fmt.Errorf("system identifier %q: %w", str, err)
	}
	*s = SystemID(v)
	return nil
}

// maxMarkerSize bounds what ReadMarker reads: a marker is a few hundred bytes.
const maxMarkerSize = 64 << 10

// ReadSmall reads a whole small object (metadata, records, reports) into
// memory, refusing one larger than limit: what pitr writes there is bounded,
// so an oversized object is damage or someone else's, and reading it whole
// would let the repository decide how much memory pitr uses. An absent
// object is storage.ErrNotExist.
func ReadSmall(ctx context.Context, st storage.Store, key string, limit int64) ([]byte, error) {
	rc, err := st.Open(ctx, key, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: not written by pitr", key, limit)
	}
	return b, nil
}

// ReadMarker returns the repository's marker, or ErrNoRepository.
func ReadMarker(ctx context.Context, st storage.Store) (Marker, error) {
	b, err := ReadSmall(ctx, st, MarkerKey, maxMarkerSize)
	if errors.Is(err, storage.ErrNotExist) {
		return Marker{}, ErrNoRepository
	}
	if err != nil {
		return Marker{}, fmt.Errorf("read repository marker: %w", err)
	}
	var m Marker
	if err := json.Unmarshal(b, &m); err != nil {
		return Marker{}, fmt.Errorf("repository marker %s is not valid: %w", MarkerKey, err)
	}
	if m.Format != formatName {
		return Marker{}, fmt.Errorf("repository marker %s has format %q, not %q", MarkerKey, m.Format, formatName)
	}
	if m.Version != FormatVersion {
		return Marker{}, fmt.Errorf("repository format version %d is not supported by this pitr (it reads version %d)", m.Version, FormatVersion)
	}
	if m.SystemIdentifier == 0 {
		return Marker{}, fmt.Errorf("repository marker %s has no system identifier", MarkerKey)
	}
	if err := checkEncryption(m, st); err != nil {
		return Marker{}, err
	}
	return m, nil
}

// Init returns the marker of the repository, creating the repository for
// system id if there is none yet. A repository bound to another system is an
// error naming both identifiers.
func Init(ctx context.Context, st storage.Store, id SystemID, now time.Time) (Marker, error) {
	m, err := ReadMarker(ctx, st)
	if err == nil {
		if m.SystemIdentifier != id {
			return m, &ForeignSystemError{Repository: m.SystemIdentifier, Got: id}
		}
		return m, nil
	}
	if !errors.Is(err, ErrNoRepository) {
		return Marker{}, err
	}
	m = Marker{Format: formatName, Version: FormatVersion, SystemIdentifier: id, CreatedAt: now.UTC(), Encryption: encryptionOf(st)}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Marker{}, err
	}
	if err := st.Put(ctx, MarkerKey, strings.NewReader(string(b)+"\n")); err != nil {
		return Marker{}, fmt.Errorf("create repository marker: %w", err)
	}
	return m, nil
}

// ForeignSystemError reports WAL or a backup of a database system other than
// the one the repository belongs to.
type ForeignSystemError struct {
	Repository, Got SystemID
}

func (e *ForeignSystemError) Error() string {
	return fmt.Sprintf("database system identifier %s does not match this repository's %s; "+
		"a repository holds one database system (use a different repository or prefix for this cluster)", e.Got, e.Repository)
}

// WALKey returns the key of an archived WAL file. name must be valid for wal.Classify.
func WALKey(id SystemID, name string) (string, error) {
	kind, err := wal.Classify(name)
	if err != nil {
		return "", err
	}
	if kind == wal.KindTimelineHistory {
		return WALPrefix(id) + name, nil
	}
	// Grouping by timeline and log id keeps any directory to at most 4096
	// entries on file systems and lets a listing ask for one range at a time.
	return WALPrefix(id) + name[:16] + "/" + name, nil
}

// WALPrefix is the prefix of every archived WAL file of one system.
func WALPrefix(id SystemID) string { return id.String() + "/wal/" }

// BackupPrefix is the prefix of every base backup of one system; each
// backup's objects live under BackupPrefix(id) + name + "/".
func BackupPrefix(id SystemID) string { return id.String() + "/basebackups/" }

// BackupMetadataName is the object, written last, whose presence makes a
// base backup exist for every other command.
const BackupMetadataName = "backup.json"

// BackupKey returns the key of one object of the base backup name.
func BackupKey(id SystemID, name, object string) string {
	return BackupPrefix(id) + name + "/" + object
}

// Objects of a base backup besides BackupMetadataName.
const (
	// BackupBaseTarName is the tar stream of the data directory.
	BackupBaseTarName = "base.tar"
	// BackupManifestName is the server's backup_manifest, kept verbatim.
	BackupManifestName = "backup_manifest"
	// BackupInProgressName is refreshed by a running backup (its heartbeat)
	// and removed after BackupMetadataName is written; a backup directory
	// without metadata whose objects have not changed for a while is the
	// leftover of an interrupted backup.
	BackupInProgressName = "in-progress.json"
)

// BackupTablespaceTarName is the object holding tablespace oid's tar stream.
func BackupTablespaceTarName(oid uint32) string { return strconv.FormatUint(uint64(oid), 10) + ".tar" }

// DrillPrefix is the prefix of every drill report of one system.
func DrillPrefix(id SystemID) string { return id.String() + "/drills/" }

// DrillKey returns the key of the report of a drill started at t. Keys sort
// by time, so the last one listed is the newest drill.
func DrillKey(id SystemID, t time.Time) string {
	return DrillPrefix(id) + t.UTC().Format("20060102T150405Z") + ".json"
}

// StreamStateKey is pitr stream's progress record (plain JSON, replaced at
// every upload), which pitr status reads to report streaming lag.
func StreamStateKey(id SystemID) string { return id.String() + "/stream/state.json" }

// TablespacePrefix holds one small JSON record per user tablespace that
// archive-push has seen in the data directory (see archive.Tablespace).
func TablespacePrefix(id SystemID) string { return id.String() + "/tablespaces/" }

// TablespaceKey is the record of one tablespace OID.
func TablespaceKey(id SystemID, oid uint32) string {
	return fmt.Sprintf("%s%d.json", TablespacePrefix(id), oid)
}

// DumpPrefix is the prefix of every logical dump run of one system; each
// run's objects live under DumpPrefix(id) + name + "/".
func DumpPrefix(id SystemID) string { return id.String() + "/dumps/" }

// DumpKey returns the key of one object of the dump run name.
func DumpKey(id SystemID, name, object string) string {
	return DumpPrefix(id) + name + "/" + object
}

// Objects of a dump run.
const (
	// DumpMetadataName is written last (plain JSON): a run without it is
	// running or was interrupted, and is never listed or restored.
	DumpMetadataName = "dump.json"
	// DumpGlobalsName is pg_dumpall --globals-only (roles, tablespaces).
	DumpGlobalsName = "globals.sql"
	// DumpInProgressName is the heartbeat of a running dump.
	DumpInProgressName = "in-progress.json"
)

// DumpObjectName is the object holding one database's pg_dump -Fc archive.
// Database names may hold any character, keys only [A-Za-z0-9._-]: bytes
// outside [A-Za-z0-9_-] (the dot included) are written as ".HH", so the
// mapping is one-to-one and never collides with the run's other objects.
func DumpObjectName(db string) string { return EscapeName(db) + ".dump" }

// DumpDatabaseOf returns the database whose dump object is name, or false
// if name is not one (the inverse of DumpObjectName).
func DumpDatabaseOf(name string) (string, bool) {
	esc, ok := strings.CutSuffix(name, ".dump")
	if !ok || esc == "" {
		return "", false
	}
	var b []byte
	for i := 0; i < len(esc); i++ {
		if esc[i] != '.' {
			b = append(b, esc[i])
			continue
		}
		if i+2 >= len(esc) {
			return "", false
		}
		v, err := strconv.ParseUint(esc[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b = append(b, byte(v))
		i += 2
	}
	return string(b), true
}

// BackupConfigName is the object holding the n-th captured configuration
// file (base name base) of a base backup.
func BackupConfigName(n int, base string) string {
	return fmt.Sprintf("config/%d-%s", n, EscapeName(base))
}

// EscapeName turns any string into one key segment: [A-Za-z0-9_-] stay,
// every other byte becomes ".HH" (upper-case hex).
func EscapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, ".%02X", c)
	}
	if b.Len() == 0 {
		return ".00" // never an empty segment
	}
	return b.String()
}
