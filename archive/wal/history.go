package wal

import (
	"fmt"
	"strconv"
	"strings"
)

// HistoryEntry is one line of a timeline history file: timeline TLI ended at
// SwitchPoint, where its child began.
type HistoryEntry struct {
	TLI         TimelineID
	SwitchPoint LSN
	Reason      string
}

// ParseHistory parses a timeline history file (timeline.c readTimeLineHistory).
// Fields are split on any whitespace because the server's sscanf does the
// same, so a hand-edited file the server accepts is accepted here. It is
// stricter than the server where laxness would hide corruption: a field must
// be nothing but the number, timeline 0 and switch point 0/0 are refused, and
// switch points must not go backwards.
func ParseHistory(data []byte) ([]HistoryEntry, error) {
	var entries []HistoryEntry
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		e, err := parseHistoryLine(line)
		if err != nil {
			return nil, fmt.Errorf("timeline history line %d %q: %w", i+1, line, err)
		}
		if n := len(entries); n > 0 {
			prev := entries[n-1]
			if e.TLI <= prev.TLI {
				return nil, fmt.Errorf("timeline history line %d %q: timeline %d does not follow timeline %d in increasing order",
					i+1, line, e.TLI, prev.TLI)
			}
			if e.SwitchPoint < prev.SwitchPoint {
				return nil, fmt.Errorf("timeline history line %d %q: switch point %s is before the previous one, %s",
					i+1, line, e.SwitchPoint, prev.SwitchPoint)
			}
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func parseHistoryLine(line string) (HistoryEntry, error) {
	tliField, rest := cutSpace(line)
	lsnField, reason := cutSpace(rest)
	tli, err := strconv.ParseUint(tliField, 10, 32)
	if err != nil || tli == 0 {
		return HistoryEntry{}, fmt.Errorf("parent timeline %q is not a positive decimal number", tliField)
	}
	if lsnField == "" {
		return HistoryEntry{}, fmt.Errorf("missing switch point after timeline %d", tli)
	}
	lsn, err := ParseLSN(lsnField)
	if err != nil {
		return HistoryEntry{}, err
	}
	if lsn == 0 {
		// 0 is InvalidXLogRecPtr, and TimelineSpan uses it for "open-ended".
		return HistoryEntry{}, fmt.Errorf("switch point %s is invalid", lsn)
	}
	return HistoryEntry{TLI: TimelineID(tli), SwitchPoint: lsn, Reason: reason}, nil
}

// cutSpace splits s at its first run of spaces or tabs.
func cutSpace(s string) (before, after string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t")
}

// ParseHistoryFile parses the history file of timeline tli and also applies
// the server's rule that every ancestor is older than tli, which ParseHistory
// alone cannot know.
func ParseHistoryFile(tli TimelineID, data []byte) ([]HistoryEntry, error) {
	entries, err := ParseHistory(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", HistoryFileName(tli), err)
	}
	if n := len(entries); n > 0 && entries[n-1].TLI >= tli {
		return nil, fmt.Errorf("%s: ancestor timeline %d is not older than timeline %d", HistoryFileName(tli), entries[n-1].TLI, tli)
	}
	return entries, nil
}

// TimelineSpan is the LSN range [Begin, End) one timeline contributes to an
// ancestry. End == 0 marks the last, still open timeline.
type TimelineSpan struct {
	TLI        TimelineID
	Begin, End LSN
}

// Ancestry turns the history of timeline tli into consecutive spans, oldest
// first, ending with tli itself (this is the server's expectedTLEs, in
// reverse). entries must come from ParseHistory/ParseHistoryFile; they are
// not re-validated.
func Ancestry(tli TimelineID, entries []HistoryEntry) []TimelineSpan {
	spans := make([]TimelineSpan, 0, len(entries)+1)
	var begin LSN
	for _, e := range entries {
		spans = append(spans, TimelineSpan{TLI: e.TLI, Begin: begin, End: e.SwitchPoint})
		begin = e.SwitchPoint
	}
	return append(spans, TimelineSpan{TLI: tli, Begin: begin})
}

// TimelineAt returns the timeline of spans that wrote the WAL at l. A switch
// point is the first byte of the child timeline. It returns 0 for no spans.
func TimelineAt(spans []TimelineSpan, l LSN) TimelineID {
	for i := len(spans) - 1; i >= 0; i-- {
		if l >= spans[i].Begin {
			return spans[i].TLI
		}
	}
	return 0
}

// SegmentTimeline returns the timeline whose file recovery reads for segment
// n, which differs from TimelineAt(StartLSN(n)) for the segment holding a
// switch point: XLogFileReadAnyTLI takes the newest timeline whose first
// segment is <= n, so that segment comes from the child's copy, not the
// parent's file. Restore planning must therefore fetch the child's file.
func (s SegmentSize) SegmentTimeline(spans []TimelineSpan, n SegNo) TimelineID {
	for i := len(spans) - 1; i >= 0; i-- {
		if n >= s.SegmentOf(spans[i].Begin) {
			return spans[i].TLI
		}
	}
	return 0
}
