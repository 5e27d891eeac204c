package basebackup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
	"github.com/pitr-dev/pitr/storage/fs"
)

const testSystem repo.SystemID = 7713201725045036263

func newTestStore(t *testing.T) (*fs.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st, dir
}

// storeBackup writes parts (name → content) as a backup and returns its
// metadata.
func storeBackup(t *testing.T, st storage.Store, parts map[string][]byte, order []string, tablespaces []Tablespace) Backup {
	t.Helper()
	b := Backup{
		Version: MetadataVersion, Name: "20261128T124204Z", Label: "test", SystemIdentifier: testSystem,
		PGVersionNum: 150008, WALSegmentSize: 16 << 20, StartLSN: 0x2000028, StopLSN: 0x2000100,
		CheckpointLSN: 0x2000060, StartTimeline: 1, StopTimeline: 1,
		StartTime: time.Date(2026, 11, 28, 12, 34, 46, 0, time.UTC), StopTime: time.Date(2026, 11, 28, 12, 34, 48, 0, time.UTC),
		Codec: "zstd", Tablespaces: tablespaces,
	}
	for _, name := range order {
		stored, err := codec.Put(context.Background(), st, b.Key(name), bytes.NewReader(parts[name]), int64(len(parts[name])), codec.Options{Codec: codec.Zstd})
		if err != nil {
			t.Fatal(err)
		}
		part := Part{Name: name, Size: stored.Size, StoredSize: stored.StoredSize}
		part.SHA256, part.Checksum = stored.Record()
		b.Parts = append(b.Parts, part)
	}
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtractDataDirectory(t *testing.T) {
	st, _ := newTestStore(t)
	manifest := makeManifest(t, "CRC32C", manifestFor(baseFiles(), ""), "")
	files := append(baseFiles(), tarFile{name: "pg_wal/", typ: tar.TypeDir}, tarFile{name: "postgresql.conf", body: "x", mode: 0o644})
	b := storeBackup(t, st, map[string][]byte{
		repo.BackupBaseTarName: makeTar(t, files), repo.BackupManifestName: manifest,
	}, []string{repo.BackupBaseTarName, repo.BackupManifestName}, nil)
	// tablespace_map names a tablespace the metadata does not have: refused.
	if err := Extract(context.Background(), st, b, filepath.Join(t.TempDir(), "data"), nil); err == nil ||
		!strings.Contains(err.Error(), "tablespace_map lists 1 tablespaces") {
		t.Fatalf("inconsistent tablespace_map: %v", err)
	}

	files[1] = tarFile{name: "tablespace_map", body: ""}
	b = storeBackup(t, st, map[string][]byte{
		repo.BackupBaseTarName: makeTar(t, files), repo.BackupManifestName: manifest,
	}, []string{repo.BackupBaseTarName, repo.BackupManifestName}, nil)
	pgdata := filepath.Join(t.TempDir(), "restore", "data")
	if err := Extract(context.Background(), st, b, pgdata, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(pgdata)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode %v, %v; want 0700", fi.Mode(), err)
	}
	for _, f := range files {
		p := filepath.Join(pgdata, f.name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if f.typ == tar.TypeDir {
			if !fi.IsDir() {
				t.Errorf("%s is not a directory", f.name)
			}
			continue
		}
		got, _ := os.ReadFile(p)
		if string(got) != f.body {
			t.Errorf("%s: content differs", f.name)
		}
		want := os.FileMode(0o600)
		if f.mode != 0 {
			want = os.FileMode(f.mode)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", f.name, fi.Mode().Perm(), want)
		}
	}
	// The manifest comes along, as with pg_basebackup's plain format.
	if got, _ := os.ReadFile(filepath.Join(pgdata, "backup_manifest")); !bytes.Equal(got, manifest) {
		t.Errorf("backup_manifest not restored into the data directory")
	}
	// A second restore into the now non-empty directory is refused.
	if err := Extract(context.Background(), st, b, pgdata, nil); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a non-empty directory: %v", err)
	}
}

// Contract: no tar member can write outside the target directory, and a
// refused archive leaves nothing behind.
func TestExtractRejectsUnsafeMembers(t *testing.T) {
	cases := map[string]tarFile{
		"parent":           {name: "../evil", body: "x"},
		"nested parent":    {name: "base/../../evil", body: "x"},
		"absolute":         {name: "/tmp/evil", body: "x"},
		"symlink out":      {name: "base/link", typ: tar.TypeSymlink, linkname: "/etc"},
		"symlink relative": {name: "pg_tblspc/16384", typ: tar.TypeSymlink, linkname: "../../outside"},
		"hard link":        {name: "base/hard", typ: tar.TypeLink, linkname: "/etc/passwd"},
		"device":           {name: "dev", typ: tar.TypeChar},
	}
	for name, evil := range cases {
		t.Run(name, func(t *testing.T) {
			st, _ := newTestStore(t)
			outer := t.TempDir()
			pgdata := filepath.Join(outer, "a", "data")
			files := []tarFile{{name: "base/", typ: tar.TypeDir}, {name: "PG_VERSION", body: "15\n"}, evil, {name: "global/pg_control", body: "x"}}
			b := storeBackup(t, st, map[string][]byte{repo.BackupBaseTarName: makeTar(t, files)}, []string{repo.BackupBaseTarName}, nil)
			err := Extract(context.Background(), st, b, pgdata, nil)
			if err == nil {
				t.Fatal("unsafe member accepted")
			}
			if !strings.Contains(err.Error(), "tar member") {
				t.Errorf("error does not name the member: %v", err)
			}
			if _, err := os.Stat(pgdata); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused restore left %s behind", pgdata)
			}
			for _, p := range []string{filepath.Join(outer, "a", "evil"), filepath.Join(outer, "evil"), "/tmp/evil"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written outside the data directory", p)
				}
			}
		})
	}
}

// Contract: a corrupt part fails the restore with ErrCorrupt, names the part
// and leaves nothing behind (an existing empty target stays, emptied).
func TestExtractCorruptPart(t *testing.T) {
	for _, c := range []codec.Codec{codec.Zstd, codec.None} {
		t.Run(c.String(), func(t *testing.T) {
			st, root := newTestStore(t)
			big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB, so the flip lands in file data
			files := []tarFile{{name: "PG_VERSION", body: "15\n"}, {name: "base/1/1259", body: big}}
			b := Backup{Version: MetadataVersion, Name: "n", SystemIdentifier: testSystem, WALSegmentSize: 16 << 20,
				StartLSN: 1, StopLSN: 2, StartTimeline: 1, StopTimeline: 1, StartTime: time.Unix(1, 0), StopTime: time.Unix(2, 0)}
			data := makeTar(t, files)
			stored, err := codec.Put(context.Background(), st, b.Key(repo.BackupBaseTarName), bytes.NewReader(data), -1, codec.Options{Codec: c})
			if err != nil {
				t.Fatal(err)
			}
			b.Parts = []Part{{Name: repo.BackupBaseTarName, Size: stored.Size, StoredSize: stored.StoredSize}}
			b.Parts[0].SHA256, b.Parts[0].Checksum = stored.Record()
			p := filepath.Join(root, filepath.FromSlash(b.Key(repo.BackupBaseTarName)))
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			raw[len(raw)/2] ^= 0x40
			if err := os.WriteFile(p, raw, 0o640); err != nil {
				t.Fatal(err)
			}
			pgdata := t.TempDir() // exists and is empty: must stay, empty
			err = Extract(context.Background(), st, b, pgdata, nil)
			if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "base.tar is corrupt") {
				t.Fatalf("got %v, want ErrCorrupt naming base.tar", err)
			}
			if entries, _ := os.ReadDir(pgdata); len(entries) != 0 {
				t.Fatalf("corrupt restore left %d entries in %s", len(entries), pgdata)
			}
		})
	}
}

// A part replaced by another valid object (its own trailer is fine) does not
// match the SHA-256 the backup recorded.
func TestExtractReplacedPart(t *testing.T) {
	st, _ := newTestStore(t)
	b := storeBackup(t, st, map[string][]byte{repo.BackupBaseTarName: makeTar(t, []tarFile{{name: "PG_VERSION", body: "15\n"}})},
		[]string{repo.BackupBaseTarName}, nil)
	other := makeTar(t, []tarFile{{name: "PG_VERSION", body: "16\n"}})
	if _, err := codec.Put(context.Background(), st, b.Key(repo.BackupBaseTarName), bytes.NewReader(other), -1, codec.Options{}); err != nil {
		t.Fatal(err)
	}
	err := Extract(context.Background(), st, b, filepath.Join(t.TempDir(), "d"), nil)
	if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("replaced part: %v", err)
	}
}

// Contract: tablespaces are extracted to their new locations, tablespace_map
// is rewritten to them (escaping included) and pg_tblspc links point there.
func TestExtractTablespaceRemap(t *testing.T) {
	st, _ := newTestStore(t)
	base := baseFiles()
	base[1] = tarFile{name: "tablespace_map", body: "16384 /srv/old\\\\ts\n"}
	ts := []Tablespace{{OID: 16384, Name: "ts1", Location: "/srv/old\\ts", Part: "16384.tar"}}
	b := storeBackup(t, st, map[string][]byte{
		repo.BackupBaseTarName: makeTar(t, base), "16384.tar": makeTar(t, tsFiles),
	}, []string{repo.BackupBaseTarName, "16384.tar"}, ts)

	dir := t.TempDir()
	pgdata := filepath.Join(dir, "data")
	newLoc := filepath.Join(dir, "new\nline ts")
	if err := Extract(context.Background(), st, b, pgdata, map[uint32]string{16384: newLoc}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(newLoc, "PG_15_202209061/5/16385"))
	if err != nil || string(got) != "tablespace data" {
		t.Fatalf("tablespace file: %q, %v", got, err)
	}
	m, err := os.ReadFile(filepath.Join(pgdata, "tablespace_map"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ParseTablespaceMap(m)
	if err != nil || len(entries) != 1 || entries[0].OID != 16384 || entries[0].Path != newLoc {
		t.Fatalf("rewritten tablespace_map %q: %+v, %v", m, entries, err)
	}
	if target, err := os.Readlink(filepath.Join(pgdata, "pg_tblspc", "16384")); err != nil || target != newLoc {
		t.Fatalf("pg_tblspc/16384 -> %q, %v", target, err)
	}

	// Mapping a tablespace the backup does not have, or into the data
	// directory, is refused before anything is written.
	if err := Extract(context.Background(), st, b, filepath.Join(dir, "d2"), map[uint32]string{99: "/x"}); err == nil || !strings.Contains(err.Error(), "tablespace 99 is not in backup") {
		t.Fatalf("unknown tablespace: %v", err)
	}
	if err := Extract(context.Background(), st, b, filepath.Join(dir, "d3"), map[uint32]string{16384: filepath.Join(dir, "d3", "ts")}); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("tablespace inside the data directory: %v", err)
	}
	if err := Extract(context.Background(), st, b, filepath.Join(dir, "d4"), map[uint32]string{16384: "relative"}); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Fatalf("relative tablespace location: %v", err)
	}
	for _, d := range []string{"d2", "d3", "d4"} {
		if _, err := os.Stat(filepath.Join(dir, d)); err == nil {
			t.Errorf("refused restore created %s", d)
		}
	}
}

func TestTablespaceMapRoundTrip(t *testing.T) {
	entries := []TablespaceMapEntry{{OID: 16384, Path: "/srv/plain"}, {OID: 16385, Path: "/srv/with\\back\nslash\r and space"}}
	data := FormatTablespaceMap(entries)
	if want := "16384 /srv/plain\n16385 /srv/with\\\\back\\\nslash\\\r and space\n"; string(data) != want {
		t.Fatalf("formatted %q, want %q", data, want)
	}
	got, err := ParseTablespaceMap(data)
	if err != nil || len(got) != 2 || got[0] != entries[0] || got[1] != entries[1] {
		t.Fatalf("parsed %+v, %v", got, err)
	}
	// CRLF line ends are tolerated, as the server does.
	if got, err := ParseTablespaceMap([]byte("16384 /a\r\n16385 /b\r\n")); err != nil || len(got) != 2 || got[1].Path != "/b" {
		t.Fatalf("CRLF: %+v, %v", got, err)
	}
	for _, bad := range []string{"16384\n", "abc /x\n", "0 /x\n", "16384 /a\n16384 /b\n", "16384 /a\\"} {
		if _, err := ParseTablespaceMap([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if got, err := ParseTablespaceMap(nil); err != nil || len(got) != 0 {
		t.Fatalf("empty map: %+v, %v", got, err)
	}
}
