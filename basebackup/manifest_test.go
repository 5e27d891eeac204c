package basebackup

import (
	"bytes"
	"strings"
	"testing"
)

// PostgreSQL writes a CRC-32C as the hex of its little-endian bytes: the
// manifest of a real PG 15 backup lists PG_VERSION ("15\n") with 8a744722,
// while the CRC-32C value itself is 0x2247748a.
func TestCRC32CSpelledLikePostgreSQL(t *testing.T) {
	c, err := newFileChecksum("CRC32C")
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("15\n"))
	if got := c.hex(); got != "8a744722" {
		t.Fatalf("CRC32C of PG_VERSION = %s, want 8a744722 as PostgreSQL writes it", got)
	}
	// The empty file (tablespace_map of a cluster without tablespaces).
	c, _ = newFileChecksum("CRC32C")
	if got := c.hex(); got != "00000000" {
		t.Fatalf("CRC32C of nothing = %s, want 00000000", got)
	}
	// SHA-2 checksums are plain hex of the digest.
	s, _ := newFileChecksum("sha256")
	s.Write([]byte("15\n"))
	if got, want := s.hex(), "238903180cc104ec2c5d8b3f20c5bc61b389ec0a967df8cc208cdc7cd454174f"; got != want {
		t.Fatalf("SHA256 of PG_VERSION = %s, want %s", got, want)
	}
}

func TestParseManifest(t *testing.T) {
	data := makeManifest(t, "CRC32C", []manifestEntry{
		{path: "backup_label", body: testLabel},
		{path: "PG_VERSION", body: "15\n"},
		{path: "pg_tblspc/16384/PG_15_202209061/5/16385", body: "x"},
	}, `{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2FFFF00" },
{ "Timeline": 2, "Start-LSN": "0/2FFFF00", "End-LSN": "0/3000100" }`)
	m, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 1 || len(m.Files) != 3 || m.Files[1].Path != "PG_VERSION" || m.Files[1].Size != 3 ||
		m.Files[1].Algorithm != "CRC32C" || m.Files[1].Checksum != "8a744722" {
		t.Fatalf("parsed %+v", m)
	}
	want := []WALRange{{Timeline: 1, Start: 0x2000028, End: 0x2FFFF00}, {Timeline: 2, Start: 0x2FFFF00, End: 0x3000100}}
	if len(m.WALRanges) != 2 || m.WALRanges[0] != want[0] || m.WALRanges[1] != want[1] {
		t.Fatalf("WAL ranges %+v, want %+v", m.WALRanges, want)
	}
}

func TestParseManifestEncodedPath(t *testing.T) {
	data := makeManifest(t, "NONE", nil, "")
	// Replace the empty file list by one hex-encoded, non-UTF-8 name; the
	// checksum must then be recomputed, so build it by hand.
	text := strings.Replace(string(data), "\"Files\": [\n", "\"Files\": [\n{ \"Encoded-Path\": \"666fff\", \"Size\": 1, \"Last-Modified\": \"x\" }\n", 1)
	text = resum(t, text)
	m, err := ParseManifest([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 1 || m.Files[0].Path != "fo\xff" {
		t.Fatalf("files %+v", m.Files)
	}
}

// resum recomputes the last line of a hand-edited manifest.
func resum(t *testing.T, text string) string {
	t.Helper()
	i := strings.LastIndex(strings.TrimRight(text, "\n"), "\n")
	body := text[:i+1]
	return body + checksumLine(body)
}

func TestParseManifestRejectsDamage(t *testing.T) {
	good := makeManifest(t, "CRC32C", []manifestEntry{{path: "PG_VERSION", body: "15\n"}}, "")
	if _, err := ParseManifest(good); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"flipped size":      bytes.Replace(good, []byte(`"Size": 3`), []byte(`"Size": 4`), 1),
		"no checksum line":  good[:bytes.LastIndex(bytes.TrimRight(good, "\n"), []byte("\n"))+1],
		"not json":          []byte("hello\n"),
		"checksum not last": []byte(resum(t, "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Manifest-Checksum\": \"00\",\n\"Files\": []}\n")),
	}
	for name, data := range cases {
		if _, err := ParseManifest(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	noRanges := strings.Replace(string(good), `{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }`, "", 1)
	if _, err := ParseManifest([]byte(resum(t, noRanges))); err == nil || !strings.Contains(err.Error(), "WAL-Ranges") {
		t.Errorf("manifest without WAL ranges: %v", err)
	}
	backwards := strings.Replace(string(good), `"End-LSN": "0/2000100"`, `"End-LSN": "0/1000000"`, 1)
	if _, err := ParseManifest([]byte(resum(t, backwards))); err == nil {
		t.Errorf("WAL range ending before its start accepted")
	}
}
