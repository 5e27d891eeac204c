package main

import (
	"strings"
	"testing"
)

// drill --keep is drill's own switch, not the keep count every other
// command takes for prune: as a string flag it would swallow "--target".
func TestDrillKeepIsASwitch(t *testing.T) {
	isolate(t)
	if code, _, stderr := runPitr(t, "drill", "--keep", "--target", "latest"); code != 1 || !strings.Contains(stderr, "no repository configured") {
		t.Fatalf("drill --keep --target latest: exit %d: %s", code, stderr)
	}
}

func TestDrillUsage(t *testing.T) {
	isolate(t)
	if code, _, stderr := runPitr(t, "drill", "--target", "2026-04-08", "extra"); code != 2 || !strings.Contains(stderr, "unexpected arguments") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if code, _, stderr := runPitr(t, "drill", "--target", "tomorrow"); code != 2 {
		t.Fatalf("bad target: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runPitr(t, "drill"); code != 1 || !strings.Contains(stderr, "no repository configured") {
		t.Fatalf("no repository: exit %d: %s", code, stderr)
	}
}

// Against a repository without backups the drill fails (at the plan, or
// as root before it), prints why and records a report.
func TestDrillRecordsFailure(t *testing.T) {
	isolate(t)
	url, st := newRepoURL(t)
	code, stdout, _ := runPitr(t, "drill", "--repo", url, "--scratch", t.TempDir())
	if code != 1 || !strings.Contains(stdout, "drill FAILED") || !strings.Contains(stdout, "report: 7/drills/") {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
	if n := countKeys(t, st, "7/drills/"); n != 1 {
		t.Fatalf("%d drill reports stored", n)
	}
}
