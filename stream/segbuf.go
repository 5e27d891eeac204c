package stream

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// MemorySegmentLimit is the largest segment held in memory; a larger one
// (initdb --wal-segsize up to 1 GiB) is kept in a temporary file, so the
// streamer's memory does not grow with the segment size.
const MemorySegmentLimit = 64 << 20

// segBuf holds the segment in progress, zero past what was written: a slice
// for segments up to the memory limit, else a sparse temporary file (its
// unwritten ranges read as zeros). The file is unlinked as soon as it is
// created and lives on through its descriptor only, so a streamer killed
// with SIGKILL leaves nothing behind, and nothing ever has to sweep a
// directory where another streamer's live file could be.
type segBuf struct {
	mem  []byte
	file *os.File
	size int64
}

// newSegBuf returns a zeroed buffer of size bytes, in memory if size is at
// most limit, else in a temporary file in dir (os.TempDir() if empty).
func newSegBuf(size, limit int64, dir string) (*segBuf, error) {
	if size <= limit {
		return &segBuf{mem: make([]byte, size), size: size}, nil
	}
	f, err := os.CreateTemp(dir, "pitr-stream-*.wal")
	if err != nil {
		return nil, fmt.Errorf("segment buffer file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("segment buffer file: unlink: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("segment buffer file: %w", err)
	}
	return &segBuf{file: f, size: size}, nil
}

func (b *segBuf) writeAt(p []byte, off int64) error {
	if b.file == nil {
		copy(b.mem[off:], p)
		return nil
	}
	if _, err := b.file.WriteAt(p, off); err != nil {
		return fmt.Errorf("segment buffer file: %w", err)
	}
	return nil
}

// readerAt reads the whole segment; uploads take it through
// io.NewSectionReader, so a file-backed segment is streamed, not loaded.
func (b *segBuf) readerAt() io.ReaderAt {
	if b.file == nil {
		return bytes.NewReader(b.mem)
	}
	return b.file
}

// reset zeroes the buffer for the next segment. A file is replaced by a new
// one, so a finished segment's file does not outlive it.
func (b *segBuf) reset(dir string) error {
	if b.file == nil {
		clear(b.mem)
		return nil
	}
	if err := b.close(); err != nil {
		return err
	}
	nb, err := newSegBuf(b.size, b.size-1, dir)
	if err != nil {
		return err
	}
	*b = *nb
	return nil
}

// close releases the buffer; a file's space is freed with its descriptor.
func (b *segBuf) close() error {
	if b.file == nil {
		b.mem = nil
		return nil
	}
	err := b.file.Close()
	b.file = nil
	if err != nil {
		return fmt.Errorf("close segment buffer file: %w", err)
	}
	return nil
}
