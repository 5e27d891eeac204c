// Command benchreap runs one command that benchtable measures, and collects
// the CPU of everything the command started ("benchreap GNU_TIME RSS_FILE --
// cmd args..."). Both tools leave processes behind that do part of the
// work: pgBackRest's archive-async daemons, pitr's background archiver and
// prefetcher. benchreap is a child subreaper, so those orphans become its
// children; it reaps them and the command alike, and its RUSAGE_CHILDREN is
// then the CPU of everything the command started.
//
// It is a program of its own, importing only the standard library, because
// it starts once per measured call, as PostgreSQL starts a shell once per
// archive_command and restore_command: as part of benchtable, with its
// database and S3 clients, a call around /bin/true took 6.5 ms of CPU; alone,
// 3.6 ms, GNU time and /bin/true included, closer to the shell PostgreSQL
// uses. Both tools pay it alike.
//
// Protocol on fd 3: "fg <exit status> <wall ns> <peak RSS KiB>" as soon as
// the command itself exits (the caller goes on), then "done <CPU ns>
// <largest orphan's peak RSS KiB>" once every descendant has exited.
// The command runs under GNU time, whose %M is its peak RSS: the rusage of
// a process a Go program started reports the parent's RSS (vfork).
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
)

const prSetChildSubreaper = 36

func main() {
	if len(os.Args) < 5 || os.Args[3] != "--" {
		fmt.Fprintln(os.Stderr, "usage: benchreap GNU_TIME RSS_FILE -- command [args...] (fd 3: the result pipe)")
		os.Exit(2)
	}
	os.Exit(reap(os.Args[1], os.Args[2], os.Args[4:]))
}

func reap(gnuTime, rssFile string, argv []string) int {
	syscall.CloseOnExec(3) // not for the command and its daemons
	res := os.NewFile(3, "result")
	if res == nil {
		fmt.Fprintln(os.Stderr, "benchreap: needs fd 3")
		return 2
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		fmt.Fprintf(os.Stderr, "benchreap: prctl(PR_SET_CHILD_SUBREAPER): %v\n", e)
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
	cmd := exec.Command(gnuTime, append([]string{"-f", "%M", "-o", rssFile}, argv...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "benchreap: %v\n", err)
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
