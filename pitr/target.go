// Package pitr plans and performs point-in-time recovery: it is the only
// package that sees both base backups and archived WAL.
package pitr

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/internal/lazyre"
)

// TargetKind says where recovery should stop.
type TargetKind int

const (
	TargetTime      TargetKind = iota + 1 // recovery_target_time
	TargetLSN                             // recovery_target_lsn
	TargetXID                             // recovery_target_xid
	TargetName                            // recovery_target_name (a restore point)
	TargetImmediate                       // recovery_target = 'immediate': end of the backup
	TargetLatest                          // no target: replay the whole archive
)

func (k TargetKind) String() string {
	switch k {
	case TargetTime:
		return "time"
	case TargetLSN:
		return "lsn"
	case TargetXID:
		return "xid"
	case TargetName:
		return "name"
	case TargetImmediate:
		return "immediate"
	case TargetLatest:
		return "latest"
	}
	return fmt.Sprintf("target(%d)", int(k))
}

// Action is recovery_target_action.
type Action string

const (
	ActionPromote  Action = "promote"
	ActionPause    Action = "pause"
	ActionShutdown Action = "shutdown"
)

// ParseAction validates a --target-action value.
func ParseAction(s string) (Action, error) {
	switch a := Action(strings.ToLower(strings.TrimSpace(s))); a {
	case "":
		return ActionPromote, nil
	case ActionPromote, ActionPause, ActionShutdown:
		return a, nil
	}
	return "", fmt.Errorf("target action %q is not promote, pause or shutdown", s)
}

// Target is a validated recovery target.
type Target struct {
	Kind TargetKind
	Time time.Time // TargetTime: an absolute instant
	// Zone describes how a time without an explicit zone was read, for the
	// plan's explanation ("Europe/Helsinki (local)").
	Zone string
	LSN  wal.LSN
	XID  uint64
	Name string
	// Exclusive stops just before the target instead of just after it
	// (recovery_target_inclusive = off); time, LSN and xid targets only.
	Exclusive bool
	// Timeline is the requested recovery_target_timeline: 0 means latest
	// (the newest timeline the chosen backup can reach); CurrentTimeline
	// means the backup's own timeline.
	Timeline wal.TimelineID
	Action   Action
}

// CurrentTimeline is the Target.Timeline value for "current".
const CurrentTimeline = wal.TimelineID(^uint32(0))

// ParseTimeline parses --target-timeline: latest, current, a decimal number
// or 0x-prefixed hex, as recovery_target_timeline accepts.
func ParseTimeline(s string) (wal.TimelineID, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "", "latest":
		return 0, nil
	case "current":
		return CurrentTimeline, nil
	}
	base := 10
	if strings.HasPrefix(s, "0x") {
		s, base = s[2:], 16
	}
	n, err := strconv.ParseUint(s, base, 32)
	if err != nil || n == 0 || n == uint64(CurrentTimeline) {
		return 0, fmt.Errorf("target timeline %q is not latest, current or a timeline number", s)
	}
	return wal.TimelineID(n), nil
}

// timePattern is YYYY-MM-DD[ T]HH:MM[:SS[.fraction]] followed by an
// optional zone, which is everything after the time.
var timePattern = lazyre.New(`^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)\s*(.*)$`)
var offsetPattern = lazyre.New(`^([+-])(\d{2})(?::?(\d{2}))?$`)

// ParseTargetTime reads a user's --target time. A time without a zone is in
// defaultZone (the --tz flag, else the zone of the machine running pitr).
// Zones may be Z/UTC, a numeric offset (+03, +03:00, -0530) or an IANA name
// (Europe/Helsinki). Abbreviations such as EEST or CET are refused: they are
// ambiguous, and PostgreSQL itself rejects them in recovery_target_time.
func ParseTargetTime(s string, defaultZone *time.Location) (time.Time, string, error) {
	m := timePattern().FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return time.Time{}, "", fmt.Errorf("target time %q is not YYYY-MM-DD HH:MM[:SS] with an optional zone", s)
	}
	date, clock, zone := m[1], m[2], strings.TrimSpace(m[3])
	if strings.Count(clock, ":") == 1 {
		clock += ":00"
	}
	layout := "2006-01-02 15:04:05.999999999"
	var loc *time.Location
	var zoneDesc string
	switch {
	case zone == "":
		loc = defaultZone
	case strings.EqualFold(zone, "Z") || strings.EqualFold(zone, "UTC") || strings.EqualFold(zone, "GMT"):
		loc, zoneDesc = time.UTC, "UTC"
	case offsetPattern().MatchString(zone):
		om := offsetPattern().FindStringSubmatch(zone)
		h, _ := strconv.Atoi(om[2])
		mins, _ := strconv.Atoi(om[3])
		if h > 15 || mins > 59 {
			return time.Time{}, "", fmt.Errorf("target time %q: offset %s is out of range", s, zone)
		}
		secs := h*3600 + mins*60
		if om[1] == "-" {
			secs = -secs
		}
		loc, zoneDesc = time.FixedZone(zone, secs), "offset "+zone
	case strings.Contains(zone, "/"):
		l, err := time.LoadLocation(zone)
		if err != nil {
			return time.Time{}, "", fmt.Errorf("target time %q: unknown time zone %q", s, zone)
		}
		loc, zoneDesc = l, zone
	default:
		return time.Time{}, "", fmt.Errorf("target time %q: zone %q is an abbreviation or unknown; use a numeric offset (+03:00) or a zone name (Europe/Helsinki)", s, zone)
	}
	t, err := time.ParseInLocation(layout, date+" "+clock, loc)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("target time %q: %v", s, err)
	}
	// FormatPGTime writes UTC with a four-digit year; PostgreSQL has no
	// year 0 (found by fuzzing: 9999-12-31 23:59 -15 is year 10000 in UTC).
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return time.Time{}, "", fmt.Errorf("target time %q is out of range (years 0001 to 9999 in UTC)", s)
	}
	if zone == "" {
		// Name the zone concretely: "Local" says nothing to someone reading
		// the plan on the worst night of their year.
		name := loc.String()
		if name == "Local" || name == "" {
			name, _ = t.Zone()
		}
		zoneDesc = fmt.Sprintf("%s, UTC%s (no zone given; set --tz or add one)", name, t.Format("-07:00"))
	}
	// A wall time that does not exist (inside a DST gap) is normalised by
	// Go; say so rather than restore to a time the user did not write.
	if got := t.Format("2006-01-02 15:04:05"); !strings.HasPrefix(date+" "+clock, got[:16]) {
		return time.Time{}, "", fmt.Errorf("target time %q does not exist in %s (daylight saving gap)", s, loc)
	}
	return t, zoneDesc, nil
}

// FormatPGTime renders an instant for recovery_target_time: UTC with an
// explicit numeric offset and microseconds, which PostgreSQL reads the same
// whatever the restored server's timezone setting is.
func FormatPGTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
}
