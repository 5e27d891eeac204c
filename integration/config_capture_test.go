package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/internal/pgtest"
)

// Contract (issue 10): a cluster configured the Debian way, with
// postgresql.conf and pg_hba.conf outside the data directory (the server
// started with -c config_file=...): every base backup captures them and the
// files they include, and pitr restore puts them back, with their content,
// below --config-dir at their original paths, reports what it restored and
// which restored settings name the source's paths, and never overwrites an
// existing file without --force.
func TestConfigOutsideDataDirectoryRestored(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	etc := pgtest.SharedTempDir(t)
	confPath := filepath.Join(etc, "postgresql.conf")
	hbaPath := filepath.Join(etc, "pg_hba.conf")
	c := pgtest.NewCluster(t, pgtest.Options{
		ArchiveCommand: r.archiveCommand(),
		ServerOptions:  "-c config_file=" + confPath,
	})

	// Move the configuration out of the data directory, as Debian has it.
	data := c.DataDir()
	conf, err := os.ReadFile(filepath.Join(data, "postgresql.conf"))
	if err != nil {
		t.Fatal(err)
	}
	hba, err := os.ReadFile(filepath.Join(data, "pg_hba.conf"))
	if err != nil {
		t.Fatal(err)
	}
	confText := strings.Replace(string(conf), "include 'pitrtest.conf'", "include '"+filepath.Join(data, "pitrtest.conf")+"'", 1)
	confText += "\n# pitr test: Debian-style configuration\nhba_file = '" + hbaPath + "'\n" +
		"include_dir 'conf.d'   # relative to this file\ninclude_if_exists 'absent.conf'\n"
	hbaText := "# pitr test marker: hba outside the data directory\n" + string(hba)
	extra := "# included from conf.d\nwork_mem = '7MB'\n"
	write := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(confPath, confText)
	write(hbaPath, hbaText)
	write(filepath.Join(etc, "conf.d", "10-extra.conf"), extra)
	write(filepath.Join(etc, "conf.d", "README"), "not a .conf file: PostgreSQL skips it\n")
	for _, f := range []string{"postgresql.conf", "pg_hba.conf"} {
		if err := os.Remove(filepath.Join(data, f)); err != nil {
			t.Fatal(err)
		}
	}
	c.Start(t)
	if got := c.QueryString(t, "SHOW hba_file"); got != hbaPath {
		t.Fatalf("hba_file is %s, want %s", got, hbaPath)
	}
	if got := c.QueryString(t, "SHOW work_mem"); got != "7MB" {
		t.Fatalf("conf.d was not included: work_mem %s", got)
	}

	name := r.backup(t, c)
	res := r.pitr(t, c.BaseDir(), "backup", "show", name, "--json")
	if res.code != 0 {
		t.Fatalf("backup show: %v", res)
	}
	var b basebackup.Backup
	if err := json.Unmarshal([]byte(res.stdout), &b); err != nil {
		t.Fatal(err)
	}
	captured := map[string]basebackup.ConfigFile{}
	for _, f := range b.ConfigFiles {
		captured[f.Path] = f
	}
	for _, p := range []string{confPath, hbaPath, filepath.Join(etc, "conf.d", "10-extra.conf")} {
		if f, ok := captured[p]; !ok || f.Object == "" || f.Error != "" {
			t.Fatalf("%s not captured: %+v (all: %+v)", p, f, b.ConfigFiles)
		}
	}
	if f := captured[filepath.Join(data, "pg_ident.conf")]; !f.InDataDirectory || f.Object != "" {
		t.Fatalf("pg_ident.conf in the data directory: %+v; want recorded as in the data directory, not stored again", f)
	}

	target := filepath.Join(pgtest.SharedTempDir(t), "restored")
	res = r.pitr(t, c.BaseDir(), "restore", "--pgdata", target, "--target", "immediate")
	if res.code != 0 {
		t.Fatalf("pitr restore: %v", res)
	}
	configDir := target + "_config"
	for orig, want := range map[string]string{confPath: confText, hbaPath: hbaText, filepath.Join(etc, "conf.d", "10-extra.conf"): extra} {
		restored := basebackup.ConfigDestination(configDir, orig)
		got, err := os.ReadFile(restored)
		if err != nil {
			t.Fatalf("%s not restored: %v\n%v", orig, err, res)
		}
		if string(got) != want {
			t.Fatalf("%s restored with other content:\n%s\nwant:\n%s", restored, got, want)
		}
		if !strings.Contains(res.stdout, "restored configuration file "+orig) {
			t.Fatalf("restore does not report %s: %v", orig, res)
		}
	}
	if !strings.Contains(res.stdout, "sets hba_file = '"+hbaPath+"'") {
		t.Fatalf("restore does not point out the restored hba_file setting: %v", res)
	}
	if _, err := os.Stat(filepath.Join(target, "PG_VERSION")); err != nil {
		t.Fatalf("data directory not restored: %v", err)
	}

	// The same --config-dir again: refused before anything is written.
	second := filepath.Join(pgtest.SharedTempDir(t), "second")
	res = r.pitr(t, c.BaseDir(), "restore", "--pgdata", second, "--target", "immediate", "--config-dir", configDir)
	if res.code != 1 || !strings.Contains(res.stderr, "exists") || !strings.Contains(res.stderr, "--force") {
		t.Fatalf("restore over existing configuration files: %v; want a refusal", res)
	}
	if _, err := os.Stat(second); !os.IsNotExist(err) {
		t.Fatalf("a refused restore created %s: %v", second, err)
	}

	// A file neither the server nor pitr can read any more: the backup
	// still succeeds, says so loudly, records it, and status warns.
	unreadable := filepath.Join(etc, "conf.d", "10-extra.conf")
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	res = r.pitr(t, c.BaseDir(), "backup", "--dsn", c.DSN(), "--fast")
	if res.code != 0 || !strings.Contains(res.stderr, "NOT captured") || !strings.Contains(res.stderr, unreadable) {
		t.Fatalf("backup with an unreadable configuration file: %v; want success with a warning naming it", res)
	}
	newest := strings.TrimSpace(res.stdout)
	res = r.pitr(t, c.BaseDir(), "backup", "show", newest)
	if res.code != 0 || !strings.Contains(res.stdout, "NOT CAPTURED") {
		t.Fatalf("backup show of a backup missing a configuration file: %v", res)
	}
	res = r.pitr(t, c.BaseDir(), "status", "--no-server")
	if !strings.Contains(res.stdout, "WARNING: backup "+newest+" did not capture the server's include "+unreadable) {
		t.Fatalf("status does not warn about the missing configuration file: %v", res)
	}
}
