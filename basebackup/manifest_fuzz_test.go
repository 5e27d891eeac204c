package basebackup

import (
	"strings"
	"testing"
)

// Contract: a manifest naming a file outside the data directory is refused,
// however the path is spelled.
func TestParseManifestRejectsHostilePaths(t *testing.T) {
	for _, field := range []string{
		`"Path": "../evil"`, `"Path": "base/../../evil"`, `"Path": "/etc/passwd"`, `"Path": "./PG_VERSION"`,
		`"Path": "base//1"`, `"Path": ""`, `"Encoded-Path": "2e2e2f6576696c"`, // ../evil
	} {
		text := string(makeManifest(t, "NONE", nil, ""))
		text = strings.Replace(text, "\"Files\": [\n", "\"Files\": [\n{ "+field+", \"Size\": 1, \"Last-Modified\": \"x\" }\n", 1)
		if _, err := ParseManifest([]byte(resum(t, text))); err == nil || !strings.Contains(err.Error(), "relative path") {
			t.Errorf("%s: %v", field, err)
		}
	}
}

// FuzzParseManifest: backup_manifest comes from the repository. The fuzzer
// writes the body; the checksum line is appended for it, so that inputs get
// past the checksum into the parsing of files and WAL ranges. What parses
// names only safe relative paths and ordered WAL ranges.
func FuzzParseManifest(f *testing.F) {
	seed := func(s string) {
		i := strings.LastIndex(strings.TrimRight(s, "\n"), "\n")
		f.Add(s[:i+1])
	}
	seed(string(makeManifest(&testing.T{}, "CRC32C", []manifestEntry{
		{path: "backup_label", body: testLabel},
		{path: "PG_VERSION", body: "15\n"},
		{path: "pg_tblspc/16384/PG_15_202209061/5/16385", body: "x"},
	}, `{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2FFFF00" }`)))
	seed(string(makeManifest(&testing.T{}, "SHA256", []manifestEntry{{path: "global/pg_control", body: "x"}}, "")))
	f.Add("{ \"PostgreSQL-Backup-Manifest-Version\": 2, \"System-Identifier\": 7,\n\"Files\": [{ \"Encoded-Path\": \"2e2e\", \"Size\": 1 }],\n\"WAL-Ranges\": [{ \"Timeline\": 1, \"Start-LSN\": \"0/1\", \"End-LSN\": \"0/1\" }],\n")
	f.Fuzz(func(t *testing.T, body string) {
		if !strings.HasSuffix(body, "\n") {
			body += "\n"
		}
		m, err := ParseManifest([]byte(body + checksumLine(body)))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, mf := range m.Files {
			if !isManifestPath(mf.Path) || strings.HasPrefix(mf.Path, "/") || strings.Contains("/"+mf.Path+"/", "/../") || seen[mf.Path] {
				t.Fatalf("manifest file path %q accepted", mf.Path)
			}
			seen[mf.Path] = true
			if mf.Size < 0 {
				t.Fatalf("negative size accepted: %+v", mf)
			}
		}
		if len(m.WALRanges) == 0 {
			t.Fatal("manifest without WAL ranges accepted")
		}
		for _, r := range m.WALRanges {
			if r.Timeline == 0 || r.End < r.Start {
				t.Fatalf("WAL range %+v accepted", r)
			}
		}
	})
}

// FuzzParseTablespaceMap: tablespace_map travels inside base.tar; whatever
// it holds, what parses has distinct OIDs and formats back to a map that
// parses to the same entries.
func FuzzParseTablespaceMap(f *testing.F) {
	for _, s := range []string{
		"16384 /srv/ts1\n16385 /srv/ts 2\n", "16384 /srv/with\\\\backslash\r\n", "16384 /a\n16384 /b\n",
		"x /a\n", "16384\n", "", "\n\n", "16384 /srv/line\\\nbreak\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseTablespaceMap(data)
		if err != nil {
			return
		}
		oids := map[uint32]bool{}
		for _, e := range entries {
			if oids[e.OID] {
				t.Fatalf("OID %d twice", e.OID)
			}
			oids[e.OID] = true
		}
		again, err := ParseTablespaceMap(FormatTablespaceMap(entries))
		if err != nil || len(again) != len(entries) {
			t.Fatalf("formatted map does not parse back: %v (%d vs %d entries)", err, len(again), len(entries))
		}
		for i := range entries {
			if again[i] != entries[i] {
				t.Fatalf("entry %d: %+v formats and parses back as %+v", i, entries[i], again[i])
			}
		}
	})
}
