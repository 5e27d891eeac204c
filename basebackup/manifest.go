package basebackup

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"hash/crc32"
	"strings"

	"github.com/pitr-dev/pitr/archive/wal"
)

// Manifest is the part of a PostgreSQL backup_manifest (PG13+) that pitr
// checks a backup against (PG-CONTRACTS.md §5.4).
type Manifest struct {
	Version int
	// SystemIdentifier is only in version 2 manifests (PostgreSQL 17+); 0
	// when absent.
	SystemIdentifier uint64
	Files            []ManifestFile
	WALRanges        []WALRange
}

// ManifestFile is one entry of the manifest's Files list.
type ManifestFile struct {
	// Path is relative to the data directory, with the raw bytes decoded
	// from Encoded-Path for names that are not valid UTF-8. Files in a
	// tablespace are under pg_tblspc/<oid>/.
	Path      string
	Size      int64
	Algorithm string // upper case as PostgreSQL writes it; "" or "NONE": no checksum
	Checksum  string // lower-case hex
}

// WALRange is one entry of WAL-Ranges: replay from Start on Timeline must
// reach End before the backup is consistent.
type WALRange struct {
	Timeline wal.TimelineID
	Start    wal.LSN
	End      wal.LSN
}

type manifestJSON struct {
	Version          *int    `json:"PostgreSQL-Backup-Manifest-Version"`
	SystemIdentifier *uint64 `json:"System-Identifier"`
	Files            []struct {
		Path        *string `json:"Path"`
		EncodedPath *string `json:"Encoded-Path"`
		Size        *int64  `json:"Size"`
		Algorithm   string  `json:"Checksum-Algorithm"`
		Checksum    string  `json:"Checksum"`
	} `json:"Files"`
	WALRanges []struct {
		Timeline *uint32 `json:"Timeline"`
		Start    *string `json:"Start-LSN"`
		End      *string `json:"End-LSN"`
	} `json:"WAL-Ranges"`
	Checksum *string `json:"Manifest-Checksum"`
}

// ParseManifest verifies the manifest's own SHA-256 (which PostgreSQL
// computes over everything before its last line, as pg_verifybackup checks
// it) and decodes it. A manifest that fails its checksum is refused: nothing
// it says about the files can be trusted.
func ParseManifest(data []byte) (*Manifest, error) {
	var raw manifestJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("backup_manifest: %w", err)
	}
	if raw.Version == nil || (*raw.Version != 1 && *raw.Version != 2) {
		return nil, fmt.Errorf("backup_manifest: unsupported or missing PostgreSQL-Backup-Manifest-Version")
	}
	if raw.Checksum == nil {
		return nil, fmt.Errorf("backup_manifest: no Manifest-Checksum")
	}
	if err := checkManifestChecksum(data, *raw.Checksum); err != nil {
		return nil, err
	}
	m := &Manifest{Version: *raw.Version}
	if raw.SystemIdentifier != nil {
		m.SystemIdentifier = *raw.SystemIdentifier
	}
	seen := make(map[string]bool, len(raw.Files))
	for i, f := range raw.Files {
		var p string
		switch {
		case f.Path != nil && f.EncodedPath == nil:
			p = *f.Path
		case f.EncodedPath != nil && f.Path == nil:
			b, err := hex.DecodeString(*f.EncodedPath)
			if err != nil {
				return nil, fmt.Errorf("backup_manifest: file %d: Encoded-Path: %w", i, err)
			}
			p = string(b)
		default:
			return nil, fmt.Errorf("backup_manifest: file %d: want exactly one of Path and Encoded-Path", i)
		}
		if !isManifestPath(p) {
			// PostgreSQL lists files relative to the data directory; a
			// manifest naming anything else was not written by it.
			return nil, fmt.Errorf("backup_manifest: file %q is not a relative path inside the data directory", p)
		}
		if f.Size == nil || *f.Size < 0 {
			return nil, fmt.Errorf("backup_manifest: file %q: missing or negative Size", p)
		}
		if seen[p] {
			return nil, fmt.Errorf("backup_manifest: file %q listed twice", p)
		}
		seen[p] = true
		mf := ManifestFile{Path: p, Size: *f.Size, Algorithm: strings.ToUpper(f.Algorithm), Checksum: strings.ToLower(f.Checksum)}
		if mf.Algorithm != "" && mf.Algorithm != "NONE" {
			if _, err := newFileChecksum(mf.Algorithm); err != nil {
				return nil, fmt.Errorf("backup_manifest: file %q: %w", p, err)
			}
			if _, err := hex.DecodeString(mf.Checksum); err != nil || mf.Checksum == "" {
				return nil, fmt.Errorf("backup_manifest: file %q: checksum %q is not hex", p, f.Checksum)
			}
		}
		m.Files = append(m.Files, mf)
	}
	if len(raw.WALRanges) == 0 {
		return nil, fmt.Errorf("backup_manifest: no WAL-Ranges")
	}
	for i, r := range raw.WALRanges {
		if r.Timeline == nil || *r.Timeline == 0 || r.Start == nil || r.End == nil {
			return nil, fmt.Errorf("backup_manifest: WAL range %d: want Timeline, Start-LSN and End-LSN", i)
		}
		start, err := wal.ParseLSN(*r.Start)
		if err != nil {
			return nil, fmt.Errorf("backup_manifest: WAL range %d: %w", i, err)
		}
		end, err := wal.ParseLSN(*r.End)
		if err != nil {
			return nil, fmt.Errorf("backup_manifest: WAL range %d: %w", i, err)
		}
		if end < start {
			return nil, fmt.Errorf("backup_manifest: WAL range %d ends at %s before its start %s", i, end, start)
		}
		m.WALRanges = append(m.WALRanges, WALRange{Timeline: wal.TimelineID(*r.Timeline), Start: start, End: end})
	}
	return m, nil
}

// checkManifestChecksum recomputes the SHA-256 PostgreSQL stores on the
// manifest's last line: it covers every byte up to and including the newline
// before that line (verify_manifest_checksum in pg_verifybackup).
func checkManifestChecksum(data []byte, want string) error {
	last := bytes.LastIndexByte(bytes.TrimRight(data, "\n"), '\n')
	if last < 0 {
		return fmt.Errorf("backup_manifest: too short to carry a checksum")
	}
	if !bytes.HasPrefix(data[last+1:], []byte(`"Manifest-Checksum"`)) {
		return fmt.Errorf("backup_manifest: Manifest-Checksum is not on the last line")
	}
	sum := sha256.Sum256(data[:last+1])
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, want) {
		return fmt.Errorf("backup_manifest: checksum mismatch: manifest says %s, content hashes to %s (manifest damaged)", want, got)
	}
	return nil
}

// fileChecksum computes one of the manifest's per-file checksums.
type fileChecksum struct {
	hash.Hash
	// littleEndian: PostgreSQL writes a CRC-32C as the hex of its four bytes
	// in host (little-endian on every platform it is built for in practice)
	// order, not as the big-endian number hash/crc32 returns.
	littleEndian bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newFileChecksum(alg string) (*fileChecksum, error) {
	switch strings.ToUpper(alg) {
	case "CRC32C":
		return &fileChecksum{Hash: crc32.New(castagnoli), littleEndian: true}, nil
	case "SHA224":
		return &fileChecksum{Hash: sha256.New224()}, nil
	case "SHA256":
		return &fileChecksum{Hash: sha256.New()}, nil
	case "SHA384":
		return &fileChecksum{Hash: sha512.New384()}, nil
	case "SHA512":
		return &fileChecksum{Hash: sha512.New()}, nil
	}
	return nil, fmt.Errorf("unknown checksum algorithm %q", alg)
}

// hex returns the checksum as the manifest spells it.
func (c *fileChecksum) hex() string {
	sum := c.Sum(nil)
	if c.littleEndian {
		for i, j := 0, len(sum)-1; i < j; i, j = i+1, j-1 {
			sum[i], sum[j] = sum[j], sum[i]
		}
	}
	return hex.EncodeToString(sum)
}
