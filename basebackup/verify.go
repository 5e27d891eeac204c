package basebackup

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
)

// Names of the files in a base backup that pitr reads itself.
const (
	backupLabelFile   = "backup_label"
	tablespaceMapFile = "tablespace_map"
	manifestFile      = "backup_manifest"
	pgControlFile     = "global/pg_control"
)

// Size limits for the small files captured from the stream: far above what
// PostgreSQL writes, low enough that a hostile stream cannot exhaust memory.
const (
	maxLabelSize         = 64 << 10
	maxTablespaceMapSize = 16 << 20
	// MaxManifestSize bounds the backup_manifest pitr holds in memory to
	// verify it (about 150 bytes per file: a million files is 150 MB).
	MaxManifestSize = 512 << 20
)

// observed is what the stream held for one file.
type observed struct {
	size     int64
	checksum string // hex, in the manifest's spelling; "" if not computed
}

// streamCheck watches the tar archives of one backup go by and records, for
// every regular file, its size and checksum in the algorithm the manifest
// was asked to use, so that the manifest, which arrives last, can be checked
// against what was actually stored. It also captures the few small files pitr
// needs: backup_label, tablespace_map, the start of global/pg_control and (for
// pg_basebackup's stdout stream, which carries it as the last member) the
// manifest itself.
//
// Memory: one map entry per file, plus the captured files.
type streamCheck struct {
	alg string // "NONE" or a manifest checksum algorithm

	mu            sync.Mutex
	files         map[string]observed
	label         []byte
	tablespaceMap []byte
	controlHead   []byte // first 8 bytes: the system identifier
	manifest      []byte // only when the stream carried it
	members       int64
}

func newStreamCheck(alg string) (*streamCheck, error) {
	alg = strings.ToUpper(alg)
	if alg != "NONE" {
		if _, err := newFileChecksum(alg); err != nil {
			return nil, err
		}
	}
	return &streamCheck{alg: alg, files: map[string]observed{}}, nil
}

// readArchive reads one tar archive to its end. prefix is "" for the main
// data directory (base.tar) and "pg_tblspc/<oid>/" for a tablespace, which
// is how the manifest names that tablespace's files. The reader is drained
// to EOF even after the end-of-archive marker, so a producer writing into a
// pipe never blocks on bytes nobody reads.
func (s *streamCheck) readArchive(r io.Reader, prefix string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar stream: %w", err)
		}
		if err := s.member(tr, hdr, prefix); err != nil {
			return err
		}
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read tar stream: %w", err)
	}
	return nil
}

func (s *streamCheck) member(tr *tar.Reader, hdr *tar.Header, prefix string) error {
	s.mu.Lock()
	s.members++
	s.mu.Unlock()
	if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
		// Directories, and the pg_tblspc symlinks of servers that send them:
		// the manifest lists regular files only.
		return nil
	}
	name := prefix + cleanMemberName(hdr.Name)
	var capture *[]byte
	limit := int64(0)
	if prefix == "" {
		switch name {
		case backupLabelFile:
			capture, limit = &s.label, maxLabelSize
		case tablespaceMapFile:
			capture, limit = &s.tablespaceMap, maxTablespaceMapSize
		case manifestFile:
			capture, limit = &s.manifest, MaxManifestSize
		case pgControlFile:
			capture, limit = &s.controlHead, 8
		}
	}
	var sum *fileChecksum
	var w []io.Writer
	if s.alg != "NONE" && name != manifestFile {
		sum, _ = newFileChecksum(s.alg)
		w = append(w, sum)
	}
	var buf bytes.Buffer
	if capture != nil {
		if hdr.Size > limit && name != pgControlFile {
			return fmt.Errorf("%s in the backup stream is %d bytes, more than the %d pitr accepts", name, hdr.Size, limit)
		}
		w = append(w, &limitedBuffer{buf: &buf, n: limit})
	}
	n, err := io.Copy(io.MultiWriter(w...), tr)
	if err != nil {
		return fmt.Errorf("read %s from the backup stream: %w", name, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("read %s from the backup stream: %d bytes, tar header says %d", name, n, hdr.Size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if capture != nil {
		*capture = buf.Bytes()
	}
	if name == manifestFile {
		// The manifest describes the other files, not itself.
		return nil
	}
	if _, dup := s.files[name]; dup {
		return fmt.Errorf("%s appears twice in the backup stream", name)
	}
	o := observed{size: n}
	if sum != nil {
		o.checksum = sum.hex()
	}
	s.files[name] = o
	return nil
}

// cleanMemberName normalises a tar member name the way the manifest spells
// paths: no "./" prefix, no trailing slash.
func cleanMemberName(name string) string {
	name = strings.TrimPrefix(name, "./")
	if name == "" {
		return name
	}
	return path.Clean(name)
}

// limitedBuffer keeps the first n bytes written to it and discards the rest.
type limitedBuffer struct {
	buf *bytes.Buffer
	n   int64
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - int64(l.buf.Len()); room > 0 {
		l.buf.Write(p[:min(int64(len(p)), room)])
	}
	return len(p), nil
}

// systemIdentifier returns the system identifier from the streamed
// global/pg_control, or 0 if the stream had none.
func (s *streamCheck) systemIdentifier() uint64 {
	if len(s.controlHead) < 8 {
		return 0
	}
	return binary.NativeEndian.Uint64(s.controlHead)
}

// maxReportedMismatches bounds the list of files an error names.
const maxReportedMismatches = 5

// check compares what streamed by with the manifest: every file the manifest
// lists must have been in the stream with the same size and checksum, and
// the stream must hold no file the manifest does not list.
func (s *streamCheck) check(m *Manifest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var problems []string
	listed := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		listed[f.Path] = true
		o, ok := s.files[f.Path]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: in the manifest but not in the backup", f.Path))
		case o.size != f.Size:
			problems = append(problems, fmt.Sprintf("%s: %d bytes in the backup, %d in the manifest", f.Path, o.size, f.Size))
		case f.Algorithm == "" || f.Algorithm == "NONE" || s.alg == "NONE":
		case f.Algorithm != s.alg:
			problems = append(problems, fmt.Sprintf("%s: manifest checksum is %s, pitr asked for %s", f.Path, f.Algorithm, s.alg))
		case o.checksum != f.Checksum:
			problems = append(problems, fmt.Sprintf("%s: %s checksum %s in the backup, %s in the manifest", f.Path, f.Algorithm, o.checksum, f.Checksum))
		}
	}
	var extra []string
	for p := range s.files {
		if !listed[p] {
			extra = append(extra, p)
		}
	}
	sort.Strings(extra)
	for _, p := range extra {
		problems = append(problems, fmt.Sprintf("%s: in the backup but not in the manifest", p))
	}
	if len(problems) == 0 {
		return nil
	}
	more := ""
	if len(problems) > maxReportedMismatches {
		more = fmt.Sprintf(" (and %d more)", len(problems)-maxReportedMismatches)
		problems = problems[:maxReportedMismatches]
	}
	return fmt.Errorf("%w: %s%s", ErrManifestMismatch, strings.Join(problems, "; "), more)
}

// ErrManifestMismatch means the files that streamed by are not the files the
// server's backup_manifest describes.
var ErrManifestMismatch = errors.New("backup does not match its backup_manifest")
