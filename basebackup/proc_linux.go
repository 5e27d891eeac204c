package basebackup

import (
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
