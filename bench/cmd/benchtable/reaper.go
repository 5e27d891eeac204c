package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/bench/internal/runas"
)

// Every measured command runs under benchreap (bench/cmd/benchreap), a
// child subreaper that reports the command's exit, wall time and peak RSS,
// then the CPU of everything it left behind once that has exited too.

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

// startCall runs argv through the reaper as the user, in dir, with extra environment, and returns once
// the command itself has exited; finish collects the rest.
func (b *bench) startCall(dir string, env []string, argv ...string) (*call, error) {
	rss := fmt.Sprintf("%s/gnutime-%d", b.scratch, time.Now().UnixNano())
	args := append([]string{runas.GNUTime, rss, "--"}, argv...)
	cmd := b.u.Command(b.ctx, dir, b.binDir, b.reaper, args...)
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
