package wal

import (
	"strconv"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		kind   FileKind
		tli    TimelineID
		prefix string
	}{
		{"000000010000000000000001", KindSegment, 1, "000000010000000000000001"},
		{"0000000A00000003000000FF", KindSegment, 10, "0000000A00000003000000FF"},
		{"000000010000000000000007.partial", KindPartial, 1, "000000010000000000000007"},
		{"000000010000000000000002.00000028.backup", KindBackupHistory, 1, "000000010000000000000002"},
		{"00000002.history", KindTimelineHistory, 2, ""},
		{"0000001F.history", KindTimelineHistory, 31, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, err := Classify(tt.name)
			if err != nil || kind != tt.kind {
				t.Fatalf("Classify = %v, %v; want %v", kind, err, tt.kind)
			}
			tli, err := TimelineOfName(tt.name)
			if err != nil || tli != tt.tli {
				t.Fatalf("TimelineOfName = %d, %v; want %d", tli, err, tt.tli)
			}
			prefix, err := SegmentPrefix(tt.name)
			if tt.prefix == "" {
				if err == nil {
					t.Fatalf("SegmentPrefix = %q, want error for %v", prefix, kind)
				}
			} else if err != nil || prefix != tt.prefix {
				t.Fatalf("SegmentPrefix = %q, %v; want %q", prefix, err, tt.prefix)
			}
		})
	}
}

func TestClassifyRejects(t *testing.T) {
	for _, name := range []string{
		"",
		"../00000001.history",
		"a/000000010000000000000001",
		"000000010000000000000001/",
		"..",
		".",
		"000000010000000000000001.gz",
		"000000010000000000000001.partial.gz",
		"00000001000000000000000a",
		"0000000a.history",
		"00000001000000000000000A.PARTIAL",
		"RECOVERYXLOG",
		"RECOVERYHISTORY",
		"00000001000000000000001",
		"0000000100000000000000011",
		"00000001.history.tmp",
		"0000001.history",
		"000000010000000000000001.0000002.backup",
		"000000010000000000000001.000000028.backup",
		"000000010000000000000001.0000002g.backup",
		"000000010000000000000001-00000028.backup",
		"000000010000000000000001.00000028.backup.gz",
		"000000010000000000000001.history",
		"00000000.history",
		"000000000000000000000001",
		"000000010000000000000001\n",
		" 000000010000000000000001",
	} {
		t.Run(strconv.Quote(name), func(t *testing.T) {
			kind, err := Classify(name)
			if err == nil {
				t.Fatalf("Classify(%q) = %v, want error", name, kind)
			}
			if !strings.Contains(err.Error(), strconv.Quote(name)) {
				t.Fatalf("error %q does not name the file", err)
			}
			if _, err := TimelineOfName(name); err == nil {
				t.Fatalf("TimelineOfName(%q) succeeded", name)
			}
			if _, err := SegmentPrefix(name); err == nil {
				t.Fatalf("SegmentPrefix(%q) succeeded", name)
			}
		})
	}
}

func TestFileKindString(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range []FileKind{KindSegment, KindPartial, KindBackupHistory, KindTimelineHistory} {
		s := k.String()
		if s == "" || strings.HasPrefix(s, "FileKind(") || seen[s] {
			t.Errorf("%d.String() = %q", int(k), s)
		}
		seen[s] = true
	}
	if got := FileKind(0).String(); got != "FileKind(0)" {
		t.Errorf("FileKind(0).String() = %q", got)
	}
}

func TestGeneratedNamesClassify(t *testing.T) {
	s := mustSize(t, 16<<20)
	tests := []struct {
		got, want string
		kind      FileKind
	}{
		{HistoryFileName(2), "00000002.history", KindTimelineHistory},
		{HistoryFileName(0x1A), "0000001A.history", KindTimelineHistory},
		{s.BackupHistoryFileName(1, mustLSN(t, "0/2000028")), "000000010000000000000002.00000028.backup", KindBackupHistory},
		{s.BackupHistoryFileName(3, mustLSN(t, "1/7C9330")), "000000030000000100000000.007C9330.backup", KindBackupHistory},
		{s.PartialFileName(Segment{TLI: 1, No: 7}), "000000010000000000000007.partial", KindPartial},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
		if k, err := Classify(tt.got); err != nil || k != tt.kind {
			t.Errorf("Classify(%q) = %v, %v; want %v", tt.got, k, err, tt.kind)
		}
	}
}
