//go:build !linux

package basebackup

import (
	"io"
	"os/exec"
)

// setParentDeathSignal is Linux-only; elsewhere pg_basebackup notices a dead
// pitr when its next write to the closed pipe fails.
func setParentDeathSignal(*exec.Cmd) {}

// growPipe is Linux-only (F_SETPIPE_SZ).
func growPipe(io.Reader) {}
