package pitr

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/storage/fs"
)

func TestParsePitrCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd    string
		ok     bool
		repo   string
		config string
	}{
		{"/usr/bin/pitr archive-push --config /etc/pitr/pitr.yaml %p", true, "", "/etc/pitr/pitr.yaml"},
		{"'/opt/my tools/pitr' archive-push --repo=s3://bucket/db1 %p", true, "s3://bucket/db1", ""},
		{"test ! -f /x && /usr/local/bin/pitr archive-push -repo file:///var/lib/pitr %p", true, "file:///var/lib/pitr", ""},
		{`pitr archive-push "--config=/etc/a b.yaml" %p`, true, "", "/etc/a b.yaml"},
		{"pitr archive-push %p", true, "", ""},
		{"cp %p /mnt/archive/%f", false, "", ""},
		{"pitr wal-fetch %f %p", false, "", ""},
	} {
		inv, ok := ParsePitrCommand(tc.cmd, "archive-push")
		if ok != tc.ok || inv.Repo != tc.repo || inv.Config != tc.config {
			t.Errorf("%q: %+v %v, want repo %q config %q ok %v", tc.cmd, inv, ok, tc.repo, tc.config, tc.ok)
		}
	}
}

func TestSameRepo(t *testing.T) {
	if !SameRepo("file:///var/lib/pitr/", "file:///var/lib//pitr") || !SameRepo("s3://b/p/", "s3://b/p") {
		t.Error("equal repositories differ")
	}
	if SameRepo("s3://b/p1", "s3://b/p2") || SameRepo("file:///a", "s3:///a") {
		t.Error("different repositories are equal")
	}
}

func TestCheckSettings(t *testing.T) {
	const want = "file:///var/lib/pitr"
	configs := map[string]string{"/etc/pitr/pitr.yaml": want, "/etc/pitr/other.yaml": "s3://elsewhere/x"}
	repoOf := func(f string) (string, error) {
		if r, ok := configs[f]; ok {
			return r, nil
		}
		return "", errors.New("no such file")
	}
	good := ServerSettings{WalLevel: "replica", ArchiveMode: "on", ArchiveCommand: "/usr/bin/pitr archive-push --config /etc/pitr/pitr.yaml %p"}
	result := func(s ServerSettings, name string) CheckResult {
		t.Helper()
		for _, r := range CheckSettings(s, want, repoOf, "/etc/pitr/absent.yaml") {
			if r.Name == name {
				return r
			}
		}
		t.Fatalf("no %s check", name)
		return CheckResult{}
	}
	for _, name := range []string{"wal_level", "archive_mode", "archive_command", "restore_command"} {
		if r := result(good, name); r.Result != CheckPass {
			t.Errorf("good setup: %+v", r)
		}
	}
	for _, tc := range []struct {
		mutate  func(*ServerSettings)
		name    string
		mention string
	}{
		{func(s *ServerSettings) { s.WalLevel = "minimal" }, "wal_level", "wal_level = 'replica'"},
		{func(s *ServerSettings) { s.ArchiveMode = "off" }, "archive_mode", "archive_mode = 'on'"},
		{func(s *ServerSettings) {
			s.ArchiveCommand = "/usr/bin/pitr archive-push --config /etc/pitr/other.yaml %p"
		}, "archive_command", "s3://elsewhere/x"},
		{func(s *ServerSettings) { s.ArchiveCommand = "/usr/bin/pitr archive-push --repo file:///mnt/x %p" }, "archive_command", "file:///mnt/x"},
		{func(s *ServerSettings) { s.ArchiveCommand = "/usr/bin/pitr archive-push --config /nope.yaml %p" }, "archive_command", "cannot be read"},
		{func(s *ServerSettings) { s.ArchiveCommand = "/usr/bin/pitr archive-push %p" }, "archive_command", "names no repository"},
		{func(s *ServerSettings) { s.ArchiveCommand = "cp %p /mnt/%f" }, "archive_command", "does not run pitr archive-push"},
		{func(s *ServerSettings) { s.ArchiveLibrary = "basic_archive" }, "archive_command", "archive_library"},
		{func(s *ServerSettings) { s.RestoreCommand = "cp /mnt/%f %p" }, "restore_command", "does not run pitr wal-fetch"},
	} {
		s := good
		tc.mutate(&s)
		r := result(s, tc.name)
		if r.Result != CheckFail || !strings.Contains(r.Detail, tc.mention) || !strings.Contains(r.Detail, "Fix:") {
			t.Errorf("%s: %+v, want a failure mentioning %q and a fix", tc.name, r, tc.mention)
		}
	}
	s := good
	s.RestoreCommand = "/usr/bin/pitr wal-fetch --repo file:///var/lib/pitr/ %f %p"
	if r := result(s, "restore_command"); r.Result != CheckPass {
		t.Errorf("restore_command into the same repository: %+v", r)
	}
}

func TestParsePGVersionOutput(t *testing.T) {
	for out, want := range map[string]int{
		"pg_basebackup (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)\n": 15,
		"pg_basebackup (PostgreSQL) 17beta2":                          17,
		"pg_basebackup (PostgreSQL) 9.6.24":                           9,
	} {
		if got, err := ParsePGVersionOutput(out); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", out, got, err, want)
		}
	}
	if _, err := ParsePGVersionOutput("bash: pg_basebackup: command not found"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestCheckClock(t *testing.T) {
	if r := CheckClock(2*time.Second, -time.Second); r.Result != CheckPass {
		t.Errorf("small skew: %+v", r)
	}
	if r := CheckClock(-time.Minute, 0); r.Result != CheckFail || !strings.Contains(r.Detail, "Fix:") {
		t.Errorf("server a minute behind: %+v", r)
	}
	before := t0
	after := t0.Add(100 * time.Millisecond)
	if d := skew(t0.Add(50*time.Millisecond), before, after); d != 0 {
		t.Errorf("inside: %s", d)
	}
	if d := skew(t0.Add(-500*time.Millisecond), before, after); d != 0 {
		t.Errorf("whole-second truncation: %s", d)
	}
	if d := skew(t0.Add(time.Minute), before, after); d != time.Minute-100*time.Millisecond {
		t.Errorf("ahead: %s", d)
	}
}

func TestProbeRepository(t *testing.T) {
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := ProbeRepository(ctx, st, time.Now); err != nil {
		t.Fatal(err)
	}
	if objs, err := st.List(ctx, ""); err != nil || len(objs) != 0 {
		t.Fatalf("probe left objects behind: %v %v", objs, err)
	}
}
