// Package wal holds PostgreSQL's WAL naming rules, LSN/segment arithmetic and
// the small on-disk formats pitr must read itself: the long page header at the
// start of a segment, the system identifier in pg_control, timeline history
// files and backup labels (PG-CONTRACTS.md §1, §5, §7; PostgreSQL 13–18).
//
// It is a leaf package on the standard library only, so that every other part
// of pitr can share one definition of these rules. Getting them subtly wrong
// (hard-coding 16 MiB segments, or treating a boundary end pointer as inside
// the next segment) makes a restore silently fetch the wrong files.
package wal

import (
	"fmt"
	"strings"
)

// LSN is a WAL location (XLogRecPtr).
type LSN uint64

// ParseLSN parses the "%X/%X" text form. Both halves may be zero-padded
// because PG 13–18 backup labels print them unpadded while some PG 18
// messages use "%X/%08X"; lower-case digits are accepted because pg_lsn
// input accepts them and users type LSNs by hand.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q: want two hex numbers separated by \"/\"", s)
	}
	h, ok := parseHex32(hi)
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q: high half %q is not 1-8 hex digits", s, hi)
	}
	l, ok := parseHex32(lo)
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q: low half %q is not 1-8 hex digits", s, lo)
	}
	return LSN(uint64(h)<<32 | uint64(l)), nil
}

// String formats like PostgreSQL's backup_label (LSN_FORMAT_ARGS with "%X/%X"),
// so values can be compared textually with what the server wrote.
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// parseHex32 accepts 1-8 hex digits of either case and nothing else; unlike
// strconv it refuses signs, "0x" prefixes and underscores, which sscanf in
// PostgreSQL would never have produced.
func parseHex32(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 8 {
		return 0, false
	}
	var v uint32
	for i := 0; i < len(s); i++ {
		d, ok := hexDigit(s[i], true)
		if !ok {
			return 0, false
		}
		v = v<<4 | uint32(d)
	}
	return v, true
}

func hexDigit(c byte, allowLower bool) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case allowLower && c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// isUpperHex reports whether s is non-empty and only 0-9A-F. File names are
// matched case-sensitively, as IsXLogFileName does: PostgreSQL never writes
// lower-case names and would never ask restore_command for one.
func isUpperHex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if _, ok := hexDigit(s[i], false); !ok {
			return false
		}
	}
	return true
}

// upperHex32 decodes exactly 8 upper-case hex digits.
func upperHex32(s string) (uint32, bool) {
	if len(s) != 8 || !isUpperHex(s) {
		return 0, false
	}
	v, _ := parseHex32(s)
	return v, true
}

// TimelineID is a PostgreSQL timeline (TimeLineID).
type TimelineID uint32

// ParseTimelineID parses the 8 upper-case hex digits used in file names.
// Timeline 0 is rejected: PostgreSQL numbers timelines from 1, so a zero can
// only come from a corrupt or foreign name.
func ParseTimelineID(s string) (TimelineID, error) {
	v, ok := upperHex32(s)
	if !ok {
		return 0, fmt.Errorf("invalid timeline ID %q: want 8 upper-case hex digits", s)
	}
	if v == 0 {
		return 0, fmt.Errorf("invalid timeline ID %q: timelines start at 1", s)
	}
	return TimelineID(v), nil
}

// SegmentSize is wal_segment_size in bytes. Every method assumes a value that
// passed NewSegmentSize and panics otherwise, because arithmetic with a bogus
// size would produce plausible but wrong file names.
type SegmentSize uint64

const (
	MinSegmentSize     SegmentSize = 1 << 20  // WalSegMinSize
	MaxSegmentSize     SegmentSize = 1 << 30  // WalSegMaxSize
	DefaultSegmentSize SegmentSize = 16 << 20 // initdb default
)

// NewSegmentSize validates like IsValidWalSegSize: a power of two from 1 MiB
// to 1 GiB.
func NewSegmentSize(bytes uint64) (SegmentSize, error) {
	if !SegmentSize(bytes).valid() {
		return 0, fmt.Errorf("invalid WAL segment size %d bytes: must be a power of two between 1 MiB and 1 GiB", bytes)
	}
	return SegmentSize(bytes), nil
}

func (s SegmentSize) valid() bool {
	return s >= MinSegmentSize && s <= MaxSegmentSize && s&(s-1) == 0
}

func (s SegmentSize) mustValid() uint64 {
	if !s.valid() {
		panic(fmt.Sprintf("wal: SegmentSize %d used without NewSegmentSize", uint64(s)))
	}
	return uint64(s)
}

// String gives the size in MiB, the unit initdb --wal-segsize uses.
func (s SegmentSize) String() string {
	if s >= 1<<20 && s%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", uint64(s)>>20)
	}
	return fmt.Sprintf("%d bytes", uint64(s))
}

// SegmentsPerXLogID is XLogSegmentsPerXLogId. It bounds the low 8 hex digits
// of a file name, which is why "next file" must roll over into the middle
// field instead of counting up to FFFFFFFF.
func (s SegmentSize) SegmentsPerXLogID() uint64 {
	return (1 << 32) / s.mustValid()
}

// SegNo is a WAL segment number (XLogSegNo), independent of timeline.
type SegNo uint64

// SegmentOf is XLByteToSeg: the segment holding the byte at l. Use it for
// start pointers (redo, record starts).
func (s SegmentSize) SegmentOf(l LSN) SegNo {
	return SegNo(uint64(l) / s.mustValid())
}

// SegmentOfEnd is XLByteToPrevSeg: an end pointer on a segment boundary
// belongs to the previous segment, so a backup whose STOP WAL LOCATION sits
// exactly on a boundary does not need the file its label names. l == 0 has no
// previous byte; it maps to 0 rather than wrapping around.
func (s SegmentSize) SegmentOfEnd(l LSN) SegNo {
	size := s.mustValid()
	if l == 0 {
		return 0
	}
	return SegNo((uint64(l) - 1) / size)
}

// StartLSN is the LSN of the first byte of segment n (XLogSegNoOffsetToRecPtr
// with offset 0).
func (s SegmentSize) StartLSN(n SegNo) LSN {
	return LSN(uint64(n) * s.mustValid())
}

// Offset is XLogSegmentOffset: the byte offset of l inside its segment.
func (s SegmentSize) Offset(l LSN) uint64 {
	return uint64(l) % s.mustValid()
}

// Segment identifies one WAL file: the same segment number exists once per
// timeline.
type Segment struct {
	TLI TimelineID
	No  SegNo
}

// FileName is XLogFileName.
func (s SegmentSize) FileName(seg Segment) string {
	per := s.SegmentsPerXLogID()
	return fmt.Sprintf("%08X%08X%08X", uint32(seg.TLI), uint64(seg.No)/per, uint64(seg.No)%per)
}

// ParseFileName is XLogFromFileName plus the checks PostgreSQL leaves out: a
// low part >= SegmentsPerXLogID cannot be produced with this segment size, so
// such a file belongs to a cluster with a different size (or was hand-made)
// and must not be mapped to a segment number.
func (s SegmentSize) ParseFileName(name string) (Segment, error) {
	if len(name) != 24 || !isUpperHex(name) {
		return Segment{}, fmt.Errorf("invalid WAL segment file name %q: want 24 upper-case hex digits", name)
	}
	tli, err := ParseTimelineID(name[:8])
	if err != nil {
		return Segment{}, fmt.Errorf("invalid WAL segment file name %q: %w", name, err)
	}
	log, _ := upperHex32(name[8:16])
	low, _ := upperHex32(name[16:24])
	per := s.SegmentsPerXLogID()
	if uint64(low) >= per {
		return Segment{}, fmt.Errorf("invalid WAL segment file name %q: low part %08X is not below %d, the segments per log ID for %s segments",
			name, low, per, s)
	}
	return Segment{TLI: tli, No: SegNo(uint64(log)*per + uint64(low))}, nil
}

// Next is the following segment on the same timeline. Working on SegNo rather
// than on the name is what makes the low hex digits roll over at
// SegmentsPerXLogID.
func (s SegmentSize) Next(seg Segment) Segment {
	s.mustValid()
	return Segment{TLI: seg.TLI, No: seg.No + 1}
}

// MarshalText writes the LSN as PostgreSQL prints it, so JSON metadata
// reads like pg_controldata and backup_label.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses "%X/%X".
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
