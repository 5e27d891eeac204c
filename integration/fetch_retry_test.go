package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/internal/s3test"
)

// Contract (restore_command, PG-CONTRACTS §3.2 and scenario 10): a transient
// storage failure is not "file not found". wal-fetch keeps retrying through a
// short outage and succeeds; when the store stays away it exits above 125 so
// that recovery stops instead of promoting at the wrong point.
func TestWalFetchRidesOutStorageOutage(t *testing.T) {
	t.Parallel()
	server := s3test.Start(t) // stopped and restarted below: not shared
	r := newRepo(t, "s3", server)
	c := archivingCluster(t, r, 1)
	generateWAL(t, c, 1)
	seg := c.SwitchWAL(t)
	c.WaitArchived(t, seg, time.Minute)
	want, err := os.ReadFile(filepath.Join(c.DataDir(), "pg_wal", seg))
	if err != nil {
		t.Fatal(err)
	}
	work := pgtest.SharedTempDir(t)

	server.Stop(t)
	cmd := exec.Command(pitrBin, "wal-fetch", seg, "RECOVERYXLOG")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PITR_CONFIG="+r.configPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pgtest.RunAs(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // longer than the default retry budget of other commands
	server.Restart(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("wal-fetch across a 3 s outage: %v\n%s", err, stderr.String())
	}
	got, err := os.ReadFile(filepath.Join(work, "RECOVERYXLOG"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetched segment differs after the outage (%v)", err)
	}
	os.Remove(filepath.Join(work, "RECOVERYXLOG"))

	server.Stop(t)
	start := time.Now()
	res := r.pitr(t, work, "wal-fetch", seg, "RECOVERYXLOG")
	if res.code <= 125 {
		t.Fatalf("wal-fetch with the store down for good: %v; want exit > 125", res)
	}
	t.Logf("gave up after %v with exit %d", time.Since(start).Round(time.Second), res.code)
	assertEmptyDir(t, work)
}
