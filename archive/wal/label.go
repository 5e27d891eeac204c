package wal

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// BackupLabel is the content of a backup_label or of a backup history
// (.backup) file, which the server writes with the same code plus the STOP
// lines (PG-CONTRACTS.md §5.2, §5.3).
//
// StartTime and StopTime are informational: the server prints them with a
// zone abbreviation of log_timezone. The offset is exact for UTC, GMT and
// numeric zones ("+04", "-0330"); for another abbreviation it is taken from
// the local zone if that uses the abbreviation, and is otherwise zero, as
// time.Parse does. Never pick a backup by them alone; the verbatim text is in
// Raw.
type BackupLabel struct {
	StartLSN, StopLSN, CheckpointLSN LSN
	StartSegment, StopSegment        string // file names from "(file ...)"
	Method, From, Label              string
	StartTime, StopTime              time.Time
	StartTLI, StopTLI                TimelineID
	// Raw holds every "KEY: value" line, known or not, so fields added by
	// later versions (e.g. INCREMENTAL FROM LSN in PG 17) are not lost.
	Raw map[string]string
}

const (
	keyStartWAL   = "START WAL LOCATION"
	keyStopWAL    = "STOP WAL LOCATION"
	keyCheckpoint = "CHECKPOINT LOCATION"
	keyMethod     = "BACKUP METHOD"
	keyFrom       = "BACKUP FROM"
	keyStartTime  = "START TIME"
	keyStopTime   = "STOP TIME"
	keyLabel      = "LABEL"
	keyStartTLI   = "START TIMELINE"
	keyStopTLI    = "STOP TIMELINE"
)

// ParseBackupLabel parses backup_label or .backup content. The START WAL
// LOCATION and CHECKPOINT LOCATION lines are required, as in the server's
// read_backup_label; the STOP lines are optional because backup_label has
// none. Timelines are cross-checked against the file names, as the server
// does for START TIMELINE, so a hand-edited label is caught before restore.
func ParseBackupLabel(data []byte) (BackupLabel, error) {
	bl := BackupLabel{Raw: map[string]string{}}
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSuffix(raw, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, value, err := splitLabelLine(line)
		if err != nil {
			return BackupLabel{}, fmt.Errorf("backup label line %d %q: %w", i+1, line, err)
		}
		if _, dup := bl.Raw[key]; dup {
			return BackupLabel{}, fmt.Errorf("backup label line %d %q: duplicate key %s", i+1, line, key)
		}
		bl.Raw[key] = value
	}
	if err := bl.decode(); err != nil {
		return BackupLabel{}, fmt.Errorf("backup label: %w", err)
	}
	return bl, nil
}

// splitLabelLine splits at the first colon, because LABEL values may contain
// ": " themselves.
func splitLabelLine(line string) (key, value string, err error) {
	key, value, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", fmt.Errorf("want \"KEY: value\"")
	}
	if key == "" || strings.Trim(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZ ") != "" || key != strings.TrimSpace(key) {
		return "", "", fmt.Errorf("key %q is not upper-case words", key)
	}
	switch {
	case value == "":
	case value[0] == ' ':
		value = value[1:]
	default:
		return "", "", fmt.Errorf("want a space after %q", key+":")
	}
	return key, value, nil
}

func (bl *BackupLabel) decode() error {
	start, ok := bl.Raw[keyStartWAL]
	if !ok {
		return fmt.Errorf("missing %s", keyStartWAL)
	}
	var err error
	var startTLI TimelineID
	if bl.StartLSN, bl.StartSegment, startTLI, err = parseWALLocation(keyStartWAL, start); err != nil {
		return err
	}
	if bl.StartLSN == 0 {
		// InvalidXLogRecPtr: no backup starts there (found by fuzzing).
		return fmt.Errorf("%s %s is not a valid WAL position", keyStartWAL, bl.StartLSN)
	}
	cp, ok := bl.Raw[keyCheckpoint]
	if !ok {
		return fmt.Errorf("missing %s", keyCheckpoint)
	}
	if bl.CheckpointLSN, err = ParseLSN(cp); err != nil {
		return fmt.Errorf("%s: %w", keyCheckpoint, err)
	}
	if bl.CheckpointLSN < bl.StartLSN {
		return fmt.Errorf("%s %s is before %s %s", keyCheckpoint, bl.CheckpointLSN, keyStartWAL, bl.StartLSN)
	}
	if bl.StartTLI, err = labelTimeline(bl.Raw, keyStartTLI, startTLI, bl.StartSegment); err != nil {
		return err
	}

	if stop, ok := bl.Raw[keyStopWAL]; ok {
		var stopTLI TimelineID
		if bl.StopLSN, bl.StopSegment, stopTLI, err = parseWALLocation(keyStopWAL, stop); err != nil {
			return err
		}
		if bl.StopLSN < bl.StartLSN {
			return fmt.Errorf("%s %s is before %s %s", keyStopWAL, bl.StopLSN, keyStartWAL, bl.StartLSN)
		}
		if bl.StopTLI, err = labelTimeline(bl.Raw, keyStopTLI, stopTLI, bl.StopSegment); err != nil {
			return err
		}
	} else if v, ok := bl.Raw[keyStopTLI]; ok {
		return fmt.Errorf("%s %q without %s", keyStopTLI, v, keyStopWAL)
	}

	bl.Method = bl.Raw[keyMethod]
	bl.From = bl.Raw[keyFrom]
	bl.Label = bl.Raw[keyLabel]
	if v, ok := bl.Raw[keyStartTime]; ok {
		if bl.StartTime, err = parseLabelTime(v); err != nil {
			return fmt.Errorf("%s: %w", keyStartTime, err)
		}
	}
	if v, ok := bl.Raw[keyStopTime]; ok {
		if bl.StopTime, err = parseLabelTime(v); err != nil {
			return fmt.Errorf("%s: %w", keyStopTime, err)
		}
	}
	return nil
}

// parseWALLocation parses "%X/%X (file NAME)" and returns the timeline of
// NAME. The segment number in NAME is not checked against the LSN because
// that needs the segment size; callers that have it can compare SegmentOf.
func parseWALLocation(key, v string) (LSN, string, TimelineID, error) {
	lsnText, rest, ok := strings.Cut(v, " (file ")
	if !ok || !strings.HasSuffix(rest, ")") {
		return 0, "", 0, fmt.Errorf("%s %q: want \"LSN (file NAME)\"", key, v)
	}
	lsn, err := ParseLSN(lsnText)
	if err != nil {
		return 0, "", 0, fmt.Errorf("%s: %w", key, err)
	}
	name := strings.TrimSuffix(rest, ")")
	if kind, err := Classify(name); err != nil || kind != KindSegment {
		return 0, "", 0, fmt.Errorf("%s %q: %q is not a WAL segment file name", key, v, name)
	}
	tli, err := ParseTimelineID(name[:8])
	if err != nil {
		return 0, "", 0, fmt.Errorf("%s: %w", key, err)
	}
	return lsn, name, tli, nil
}

// labelTimeline reads a decimal TIMELINE line, defaulting to the timeline in
// the file name when absent (labels from before PostgreSQL 11 lack it).
func labelTimeline(raw map[string]string, key string, fromName TimelineID, name string) (TimelineID, error) {
	v, ok := raw[key]
	if !ok {
		return fromName, nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%s %q is not a positive decimal timeline", key, v)
	}
	if TimelineID(n) != fromName {
		return 0, fmt.Errorf("%s %d does not match timeline %d of file %s", key, n, fromName, name)
	}
	return TimelineID(n), nil
}

const labelTimeLayout = "2006-01-02 15:04:05"

// parseLabelTime parses "%Y-%m-%d %H:%M:%S %Z". Numeric zones are handled
// here because time.Parse rejects the "+0530" form tzdata uses for zones
// without an abbreviation.
func parseLabelTime(v string) (time.Time, error) {
	i := strings.LastIndexByte(v, ' ')
	if i < 0 {
		return time.Time{}, fmt.Errorf("time %q: want \"YYYY-MM-DD HH:MM:SS ZONE\"", v)
	}
	var t time.Time
	var err error
	if off, ok := numericZoneOffset(v[i+1:]); ok {
		t, err = time.ParseInLocation(labelTimeLayout, v[:i], time.FixedZone(v[i+1:], off))
	} else {
		t, err = time.Parse(labelTimeLayout+" MST", v)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: %w", v, err)
	}
	return t, nil
}

// numericZoneOffset parses "+HH", "-HH", "+HHMM" or "-HHMM" into seconds.
func numericZoneOffset(z string) (int, bool) {
	if len(z) != 3 && len(z) != 5 || (z[0] != '+' && z[0] != '-') {
		return 0, false
	}
	for i := 1; i < len(z); i++ {
		if z[i] < '0' || z[i] > '9' {
			return 0, false
		}
	}
	h, _ := strconv.Atoi(z[1:3])
	m := 0
	if len(z) == 5 {
		m, _ = strconv.Atoi(z[3:5])
	}
	if h > 24 || m > 59 {
		return 0, false
	}
	off := h*3600 + m*60
	if z[0] == '-' {
		off = -off
	}
	return off, true
}
