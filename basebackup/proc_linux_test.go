package basebackup

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The pipe from pg_basebackup is grown to pipeSize when the system allows
// it, and left as it is otherwise.
func TestGrowPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	growPipe(r)
	var size uintptr
	sc, _ := r.SyscallConn()
	_ = sc.Control(func(fd uintptr) {
		size, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, 1032 /* F_GETPIPE_SZ */, 0)
	})
	want := uintptr(pipeSize)
	if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err == nil {
		if max, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && uintptr(max) < want && os.Geteuid() != 0 {
			want = 64 << 10 // an unprivileged process cannot go past the limit
		}
	}
	if size < want {
		t.Fatalf("pipe is %d bytes after growPipe, want at least %d", size, want)
	}
}
