package main

import (
	"strings"
	"testing"
	"time"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("time zone %s: %v", name, err)
	}
	return loc
}

func TestParseDaysDuration(t *testing.T) {
	good := map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute,
		"168h": 7 * 24 * time.Hour, "0d1s": time.Second,
	}
	for in, want := range good {
		got, err := parseDaysDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDaysDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0d", "-1d", "30", "d", "30days", "1w", "-5h", "0s", "1d-1h", "999999999d"} {
		if d, err := parseDaysDuration(in); err == nil {
			t.Errorf("parseDaysDuration(%q) = %v, want an error", in, d)
		}
	}
}

func TestIntervalSchedule(t *testing.T) {
	s, err := parseSchedule("", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	if got := s.next(time.Time{}, now); !got.Equal(now) {
		t.Errorf("default schedule without a backup: next %v, want now", got)
	}
	last := now.Add(-2 * 24 * time.Hour)
	if got, want := s.next(last, now), last.Add(7*24*time.Hour); !got.Equal(want) {
		t.Errorf("default schedule: next %v, want a week after the last backup started (%v)", got, want)
	}
	if !strings.Contains(s.String(), "every 7d") {
		t.Errorf("String() = %q", s.String())
	}
	for _, bad := range []string{"10s", "weekly", "7", "-1h"} {
		if _, err := parseSchedule(bad, time.UTC); err == nil {
			t.Errorf("schedule %q accepted", bad)
		}
	}
}

func TestCronNext(t *testing.T) {
	utc := time.UTC
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, utc)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		spec, after, want string
	}{
		{"0 3 * * 0", "2026-05-01 12:00", "2026-05-03 03:00"}, // 2026-05-01 is a Friday
		{"0 3 * * 0", "2026-05-03 03:00", "2026-05-10 03:00"}, // strictly after
		{"0 3 * * 7", "2026-05-01 12:00", "2026-05-03 03:00"}, // 7 is Sunday too
		{"0 3 * * sun", "2026-05-01 12:00", "2026-05-03 03:00"},
		{"@weekly", "2026-05-01 12:00", "2026-05-03 00:00"},
		{"@daily", "2026-05-01 12:00", "2026-05-02 00:00"},
		{"@hourly", "2026-05-01 12:00", "2026-05-01 13:00"},
		{"@monthly", "2026-05-01 12:00", "2026-06-01 00:00"},
		{"*/15 * * * *", "2026-05-01 12:07", "2026-05-01 12:15"},
		{"5/20 * * * *", "2026-05-01 12:30", "2026-05-01 12:45"},
		{"30 1-3 * * *", "2026-05-01 02:45", "2026-05-01 03:30"},
		{"0 0 1,15 * *", "2026-05-02 00:00", "2026-05-15 00:00"},
		{"0 4 * jan-mar mon", "2026-05-01 12:00", "2027-01-04 04:00"},
		{"0 0 29 2 *", "2026-05-01 12:00", "2028-02-29 00:00"},
		{"59 23 31 12 *", "2026-12-31 23:59", "2027-12-31 23:59"},
		// Day of month and day of week both restricted: either matches.
		{"0 0 13 * fri", "2026-05-01 12:00", "2026-05-08 00:00"},
		{"0 0 13 * fri", "2026-05-09 00:00", "2026-05-13 00:00"},
		// A restricted day of week with "*" day of month: only the weekday.
		{"0 0 * * 1-5", "2026-05-01 12:00", "2026-05-04 00:00"},
	}
	for _, tc := range cases {
		s, err := parseSchedule(tc.spec, utc)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if got := s.next(time.Time{}, at(tc.after)); !got.Equal(at(tc.want)) {
			t.Errorf("%q after %s: %s, want %s", tc.spec, tc.after, got.Format("2006-01-02 15:04 Mon"), tc.want)
		}
	}
}

func TestCronParseErrors(t *testing.T) {
	for _, spec := range []string{
		"0 3 * *", "0 3 * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
		"*/0 * * * *", "5-1 * * * *", "x * * * *", "@fortnightly", "0 0 31 2 *", "0 0 30 feb *", "1,,2 * * * *",
	} {
		if _, err := parseSchedule(spec, time.UTC); err == nil {
			t.Errorf("%q accepted", spec)
		}
	}
}

// Cron runs in local wall-clock time across daylight saving changes: a run
// at 03:00 stays at 03:00 local, and a time that does not exist is skipped.
func TestCronDaylightSaving(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	s, err := parseSchedule("0 3 * * *", berlin)
	if err != nil {
		t.Fatal(err)
	}
	// Clocks go from 02:00 to 03:00 on 2026-03-29 and back from 03:00 to
	// 02:00 on 2026-10-25.
	got := s.next(time.Time{}, time.Date(2026, 3, 28, 12, 0, 0, 0, berlin))
	if want := time.Date(2026, 3, 29, 3, 0, 0, 0, berlin); !got.Equal(want) {
		t.Errorf("spring: %v, want %v", got, want)
	}
	got = s.next(time.Time{}, time.Date(2026, 10, 24, 12, 0, 0, 0, berlin))
	if got.Hour() != 3 || got.Day() != 25 {
		t.Errorf("autumn: %v, want 03:00 on the 25th", got)
	}
	skipped, err := parseSchedule("30 2 * * *", berlin)
	if err != nil {
		t.Fatal(err)
	}
	got = skipped.next(time.Time{}, time.Date(2026, 3, 28, 12, 0, 0, 0, berlin))
	if want := time.Date(2026, 3, 30, 2, 30, 0, 0, berlin); !got.Equal(want) {
		t.Errorf("non-existent 02:30: %v, want the next day's %v", got, want)
	}
	// Every result is strictly after the previous one, through both changes.
	every, _ := parseSchedule("*/30 * * * *", berlin)
	prev := time.Date(2026, 3, 28, 0, 0, 0, 0, berlin)
	for range 3 * 48 {
		n := every.next(time.Time{}, prev)
		if !n.After(prev) || n.Sub(prev) > time.Hour {
			t.Fatalf("after %v came %v", prev, n)
		}
		prev = n
	}
}
