package pgtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ThreadNices returns the nice value of every thread of process pid (field
// 19 of /proc/<pid>/task/<tid>/stat).
func ThreadNices(pid int) ([]int, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var nices []int
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue // the thread ended
		}
		// The command name, field 2, is in parentheses and may hold spaces.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 17 {
			return nil, fmt.Errorf("%s/%s/stat: %d fields after the name", dir, e.Name(), len(f))
		}
		n, err := strconv.Atoi(f[16])
		if err != nil {
			return nil, fmt.Errorf("%s/%s/stat: nice %q: %w", dir, e.Name(), f[16], err)
		}
		nices = append(nices, n)
	}
	return nices, nil
}

// ProcessesIn returns the processes whose working directory is dir and
// whose command line contains arg.
func ProcessesIn(dir, arg string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil || cwd != dir {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmdline, []byte(arg)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
