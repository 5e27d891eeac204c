package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage/fs"
)

func TestParseDumpSchedules(t *testing.T) {
	jobs, err := parseDumpSchedules("", "", time.UTC)
	if err != nil || len(jobs) != 0 {
		t.Fatalf("default: %v %v; want no dump jobs (off)", jobs, err)
	}
	jobs, err = parseDumpSchedules("0 2 * * *", "busy=1h; reports = 0 3,15 * * 0 ; old=off", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 3 || jobs[0].db != "" || jobs[1].db != "busy" || jobs[2].db != "reports" {
		t.Fatalf("jobs %+v", jobs)
	}
	if got := strings.Join(jobs[0].exclude, ","); got != "busy,reports,old" {
		t.Fatalf("the all-databases job excludes %q, want busy,reports,old (their own schedules, or off)", got)
	}
	for _, bad := range []string{"busy", "busy=", "=1h", "a=1h; a=2h", "a=every tuesday"} {
		if _, err := parseDumpSchedules("", bad, time.UTC); err == nil {
			t.Errorf("dump_schedule_db %q accepted", bad)
		}
	}
	if _, err := parseDumpSchedules("sometimes", "", time.UTC); err == nil {
		t.Error("dump_schedule 'sometimes' accepted")
	}
}

// A nightly all-databases job and an hourly one for one database run next
// to a weekly backup: each at its own times, backups first on a tie, and a
// failed dump is retried an hour later.
func TestAgentRunsDumpJobs(t *testing.T) {
	start := time.Date(2026, 4, 8, 0, 30, 0, 0, time.UTC)
	clock := &agentFakeClock{now: start}
	var logs bytes.Buffer
	var order []string
	nightly, _ := parseSchedule("1d", time.UTC)
	hourly, _ := parseSchedule("1h", time.UTC)
	weekly, _ := parseSchedule("7d", time.UTC)
	all := &dumpJob{sched: nightly, exclude: []string{"busy"}, last: start.Add(-23 * time.Hour)}
	busy := &dumpJob{db: "busy", sched: hourly, last: start.Add(-10 * time.Minute)}
	failOnce := true
	a := &agent{
		sched: weekly, clock: clock, lastSuccess: start.Add(-7*24*time.Hour + 2*time.Hour),
		log: slog.New(slog.NewTextHandler(&logs, nil)),
		backup: func(context.Context) error {
			order = append(order, "backup@"+clock.Now().Format("15:04"))
			clock.spend(5 * time.Minute)
			return nil
		},
		dumps: []*dumpJob{all, busy},
		dump: func(_ context.Context, j *dumpJob) error {
			order = append(order, j.String()+"@"+clock.Now().Format("15:04"))
			clock.spend(time.Minute)
			if j.db == "busy" && failOnce {
				failOnce = false
				return errors.New("pg_dump failed")
			}
			return nil
		},
	}
	clock.stop = func() bool { return len(order) >= 6 }
	if err := a.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(order, " ")
	want := "database busy@01:20 all databases@01:30 database busy@02:21 backup@02:30 database busy@03:21 database busy@04:21"
	if got != want {
		t.Fatalf("runs:\n%s\nwant:\n%s\n%s", got, want, logs.String())
	}
	if !strings.Contains(logs.String(), "scheduled dump failed") {
		t.Fatalf("failure not logged:\n%s", logs.String())
	}
}

// Jobs are anchored on the newest dump of their databases; when dump.json
// cannot be read (a public-key-only host of an encrypted repository; here
// metadata that does not parse), on when it was written.
func TestAnchorDumpJobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(ctx, st, 7, time.Now()); err != nil {
		t.Fatal(err)
	}
	put := func(key, content string) {
		t.Helper()
		if err := st.Put(ctx, key, strings.NewReader(content)); err != nil {
			t.Fatal(err)
		}
	}
	put(repo.DumpKey(7, "20260401T000000Z", repo.DumpObjectName("busy")), "x")
	put(repo.DumpKey(7, "20260401T000000Z", repo.DumpObjectName("shop")), "x")
	put(repo.DumpKey(7, "20260401T000000Z", repo.DumpMetadataName), "not json")
	put(repo.DumpKey(7, "20260402T000000Z", repo.DumpObjectName("busy")), "x") // no dump.json: incomplete
	all := &dumpJob{exclude: []string{"busy"}}
	busy := &dumpJob{db: "busy"}
	other := &dumpJob{db: "other"}
	var logs bytes.Buffer
	anchorDumpJobs(ctx, slog.New(slog.NewTextHandler(&logs, nil)), st, []*dumpJob{all, busy, other})
	info, err := st.Stat(ctx, repo.DumpKey(7, "20260401T000000Z", repo.DumpMetadataName))
	if err != nil {
		t.Fatal(err)
	}
	if !all.last.Equal(info.ModTime) || !busy.last.Equal(info.ModTime) || !other.last.IsZero() {
		t.Fatalf("anchors: all %v, busy %v, other %v; want %v, %v, zero\n%s", all.last, busy.last, other.last, info.ModTime, info.ModTime, logs.String())
	}
}
