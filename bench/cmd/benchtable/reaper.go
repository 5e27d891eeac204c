package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/bench/internal/runas"
)

// The reaper is this program run as the cluster user around one measured
// command ("benchtable -reap FILE -- cmd args..."). Both tools leave
// processes behind that do part of the work: pgBackRest's archive-async
// daemons, pitr's prefetcher. The reaper is a child subreaper, so those
// orphans become its children; it reaps them and the command alike, and
// its RUSAGE_CHILDREN is then the CPU of everything the command started.
//
// Protocol on fd 3: "fg <exit status> <wall ns> <peak RSS KiB>" as soon as
// the command itself exits (the caller goes on), then "done <CPU ns>
// <largest orphan's peak RSS KiB>" once every descendant has exited.
// The command runs under GNU time, whose %M is its peak RSS: the rusage of
// a process a Go program started reports the parent's RSS (vfork).

const prSetChildSubreaper = 36

func reapMain(rssFile string, argv []string) int {
	syscall.CloseOnExec(3) // not for the command and its daemons
	res := os.NewFile(3, "result")
	if res == nil || len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable -reap: needs fd 3 and a command")
		return 2
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Fprintf(os.Stderr, "benchtable -reap: prctl(PR_SET_CHILD_SUBREAPER): %v\n", e)
		return 2
	}
	// On SIGTERM (the caller gave up waiting) kill what is left.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		for _, pid := range childPIDs(os.Getpid()) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	cmd := exec.Command(runas.GNUTime, append([]string{"-f", "%M", "-o", rssFile}, argv...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "benchtable -reap: %v\n", err)
		return 2
	}
	fg := cmd.Process.Pid
	var orphanRSS int64
	for {
		var ws syscall.WaitStatus
		var ru syscall.Rusage
		pid, err := syscall.Wait4(-1, &ws, 0, &ru)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil { // ECHILD: nothing left
			break
		}
		if pid == fg {
			wall := time.Since(start)
			fmt.Fprintf(res, "fg %d %d %d\n", ws.ExitStatus(), wall.Nanoseconds(), readGNUTimeRSS(rssFile))
			continue
		}
		orphanRSS = max(orphanRSS, ru.Maxrss)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Fprintf(res, "done %d %d\n", cpu.Nanoseconds(), orphanRSS)
	return 0
}

// readGNUTimeRSS returns GNU time's %M (KiB), 0 if unreadable.
func readGNUTimeRSS(p string) int64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	// "Command exited with non-zero status N" comes first then.
	n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
	return n
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PPid:"); ok {
				if pp, _ := strconv.Atoi(strings.TrimSpace(v)); pp == pid {
					out = append(out, p)
				}
				break
			}
		}
		f.Close()
	}
	return out
}

// call is one measured invocation, started through the reaper.
type call struct {
	cmd     *exec.Cmd
	r       *bufio.Reader
	wall    time.Duration
	status  int
	fgRSS   int64 // bytes
	cpu     time.Duration
	orphRSS int64 // bytes
	out     *strings.Builder
}

// startCall runs argv through the reaper (self, a copy the cluster user can
// execute) as the user, in dir, with extra environment, and returns once
// the command itself has exited; finish collects the rest.
func (b *bench) startCall(dir string, env []string, argv ...string) (*call, error) {
	rss := fmt.Sprintf("%s/gnutime-%d", b.scratch, time.Now().UnixNano())
	args := append([]string{"-reap", rss, "--"}, argv...)
	cmd := b.u.Command(b.ctx, dir, b.binDir, b.self, args...)
	cmd.Env = append(cmd.Env, env...)
	defer os.Remove(rss)
	return launch(cmd, argv)
}

// launch starts cmd, a reaper running argv, and waits for argv's exit.
func launch(cmd *exec.Cmd, argv []string) (*call, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pw.Close()
	cmd.ExtraFiles = []*os.File{pw}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	// Started in its own process group: a Ctrl-C of the bench reaches the
	// reaper through the context, not twice.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		pr.Close()
		return nil, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	c := &call{cmd: cmd, r: bufio.NewReader(pr), out: out}
	line, err := c.r.ReadString('\n')
	var wallNS, rssKB int64
	if _, serr := fmt.Sscanf(line, "fg %d %d %d", &c.status, &wallNS, &rssKB); err != nil || serr != nil {
		_ = cmd.Wait()
		pr.Close()
		return nil, fmt.Errorf("%s: reaper: %q %v: %s", strings.Join(argv, " "), line, err, out.String())
	}
	c.wall, c.fgRSS = time.Duration(wallNS), rssKB<<10
	return c, nil
}

// finish waits (up to grace, then kills what is left) for every process the
// command left behind and records their CPU.
func (c *call) finish(grace time.Duration) error {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		l, err := c.r.ReadString('\n')
		ch <- result{l, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(grace):
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		r = <-ch
	}
	werr := c.cmd.Wait()
	var cpuNS, rssKB int64
	if _, err := fmt.Sscanf(r.line, "done %d %d", &cpuNS, &rssKB); err != nil {
		return fmt.Errorf("reaper: %q %v %v: %s", r.line, r.err, werr, c.out.String())
	}
	c.cpu, c.orphRSS = time.Duration(cpuNS), rssKB<<10
	return nil
}
