package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/internal/units"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// Policy is the retention of dump runs.
type Policy struct {
	// Keep keeps, for every database, the runs holding its Keep newest dumps.
	Keep int
	// KeepWithin keeps every run that ended within it.
	KeepWithin time.Duration
	// IncompleteAfter is how long a run without metadata must be unchanged
	// before it counts as dead (its heartbeat is refreshed every 30 s).
	IncompleteAfter time.Duration
}

// ErrNoPolicy means neither Keep nor KeepWithin is set.
var ErrNoPolicy = errors.New("no dump retention policy configured (dump_keep, dump_keep_within)")

// Validate refuses an empty policy: pruning would have to guess.
func (p Policy) Validate() error {
	if p.Keep < 0 || p.KeepWithin < 0 {
		return errors.New("dump retention: negative values")
	}
	if p.Keep == 0 && p.KeepWithin == 0 {
		return ErrNoPolicy
	}
	return nil
}

// PrunePlan is what PlanPrune decided.
type PrunePlan struct {
	Policy     Policy
	Keep       []Decision
	Delete     []Run
	Incomplete []Incomplete
}

// Decision is a kept run and why.
type Decision struct {
	Run     Run
	Reasons []string
}

// Empty reports whether the plan deletes nothing.
func (p PrunePlan) Empty() bool { return len(p.Delete) == 0 && len(p.Incomplete) == 0 }

// PlanPrune decides which runs stay: for each database, the runs holding
// its p.Keep newest dumps; every run that ended within p.KeepWithin of now;
// and always the run holding each database's newest dump (a database whose
// dumps stopped, dropped or excluded, keeps its last one). A run is kept
// whole (its globals too) if any of its databases keeps it. Runs without
// metadata go once unchanged for p.IncompleteAfter on the repository's
// clock (repoNow; now if zero).
func PlanPrune(l Listing, p Policy, now, repoNow time.Time) (PrunePlan, error) {
	plan := PrunePlan{Policy: p}
	if err := p.Validate(); err != nil {
		return plan, err
	}
	reasons := map[string][]string{}
	add := func(name, why string) {
		for _, r := range reasons[name] {
			if r == why {
				return
			}
		}
		reasons[name] = append(reasons[name], why)
	}
	runs := append([]Run(nil), l.Runs...)
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].StartTime.After(runs[j].StartTime) }) // newest first
	seen := map[string]int{}
	for _, r := range runs {
		for _, d := range r.Databases {
			seen[d.Name]++
			if seen[d.Name] == 1 {
				add(r.Name, "newest dump of "+d.Name)
			}
			if p.Keep > 0 && seen[d.Name] <= p.Keep {
				add(r.Name, fmt.Sprintf("one of the newest %d of %s", p.Keep, d.Name))
			}
		}
		if p.KeepWithin > 0 && now.Sub(r.StopTime) <= p.KeepWithin {
			add(r.Name, "ended within "+formatDays(p.KeepWithin))
		}
	}
	if len(runs) > 0 && len(reasons[runs[0].Name]) == 0 {
		add(runs[0].Name, "newest dump run")
	}
	for i := len(runs) - 1; i >= 0; i-- {
		r := runs[i]
		if why := reasons[r.Name]; len(why) > 0 {
			plan.Keep = append(plan.Keep, Decision{Run: r, Reasons: why})
		} else {
			plan.Delete = append(plan.Delete, r)
		}
	}
	after := p.IncompleteAfter
	if after <= 0 {
		after = 24 * time.Hour
	}
	clock := repoNow
	if clock.IsZero() {
		clock = now
	}
	for _, inc := range l.Incomplete {
		if clock.Sub(inc.LastWrite) > after {
			plan.Incomplete = append(plan.Incomplete, inc)
		}
	}
	return plan, nil
}

// Describe prints the plan for people (prune's output and --dry-run).
func (p PrunePlan) Describe(w io.Writer, dryRun bool) {
	var rules []string
	if p.Policy.Keep > 0 {
		rules = append(rules, fmt.Sprintf("the newest %d dumps of each database", p.Policy.Keep))
	}
	if p.Policy.KeepWithin > 0 {
		rules = append(rules, "dumps that ended within "+formatDays(p.Policy.KeepWithin))
	}
	fmt.Fprintf(w, "Dump retention: keep %s\n", strings.Join(rules, ", and "))
	fmt.Fprintf(w, "Keep %d dump runs:\n", len(p.Keep))
	for _, k := range p.Keep {
		fmt.Fprintf(w, "  %-20s %-30s %9s  %s\n", k.Run.Name, databaseNames(k.Run), units.Bytes(k.Run.StoredSize), strings.Join(k.Reasons, "; "))
	}
	verb := "Delete"
	if dryRun {
		verb = "Would delete"
	}
	if len(p.Delete) > 0 {
		fmt.Fprintf(w, "%s %d dump runs:\n", verb, len(p.Delete))
		for _, r := range p.Delete {
			fmt.Fprintf(w, "  %-20s %-30s %9s\n", r.Name, databaseNames(r), units.Bytes(r.StoredSize))
		}
	}
	for _, inc := range p.Incomplete {
		fmt.Fprintf(w, "%s incomplete dump %s (last written %s)\n", verb, inc.Name, inc.LastWrite.UTC().Format(time.RFC3339))
	}
}

func databaseNames(r Run) string {
	var names []string
	for _, d := range r.Databases {
		names = append(names, d.Name)
	}
	s := strings.Join(names, ",")
	if len(s) > 30 {
		s = s[:27] + "..."
	}
	return s
}

// ExecutePrune deletes what the plan says, each run's dump.json first so
// that a prune cut short leaves no run that looks complete and is not.
// An incomplete run is listed again just before deletion and left alone if
// it completed or was written to since.
func ExecutePrune(ctx context.Context, st storage.Store, id repo.SystemID, plan PrunePlan, log *slog.Logger) (runs, incomplete int, err error) {
	for _, r := range plan.Delete {
		objs, err := st.List(ctx, repo.DumpPrefix(id)+r.Name+"/")
		if err != nil {
			return runs, incomplete, fmt.Errorf("list dump %s: %w", r.Name, err)
		}
		locked, kept, err := deleteRun(ctx, st, id, r.Name, objs)
		if err != nil {
			return runs, incomplete, err
		}
		if kept {
			log.Warn("dump is under retention (object lock); kept until it ends", "dump", r.Name)
			continue
		}
		if locked > 0 {
			log.Warn("dump deleted, but some of its objects are under retention (object lock); a later prune removes them", "dump", r.Name, "locked", locked)
		}
		runs++
		log.Info("deleted dump", "dump", r.Name, "stored", r.StoredSize)
	}
	for _, inc := range plan.Incomplete {
		objs, err := st.List(ctx, repo.DumpPrefix(id)+inc.Name+"/")
		if err != nil {
			return runs, incomplete, fmt.Errorf("list dump %s: %w", inc.Name, err)
		}
		changed := false
		for _, o := range objs {
			if strings.HasSuffix(o.Key, "/"+repo.DumpMetadataName) || o.ModTime.After(inc.LastWrite) {
				changed = true
			}
		}
		if changed {
			log.Info("incomplete dump changed since planning; left alone", "dump", inc.Name)
			continue
		}
		locked, _, err := deleteRun(ctx, st, id, inc.Name, objs)
		if err != nil {
			return runs, incomplete, err
		}
		if locked > 0 {
			log.Warn("incomplete dump is under retention (object lock); a later prune removes the rest", "dump", inc.Name, "locked", locked)
			continue
		}
		incomplete++
		log.Info("deleted incomplete dump", "dump", inc.Name, "objects", len(objs))
	}
	return runs, incomplete, nil
}

func formatDays(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
