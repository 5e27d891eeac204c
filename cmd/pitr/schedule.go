package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/pitr"
)

// defaultSchedule takes a backup when the newest one is a week old: a fresh
// agent with no backup takes one at once, and restarts never cause extra
// backups.
const defaultSchedule = "7d"

// schedule says when the agent runs the next backup.
type schedule interface {
	// next returns the time of the next run, given the start of the last
	// successful backup (zero if there is none) and the current time. A
	// result not after now means "now".
	next(lastSuccess, now time.Time) time.Time
	String() string
}

// parseSchedule accepts an interval ("7d", "24h", "1d12h") or a cron
// expression ("M H DOM MON DOW", or @hourly, @daily, @weekly, @monthly),
// evaluated in loc.
func parseSchedule(spec string, loc *time.Location) (schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		spec = defaultSchedule
	}
	if strings.HasPrefix(spec, "@") || len(strings.Fields(spec)) > 1 {
		c, err := parseCron(spec, loc)
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %w", spec, err)
		}
		return c, nil
	}
	d, err := parseDaysDuration(spec)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: want an interval (7d, 24h) or a cron expression (M H DOM MON DOW): %w", spec, err)
	}
	if d < time.Minute {
		return nil, fmt.Errorf("schedule %q: an interval under a minute would back up continuously", spec)
	}
	return intervalSchedule{every: d}, nil
}

// intervalSchedule runs a backup when the last successful one started
// `every` ago: anchoring on the repository's newest backup, not on the
// agent's start, keeps restarts from adding backups or resetting the clock.
type intervalSchedule struct{ every time.Duration }

func (s intervalSchedule) next(lastSuccess, now time.Time) time.Time {
	if lastSuccess.IsZero() {
		return now
	}
	return lastSuccess.Add(s.every)
}

func (s intervalSchedule) String() string {
	return "every " + pitr.FormatDays(s.every) + " after the last backup started"
}

// cronSchedule is a classic five-field cron expression. As in Vixie cron,
// when both day of month and day of week are restricted, a day matching
// either runs; a local time skipped by a daylight saving change is skipped.
type cronSchedule struct {
	spec                         string
	loc                          *time.Location
	minute, hour, dom, month, dw uint64 // bit n set: value n matches
	domStar, dowStar             bool   // field starts with "*": not a restriction
}

var cronMacros = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

var (
	monthNames = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	dayNames   = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
)

func parseCron(spec string, loc *time.Location) (*cronSchedule, error) {
	expr := spec
	if strings.HasPrefix(spec, "@") {
		m, ok := cronMacros[strings.ToLower(spec)]
		if !ok {
			return nil, fmt.Errorf("unknown macro (want @hourly, @daily, @weekly, @monthly or @yearly)")
		}
		expr = m
	}
	f := strings.Fields(expr)
	if len(f) != 5 {
		return nil, fmt.Errorf("want 5 fields (minute hour day-of-month month day-of-week), got %d", len(f))
	}
	c := &cronSchedule{spec: spec, loc: loc}
	var err error
	if c.minute, err = parseCronField(f[0], 0, 59, nil); err != nil {
		return nil, fmt.Errorf("minute: %w", err)
	}
	if c.hour, err = parseCronField(f[1], 0, 23, nil); err != nil {
		return nil, fmt.Errorf("hour: %w", err)
	}
	if c.dom, err = parseCronField(f[2], 1, 31, nil); err != nil {
		return nil, fmt.Errorf("day of month: %w", err)
	}
	if c.month, err = parseCronField(f[3], 1, 12, monthNames); err != nil {
		return nil, fmt.Errorf("month: %w", err)
	}
	if c.dw, err = parseCronField(f[4], 0, 7, dayNames); err != nil {
		return nil, fmt.Errorf("day of week: %w", err)
	}
	if c.dw&(1<<7) != 0 { // 7 is Sunday too
		c.dw |= 1
	}
	c.domStar, c.dowStar = strings.HasPrefix(f[2], "*"), strings.HasPrefix(f[4], "*")
	// Catch "0 0 31 2 *" now rather than by waiting forever.
	if c.nextAfter(time.Date(2000, 1, 1, 0, 0, 0, 0, loc)).IsZero() {
		return nil, errors.New("never matches a date")
	}
	return c, nil
}

// parseCronField parses a comma-separated list of *, N, N-M, with an
// optional /STEP, into a bit set. names, if given, are accepted for the
// values from lo on (jan=1, sun=0).
func parseCronField(field string, lo, hi int, names []string) (uint64, error) {
	var set uint64
	for _, item := range strings.Split(field, ",") {
		rng, stepStr, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepStr)
			if err != nil || n <= 0 || n > hi {
				return 0, fmt.Errorf("step %q is not a number from 1 to %d", stepStr, hi)
			}
			step = n
		}
		var from, to int
		switch {
		case rng == "*":
			from, to = lo, hi
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if from, err = cronValue(a, lo, hi, names); err != nil {
				return 0, err
			}
			if to, err = cronValue(b, lo, hi, names); err != nil {
				return 0, err
			}
			if to < from {
				return 0, fmt.Errorf("range %q goes backwards", rng)
			}
		default:
			v, err := cronValue(rng, lo, hi, names)
			if err != nil {
				return 0, err
			}
			from, to = v, v
			if hasStep { // "5/15" means 5-hi/15
				to = hi
			}
		}
		for v := from; v <= to; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, nil
}

func cronValue(s string, lo, hi int, names []string) (int, error) {
	for i, n := range names {
		if strings.EqualFold(s, n) {
			if names[0] == "jan" {
				return i + 1, nil
			}
			return i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("%q is not a value from %d to %d", s, lo, hi)
	}
	return v, nil
}

func (c *cronSchedule) next(_, now time.Time) time.Time { return c.nextAfter(now) }

func (c *cronSchedule) String() string {
	return fmt.Sprintf("cron %q (%s)", c.spec, c.loc)
}

func (c *cronSchedule) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<uint(t.Day())) != 0
	dow := c.dw&(1<<uint(t.Weekday())) != 0
	switch {
	case c.domStar && c.dowStar:
		return true
	case c.domStar:
		return dow
	case c.dowStar:
		return dom
	}
	return dom || dow
}

// nextAfter returns the first matching minute strictly after t, or zero if
// there is none within 5 years. It skips a whole month, day or hour at a time
// when that field does not match, so it takes at most a few thousand steps.
func (c *cronSchedule) nextAfter(t time.Time) time.Time {
	t = t.In(c.loc)
	t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, c.loc).Add(time.Minute)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		prev := t
		switch {
		case c.month&(1<<uint(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, c.loc)
		case !c.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, c.loc)
		case c.hour&(1<<uint(t.Hour())) == 0:
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, c.loc)
		case c.minute&(1<<uint(t.Minute())) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
		// Around a daylight saving change the wall clock can normalise
		// back to where we were; step forward in absolute time instead.
		if !t.After(prev) {
			t = prev.Add(time.Minute)
		}
	}
	return time.Time{}
}
