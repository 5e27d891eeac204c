package pitr

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseTargetTime: --target is typed by a person under stress and ends
// up in recovery_target_time. Whatever is typed, an accepted time renders
// (FormatPGTime) as a string that parses back to the same instant to the
// microsecond, so PostgreSQL is told exactly what pitr planned for.
func FuzzParseTargetTime(f *testing.F) {
	for _, s := range []string{
		"2026-04-08 14:13", "2026-04-08 14:13:05", "2026-04-08T14:13:05.123456789Z", "2026-04-08 14:13:05 UTC",
		"2026-04-08 14:13:05+03", "2026-04-08 14:13:05 -05:30", "2026-04-08 14:13:05 Europe/Helsinki",
		"2026-03-29 03:30 Europe/Helsinki", "2026-04-08 14:13 EEST", "2026-02-30 10:00", "0000-01-01 00:00 +15:59",
		"9999-12-31 23:59:59.999999999 -15", "2026-04-08 14:13 ../../etc/localtime", "2026-04-08 24:00",
	} {
		f.Add(s)
	}
	zones := []*time.Location{time.UTC, time.FixedZone("x", -(3*3600 + 1800))}
	if hel, err := time.LoadLocation("Europe/Helsinki"); err == nil {
		zones = append(zones, hel)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, zone := range zones {
			tm, desc, err := ParseTargetTime(s, zone)
			if err != nil {
				continue
			}
			if desc == "" {
				t.Fatalf("%q: accepted without saying which zone", s)
			}
			pg := FormatPGTime(tm)
			back, _, err := ParseTargetTime(pg, time.UTC)
			if err != nil {
				t.Fatalf("%q -> %q, which does not parse: %v", s, pg, err)
			}
			if want := tm.Truncate(time.Microsecond); !back.Equal(want) {
				t.Fatalf("%q -> %s -> %q -> %s", s, want, pg, back)
			}
		}
	})
}

// FuzzParseTimeline: --target-timeline accepts latest, current or a number;
// only "latest" (or nothing) means 0 and only "current" means
// CurrentTimeline, so no typo silently turns into either.
func FuzzParseTimeline(f *testing.F) {
	for _, s := range []string{"latest", "current", "3", "0x1F", "0", "4294967295", "4294967296", "-1", "0x", " 2 ", "0x0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tli, err := ParseTimeline(s)
		if err != nil {
			return
		}
		word := strings.ToLower(strings.TrimSpace(s))
		if (tli == 0) != (word == "" || word == "latest") || (tli == CurrentTimeline) != (word == "current") {
			t.Fatalf("ParseTimeline(%q) = %d", s, tli)
		}
	})
}
