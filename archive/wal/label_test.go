package wal

import (
	"strings"
	"testing"
	"time"
)

// A backup history file as pg_backup_stop writes it on a primary
// (PG-CONTRACTS.md §5.3).
const backupHistory = `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-04-08 14:13:01 UTC
LABEL: pitr base 20260408T141301Z
START TIMELINE: 1
STOP TIME: 2026-04-08 14:13:03 UTC
STOP TIMELINE: 1
`

func TestParseBackupLabelHistoryFile(t *testing.T) {
	bl, err := ParseBackupLabel([]byte(backupHistory))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"StartLSN", bl.StartLSN, LSN(0x2000028)},
		{"StopLSN", bl.StopLSN, LSN(0x2000100)},
		{"CheckpointLSN", bl.CheckpointLSN, LSN(0x2000060)},
		{"StartSegment", bl.StartSegment, "000000010000000000000002"},
		{"StopSegment", bl.StopSegment, "000000010000000000000002"},
		{"Method", bl.Method, "streamed"},
		{"From", bl.From, "primary"},
		{"Label", bl.Label, "pitr base 20260408T141301Z"},
		{"StartTLI", bl.StartTLI, TimelineID(1)},
		{"StopTLI", bl.StopTLI, TimelineID(1)},
		{"StartTime", bl.StartTime.UTC(), time.Date(2026, 4, 8, 14, 13, 1, 0, time.UTC)},
		{"StopTime", bl.StopTime.UTC(), time.Date(2026, 4, 8, 14, 13, 3, 0, time.UTC)},
		{"Raw[LABEL]", bl.Raw["LABEL"], "pitr base 20260408T141301Z"},
		{"len(Raw)", len(bl.Raw), 10},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
		}
	}
	// The label names the start segment by XLByteToSeg, consistently with the
	// backup history file name.
	s := mustSize(t, 16<<20)
	if got := s.FileName(Segment{TLI: bl.StartTLI, No: s.SegmentOf(bl.StartLSN)}); got != bl.StartSegment {
		t.Errorf("start segment %s, computed %s", bl.StartSegment, got)
	}
	if got, want := s.BackupHistoryFileName(bl.StartTLI, bl.StartLSN), "000000010000000000000002.00000028.backup"; got != want {
		t.Errorf("BackupHistoryFileName = %s, want %s", got, want)
	}
}

// A PG 17 backup_label from a standby, incremental, in a non-UTC zone: no
// STOP lines, an unknown key, CRLF line ends and a colon inside the label.
func TestParseBackupLabelFile(t *testing.T) {
	in := "START WAL LOCATION: 3/FF000028 (file 0000000200000003000000FF)\r\n" +
		"CHECKPOINT LOCATION: 3/FF000060\r\n" +
		"BACKUP METHOD: streamed\r\n" +
		"BACKUP FROM: standby\r\n" +
		"START TIME: 2026-04-08 16:13:01 +0545\r\n" +
		"LABEL: nightly: incremental\r\n" +
		"START TIMELINE: 2\r\n" +
		"INCREMENTAL FROM LSN: 3/E0000028\r\n" +
		"INCREMENTAL FROM TLI: 2\r\n"
	bl, err := ParseBackupLabel([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if bl.StartLSN != 0x3_FF000028 || bl.CheckpointLSN != 0x3_FF000060 || bl.StartTLI != 2 {
		t.Errorf("start %s checkpoint %s tli %d", bl.StartLSN, bl.CheckpointLSN, bl.StartTLI)
	}
	if bl.StopLSN != 0 || bl.StopSegment != "" || bl.StopTLI != 0 || !bl.StopTime.IsZero() {
		t.Errorf("stop fields set without STOP lines: %+v", bl)
	}
	if bl.Label != "nightly: incremental" || bl.From != "standby" {
		t.Errorf("Label %q From %q", bl.Label, bl.From)
	}
	if got := bl.Raw["INCREMENTAL FROM LSN"]; got != "3/E0000028" {
		t.Errorf("Raw[INCREMENTAL FROM LSN] = %q", got)
	}
	if want := time.Date(2026, 4, 8, 10, 28, 1, 0, time.UTC); !bl.StartTime.Equal(want) {
		t.Errorf("StartTime = %v, want %v", bl.StartTime, want)
	}
}

func TestParseBackupLabelOptional(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(BackupLabel) bool
	}{
		{"no START TIMELINE: taken from the file name",
			"START WAL LOCATION: 0/2000028 (file 000000050000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n",
			func(b BackupLabel) bool { return b.StartTLI == 5 }},
		{"empty label",
			"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nLABEL: \n",
			func(b BackupLabel) bool { v, ok := b.Raw["LABEL"]; return ok && v == "" && b.Label == "" }},
		{"numeric hour zone",
			"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nSTART TIME: 2026-04-08 18:13:01 +04\n",
			func(b BackupLabel) bool { return b.StartTime.Equal(time.Date(2026, 4, 8, 14, 13, 1, 0, time.UTC)) }},
		{"negative zone",
			"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nSTART TIME: 2026-04-08 10:43:01 -0330\n",
			func(b BackupLabel) bool { return b.StartTime.Equal(time.Date(2026, 4, 8, 14, 13, 1, 0, time.UTC)) }},
		{"abbreviated zone is kept",
			"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nSTART TIME: 2026-04-08 16:13:01 CEST\n",
			func(b BackupLabel) bool {
				name, _ := b.StartTime.Zone()
				return name == "CEST" && b.StartTime.Hour() == 16 && b.Raw["START TIME"] == "2026-04-08 16:13:01 CEST"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bl, err := ParseBackupLabel([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(bl) {
				t.Fatalf("unexpected result %+v", bl)
			}
		})
	}
}

func TestParseBackupLabelRejects(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(backupHistory, old) {
			panic(old)
		}
		return strings.Replace(backupHistory, old, new, 1)
	}
	tests := []struct {
		name, in, errPart string
	}{
		{"empty", "", "START WAL LOCATION"},
		{"missing start", replace("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n", ""), "missing START WAL LOCATION"},
		{"missing checkpoint", replace("CHECKPOINT LOCATION: 0/2000060\n", ""), "missing CHECKPOINT LOCATION"},
		{"bad start LSN", replace("0/2000028 (file", "0/20G0028 (file"), "0/20G0028"},
		{"no file part", replace("0/2000028 (file 000000010000000000000002)", "0/2000028"), "LSN (file NAME)"},
		{"lower-case file", replace("(file 000000010000000000000002)\nSTOP", "(file 00000001000000000000000a)\nSTOP"), "00000001000000000000000a"},
		{"file is not a segment", replace("(file 000000010000000000000002)\nSTOP", "(file 00000001.history)\nSTOP"), "00000001.history"},
		{"bad checkpoint", replace("CHECKPOINT LOCATION: 0/2000060", "CHECKPOINT LOCATION: 2000060"), "2000060"},
		{"checkpoint before start", replace("CHECKPOINT LOCATION: 0/2000060", "CHECKPOINT LOCATION: 0/2000000"), "0/2000000"},
		{"stop before start", replace("STOP WAL LOCATION: 0/2000100", "STOP WAL LOCATION: 0/1FFFFFF"), "0/1FFFFFF"},
		{"start timeline mismatch", replace("START TIMELINE: 1", "START TIMELINE: 2"), "START TIMELINE 2"},
		{"stop timeline mismatch", replace("STOP TIMELINE: 1", "STOP TIMELINE: 3"), "STOP TIMELINE 3"},
		{"hex timeline", replace("START TIMELINE: 1", "START TIMELINE: 0x1"), "0x1"},
		{"stop timeline without stop", replace("STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n", ""), "STOP TIMELINE"},
		{"bad start time", replace("START TIME: 2026-04-08 14:13:01 UTC", "START TIME: 2026-04-08T14:13:01Z"), "2026-04-08T14:13:01Z"},
		{"bad stop time", replace("STOP TIME: 2026-04-08 14:13:03 UTC", "STOP TIME: yesterday"), "yesterday"},
		{"duplicate key", backupHistory + "LABEL: again\n", "duplicate key LABEL"},
		{"no colon", backupHistory + "garbage\n", "line 11"},
		{"lower-case key", backupHistory + "label: x\n", "line 11"},
		{"no space after colon", replace("LABEL: pitr", "LABEL:pitr"), "line 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bl, err := ParseBackupLabel([]byte(tt.in))
			if err == nil {
				t.Fatalf("got %+v, want error", bl)
			}
			if !strings.Contains(err.Error(), tt.errPart) {
				t.Fatalf("error %q does not mention %q", err, tt.errPart)
			}
		})
	}
}
