package main

import (
	"strings"
	"testing"
)

func TestParseFetchAhead(t *testing.T) {
	for in, want := range map[string]int{"": defaultFetchAhead, "off": 0, "OFF": 0, "0": 0, "false": 0, "3": 3, " 12 ": 12, "256": 256} {
		if got, err := parseFetchAhead(in); err != nil || got != want {
			t.Errorf("parseFetchAhead(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "257", "eight", "8x"} {
		if _, err := parseFetchAhead(in); err == nil || !strings.Contains(err.Error(), "fetch_ahead") {
			t.Errorf("parseFetchAhead(%q): %v, want an error naming fetch_ahead", in, err)
		}
	}
}

// A bad fetch_ahead is a configuration error: wal-fetch exits 255 (stop
// recovery), never 1 (which PostgreSQL would read as the end of WAL).
func TestWalFetchBadFetchAheadAbortsRecovery(t *testing.T) {
	code, _, stderr := runPitr(t, "wal-fetch", "--repo", "file://"+t.TempDir(), "--fetch-ahead", "lots", "000000010000000000000001", "x")
	if code != exitAbortRecovery || !strings.Contains(stderr, "fetch_ahead") {
		t.Fatalf("exit %d, stderr %q; want %d naming fetch_ahead", code, stderr, exitAbortRecovery)
	}
}

// The prefetcher is pitr's own business, not a command people run.
func TestWalPrefetchIsHidden(t *testing.T) {
	_, stdout, _ := runPitr(t, "help")
	if strings.Contains(stdout, "wal-prefetch") || !strings.Contains(stdout, "wal-fetch") {
		t.Fatalf("help lists wal-prefetch or lacks wal-fetch:\n%s", stdout)
	}
}
