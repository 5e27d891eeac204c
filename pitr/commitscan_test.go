package pitr

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeWaldump prints the file it is asked for: the test's Fetch writes
// pg_waldump's output for each segment, not WAL.
const fakeWaldump = `#!/bin/sh
for last; do :; done
while [ $# -gt 1 ]; do
	if [ "$1" = --path ]; then dir=$2; fi
	shift
done
cat "$dir/$last"
`

func commitLine(at string) string {
	return "rmgr: Transaction len (rec/tot):     34/    34, tx:       6462, lsn: 0/14FF3058, prev 0/14FF3008, desc: COMMIT " + at + " UTC\n"
}

// scanTail runs CheckCommitAfterTarget over a tail whose segments hold the
// given pg_waldump output, and returns the order of fetches.
func scanTail(t *testing.T, target string, segments ...string) ([]string, error) {
	t.Helper()
	bin, dir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "pg_waldump"), []byte(fakeWaldump), 0o755); err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse("2006-01-02 15:04:05", target)
	if err != nil {
		t.Fatal(err)
	}
	p := Plan{Target: Target{Kind: TargetTime, Time: at}}
	content := map[string]string{}
	for i, s := range segments {
		name := "00000001000000000000000" + string(rune('A'+i))
		p.Tail = append(p.Tail, WALFile{Name: name})
		content[name] = s
	}
	var fetched []string
	err = p.CheckCommitAfterTarget(context.Background(), CommitScanner{
		Waldump: filepath.Join(bin, "pg_waldump"),
		Dir:     dir,
		Fetch: func(ctx context.Context, name, dest string) error {
			fetched = append(fetched, name[len(name)-1:])
			if entries, _ := os.ReadDir(dir); len(entries) > 1 {
				t.Errorf("fetching %s with %d files in the scratch directory already", name, len(entries))
			}
			return os.WriteFile(dest, []byte(content[name]), 0o600)
		},
	})
	return fetched, err
}

// A busy database's newest segment has a commit after the target: one
// segment read, however many archiving lag put before it.
func TestCommitScanNewestFirst(t *testing.T) {
	before := commitLine("2026-11-28 12:00:00.5")
	fetched, err := scanTail(t, "2026-11-28 12:00:01", before, before, before, before+commitLine("2026-11-28 12:00:02"))
	if err != nil || strings.Join(fetched, "") != "D" {
		t.Fatalf("fetched %q, err %v; want only the newest segment, D", fetched, err)
	}
}

// The only commit after the target is in the oldest segment of the tail
// (idle afterwards): found, every segment fetched once, newest first.
func TestCommitScanReachesOldest(t *testing.T) {
	fetched, err := scanTail(t, "2026-11-28 12:00:01", commitLine("2026-11-28 12:00:01.25"), "", "", "")
	if err != nil || strings.Join(fetched, "") != "DCBA" {
		t.Fatalf("fetched %q, err %v; want DCBA and success", fetched, err)
	}
}

func TestCommitScanNone(t *testing.T) {
	_, err := scanTail(t, "2026-11-28 12:00:01", commitLine("2026-11-28 12:00:00.75"), commitLine("2026-11-28 12:00:00.5"), "")
	var none *ErrNoCommitAfterTarget
	if !errors.As(err, &none) || none.Scanned != 3 || !none.LastCommit.Equal(time.Date(2026, 11, 28, 12, 0, 0, 750e6, time.UTC)) {
		t.Fatalf("got %v", err)
	}
}
