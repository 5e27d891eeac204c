// Package durable makes directory changes (a create, a rename) survive a
// crash: the entry is only on disk once the directory itself is synced.
package durable

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// SyncDir fsyncs the directory dir. Some filesystems cannot fsync a
// directory (EINVAL); their renames are as durable as they get, so that is
// not an error.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err == nil || errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return fmt.Errorf("sync directory %s: %w", dir, err)
}
