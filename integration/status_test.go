package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// status exits 0 on a healthy setup, non-zero with the reason once
// archive_command fails for longer than --max-archive-lag, and 0 again once
// archiving has recovered.
func TestStatusArchivingStopped(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := pgtest.NewCluster(t, pgtest.Options{WalSegSizeMB: 1, ArchiveCommand: r.archiveCommand()})
	c.Start(t)
	c.Exec(t, "CREATE TABLE t (id int)")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	if res := r.pitr(t, c.BaseDir(), "backup", "--fast", "--dsn", c.DSN()); res.code != 0 {
		t.Fatalf("pitr backup: %v", res)
	}
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	status := func(args ...string) result {
		t.Helper()
		return r.pitr(t, c.BaseDir(), append([]string{"status", "--dsn", c.DSN(), "--max-archive-lag", "2s", "--max-drill-age", "0"}, args...)...)
	}
	res := status()
	if res.code != 0 || !strings.Contains(res.stdout, "OK") || !strings.Contains(res.stdout, "gaps:       none") {
		t.Fatalf("status of a healthy setup: %v", res)
	}
	res = status("--json")
	var js struct {
		Backups []struct{ Name string }         `json:"backups"`
		Window  *struct{ LatestSegment string } `json:"recovery_window"`
		Server  *struct{ Reachable bool }       `json:"server"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &js); err != nil || res.code != 0 {
		t.Fatalf("status --json: %v (%v)", res, err)
	}
	if len(js.Backups) != 1 || js.Window == nil || js.Server == nil || !js.Server.Reachable {
		t.Fatalf("status --json: %s", res.stdout)
	}
	// A drill is required by default and none has run.
	if res := r.pitr(t, c.BaseDir(), "status", "--dsn", c.DSN()); res.code == 0 || !strings.Contains(res.stdout, "no restore drill has ever run") {
		t.Fatalf("status without any drill: %v", res)
	}

	c.Exec(t, "ALTER SYSTEM SET archive_command = 'false'")
	c.Exec(t, "SELECT pg_reload_conf()")
	time.Sleep(time.Second) // the archiver rereads its configuration
	stuck := c.SwitchWAL(t)
	c.WaitFor(t, time.Minute, func() bool {
		v, err := c.TryQueryString("SELECT failed_count::text FROM pg_stat_archiver")
		return err == nil && v != "0"
	})
	time.Sleep(2500 * time.Millisecond)
	res = status()
	if res.code == 0 || !strings.Contains(res.stdout, "archive_command is failing") || !strings.Contains(res.stdout, "archiving is behind") {
		t.Fatalf("status while archiving fails: %v", res)
	}

	c.Exec(t, "ALTER SYSTEM RESET archive_command")
	c.Exec(t, "SELECT pg_reload_conf()")
	c.WaitArchived(t, stuck, 2*time.Minute)
	res = status()
	if res.code != 0 {
		t.Fatalf("status after archiving recovered: %v", res)
	}
}
