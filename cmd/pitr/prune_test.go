package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// pruneFixture fills a repository (system 7, 16 MiB segments) with three
// daily backups starting at segments 10, 20, 30 and WAL 10..39.
func pruneFixture(t *testing.T) (url string, st storage.Store) {
	t.Helper()
	url, fsStore := newRepoURL(t)
	st = fsStore
	ctx := context.Background()
	size := wal.DefaultSegmentSize
	now := time.Now().UTC()
	for i, startSeg := range []int{10, 20, 30} {
		stop := now.Add(-time.Duration(3-i) * 24 * time.Hour)
		b := basebackup.Backup{
			Version: basebackup.MetadataVersion, Name: fmt.Sprintf("b%d", i+1), SystemIdentifier: 7,
			WALSegmentSize: uint64(size), StartLSN: size.StartLSN(wal.SegNo(startSeg)) + 0x28,
			StopLSN: size.StartLSN(wal.SegNo(startSeg+1)) + 0x100, StartTimeline: 1, StopTimeline: 1,
			StartTime: stop.Add(-time.Hour), StopTime: stop, Codec: "zstd",
			Parts: []basebackup.Part{{Name: "base.tar", Size: 10, StoredSize: 5}},
		}
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		for key, body := range map[string]string{b.Key("base.tar"): "tar", b.Key(repo.BackupMetadataName): string(data)} {
			if err := st.Put(ctx, key, strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for n := 10; n < 40; n++ {
		key, _ := repo.WALKey(7, size.FileName(wal.Segment{TLI: 1, No: wal.SegNo(n)}))
		if err := st.Put(ctx, key, strings.NewReader("wal")); err != nil {
			t.Fatal(err)
		}
	}
	return url, st
}

func countKeys(t *testing.T, st storage.Store, prefix string) int {
	t.Helper()
	objs, err := st.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return len(objs)
}

func TestPruneCommandRefusesWithoutPolicy(t *testing.T) {
	isolate(t)
	url, st := pruneFixture(t)
	code, _, stderr := runPitr(t, "prune", "--repo", url)
	if code != 1 || !strings.Contains(stderr, "no retention policy configured") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q: want exit 1 and a one-line refusal", code, stderr)
	}
	if n := countKeys(t, st, "7/"); n != 36 {
		t.Fatalf("%d objects left, want all 36", n)
	}
	for _, args := range [][]string{{"--keep", "x"}, {"--keep-within", "30"}, {"--keep", "-1"}, {"--keep", "1", "--incomplete-after", "1m"}, {"extra"}} {
		code, _, stderr := runPitr(t, append([]string{"prune", "--repo", url}, args...)...)
		if code == 0 {
			t.Errorf("prune %v succeeded", args)
		}
		t.Logf("prune %v: exit %d: %s", args, code, strings.TrimSpace(stderr))
	}
}

func TestPruneCommandDryRun(t *testing.T) {
	isolate(t)
	url, st := pruneFixture(t)
	code, stdout, stderr := runPitr(t, "prune", "--repo", url, "--keep", "2", "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"Keep 2 backups:", "Would delete 1 backup:", "b1",
		"Would delete 10 WAL files (30 B): 00000001000000000000000A .. 000000010000000000000013"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, stdout)
		}
	}
	if n := countKeys(t, st, "7/"); n != 36 {
		t.Fatalf("dry run deleted something: %d objects left", n)
	}
	if n := countKeys(t, st, "locks/"); n != 0 {
		t.Fatalf("dry run left a lock")
	}
}

func TestPruneCommand(t *testing.T) {
	isolate(t)
	url, st := pruneFixture(t)
	t.Setenv("PITR_KEEP_WITHIN", "36h") // keeps b3 and, for the window's start, b2
	code, stdout, stderr := runPitr(t, "prune", "--repo", url)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "Deleted 1 backup, 0 incomplete, 10 WAL files") {
		t.Fatalf("stdout:\n%s", stdout)
	}
	if !strings.Contains(stderr, "prune complete") {
		t.Errorf("no summary log line:\n%s", stderr)
	}
	if n := countKeys(t, st, repo.BackupPrefix(7)+"b1/"); n != 0 {
		t.Errorf("b1 still has %d objects", n)
	}
	if n := countKeys(t, st, repo.WALPrefix(7)); n != 20 {
		t.Errorf("%d WAL files left, want 20 (from b2's start)", n)
	}
	if n := countKeys(t, st, "locks/"); n != 0 {
		t.Errorf("lock not released")
	}
	// Nothing more to do the second time.
	code, stdout, _ = runPitr(t, "prune", "--repo", url)
	if code != 0 || !strings.Contains(stdout, "Delete no WAL") {
		t.Fatalf("second prune: exit %d\n%s", code, stdout)
	}
}

func TestPruneCommandLocked(t *testing.T) {
	isolate(t)
	url, st := pruneFixture(t)
	other := pitr.LockInfo{Owner: "someone", Purpose: "prune", Host: "db2", PID: 99, AcquiredAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	data, _ := json.Marshal(other)
	if err := st.Put(context.Background(), pitr.PruneLockKey, strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runPitr(t, "prune", "--repo", url, "--keep", "1")
	if code != 1 || !strings.Contains(stderr, "held by prune (pid 99 on db2)") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if n := countKeys(t, st, "7/"); n != 36 {
		t.Fatalf("deleted under someone else's lock")
	}
}

func TestAgentCommandRefusesBadConfig(t *testing.T) {
	isolate(t)
	url, _ := pruneFixture(t)
	for _, args := range [][]string{
		{"--schedule", "sometimes"},
		{"--schedule", "0 0 31 2 *"},
		{"--keep-within", "forever"},
		{"extra"},
	} {
		code, _, stderr := runPitr(t, append([]string{"agent", "--repo", url}, args...)...)
		if code == 0 {
			t.Errorf("agent %v started", args)
		}
		t.Logf("agent %v: exit %d: %s", args, code, strings.TrimSpace(stderr))
	}
}
