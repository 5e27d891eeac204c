package pitr

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/pitr-dev/pitr/internal/units"
)

// Describe writes the plan the way a person checks it before the worst
// restore of their year: what, from where, why, and what PostgreSQL is told.
func (p Plan) Describe(w io.Writer) {
	b := p.Backup
	fmt.Fprintf(w, "Recovery plan\n")
	fmt.Fprintf(w, "  target:    %s", describeTarget(p.Target))
	if p.Target.Zone != "" {
		fmt.Fprintf(w, " (time read in %s)", p.Target.Zone)
	}
	if p.Target.Exclusive {
		fmt.Fprintf(w, ", exclusive")
	}
	fmt.Fprintf(w, ", then %s\n", p.Target.Action)
	fmt.Fprintf(w, "  backup:    %s: %s\n", b.Name, p.BackupReason)
	fmt.Fprintf(w, "             taken %s .. %s, WAL %s .. %s on timeline %d, PostgreSQL %s\n",
		FormatPGTime(b.StartTime), FormatPGTime(b.StopTime), b.StartLSN, b.StopLSN, b.StopTimeline, units.PGVersion(b.PGVersionNum))
	fmt.Fprintf(w, "  timeline:  %d", p.Timeline)
	if len(p.Path) > 1 {
		var hops []string
		for _, s := range p.Path {
			if s.End != 0 {
				hops = append(hops, fmt.Sprintf("%d until %s", s.TLI, s.End))
			} else {
				hops = append(hops, fmt.Sprintf("then %d", s.TLI))
			}
		}
		fmt.Fprintf(w, " (%s)", strings.Join(hops, ", "))
	}
	fmt.Fprintln(w)
	if n := len(p.WAL); n > 0 {
		more := ""
		if p.MayReadMore {
			more = "; recovery may read further segments until it finds the stop point"
		}
		fmt.Fprintf(w, "  WAL:       %d segments %s .. %s, all in the archive%s\n", n, p.WAL[0].Name, p.WAL[n-1].Name, more)
	}
	if p.Partial != "" {
		fmt.Fprintf(w, "  partial:   %s (pitr stream's segment in progress) ends the WAL: recovery replays it to its last complete record\n", p.Partial)
	}
	fmt.Fprintf(w, "  download:  %s\n", units.Bytes(p.DownloadBytes))
	fmt.Fprintf(w, "  settings:\n")
	for _, s := range p.Settings {
		fmt.Fprintf(w, "    %s = %s\n", s.Name, quoteConf(s.Value))
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// quoteConf quotes a value for postgresql.conf syntax.
func quoteConf(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

func describeTarget(t Target) string {
	switch t.Kind {
	case TargetTime:
		return "time " + FormatPGTime(t.Time)
	case TargetLSN:
		return "lsn " + t.LSN.String()
	case TargetXID:
		return "xid " + strconv.FormatUint(t.XID, 10)
	case TargetName:
		return "restore point " + strconv.Quote(t.Name)
	}
	return t.Kind.String()
}
