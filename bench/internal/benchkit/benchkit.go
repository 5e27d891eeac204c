// Package benchkit holds what the benchmark programs share besides the
// corpus and running processes: building the pitr binary under test, and
// accounting for how busy the machine was meanwhile.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/bench/internal/runas"
)

// BuildPitr builds ./cmd/pitr (or copies given) into dir, where the cluster
// user can run it, and returns its path and a description of its revision.
func BuildPitr(ctx context.Context, given, dir string, logf func(string, ...any)) (path, rev string, err error) {
	dst := filepath.Join(dir, "pitr")
	if given == "" {
		logf("building pitr (go build ./cmd/pitr)")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", dst, "./cmd/pitr")
		if root, err := ModuleRoot(ctx); err == nil {
			cmd.Dir = root
		}
		if _, err := runas.Run(cmd); err != nil {
			return "", "", err
		}
	} else {
		b, err := os.ReadFile(given)
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return "", "", err
		}
	}
	if err := os.Chmod(dst, 0o755); err != nil {
		return "", "", err
	}
	rev = "unknown revision"
	if given != "" {
		rev = "binary " + given
	} else if root, err := ModuleRoot(ctx); err == nil {
		// GOFLAGS=-buildvcs=false leaves the binary unstamped; ask git
		// (read-only) instead.
		cmd := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD")
		cmd.Dir = root
		if out, err := runas.Run(cmd); err == nil {
			rev = "commit " + strings.TrimSpace(out) + " (plus any uncommitted changes)"
		}
	}
	if out, err := runas.Run(exec.CommandContext(ctx, "go", "version", "-m", dst)); err == nil {
		var r, mod string
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == "build" {
				if v, ok := strings.CutPrefix(f[1], "vcs.revision="); ok && len(v) >= 12 {
					r = v[:12]
				}
				if v, ok := strings.CutPrefix(f[1], "vcs.modified="); ok {
					mod = v
				}
			}
		}
		if r != "" {
			rev = "commit " + r
			if mod == "true" {
				rev += " + uncommitted changes"
			}
		}
	}
	return dst, rev, nil
}

// ModuleRoot is the directory of the go.mod of the working directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := runas.Run(exec.CommandContext(ctx, "go", "env", "GOMOD"))
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(out)
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// BuildReaper builds benchreap, the wrapper benchtable runs every measured
// command under, into dir and returns its path.
func BuildReaper(ctx context.Context, dir string) (string, error) {
	dst := filepath.Join(dir, "benchreap")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dst, "./bench/cmd/benchreap")
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	cmd.Dir = root
	if _, err := runas.Run(cmd); err != nil {
		return "", err
	}
	return dst, os.Chmod(dst, 0o755)
}

// Load measures how busy the machine was over an interval: Start, then
// Stop, with the CPU the measured processes used added in between.
type Load struct {
	start               time.Time
	busy0, total0       int64
	self0               time.Duration
	Elapsed             time.Duration
	Busy, Total         time.Duration // all CPUs, from /proc/stat
	Measured, Self      time.Duration // CPU of the measured processes, and of the benchmark itself
	measuredDescription string
}

// StartLoad starts measuring; describe names what Measured covers.
func StartLoad(describe string) *Load {
	l := &Load{start: time.Now(), measuredDescription: describe}
	l.busy0, l.total0 = cpuJiffies()
	l.self0 = selfCPU()
	return l
}

// Add counts CPU of a measured process.
func (l *Load) Add(d time.Duration) { l.Measured += d }

// Stop ends the interval.
func (l *Load) Stop() {
	b, t := cpuJiffies()
	l.Elapsed = time.Since(l.start)
	l.Busy, l.Total = jiffies(b-l.busy0), jiffies(t-l.total0)
	l.Self = selfCPU() - l.self0
}

// Other is the CPU used by everything not measured (other processes,
// kernel write-back), as a share of all CPUs.
func (l *Load) Other() float64 {
	if l.Total <= 0 {
		return 0
	}
	return max(l.Busy-l.Measured-l.Self, 0).Seconds() / l.Total.Seconds()
}

// BusyString is only how busy all CPUs were, for intervals where nothing
// is measured.
func (l *Load) BusyString() string {
	if l.Total <= 0 {
		return "unknown (no /proc/stat)"
	}
	return fmt.Sprintf("%.0f%% of all CPUs busy over %.0f s", 100*l.Busy.Seconds()/l.Total.Seconds(), l.Elapsed.Seconds())
}

func (l *Load) String() string {
	if l.Total <= 0 {
		return "unknown (no /proc/stat)"
	}
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / l.Total.Seconds() }
	return fmt.Sprintf("%.0f%% of all CPUs busy over %.0f s; %s %.0f%%, the benchmark itself %.0f%%, everything else (other processes, kernel write-back) %.0f%%",
		pct(l.Busy), l.Elapsed.Seconds(), l.measuredDescription, pct(l.Measured), pct(l.Self), 100*l.Other())
}

// cpuJiffies returns busy and total jiffies over all CPUs from /proc/stat.
func cpuJiffies() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		var n int64
		fmt.Sscan(v, &n)
		if i >= 8 { // guest time is already counted in user
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// BusyNow is the busy/total jiffies counter, for a quick instantaneous
// load reading around one measurement.
func BusyNow() (busy, total int64) { return cpuJiffies() }

// BusyShare is the share of all CPUs busy between two BusyNow readings.
func BusyShare(b0, t0, b1, t1 int64) float64 {
	if t1 <= t0 {
		return 0
	}
	return float64(b1-b0) / float64(t1-t0)
}

// jiffies converts USER_HZ ticks (100 per second on Linux) to a duration.
func jiffies(n int64) time.Duration { return time.Duration(n) * 10 * time.Millisecond }

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Machine describes the host for the report header.
func Machine() string {
	host, _ := os.Hostname()
	var u syscall.Utsname
	kernel := "linux"
	if err := syscall.Uname(&u); err == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		kernel = "Linux " + b.String()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%s, %d CPUs%s, %s %s/%s, %s", host, runtime.NumCPU(), mem, kernel, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
