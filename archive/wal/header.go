package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// LongPageHeaderSize is sizeof(XLogLongPageHeaderData): the 24-byte
// (MAXALIGNed) XLogPageHeaderData followed by xlp_sysid, xlp_seg_size and
// xlp_xlog_blcksz (src/include/access/xlog_internal.h, unchanged PG 13–18).
const LongPageHeaderSize = 40

// xlpLongHeader is XLP_LONG_HEADER: only the first page of a segment has it,
// so its absence means the bytes are not the start of a segment file.
const xlpLongHeader = 0x0002

// LongPageHeader is XLogLongPageHeaderData.
type LongPageHeader struct {
	Magic       uint16 // XLOG_PAGE_MAGIC, changes with every major version
	Info        uint16
	TLI         TimelineID // timeline of the first record on the page, see CheckSegment
	PageAddr    LSN
	SystemID    uint64 // the cluster's pg_control system identifier
	SegmentSize uint32
	BlockSize   uint32
}

// ParseLongPageHeader decodes the header at the start of a segment. WAL is
// written in the server's native byte order, and pitr runs on the database
// host, so the native order is the right one here.
//
// The magic is not checked, so that a newer PostgreSQL does not make pitr
// refuse every file; see MagicMajorVersion for callers that want to.
func ParseLongPageHeader(b []byte) (LongPageHeader, error) {
	if len(b) < LongPageHeaderSize {
		return LongPageHeader{}, fmt.Errorf("WAL long page header needs %d bytes, got %d", LongPageHeaderSize, len(b))
	}
	ne := binary.NativeEndian
	h := LongPageHeader{
		Magic:       ne.Uint16(b[0:]),
		Info:        ne.Uint16(b[2:]),
		TLI:         TimelineID(ne.Uint32(b[4:])),
		PageAddr:    LSN(ne.Uint64(b[8:])),
		SystemID:    ne.Uint64(b[24:]),
		SegmentSize: ne.Uint32(b[32:]),
		BlockSize:   ne.Uint32(b[36:]),
	}
	if h.Info&xlpLongHeader == 0 {
		return LongPageHeader{}, fmt.Errorf("WAL page header xlp_info 0x%04X lacks XLP_LONG_HEADER (0x%04X): not the start of a WAL segment",
			h.Info, xlpLongHeader)
	}
	if _, err := NewSegmentSize(uint64(h.SegmentSize)); err != nil {
		return LongPageHeader{}, fmt.Errorf("WAL long page header: %w", err)
	}
	return h, nil
}

// magicVersions maps XLOG_PAGE_MAGIC to the major version that writes it.
var magicVersions = map[uint16]int{
	0xD106: 13,
	0xD10D: 14,
	0xD110: 15,
	0xD113: 16,
	0xD116: 17,
	0xD118: 18,
}

// MagicMajorVersion returns the PostgreSQL major version whose WAL carries
// magic, or ok == false for versions pitr does not know.
func MagicMajorVersion(magic uint16) (major int, ok bool) {
	major, ok = magicVersions[magic]
	return major, ok
}

// CheckSegment cross-checks a segment (or .partial) file name against the
// header read from its first page, so that a renamed file, a recycled segment
// that still carries an old page address, or a file from a cluster with a
// different segment size is refused.
//
// The header timeline may be lower than the name's: when a timeline starts in
// the middle of a segment, PostgreSQL creates that first segment of the new
// timeline by copying the parent's file (XLogInitNewTimeline), so its first
// page still says the parent timeline (observed on PG 15: 000000020000000000000007
// after promotion had xlp_tli 1). Without the history we cannot tell that case
// from a renamed parent file; CheckSegmentInHistory can.
func (s SegmentSize) CheckSegment(seg Segment, h LongPageHeader) error {
	name := s.FileName(seg)
	var problems []string
	if SegmentSize(h.SegmentSize) != s {
		problems = append(problems, fmt.Sprintf("header segment size is %d bytes, expected %d (%s)", h.SegmentSize, uint64(s), s))
	}
	if want := s.StartLSN(seg.No); h.PageAddr != want {
		problems = append(problems, fmt.Sprintf("header page address is %s, expected %s", h.PageAddr, want))
	}
	switch {
	case h.TLI == 0:
		problems = append(problems, "header timeline is 0")
	case h.TLI > seg.TLI:
		problems = append(problems, fmt.Sprintf("header timeline %d is newer than the file name's timeline %d", h.TLI, seg.TLI))
	}
	if len(problems) > 0 {
		return fmt.Errorf("WAL file %s does not match its page header: %s", name, strings.Join(problems, "; "))
	}
	return nil
}

// CheckSegmentInHistory is CheckSegment made exact with the ancestry of the
// file's own timeline (Ancestry(seg.TLI, ...)): the header timeline must be
// the one holding WAL at the segment's first byte, and the file must not be
// named on a timeline before that timeline existed.
func (s SegmentSize) CheckSegmentInHistory(seg Segment, h LongPageHeader, spans []TimelineSpan) error {
	if err := s.CheckSegment(seg, h); err != nil {
		return err
	}
	name := s.FileName(seg)
	if len(spans) == 0 || spans[len(spans)-1].TLI != seg.TLI {
		return fmt.Errorf("WAL file %s: timeline ancestry given is not that of timeline %d", name, seg.TLI)
	}
	own := spans[len(spans)-1]
	if first := s.SegmentOf(own.Begin); seg.No < first {
		return fmt.Errorf("WAL file %s: timeline %d begins at %s (segment %s), after this segment",
			name, seg.TLI, own.Begin, s.FileName(Segment{TLI: seg.TLI, No: first}))
	}
	if want := TimelineAt(spans, s.StartLSN(seg.No)); h.TLI != want {
		return fmt.Errorf("WAL file %s: header timeline is %d, but the history puts timeline %d at %s",
			name, h.TLI, want, s.StartLSN(seg.No))
	}
	return nil
}

// ReadControlSystemID reads the system identifier, the first field of
// ControlFileData, from global/pg_control. Only those 8 bytes are read
// because the rest of the layout changes between major versions.
func ReadControlSystemID(pgControlPath string) (uint64, error) {
	f, err := os.Open(pgControlPath)
	if err != nil {
		return 0, fmt.Errorf("reading system identifier: %w", err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("reading system identifier from %s: file is shorter than 8 bytes", pgControlPath)
		}
		return 0, fmt.Errorf("reading system identifier from %s: %w", pgControlPath, err)
	}
	id := binary.NativeEndian.Uint64(b[:])
	if id == 0 {
		return 0, fmt.Errorf("reading system identifier from %s: it is 0, not a valid pg_control", pgControlPath)
	}
	return id, nil
}
