package runas

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// GNUTime is GNU time, used to measure peak RSS: the kernel's rusage of a
// process started by a (large) Go process reports the parent's RSS as the
// child's peak, because Go starts children with vfork (CLONE_VM) and exec
// records the shared address space's high-water mark. GNU time forks a copy
// of its own small address space instead.
const GNUTime = "/usr/bin/time"

// TreeUsage is what one long-running command cost: its Usage (wall, and the
// CPU of the command and every descendant it waited for), the peak RSS of
// its largest single process (GNU time's %M, which for a process tree is the
// maximum over the processes, not their sum), and the peak of the summed
// RSS of the whole process tree, sampled.
type TreeUsage struct {
	Usage
	MaxRSS  int64 // bytes; largest single process (GNU time)
	TreeRSS int64 // bytes; peak of the sum over the process tree, sampled
	Samples int
}

// MeasureTree runs cmd under GNU time (which must exist) and samples the RSS
// of its process tree every interval (e.g. 50 ms) from /proc; scratch is a
// directory the cluster user can write (GNU time's output goes there). cmd
// must exit with status want. Wall time includes GNU time's own start, about
// a millisecond.
func MeasureTree(cmd *exec.Cmd, want int, scratch string, interval time.Duration) (TreeUsage, string, error) {
	out := filepath.Join(scratch, fmt.Sprintf(".gnutime-%d", time.Now().UnixNano()))
	defer os.Remove(out)
	args := append([]string{GNUTime, "-f", "%M", "-o", out, cmd.Path}, cmd.Args[1:]...)
	cmd.Path, cmd.Args = GNUTime, args

	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return TreeUsage{}, "", fmt.Errorf("%s: %w", cmd.Path, err)
	}
	var (
		wg      sync.WaitGroup
		peak    int64
		samples int
		stop    = make(chan struct{})
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			// The root is GNU time itself: count only its descendants.
			rss := treeRSS(cmd.Process.Pid, false)
			peak = max(peak, rss)
			samples++
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	err := cmd.Wait()
	wall := time.Since(start)
	close(stop)
	wg.Wait()

	tu := TreeUsage{TreeRSS: peak, Samples: samples}
	if ps := cmd.ProcessState; ps != nil {
		tu.Usage = Usage{Wall: wall, User: ps.UserTime(), Sys: ps.SystemTime()}
	}
	var ee *exec.ExitError
	switch {
	case err == nil && want == 0:
	case err == nil:
		return tu, buf.String(), &ExitError{Cmd: strings.Join(cmd.Args[5:], " "), Code: 0, Output: buf.String()}
	case errors.As(err, &ee) && ee.ExitCode() == want:
	case errors.As(err, &ee):
		return tu, buf.String(), &ExitError{Cmd: strings.Join(cmd.Args[5:], " "), Code: ee.ExitCode(), Output: buf.String()}
	default:
		return tu, buf.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(buf.String()))
	}
	b, rerr := os.ReadFile(out)
	if rerr != nil {
		return tu, buf.String(), rerr
	}
	// GNU time prints "Command exited with non-zero status N" first then.
	f := strings.Fields(strings.TrimSpace(string(b)))
	if len(f) == 0 {
		return tu, buf.String(), fmt.Errorf("empty output from %s", GNUTime)
	}
	kb, perr := strconv.ParseInt(f[len(f)-1], 10, 64)
	if perr != nil {
		return tu, buf.String(), fmt.Errorf("%s output %q: %w", GNUTime, b, perr)
	}
	tu.MaxRSS = kb << 10
	return tu, buf.String(), nil
}

var pageSize = int64(os.Getpagesize())

// treeRSS sums the resident set of pid's descendants (and pid itself when
// self), following /proc/<pid>/task/<tid>/children.
func treeRSS(pid int, self bool) int64 {
	var total int64
	if self {
		total += rssOf(pid)
	}
	for _, c := range childrenOf(pid) {
		total += treeRSS(c, true)
	}
	return total
}

func childrenOf(pid int) []int {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// rssOf is the resident set size of pid from /proc/<pid>/statm.
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n * pageSize
}

// ChildrenCPU is the CPU time of pid's children that it has waited for
// (cutime + cstime of /proc/<pid>/stat). For a postmaster this is the CPU of
// every backend (walsender, client connections, a finished startup process
// with the restore_command children it ran) that has exited.
func ChildrenCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after ")" are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); cutime and cstime are fields 16 and 17.
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	cu, err1 := strconv.ParseInt(f[13], 10, 64)
	cs, err2 := strconv.ParseInt(f[14], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad cutime/cstime", pid)
	}
	return time.Duration(cu+cs) * 10 * time.Millisecond, nil // USER_HZ is 100 on Linux
}
