package basebackup

import (
	"fmt"
	"path"
	"strings"
)

// validateObjects checks the parts and tablespaces of backup metadata read
// from the repository before anything uses them: part names become object
// keys (b.Key), tablespace locations become directories a restore writes.
// A crafted backup.json must not steer either outside the backup.
func (b *Backup) validateObjects() error {
	seen := map[string]bool{}
	for _, p := range b.Parts {
		if err := checkPartName(p.Name); err != nil {
			return fmt.Errorf("backup %s: %w", b.Name, err)
		}
		if seen[p.Name] {
			return fmt.Errorf("backup %s: part %q listed twice", b.Name, p.Name)
		}
		seen[p.Name] = true
		if p.Size < 0 || p.StoredSize < 0 {
			return fmt.Errorf("backup %s: part %q has a negative size", b.Name, p.Name)
		}
	}
	for _, ts := range b.Tablespaces {
		if ts.OID == 0 {
			return fmt.Errorf("backup %s: tablespace without an OID", b.Name)
		}
		if ts.Part != "" {
			if err := checkPartName(ts.Part); err != nil {
				return fmt.Errorf("backup %s: tablespace %d: %w", b.Name, ts.OID, err)
			}
		}
		if !isCleanAbs(ts.Location) {
			return fmt.Errorf("backup %s: tablespace %d: location %q is not a clean absolute path", b.Name, ts.OID, ts.Location)
		}
	}
	return nil
}

// checkPartName accepts a relative, slash-separated name with no empty,
// "." or ".." element (config/1-postgresql.conf, base.tar, 16384.tar).
func checkPartName(name string) error {
	if name == "" || strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") || path.Clean(name) != name ||
		name == ".." || strings.HasPrefix(name, "../") || name == "." {
		return fmt.Errorf("part name %q is not a plain relative name", name)
	}
	return nil
}

// isCleanAbs: PostgreSQL stores tablespace locations canonicalised
// (canonicalize_path), so anything else was not written by it.
func isCleanAbs(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p && !strings.ContainsRune(p, 0)
}

// isManifestPath: a backup_manifest path is relative to the data directory,
// as clean as PostgreSQL writes it, and never climbs out of it.
func isManifestPath(p string) bool {
	return checkPartName(p) == nil
}
