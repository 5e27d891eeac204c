package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

// pitr check passes on a correct setup (including the end-to-end probe)
// and catches, naming the setting: an archive_command that archives
// elsewhere, an unreachable repository, and archive_mode = off.
func TestCheck(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := pgtest.NewCluster(t, pgtest.Options{WalSegSizeMB: 1, ArchiveCommand: r.archiveCommand()})
	c.Start(t)
	check := func(args ...string) result {
		t.Helper()
		res := r.pitr(t, c.BaseDir(), append([]string{"check", "--dsn", c.DSN()}, args...)...)
		t.Logf("pitr check %v: %v", args, res)
		return res
	}
	setting := func(sql, name, want string) {
		t.Helper()
		c.Exec(t, sql)
		c.Exec(t, "SELECT pg_reload_conf()")
		c.WaitFor(t, 30*time.Second, func() bool {
			v, err := c.TryQueryString("SELECT current_setting($1)", name)
			return err == nil && v == want
		})
	}

	res := check()
	if res.code != 0 || !strings.Contains(res.stdout, "check PASSED") || !strings.Contains(res.stdout, "pass probe") {
		t.Fatalf("check of a correct setup: %v", res)
	}

	elsewhere := "file://" + filepath.Join(pgtest.SharedTempDir(t), "other")
	cmd := pitrBin + " archive-push --repo " + elsewhere + " %p"
	setting("ALTER SYSTEM SET archive_command = '"+cmd+"'", "archive_command", cmd)
	res = check()
	if res.code == 0 || !strings.Contains(res.stdout, "fail archive_command") || !strings.Contains(res.stdout, elsewhere) || !strings.Contains(res.stdout, "Fix:") {
		t.Fatalf("check with archive_command pointing elsewhere: %v", res)
	}
	setting("ALTER SYSTEM RESET archive_command", "archive_command", r.archiveCommand())

	notDir := filepath.Join(pgtest.SharedTempDir(t), "a-file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res = check("--repo", "file://"+notDir+"/repo")
	if res.code == 0 || !strings.Contains(res.stdout, "fail repository") {
		t.Fatalf("check with an unreachable repository: %v", res)
	}

	c.Exec(t, "ALTER SYSTEM SET archive_mode = off")
	c.Restart(t)
	res = check()
	if res.code == 0 || !strings.Contains(res.stdout, "fail archive_mode") || !strings.Contains(res.stdout, "archive_mode = 'on'") {
		t.Fatalf("check with archive_mode off: %v", res)
	}
}
