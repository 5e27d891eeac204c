package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseThreshold(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "off": 0, "1h": time.Hour, "8d": 8 * 24 * time.Hour, "1d12h": 36 * time.Hour} {
		if got, err := parseThreshold(in); err != nil || got != want {
			t.Errorf("%q: %s %v, want %s", in, got, err, want)
		}
	}
	if _, err := parseThreshold("soon"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestStatusRepositoryOnly(t *testing.T) {
	isolate(t)
	url, _ := pruneFixture(t) // backups 1..3 days old, WAL 10..39 archived now
	code, stdout, stderr := runPitr(t, "status", "--repo", url, "--no-server", "--max-drill-age", "0")
	if code != 0 || !strings.Contains(stdout, "backups:    3") || !strings.Contains(stdout, "gaps:       none") || !strings.HasSuffix(stdout, "OK\n") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = runPitr(t, "status", "--repo", url, "--no-server", "--max-backup-age", "12h", "--json")
	var s struct {
		Problems []string `json:"problems"`
	}
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	if code != 1 || len(s.Problems) != 2 || !strings.Contains(s.Problems[0], "newest backup b3") || !strings.Contains(s.Problems[1], "no restore drill") {
		t.Fatalf("exit %d, problems %q", code, s.Problems)
	}
	if code, _, stderr := runPitr(t, "status", "--repo", url, "--max-archive-lag", "soon"); code != 2 || !strings.Contains(stderr, "--max-archive-lag") {
		t.Fatalf("bad threshold: exit %d: %s", code, stderr)
	}
}
