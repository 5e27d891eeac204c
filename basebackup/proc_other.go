//go:build !linux

package basebackup

import "os/exec"

// setParentDeathSignal is Linux-only; elsewhere pg_basebackup notices a dead
// pitr when its next write to the closed pipe fails.
func setParentDeathSignal(*exec.Cmd) {}
