package basebackup

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages to disk
// without waiting for it, so the fsync at the end of the extraction finds
// little left to do and dirty memory does not pile up. It is only a hint:
// an error here is ignored (the fsync reports real failures). Without it
// the extraction of the benchmark's backup took 1.65 s instead of 1.25 s.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
