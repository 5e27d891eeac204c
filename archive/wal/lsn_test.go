package wal

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func mustSize(t *testing.T, bytes uint64) SegmentSize {
	t.Helper()
	s, err := NewSegmentSize(bytes)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustLSN(t *testing.T, s string) LSN {
	t.Helper()
	l, err := ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in   string
		want LSN
		str  string
	}{
		{"0/0", 0, "0/0"},
		{"0/2000028", 0x2000028, "0/2000028"},
		{"16/B374D848", 0x16_B374D848, "16/B374D848"},
		{"00000000/02000028", 0x2000028, "0/2000028"},
		{"0/00000001", 1, "0/1"},
		{"3/FF000000", 0x3_FF000000, "3/FF000000"},
		{"0/1a2b3c4d", 0x1A2B3C4D, "0/1A2B3C4D"},
		{"FFFFFFFF/FFFFFFFF", ^LSN(0), "FFFFFFFF/FFFFFFFF"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseLSN(tt.in)
			if err != nil {
				t.Fatalf("ParseLSN(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseLSN(%q) = %#x, want %#x", tt.in, uint64(got), uint64(tt.want))
			}
			if got.String() != tt.str {
				t.Fatalf("String() = %q, want %q", got.String(), tt.str)
			}
			back, err := ParseLSN(got.String())
			if err != nil || back != got {
				t.Fatalf("round trip of %q: got %v, %v", got.String(), back, err)
			}
		})
	}
}

func TestParseLSNRejects(t *testing.T) {
	for _, in := range []string{
		"", "0/", "/0", "/", "G/1", "1/G", "1/2/3", "12345", "123456789/0", "0/123456789",
		" 0/1", "0/1 ", "0x1/2", "+1/2", "-1/2", "1_0/2", "0/1\n",
	} {
		t.Run(strconv.Quote(in), func(t *testing.T) {
			l, err := ParseLSN(in)
			if err == nil {
				t.Fatalf("ParseLSN(%q) = %v, want error", in, l)
			}
			if !strings.Contains(err.Error(), strconv.Quote(in)) {
				t.Fatalf("error %q does not name the input", err)
			}
		})
	}
}

func TestParseTimelineID(t *testing.T) {
	tests := []struct {
		in      string
		want    TimelineID
		wantErr bool
	}{
		{"00000001", 1, false},
		{"0000000A", 10, false},
		{"FFFFFFFF", 0xFFFFFFFF, false},
		{"0000000a", 0, true},
		{"00000000", 0, true},
		{"1", 0, true},
		{"000000001", 0, true},
		{"0000000G", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseTimelineID(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseTimelineID(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNewSegmentSize(t *testing.T) {
	for _, ok := range []uint64{1 << 20, 2 << 20, 16 << 20, 64 << 20, 1 << 30} {
		if s, err := NewSegmentSize(ok); err != nil || uint64(s) != ok {
			t.Errorf("NewSegmentSize(%d) = %d, %v", ok, s, err)
		}
	}
	for _, bad := range []uint64{0, 1, 1 << 19, 3 << 20, (16 << 20) + 1, 2 << 30, 1 << 40} {
		_, err := NewSegmentSize(bad)
		if err == nil {
			t.Errorf("NewSegmentSize(%d) succeeded", bad)
			continue
		}
		if !strings.Contains(err.Error(), strconv.FormatUint(bad, 10)) {
			t.Errorf("error %q does not name %d", err, bad)
		}
	}
}

func TestUnvalidatedSizePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("SegmentSize(0).SegmentOf did not panic")
		}
	}()
	SegmentSize(0).SegmentOf(1)
}

func TestSegmentsPerXLogID(t *testing.T) {
	for _, tt := range []struct {
		mib  uint64
		want uint64
	}{{1, 4096}, {16, 256}, {64, 64}, {1024, 4}} {
		if got := mustSize(t, tt.mib<<20).SegmentsPerXLogID(); got != tt.want {
			t.Errorf("%d MiB: SegmentsPerXLogID = %d, want %d", tt.mib, got, tt.want)
		}
	}
}

// The worked examples of PG-CONTRACTS.md §1.2.
func TestWorkedExamples(t *testing.T) {
	tests := []struct {
		lsn  string
		mib  uint64
		want string
	}{
		{"0/1A2B3C4D", 16, "00000001000000000000001A"},
		{"0/1A2B3C4D", 64, "000000010000000000000006"},
		{"0/1A2B3C4D", 1, "0000000100000000000001A2"},
		{"0/1A2B3C4D", 1024, "000000010000000000000000"},
		{"3/FF000000", 16, "0000000100000003000000FF"},
		{"3/FF000000", 64, "00000001000000030000003F"},
		{"3/FF000000", 1, "000000010000000300000FF0"},
		{"3/FF000000", 1024, "000000010000000300000003"},
	}
	for _, tt := range tests {
		t.Run(tt.lsn+"@"+strconv.FormatUint(tt.mib, 10)+"MiB", func(t *testing.T) {
			s := mustSize(t, tt.mib<<20)
			seg := Segment{TLI: 1, No: s.SegmentOf(mustLSN(t, tt.lsn))}
			if got := s.FileName(seg); got != tt.want {
				t.Fatalf("FileName = %s, want %s", got, tt.want)
			}
			back, err := s.ParseFileName(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if back != seg {
				t.Fatalf("ParseFileName(%s) = %+v, want %+v", tt.want, back, seg)
			}
			start := s.StartLSN(seg.No)
			if l := mustLSN(t, tt.lsn); start > l || l-start >= LSN(s) || s.Offset(l) != uint64(l-start) {
				t.Fatalf("StartLSN %s / Offset %d inconsistent with %s", start, s.Offset(l), l)
			}
		})
	}
}

func TestFileNameRoundTrip(t *testing.T) {
	for _, mib := range []uint64{1, 16, 64, 1024} {
		s := mustSize(t, mib<<20)
		per := s.SegmentsPerXLogID()
		for _, no := range []SegNo{0, 1, SegNo(per - 1), SegNo(per), SegNo(per + 1), SegNo(per*0xABCD + per/2)} {
			for _, tli := range []TimelineID{1, 0x1F, 0xFFFFFFFF} {
				seg := Segment{TLI: tli, No: no}
				name := s.FileName(seg)
				if len(name) != 24 || !isUpperHex(name) {
					t.Fatalf("%d MiB: FileName(%+v) = %q, not 24 upper hex", mib, seg, name)
				}
				got, err := s.ParseFileName(name)
				if err != nil || got != seg {
					t.Fatalf("%d MiB: ParseFileName(%q) = %+v, %v; want %+v", mib, name, got, err, seg)
				}
			}
		}
	}
}

func TestNextRollsOver(t *testing.T) {
	tests := []struct {
		mib        uint64
		last, next string
	}{
		{1, "000000010000000000000FFF", "000000010000000100000000"},
		{16, "0000000100000000000000FF", "000000010000000100000000"},
		{16, "0000000200000003000000FE", "0000000200000003000000FF"},
		{64, "00000001000000000000003F", "000000010000000100000000"},
		{1024, "000000010000000000000003", "000000010000000100000000"},
		{1024, "0000000A0000001200000003", "0000000A0000001300000000"},
	}
	for _, tt := range tests {
		s := mustSize(t, tt.mib<<20)
		seg, err := s.ParseFileName(tt.last)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.FileName(s.Next(seg)); got != tt.next {
			t.Errorf("%d MiB: Next(%s) = %s, want %s", tt.mib, tt.last, got, tt.next)
		}
	}
}

func TestParseFileNameRejects(t *testing.T) {
	tests := []struct {
		mib  uint64
		name string
	}{
		{64, "0000000100000000000000FF"},
		{64, "000000010000000000000040"},
		{16, "000000010000000000000100"},
		{1, "000000010000000000001000"},
		{1024, "000000010000000000000004"},
		{16, "00000001000000000000001a"},
		{16, "00000001000000000000001"},
		{16, "0000000100000000000000011"},
		{16, "000000000000000000000001"},
		{16, "000000010000000000000001.partial"},
		{16, ""},
	}
	for _, tt := range tests {
		s := mustSize(t, tt.mib<<20)
		seg, err := s.ParseFileName(tt.name)
		if err == nil {
			t.Errorf("%d MiB: ParseFileName(%q) = %+v, want error", tt.mib, tt.name, seg)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(tt.name)) {
			t.Errorf("error %q does not name %q", err, tt.name)
		}
	}
}

func TestSegmentOfEnd(t *testing.T) {
	s := mustSize(t, 16<<20)
	tests := []struct {
		lsn        string
		start, end SegNo
	}{
		{"0/0", 0, 0},
		{"0/1", 0, 0},
		{"0/FFFFFF", 0, 0},
		{"0/1000000", 1, 0}, // boundary: an end pointer here is still in segment 0
		{"0/2000000", 2, 1},
		{"0/2000001", 2, 2},
		{"1/0", 256, 255},
	}
	for _, tt := range tests {
		l := mustLSN(t, tt.lsn)
		if got := s.SegmentOf(l); got != tt.start {
			t.Errorf("SegmentOf(%s) = %d, want %d", tt.lsn, got, tt.start)
		}
		if got := s.SegmentOfEnd(l); got != tt.end {
			t.Errorf("SegmentOfEnd(%s) = %d, want %d", tt.lsn, got, tt.end)
		}
	}
}

func TestLSNJSON(t *testing.T) {
	type doc struct {
		L LSN `json:"l"`
	}
	b, err := json.Marshal(doc{L: 0x1_02000028})
	if err != nil || string(b) != `{"l":"1/2000028"}` {
		t.Fatalf("marshal = %s, %v", b, err)
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"l":"0/0300FFFF"}`), &d); err != nil || d.L != 0x300FFFF {
		t.Fatalf("unmarshal = %v, %v", d.L, err)
	}
	if err := json.Unmarshal([]byte(`{"l":"junk"}`), &d); err == nil {
		t.Fatal("junk LSN accepted")
	}
}
