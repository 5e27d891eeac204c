package wal

import (
	"encoding/binary"
	"testing"
)

// FuzzParseLongPageHeader: the first page of a WAL file pushed or fetched
// is input; a header that parses is a long header with a valid segment size
// (the magic is deliberately not checked), and checking it against any
// segment name never panics.
func FuzzParseLongPageHeader(f *testing.F) {
	good := make([]byte, LongPageHeaderSize)
	binary.LittleEndian.PutUint16(good[0:], 0xD110)
	binary.LittleEndian.PutUint16(good[2:], 0x0002)
	binary.LittleEndian.PutUint32(good[4:], 1)
	binary.LittleEndian.PutUint64(good[8:], 0x1000000)
	binary.LittleEndian.PutUint64(good[24:], 7301234567890123456)
	binary.LittleEndian.PutUint32(good[32:], 16<<20)
	binary.LittleEndian.PutUint32(good[36:], 8192)
	f.Add(good, "000000010000000000000001")
	f.Add(good[:10], "000000010000000000000001")
	f.Add(make([]byte, LongPageHeaderSize), "00000001000000000000000F")
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		h, err := ParseLongPageHeader(b)
		if err != nil {
			return
		}
		MagicMajorVersion(h.Magic)
		size, err := NewSegmentSize(uint64(h.SegmentSize))
		if err != nil || h.Info&xlpLongHeader == 0 {
			t.Fatalf("header accepted with info %#x, segment size %d: %v", h.Info, h.SegmentSize, err)
		}
		if seg, err := size.ParseFileName(name); err == nil {
			_ = size.CheckSegment(seg, h)
		}
	})
}
