package wal

import (
	"reflect"
	"strings"
	"testing"
)

// 00000003.history as PG-CONTRACTS.md §7 shows it, plus the comments and
// blank lines users may add.
const history3 = "# restored after the 2026-04-08 incident\n" +
	"1\t0/5000060\tno recovery target specified\n" +
	"\n" +
	"   \n" +
	"2\t0/9A3B1C8\tbefore 2026-04-08 14:13:00+00\n"

func TestParseHistory(t *testing.T) {
	got, err := ParseHistory([]byte(history3))
	if err != nil {
		t.Fatal(err)
	}
	want := []HistoryEntry{
		{TLI: 1, SwitchPoint: 0x5000060, Reason: "no recovery target specified"},
		{TLI: 2, SwitchPoint: 0x9A3B1C8, Reason: "before 2026-04-08 14:13:00+00"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, err := ParseHistoryFile(3, []byte(history3)); err != nil {
		t.Fatal(err)
	}
	for _, own := range []TimelineID{1, 2} {
		if _, err := ParseHistoryFile(own, []byte(history3)); err == nil || !strings.Contains(err.Error(), HistoryFileName(own)) {
			t.Errorf("ParseHistoryFile(%d): %v, want error naming %s", own, err, HistoryFileName(own))
		}
	}
}

func TestParseHistoryTolerated(t *testing.T) {
	tests := []struct {
		name, in string
		want     []HistoryEntry
	}{
		{"empty", "", nil},
		{"only comments", "# nothing\n\n", nil},
		{"crlf", "1\t0/5000060\tpromoted\r\n", []HistoryEntry{{1, 0x5000060, "promoted"}}},
		{"no reason", "1\t0/5000060\n", []HistoryEntry{{1, 0x5000060, ""}}},
		{"spaces like sscanf", "  1 0/5000060   at restore point \"x\"\n", []HistoryEntry{{1, 0x5000060, `at restore point "x"`}}},
		{"no final newline", "1\t0/5000060\tr", []HistoryEntry{{1, 0x5000060, "r"}}},
		{"padded LSN", "1\t00000000/05000060\tr", []HistoryEntry{{1, 0x5000060, "r"}}},
		{"same switch point twice", "1\t0/5000060\ta\n2\t0/5000060\tb\n", []HistoryEntry{{1, 0x5000060, "a"}, {2, 0x5000060, "b"}}},
		{"skipped timeline", "1\t0/5000060\ta\n4\t0/6000000\tb\n", []HistoryEntry{{1, 0x5000060, "a"}, {4, 0x6000000, "b"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHistory([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseHistoryRejects(t *testing.T) {
	tests := []struct {
		name, in string
		line     string // "line N" the error must name
	}{
		{"non-numeric timeline", "x\t0/1\treason", "line 1"},
		{"hex timeline", "# c\nA\t0/1\treason", "line 2"},
		{"zero timeline", "0\t0/1\tr", "line 1"},
		{"signed timeline", "+1\t0/1\tr", "line 1"},
		{"missing switch point", "1\n", "line 1"},
		{"missing switch point with tab", "1\t\n", "line 1"},
		{"bad switch point", "1\tzz\tr", "line 1"},
		{"junk after switch point", "1\t0/5000060junk\tr", "line 1"},
		{"zero switch point", "1\t0/0\tr", "line 1"},
		{"timelines descending", "2\t0/1\ta\n1\t0/2\tb", "line 2"},
		{"timeline repeated", "1\t0/1\ta\n\n1\t0/2\tb", "line 3"},
		{"switch points descending", "1\t0/5\ta\n2\t0/4\tb", "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHistory([]byte(tt.in))
			if err == nil {
				t.Fatalf("got %+v, want error", got)
			}
			if !strings.Contains(err.Error(), tt.line+" ") {
				t.Fatalf("error %q does not name %s", err, tt.line)
			}
		})
	}
}

func TestAncestry(t *testing.T) {
	tests := []struct {
		name    string
		tli     TimelineID
		entries []HistoryEntry
		want    []TimelineSpan
	}{
		{"timeline 1", 1, nil, []TimelineSpan{{1, 0, 0}}},
		{"brief example", 3, []HistoryEntry{{1, 0x3000000, ""}, {2, 0x5000000, ""}},
			[]TimelineSpan{{1, 0, 0x3000000}, {2, 0x3000000, 0x5000000}, {3, 0x5000000, 0}}},
		{"skipped timeline", 5, []HistoryEntry{{1, 0x3000000, ""}, {3, 0x5000000, ""}},
			[]TimelineSpan{{1, 0, 0x3000000}, {3, 0x3000000, 0x5000000}, {5, 0x5000000, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Ancestry(tt.tli, tt.entries); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTimelineAt(t *testing.T) {
	entries, err := ParseHistoryFile(3, []byte(history3))
	if err != nil {
		t.Fatal(err)
	}
	spans := Ancestry(3, entries)
	tests := []struct {
		lsn  LSN
		want TimelineID
	}{
		{0, 1},
		{0x500005F, 1},
		{0x5000060, 2}, // a switch point is the child's first byte
		{0x9A3B1C7, 2},
		{0x9A3B1C8, 3},
		{^LSN(0), 3},
	}
	for _, tt := range tests {
		if got := TimelineAt(spans, tt.lsn); got != tt.want {
			t.Errorf("TimelineAt(%s) = %d, want %d", tt.lsn, got, tt.want)
		}
	}
	if got := TimelineAt(nil, 5); got != 0 {
		t.Errorf("TimelineAt(nil) = %d, want 0", got)
	}
}

func TestSegmentTimeline(t *testing.T) {
	entries, err := ParseHistoryFile(3, []byte(history3))
	if err != nil {
		t.Fatal(err)
	}
	spans := Ancestry(3, entries)
	tests := []struct {
		mib  uint64
		no   SegNo
		want TimelineID
	}{
		{16, 4, 1},
		{16, 5, 2}, // holds switch 0/5000060: recovery reads the child's copy
		{16, 8, 2},
		{16, 9, 3}, // holds switch 0/9A3B1C8
		{16, 10, 3},
		{64, 0, 1},
		{64, 1, 2},
		{64, 2, 3},
		{1024, 0, 3}, // both switch points are in 1 GiB segment 0: the newest timeline wins
		{1024, 1, 3},
	}
	for _, tt := range tests {
		s := mustSize(t, tt.mib<<20)
		if got := s.SegmentTimeline(spans, tt.no); got != tt.want {
			t.Errorf("%d MiB: SegmentTimeline(%d) = %d, want %d", tt.mib, tt.no, got, tt.want)
		}
	}
}
