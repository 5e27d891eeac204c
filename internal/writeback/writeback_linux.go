// Package writeback asks the kernel to start writing a file's dirty pages
// to disk without waiting for it (sync_file_range(SYNC_FILE_RANGE_WRITE)),
// so that the fsync that makes the file durable later finds little left to
// do, and the disk works while the caller goes on computing. It is only a
// hint: errors are ignored, the fsync reports real failures. Elsewhere than
// on Linux it does nothing.
package writeback

import (
	"os"

	"golang.org/x/sys/unix"
)

// Start starts write-back of n bytes of f from off; n 0 means to the end.
func Start(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
