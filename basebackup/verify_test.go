package basebackup

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

// baseFiles is a small data directory as the server streams it.
func baseFiles() []tarFile {
	control := make([]byte, 8192)
	binary.NativeEndian.PutUint64(control, 7713201725045036263)
	return []tarFile{
		{name: "backup_label", body: testLabel},
		{name: "tablespace_map", body: "16384 /srv/ts1\n"},
		{name: "pg_tblspc/", typ: tar.TypeDir},
		{name: "base/", typ: tar.TypeDir},
		{name: "base/1/", typ: tar.TypeDir},
		{name: "base/1/1259", body: strings.Repeat("page", 2048)},
		{name: "PG_VERSION", body: "15\n"},
		{name: "global/", typ: tar.TypeDir},
		{name: "global/pg_control", body: string(control)},
	}
}

func manifestFor(files []tarFile, prefix string) []manifestEntry {
	var out []manifestEntry
	for _, f := range files {
		if f.typ == 0 {
			out = append(out, manifestEntry{path: prefix + f.name, body: f.body})
		}
	}
	return out
}

var tsFiles = []tarFile{
	{name: "PG_15_202209061/", typ: tar.TypeDir},
	{name: "PG_15_202209061/5/", typ: tar.TypeDir},
	{name: "PG_15_202209061/5/16385", body: "tablespace data"},
}

func TestStreamCheckMatchesManifest(t *testing.T) {
	for _, alg := range []string{"CRC32C", "SHA256", "SHA512", "NONE"} {
		t.Run(alg, func(t *testing.T) {
			entries := append(manifestFor(baseFiles(), ""), manifestFor(tsFiles, "pg_tblspc/16384/")...)
			manifest := makeManifest(t, alg, entries, "")
			// pg_basebackup's stdout stream carries the manifest as its last member.
			base := makeTar(t, append(baseFiles(), tarFile{name: "backup_manifest", body: string(manifest)}))
			c, err := newStreamCheck(alg)
			if err != nil {
				t.Fatal(err)
			}
			// One byte at a time: nothing may depend on read sizes.
			if err := c.readArchive(iotest.OneByteReader(bytes.NewReader(base)), ""); err != nil {
				t.Fatal(err)
			}
			if err := c.readArchive(bytes.NewReader(makeTar(t, tsFiles)), "pg_tblspc/16384/"); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.manifest, manifest) {
				t.Fatalf("captured manifest differs from the streamed one")
			}
			if string(c.label) != testLabel || string(c.tablespaceMap) != "16384 /srv/ts1\n" {
				t.Fatalf("captured label %q, map %q", c.label, c.tablespaceMap)
			}
			if got := c.systemIdentifier(); got != 7713201725045036263 {
				t.Fatalf("system identifier %d", got)
			}
			m, err := ParseManifest(c.manifest)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.check(m); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Contract: a file whose size or checksum differs from the manifest, a file
// the manifest lists but the stream lacks, and a file the manifest does not
// know are all reported, naming the file.
func TestStreamCheckDetectsMismatch(t *testing.T) {
	files := baseFiles()
	good := manifestFor(files, "")
	cases := []struct {
		name    string
		entries func() []manifestEntry
		want    string
	}{
		{"size differs", func() []manifestEntry {
			e := append([]manifestEntry(nil), good...)
			e[len(e)-2].size = 4 // PG_VERSION
			return e
		}, "PG_VERSION: 3 bytes in the backup, 4 in the manifest"},
		{"checksum differs", func() []manifestEntry {
			e := append([]manifestEntry(nil), good...)
			e[len(e)-2].checksum = "deadbeef"
			return e
		}, "PG_VERSION: CRC32C checksum 8a744722 in the backup, deadbeef in the manifest"},
		{"missing from the stream", func() []manifestEntry {
			return append(append([]manifestEntry(nil), good...), manifestEntry{path: "base/1/2608", body: "x"})
		}, "base/1/2608: in the manifest but not in the backup"},
		{"missing from the manifest", func() []manifestEntry {
			return append([]manifestEntry(nil), good[1:]...)
		}, "backup_label: in the backup but not in the manifest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newStreamCheck("CRC32C")
			if err := c.readArchive(bytes.NewReader(makeTar(t, files)), ""); err != nil {
				t.Fatal(err)
			}
			m, err := ParseManifest(makeManifest(t, "CRC32C", tc.entries(), ""))
			if err != nil {
				t.Fatal(err)
			}
			err = c.check(m)
			if !errors.Is(err, ErrManifestMismatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrManifestMismatch naming %q", err, tc.want)
			}
		})
	}
}

func TestStreamCheckRejectsDuplicatesAndGarbage(t *testing.T) {
	c, _ := newStreamCheck("CRC32C")
	dup := makeTar(t, []tarFile{{name: "PG_VERSION", body: "15\n"}, {name: "./PG_VERSION", body: "15\n"}})
	if err := c.readArchive(bytes.NewReader(dup), ""); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate member: %v", err)
	}
	c, _ = newStreamCheck("CRC32C")
	if err := c.readArchive(strings.NewReader(strings.Repeat("not a tar ", 100)), ""); err == nil {
		t.Fatal("garbage accepted as a tar stream")
	}
	// A stream cut in the middle of a member is an error, not a short file.
	full := makeTar(t, baseFiles())
	c, _ = newStreamCheck("CRC32C")
	if err := c.readArchive(bytes.NewReader(full[:3000]), ""); err == nil {
		t.Fatal("truncated stream accepted")
	}
	if _, err := newStreamCheck("MD5"); err == nil {
		t.Fatal("unknown checksum algorithm accepted")
	}
}
