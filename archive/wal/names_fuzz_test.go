package wal

import (
	"regexp"
	"testing"
)

// archiveName is every shape Classify may accept, spelled independently.
var archiveName = regexp.MustCompile(`^(?:[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$`)

// FuzzClassify: a name Classify accepts has exactly PostgreSQL's shape (so
// it can never carry a path separator or "..") and a segment name
// round-trips through ParseFileName and FileName for every segment size.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"000000010000000000000001", "000000010000000100000000.partial", "000000010000000000000002.00000028.backup",
		"00000002.history", "00000000.history", "../../etc/passwd", "000000010000000000000001/", "0000000100000000000000ff",
		"000000010000000000000001.gz", "00000001000000000000000", "", "00000002.history\x00", "0000000A.HISTORY",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		kind, err := Classify(name)
		if err != nil {
			return
		}
		if !archiveName.MatchString(name) || name[:8] == "00000000" {
			t.Fatalf("Classify accepted %q as %v", name, kind)
		}
		if _, err := TimelineOfName(name); err != nil {
			t.Fatalf("TimelineOfName(%q) after Classify accepted it: %v", name, err)
		}
		if kind != KindSegment {
			return
		}
		for s := MinSegmentSize; s <= MaxSegmentSize; s <<= 1 {
			seg, err := s.ParseFileName(name)
			if err != nil {
				continue // the low digits do not fit this segment size
			}
			if got := s.FileName(seg); got != name {
				t.Fatalf("%s: ParseFileName(%q) = %+v, which formats as %q", s, name, seg, got)
			}
		}
	})
}

// FuzzParseLSN: what parses prints back to a string that parses to the same
// position.
func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/3000060", "FFFFFFFF/FFFFFFFF", "16/B374D848", "0/0", "/", "1/", "-1/0", "1/2/3", "0x1/0", " 0/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		back, err := ParseLSN(l.String())
		if err != nil || back != l {
			t.Fatalf("ParseLSN(%q) = %s, which parses back as %s, %v", s, l, back, err)
		}
	})
}
