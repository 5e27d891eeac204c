package pitr

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/dump"
	"github.com/pitr-dev/pitr/repo"
)

func TestStatusDumpsAndConfigWarnings(t *testing.T) {
	t0 := time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC)
	mk := func(name string, at time.Time, dbs ...string) dump.Run {
		r := dump.Run{Name: name, StartTime: at, StopTime: at.Add(time.Minute)}
		for _, db := range dbs {
			r.Databases = append(r.Databases, dump.Database{Name: db, Part: dump.Part{Object: repo.DumpObjectName(db), StoredSize: 10}, StopTime: at.Add(time.Minute)})
		}
		return r
	}
	s := Status{CheckedAt: t0.Add(48 * time.Hour)}
	s.AddDumps([]dump.Run{mk("r1", t0, "shop", "old"), mk("r2", t0.Add(24*time.Hour), "shop")})
	if len(s.Dumps) != 2 || s.Dumps[0].Database != "old" || s.Dumps[0].Newest != "r1" || s.Dumps[1].Newest != "r2" {
		t.Fatalf("dumps %+v", s.Dumps)
	}
	s.AddConfigWarnings([]basebackup.Backup{
		{Name: "b1", StopTime: t0, ConfigFiles: []basebackup.ConfigFile{{Path: "/etc/a.conf", Kind: "include", Error: "old problem"}}},
		{Name: "b2", StopTime: t0.Add(time.Hour), ConfigFiles: []basebackup.ConfigFile{
			{Path: "/etc/pg/postgresql.conf", Kind: "config_file", Object: "config/1-postgresql.conf"},
			{Path: "/etc/pg/conf.d/x.conf", Kind: "include", Error: "permission denied"}}},
	})
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "b2") || !strings.Contains(s.Warnings[0], "/etc/pg/conf.d/x.conf") {
		t.Fatalf("warnings %v; want one about the newest backup's missing file", s.Warnings)
	}
	var out bytes.Buffer
	s.Describe(&out)
	for _, want := range []string{"dump:       shop: newest r2", "WARNING: backup b2 did not capture"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}
