package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/repo"
)

func TestBackupListAndShow(t *testing.T) {
	isolate(t)
	url, st := newRepoURL(t)
	b := basebackup.Backup{
		Version: basebackup.MetadataVersion, Name: "20261128T124204Z", Label: "pitr backup 20261128T124204Z",
		SystemIdentifier: 7, PGVersionNum: 150008, WALSegmentSize: 16 << 20,
		StartLSN: 0x6000028, StopLSN: 0x7000000, CheckpointLSN: 0x6000060, StartTimeline: 1, StopTimeline: 1,
		StartTime: time.Date(2026, 11, 28, 12, 42, 4, 89233000, time.UTC), StopTime: time.Date(2026, 11, 28, 12, 42, 5, 833277000, time.UTC),
		Codec: "zstd", Size: 102384434, StoredSize: 5138140,
		Parts:  []basebackup.Part{{Name: "base.tar", Size: 102245376, StoredSize: 5131733, SHA256: "1c23"}},
		Method: basebackup.MethodPGBaseBackup, BackupFrom: "primary",
	}
	data, _ := json.Marshal(b)
	if err := st.Put(context.Background(), b.Key(repo.BackupMetadataName), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	// Leftovers of an interrupted backup: not listed, but mentioned.
	if err := st.Put(context.Background(), repo.BackupKey(7, "20261128T130000Z", repo.BackupInProgressName), strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runPitr(t, "backup", "list", "--repo", url)
	if code != 0 {
		t.Fatalf("backup list: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") ||
		!strings.Contains(lines[1], "20261128T124204Z  2026-11-28 12:42:04  2026-11-28 12:42:05  0/6000028  0/7000000  1   97.6 MiB  4.9 MiB  19.93  15.8") {
		t.Fatalf("backup list:\n%s", out)
	}
	if !strings.Contains(errOut, "1 incomplete backup(s), running or interrupted: 20261128T130000Z") {
		t.Fatalf("backup list does not mention the incomplete backup: %q", errOut)
	}

	code, out, _ = runPitr(t, "backup", "list", "--json", "--repo", url)
	var got []basebackup.Backup
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got) != 1 || got[0].Name != b.Name || got[0].StopLSN != b.StopLSN {
		t.Fatalf("backup list --json: exit %d\n%s", code, out)
	}

	code, out, errOut = runPitr(t, "backup", "show", b.Name, "--repo", url)
	if code != 0 {
		t.Fatalf("backup show: exit %d: %s", code, errOut)
	}
	// The stop LSN is on a segment boundary: the last WAL file needed is
	// the one before it.
	for _, want := range []string{"WAL needed:", "000000010000000000000006 .. 000000010000000000000006", "primary, with pg_basebackup", "2026-11-28T12:42:05.833277Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("backup show lacks %q:\n%s", want, out)
		}
	}
	code, _, errOut = runPitr(t, "backup", "show", "20200101T000000Z", "--repo", url)
	if code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("show of a missing backup: exit %d: %s", code, errOut)
	}
	code, out, _ = runPitr(t, "backup", "list", "--json", "--repo", url+"-empty")
	if code != 1 {
		t.Fatalf("backup list of a location without a repository: exit %d: %s", code, out)
	}
}

func TestBackupUsage(t *testing.T) {
	isolate(t)
	url, _ := newRepoURL(t)
	for _, args := range [][]string{
		{"backup", "--repo", url, "extra"},
		{"backup", "show", "--repo", url},
		{"backup", "list", "x", "--repo", url},
	} {
		if code, _, errOut := runPitr(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, code, errOut)
		}
	}
	code, _, errOut := runPitr(t, "backup", "--repo", url, "--backup-wal-timeout", "soon")
	if code != 1 || !strings.Contains(errOut, "backup_wal_timeout") {
		t.Fatalf("bad backup_wal_timeout: exit %d: %s", code, errOut)
	}
}
