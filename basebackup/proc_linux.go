package basebackup

import (
	"io"
	"os"
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel stop pg_basebackup if pitr dies
// (SIGKILL included), so no orphan keeps a backup open on the server.
func setParentDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
}

// pipeSize is what the pipe from pg_basebackup is grown to: the default
// 64 KiB makes both sides wake each other every 64 KiB of the backup.
const pipeSize = 1 << 20

// growPipe enlarges the pipe r reads from, as far as the system allows
// (fs.pipe-max-size, 1 MiB by default); the default size is fine too.
func growPipe(r io.Reader) {
	f, ok := r.(*os.File)
	if !ok {
		return
	}
	if sc, err := f.SyscallConn(); err == nil {
		_ = sc.Control(func(fd uintptr) {
			_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, fcntlSetPipeSize, pipeSize)
		})
	}
}

// fcntlSetPipeSize is F_SETPIPE_SZ (linux/fcntl.h).
const fcntlSetPipeSize = 1031
