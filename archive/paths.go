package archive

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pitr-dev/pitr/archive/wal"
)

// Limits on what wal-fetch decodes. A WAL object can never be larger than
// the largest wal_segment_size PostgreSQL allows, and history and backup
// history files are a few lines each; anything beyond is a crafted or
// damaged object (a decompression bomb), refused before it fills pg_wal.
const (
	// MaxHistoryFileSize bounds a timeline history file: one line per
	// ancestor timeline, each under 1 KiB even with a long reason text.
	MaxHistoryFileSize = 16 << 20
	// MaxBackupHistoryFileSize bounds a .backup file (a dozen short lines,
	// one of them the user's backup label of at most 1 KiB).
	MaxBackupHistoryFileSize = 1 << 20
)

// MaxFileSize is the most an archived file of this kind can hold once
// decoded.
func MaxFileSize(kind wal.FileKind) int64 {
	switch kind {
	case wal.KindTimelineHistory:
		return MaxHistoryFileSize
	case wal.KindBackupHistory:
		return MaxBackupHistoryFileSize
	}
	return int64(wal.MaxSegmentSize)
}

// CheckPushPath checks archive_command's %p before it is read. PostgreSQL
// passes pg_wal/<name> relative to the data directory, which is the working
// directory; a relative path that climbs out of it (or, in a data directory,
// points anywhere but pg_wal) is never PostgreSQL's. Absolute paths are an
// operator's explicit choice (pushing saved copies by hand) and stay allowed:
// what is read is still only a file with a WAL name, a valid page header and
// the repository's system identifier. inDataDir says whether the working
// directory is a data directory.
func CheckPushPath(path string, inDataDir bool) error {
	if err := checkArgPath(path, inDataDir); err != nil {
		return err
	}
	// PostgreSQL never makes a WAL file a symbolic link; following one would
	// upload whatever it points at (a .history file has no header to check).
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%s is a symbolic link; PostgreSQL's WAL files never are", path)
	}
	return nil
}

// CheckFetchDest checks restore_command's %p before anything is written.
// PostgreSQL passes pg_wal/RECOVERYXLOG or pg_wal/RECOVERYHISTORY relative to
// the data directory (the working directory); pg_rewind passes
// <datadir>/pg_wal/<%f>, which may be absolute, from wherever it runs. So a
// relative destination must stay inside the working directory (and in a data
// directory, inside pg_wal), and an absolute one, which only an operator or
// pg_rewind writes, is taken as given.
func CheckFetchDest(dest string, inDataDir bool) error {
	if err := checkArgPath(dest, inDataDir); err != nil {
		return err
	}
	if fi, err := os.Lstat(dest); err == nil && fi.IsDir() {
		return fmt.Errorf("destination %s is a directory", dest)
	}
	return nil
}

func checkArgPath(p string, inDataDir bool) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("path %q contains a NUL byte", p)
	case filepath.IsAbs(p):
		return nil
	}
	clean := filepath.Clean(p)
	if !filepath.IsLocal(clean) {
		return fmt.Errorf("path %q leaves the working directory (PostgreSQL passes pg_wal/... relative to the data directory)", p)
	}
	if inDataDir && filepath.Dir(clean) != "pg_wal" {
		return fmt.Errorf("path %q is not in pg_wal (PostgreSQL passes pg_wal/... relative to the data directory)", p)
	}
	return nil
}
