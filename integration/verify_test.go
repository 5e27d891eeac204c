package integration

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// dataState is the source cluster's pg_dumpall at one moment of a test: the
// state a restore to that moment must reproduce.
type dataState struct {
	label string // "after commit A", ...
	dump  string
}

// snapshot takes the source's pg_dumpall now.
func snapshot(t *testing.T, c *pgtest.Cluster, label string) dataState {
	t.Helper()
	return dataState{label: label, dump: c.DumpAll(t)}
}

// seqSlack is how far a restored sequence may be ahead of the source's value
// at the target. Sequences are not transactional and are WAL-logged 32
// values ahead (SEQ_LOG_VALS in sequence.c), so after any recovery a
// sequence resumes up to 32 past the last value handed out; one more
// nextval() may have run between the snapshot and the stop point (row B's).
const seqSlack = 32 + 1

var setvalLine = regexp.MustCompile(`^SELECT pg_catalog\.setval\('([^']+)', (\d+), (true|false)\);$`)

// assertRestoredData is the data-level proof every PITR test ends with:
//
//   - the restored cluster's pg_dumpall equals the source's at the target
//     point, line for line, except for sequence values, which may be ahead
//     by at most seqSlack (never behind) and, when the test moved them,
//     tablespace locations (replace: pairs of restored path, source path);
//   - pg_amcheck --all --heapallindexed finds no corruption in any heap or
//     B-tree index of any database.
//
// The dump is taken first: pg_amcheck installs the amcheck extension.
func assertRestoredData(t *testing.T, restored *pgtest.Cluster, want dataState, replace ...string) {
	t.Helper()
	got := restored.DumpAll(t)
	for i := 0; i+1 < len(replace); i += 2 {
		got = strings.ReplaceAll(got, replace[i], replace[i+1])
	}
	if diff := dumpDiff(want.dump, got); diff != "" {
		t.Fatalf("the restored cluster's pg_dumpall differs from the source's %s:\n%s", want.label, diff)
	}
	amcheck(t, restored)
}

// dumpDiff compares two pg_dumpall outputs as assertRestoredData describes
// and returns a readable description of the first difference, or "".
func dumpDiff(want, got string) string {
	w := strings.Split(want, "\n")
	g := strings.Split(got, "\n")
	n := min(len(w), len(g))
	for i := 0; i < n; i++ {
		if w[i] == g[i] {
			continue
		}
		if why, ok := sequenceAhead(w[i], g[i]); ok {
			continue
		} else if why != "" {
			return fmt.Sprintf("line %d: %s\n%s", i+1, why, diffContext(w, g, i))
		}
		return fmt.Sprintf("line %d differs\n%s", i+1, diffContext(w, g, i))
	}
	if len(w) != len(g) {
		return fmt.Sprintf("the source's dump has %d lines, the restored one %d\n%s", len(w), len(g), diffContext(w, g, n))
	}
	return ""
}

// sequenceAhead reports whether two differing dump lines are the same
// sequence's setval with the restored value within seqSlack ahead; when they
// are setval lines that do not satisfy that, why says so.
func sequenceAhead(want, got string) (why string, ok bool) {
	mw, mg := setvalLine.FindStringSubmatch(want), setvalLine.FindStringSubmatch(got)
	if mw == nil || mg == nil {
		return "", false
	}
	if mw[1] != mg[1] || mw[3] != mg[3] {
		return "a different sequence or is_called flag", false
	}
	vw, _ := strconv.ParseInt(mw[2], 10, 64)
	vg, _ := strconv.ParseInt(mg[2], 10, 64)
	if vg < vw || vg > vw+seqSlack {
		return fmt.Sprintf("sequence %s is at %d in the restored cluster, %d in the source (allowed: %d..%d)", mw[1], vg, vw, vw, vw+seqSlack), false
	}
	return "", true
}

func diffContext(w, g []string, i int) string {
	var b strings.Builder
	from := max(0, i-3)
	show := func(label string, lines []string) {
		fmt.Fprintf(&b, "--- %s, lines %d..:\n", label, from+1)
		for j := from; j < min(len(lines), i+4); j++ {
			mark := "  "
			if j == i {
				mark = "> "
			}
			fmt.Fprintf(&b, "%s%s\n", mark, lines[j])
		}
	}
	show("source", w)
	show("restored", g)
	return b.String()
}

// amcheck runs pg_amcheck on every database of c (heap and btree indexes).
func amcheck(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	if out, err := c.RunAsUser(t, "pg_amcheck", "--all", "--install-missing", "--heapallindexed"); err != nil {
		t.Fatalf("pg_amcheck on the restored cluster: %v\n%s", err, out)
	}
}

// walLayout is a WAL segment size the WAL-level scenarios run on; every one
// starts just before the rollover of the low 8 hex digits of segment names
// (LSN 0/FFFFFFFF → 1/00000000), so replay crosses it.
type walLayout struct {
	name  string
	segMB int
}

var walLayouts = []walLayout{{"seg1MiB", 1}, {"seg16MiB", 16}, {"seg64MiB", 64}}

// PITR_TEST_1GIB_SEGMENTS=1 adds PostgreSQL's largest segment size, run by
// hand: every scenario on it writes several GiB of segments (each one
// zero-filled when created), too much for each `make test`.
func init() {
	if os.Getenv("PITR_TEST_1GIB_SEGMENTS") == "1" {
		walLayouts = append(walLayouts, walLayout{"seg1024MiB", 1024})
	}
}

// rolloverStart is the segment pg_resetwal -l starts a fresh cluster of
// segMB MiB segments at: three segments before the one that starts at LSN
// 1/00000000 (…00000FFD for 1 MiB, …000000FD for 16 MiB, …0000003D for 64).
func rolloverStart(segMB int) string {
	perLogID := (uint64(1) << 32) / (uint64(segMB) << 20)
	return fmt.Sprintf("%08X%08X%08X", 1, 0, perLogID-3)
}

// startBeforeRollover moves a cluster that has never started to
// rolloverStart with pg_resetwal.
func startBeforeRollover(t *testing.T, c *pgtest.Cluster, segMB int) {
	t.Helper()
	if out, err := c.RunAsUser(t, "pg_resetwal", "-l", rolloverStart(segMB), "-D", c.DataDir()); err != nil {
		t.Fatalf("pg_resetwal: %v %s", err, out)
	}
}

// switchPastRollover switches WAL until the server writes at LSN 1/0 or
// later, and returns the last segment completed.
func switchPastRollover(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	var last string
	for i := 0; c.QueryString(t, "SELECT pg_current_wal_lsn() >= '1/0'::pg_lsn") != "t"; i++ {
		if i > 8 {
			t.Fatalf("still before LSN 1/0 after %d WAL switches", i)
		}
		last = c.SwitchWAL(t)
	}
	return last
}
