package basebackup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// tarFile is one member of a test archive.
type tarFile struct {
	name     string
	body     string
	typ      byte // 0: regular file
	linkname string
	mode     int64
}

// makeTar builds an uncompressed tar archive, as PostgreSQL sends them.
func makeTar(t *testing.T, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Typeflag: f.typ, Linkname: f.linkname, Format: tar.FormatUSTAR}
		if h.Mode == 0 {
			h.Mode = 0o600
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.body))
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o700
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(f.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// manifestEntry describes one file for makeManifest.
type manifestEntry struct {
	path, body string
	// overrides, to make a manifest that disagrees with the files
	size     int64
	checksum string
}

// makeManifest writes a backup_manifest the way PostgreSQL does (one file
// per line, the SHA-256 of everything before the last line on the last line).
func makeManifest(t *testing.T, alg string, entries []manifestEntry, ranges string) []byte {
	t.Helper()
	var b strings.Builder
	b.WriteString("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n")
	for i, e := range entries {
		size := int64(len(e.body))
		if e.size != 0 {
			size = e.size
		}
		sum := e.checksum
		if sum == "" && alg != "NONE" {
			c, err := newFileChecksum(alg)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte(e.body))
			sum = c.hex()
		}
		sep := ","
		if i == len(entries)-1 {
			sep = ""
		}
		if alg == "NONE" {
			fmt.Fprintf(&b, "{ \"Path\": %q, \"Size\": %d, \"Last-Modified\": \"2026-11-28 12:34:46 GMT\" }%s\n", e.path, size, sep)
		} else {
			fmt.Fprintf(&b, "{ \"Path\": %q, \"Size\": %d, \"Last-Modified\": \"2026-11-28 12:34:46 GMT\", \"Checksum-Algorithm\": %q, \"Checksum\": %q }%s\n",
				e.path, size, alg, sum, sep)
		}
	}
	if ranges == "" {
		ranges = `{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }`
	}
	b.WriteString("],\n\"WAL-Ranges\": [\n" + ranges + "\n],\n")
	return []byte(b.String() + checksumLine(b.String()))
}

// checksumLine is the last line of a manifest whose other lines are body.
func checksumLine(body string) string {
	sum := sha256.Sum256([]byte(body))
	return `"Manifest-Checksum": "` + hex.EncodeToString(sum[:]) + "\"}\n"
}

const testLabel = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n" +
	"CHECKPOINT LOCATION: 0/2000060\n" +
	"BACKUP METHOD: streamed\n" +
	"BACKUP FROM: primary\n" +
	"START TIME: 2026-11-28 12:34:46 UTC\n" +
	"LABEL: test\n" +
	"START TIMELINE: 1\n"
