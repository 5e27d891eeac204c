package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// drillReport is the part of a stored drill report the tests read.
type drillReport struct {
	OK     bool   `json:"ok"`
	Backup string `json:"backup"`
	Checks []struct {
		Name, Result, Detail string
	} `json:"checks"`
}

// drillReports returns the drill reports in a file:// repository, oldest first.
func drillReports(t *testing.T, r *testRepo) []drillReport {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(r.dir, "*", "drills", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []drillReport
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var rep drillReport
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, rep)
	}
	return out
}

func (r *testRepo) drill(t *testing.T, args ...string) result {
	t.Helper()
	dir := pgtest.SharedTempDir(t)
	return r.pitr(t, dir, append([]string{"drill", "--scratch", dir}, args...)...)
}

// A drill on a healthy repository passes every check and records a report;
// the same repository with its base backup corrupted, and then with a WAL
// segment deleted from the range recovery needs, fails and says why. The
// scratch directory is gone afterwards.
func TestDrill(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", time.Second)
	r, c := s.repo, s.src
	c.Exec(t, "CREATE DATABASE second")
	c.Exec(t, "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g")
	c.Exec(t, "CREATE INDEX ON big (v)")
	c.Exec(t, "ANALYZE big")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	dir := pgtest.SharedTempDir(t)
	res := r.pitr(t, dir, "drill", "--scratch", dir)
	if res.code != 0 || !strings.Contains(res.stdout, "drill PASSED") {
		t.Fatalf("drill on a healthy repository: %v", res)
	}
	for _, want := range []string{"pass recovery point", "pass amcheck", "pass tables", "second", "inside the newest archived segment"} {
		if !strings.Contains(strings.Join(strings.Fields(res.stdout), " "), want) {
			t.Errorf("drill summary lacks %q:\n%s", want, res.stdout)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "pitr-drill-*")); len(left) != 0 {
		t.Errorf("scratch directory left behind: %v", left)
	}
	reports := drillReports(t, r)
	if len(reports) != 1 || !reports[0].OK || reports[0].Backup == "" {
		t.Fatalf("stored reports after a passing drill: %+v", reports)
	}
	// Restored to exactly the backup, tables are also judged against the
	// row estimates the backup recorded: a healthy backup passes.
	time.Sleep(1100 * time.Millisecond) // report keys have one-second resolution
	if res := r.drill(t, "--target", "immediate"); res.code != 0 || !strings.Contains(res.stdout, "drill PASSED") {
		t.Fatalf("drill --target immediate on a healthy repository: %v", res)
	}

	// A corrupted base backup object.
	tars, _ := filepath.Glob(filepath.Join(r.dir, "*", "basebackups", "*", "base.tar"))
	if len(tars) != 1 {
		t.Fatalf("base.tar objects: %v", tars)
	}
	orig, err := os.ReadFile(tars[0])
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), orig...)
	for i := len(bad) / 2; i < len(bad)/2+64 && i < len(bad); i++ {
		bad[i] ^= 0xff
	}
	if err := os.WriteFile(tars[0], bad, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // report keys have one-second resolution
	res = r.drill(t)
	if res.code == 0 || !strings.Contains(res.stdout, "drill FAILED") || !strings.Contains(res.stdout, "fail restore") {
		t.Fatalf("drill on a corrupted backup: %v", res)
	}
	t.Logf("drill on a corrupted backup:\n%s", res.stdout)
	if err := os.WriteFile(tars[0], orig, 0o644); err != nil {
		t.Fatal(err)
	}

	// A WAL segment missing from the range recovery needs.
	for range 3 {
		generateWAL(t, c, 1)
		c.SwitchWAL(t)
	}
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	var segs []string
	for _, n := range archivedNames(t, c) {
		if pgtest.IsSegmentName(n) {
			segs = append(segs, n)
		}
	}
	victim := segs[len(segs)-3]
	deleteObject(t, r, victim)
	time.Sleep(1100 * time.Millisecond)
	res = r.drill(t)
	if res.code == 0 || !strings.Contains(res.stdout, "fail plan") || !strings.Contains(res.stdout, victim) {
		t.Fatalf("drill across a deleted segment %s: %v", victim, res)
	}
	t.Logf("drill across a deleted segment:\n%s", res.stdout)
	reports = drillReports(t, r)
	// healthy, healthy at the backup's end, corrupted backup, missing WAL
	if len(reports) != 4 || !reports[1].OK || reports[2].OK || reports[3].OK {
		t.Fatalf("stored reports: %+v", reports)
	}
}

// The same drill against an S3 repository, keeping the scratch directory:
// the server is stopped, the restored data directory stays.
func TestDrillS3(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "s3", time.Second)
	res := s.repo.drill(t, "--keep")
	if res.code != 0 || !strings.Contains(res.stdout, "drill PASSED") || !strings.Contains(res.stdout, "report: ") {
		t.Fatalf("drill on S3: %v", res)
	}
	_, kept, ok := strings.Cut(res.stdout, "scratch directory kept: ")
	kept, _, _ = strings.Cut(kept, "\n")
	if !ok {
		t.Fatalf("--keep: no kept directory reported:\n%s", res.stdout)
	}
	if _, err := os.Stat(filepath.Join(kept, "data", "PG_VERSION")); err != nil {
		t.Fatalf("--keep: %v", err)
	}
	if _, err := os.Stat(filepath.Join(kept, "data", "postmaster.pid")); err == nil {
		t.Fatalf("--keep: the scratch server is still running in %s", kept)
	}
}
