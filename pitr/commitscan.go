package pitr

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/pitr-dev/pitr/internal/lazyre"
)

// CommitScanner reads transaction records out of archived WAL with the
// pg_waldump of the backup's major version.
type CommitScanner struct {
	Waldump string // path of pg_waldump
	// Fetch restores one archived WAL file to dest (archive.Archiver.Fetch).
	Fetch func(ctx context.Context, name, dest string) error
	Dir   string // scratch directory for one segment at a time
}

// xactRecord matches pg_waldump's description of a commit or abort record
// (prepared or not) and its timestamp, printed in UTC because pg_waldump
// runs with TZ=UTC.
var xactRecord = lazyre.New(`desc: (?:COMMIT|ABORT)(?:_PREPARED)?\b.*?(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) UTC`)

// ErrNoCommitAfterTarget means the archive holds no transaction commit or
// abort after a time target: PostgreSQL stops only at such a record, so it
// would replay everything and then fail with FATAL "recovery ended before
// configured recovery target was reached".
type ErrNoCommitAfterTarget struct {
	Target     time.Time
	Scanned    int
	From, To   string
	LastCommit time.Time // zero if the scanned WAL holds none
}

func (e *ErrNoCommitAfterTarget) Error() string {
	last := "none in the scanned WAL"
	if !e.LastCommit.IsZero() {
		last = FormatPGTime(e.LastCommit)
	}
	return fmt.Sprintf("no transaction committed after the target %s is in the archive (scanned %d segments %s .. %s with pg_waldump; newest commit found: %s), so PostgreSQL would replay it all and stop with FATAL \"recovery ended before configured recovery target was reached\"; choose an earlier target, --target latest, or --skip-target-check",
		FormatPGTime(e.Target), e.Scanned, e.From, e.To, last)
}

// CheckCommitAfterTarget proves, for a time target, that a commit or abort
// after the target is archived, reading the plan's tail segments and
// stopping at the first one that has it. The planner alone cannot tell:
// archive times bound when WAL was written, not when the last commit was,
// and an idle database keeps writing WAL (checkpoints, switches) without
// commits. Any other target, or a plan without a tail, needs no scan.
//
// Recovery stops at the first such record in WAL order, but any one proves
// that it stops, so the scan goes from the newest segment back: that one
// holds the newest commits. From the oldest, it read every segment that
// archiving lag had completed before the target: ten, half a second, in
// the benchmark's restore.
func (p Plan) CheckCommitAfterTarget(ctx context.Context, s CommitScanner) error {
	if p.Target.Kind != TargetTime || len(p.Tail) == 0 {
		return nil
	}
	var last time.Time
	fetched := map[string]bool{}
	fetch := func(name string) error {
		if fetched[name] {
			return nil
		}
		if err := s.Fetch(ctx, name, filepath.Join(s.Dir, name)); err != nil {
			return fmt.Errorf("fetch %s to look for a commit after the target: %w", name, err)
		}
		fetched[name] = true
		return nil
	}
	for i := len(p.Tail) - 1; i >= 0; i-- {
		f := p.Tail[i]
		// The next segment is there too, so a record that starts here and
		// ends there is read whole.
		if err := fetch(f.Name); err != nil {
			return err
		}
		if i+1 < len(p.Tail) {
			if err := fetch(p.Tail[i+1].Name); err != nil {
				return err
			}
		}
		times, err := s.commitTimes(ctx, f.Name)
		if i+1 < len(p.Tail) {
			os.Remove(filepath.Join(s.Dir, p.Tail[i+1].Name))
			delete(fetched, p.Tail[i+1].Name)
		}
		if err != nil {
			return err
		}
		for _, t := range times {
			if t.After(p.Target.Time) {
				return nil
			}
			if t.After(last) {
				last = t
			}
		}
	}
	return &ErrNoCommitAfterTarget{Target: p.Target.Time, Scanned: len(p.Tail), From: p.Tail[0].Name, To: p.Tail[len(p.Tail)-1].Name, LastCommit: last}
}

// commitTimes lists the commit/abort timestamps in one segment.
func (s CommitScanner) commitTimes(ctx context.Context, name string) ([]time.Time, error) {
	cmd := exec.CommandContext(ctx, s.Waldump, "--rmgr=Transaction", "--path", s.Dir, name)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// pg_waldump reports an error when the last record of the segment
		// continues into the next one, which is not here: what it printed
		// before that is still valid, and nothing is missed at the end (a
		// record belongs to the segment it starts in, scanned in order).
		if stdout.Len() == 0 && !bytes.Contains(stderr.Bytes(), []byte("could not find file")) &&
			!bytes.Contains(stderr.Bytes(), []byte("invalid record length")) && !bytes.Contains(stderr.Bytes(), []byte("error in WAL record")) {
			return nil, fmt.Errorf("pg_waldump %s: %v: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
		}
	}
	var out []time.Time
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		m := xactRecord().FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		t, err := time.Parse("2006-01-02 15:04:05.999999", string(m[1]))
		if err != nil {
			continue
		}
		out = append(out, t)
	}
	return out, sc.Err()
}
