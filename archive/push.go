// Package archive moves WAL files between a PostgreSQL data directory and a
// repository, honouring the archive_command and restore_command contracts.
package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// walWindow is the zstd window for WAL files: measured on pgbench WAL, 1 MiB
// compresses as well as the default 8 MiB and allocates a quarter of the
// memory, which matters in a process started once per segment.
const walWindow = 1 << 20

// walCodecOptions are the encoding options for a WAL file of size bytes.
// A segment larger than mapLimit (initdb --wal-segsize up to 1024) is
// compressed as independent frames on two workers, the way base backups
// are: PostgreSQL archives one segment at a time, and on one core a 1 GiB
// segment took 1.9 s (pgBackRest zst 3.1 s; at that size its fixed cost
// per call no longer counts), on two 1.1 s. Up to mapLimit one segment
// stays one frame on one core, light beside the database it serves.
func walCodecOptions(opts codec.Options, size int64) codec.Options {
	if opts.WindowSize == 0 {
		opts.WindowSize = walWindow
	}
	if size > mapLimit && opts.Concurrency < largeSegmentWorkers {
		opts.Concurrency = largeSegmentWorkers
	}
	return opts
}

// largeSegmentWorkers compress a segment larger than mapLimit.
const largeSegmentWorkers = 2

// ErrConflict means the repository already holds a different file under the
// same name. archive_command must fail then, and the archived copy must stay.
var ErrConflict = errors.New("a different file with this name is already archived")

// Archiver pushes and fetches WAL files of one repository.
type Archiver struct {
	Store storage.Store // the repository root
	Codec codec.Options
	// ControlFile is the path of the cluster's global/pg_control, used to
	// identify the database system for files without a WAL page header
	// (.history, .backup) and to cross-check fetches. Empty: not available.
	ControlFile string
	// DataDir, when set, is the data directory archive-push runs in; its
	// tablespaces are recorded in the repository (see Tablespace).
	DataDir string
	Log     *slog.Logger
	Now     func() time.Time
}

func (a *Archiver) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Archiver) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

// PushResult describes one archived file.
type PushResult struct {
	Name            string
	Key             string
	Size            int64 // original bytes
	Stored          int64 // bytes in the repository; 0 when already archived
	AlreadyArchived bool  // an identical copy was there before
	Replaced        bool  // a corrupt archived copy was replaced
	Duration        time.Duration
}

// Push archives the file at path (archive_command's %p). It returns nil only
// once the file is durably stored, or an identical copy already was.
func (a *Archiver) Push(ctx context.Context, path string) (PushResult, error) {
	start := a.now()
	name := filepath.Base(path)
	res := PushResult{Name: name}
	kind, err := wal.Classify(name)
	if err != nil {
		return res, fmt.Errorf("push %s: %w", path, err)
	}
	if err := CheckPushPath(path, a.DataDir != ""); err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return res, fmt.Errorf("push %s: not a regular file", path)
	}
	res.Size = fi.Size()

	id, err := a.systemOf(f, name, kind, fi.Size())
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	if id == 0 {
		// A .history or .backup file outside a data directory: trust the
		// repository, which must exist already (its first WAL segment named
		// the system).
		m, err := repo.ReadMarker(ctx, a.Store)
		if errors.Is(err, repo.ErrNoRepository) {
			return res, fmt.Errorf("push %s: cannot tell which database system it belongs to (no global/pg_control here) and the repository is not initialised yet", name)
		}
		if err != nil {
			return res, fmt.Errorf("push %s: %w", name, err)
		}
		id = m.SystemIdentifier
	} else if _, err := repo.Init(ctx, a.Store, id, a.now()); err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}

	key, err := repo.WALKey(id, name)
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	res.Key = key
	if a.DataDir != "" {
		if err := a.recordTablespaces(ctx, a.DataDir, id); err != nil {
			// Not part of archiving this file: PostgreSQL must not keep
			// the segment for it. Restores lose a safety check; say so.
			a.log().Warn("could not record the data directory's tablespaces", "err", err)
		}
	}

	switch _, err := a.Store.Stat(ctx, key); {
	case err == nil:
		same, err := a.sameAsArchived(ctx, f, key, MaxFileSize(kind))
		if err == nil && same {
			res.AlreadyArchived = true
			res.Duration = a.now().Sub(start)
			return res, nil
		}
		if err == nil && kind == wal.KindPartial {
			// A .partial is never a complete segment and never a
			// recovery's source unless a restore plans it; pitr stream
			// replaces its own at every upload. The server's copy, archived
			// at promotion, is the final word on the old timeline's end:
			// refusing it would stall the archiver behind it for good.
			a.log().Warn("replacing a different archived .partial with the server's", "file", name, "key", key)
			res.Replaced = true
		} else if err == nil {
			return res, fmt.Errorf("push %s: %w (archived copy left unchanged; two clusters or servers may be archiving into one repository)", name, ErrConflict)
		} else if !errors.Is(err, codec.ErrCorrupt) {
			return res, fmt.Errorf("push %s: compare with archived copy: %w", name, err)
		} else {
			// The archived copy cannot be read back at all, so it protects
			// nothing; the verified local file is the only good copy left.
			a.log().Warn("archived copy is corrupt; replacing it with the server's file", "file", name, "key", key, "err", err)
			res.Replaced = true
		}
	case errors.Is(err, storage.ErrNotExist):
	default:
		return res, fmt.Errorf("push %s: %w", name, err)
	}

	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	stored, err := putFile(ctx, a.Store, key, f, fi.Size(), walCodecOptions(a.Codec, fi.Size()))
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	if stored.Size != fi.Size() {
		// The file changed length while we read it: PostgreSQL never does
		// that to a file it asked us to archive, so something else is wrong.
		return res, fmt.Errorf("push %s: read %d bytes, file is %d bytes", name, stored.Size, fi.Size())
	}
	res.Stored = stored.StoredSize
	res.Duration = a.now().Sub(start)
	return res, nil
}

// mapLimit is the largest file putFile encodes from a memory mapping: every
// segment size up to 64 MiB. Larger ones (up to 1 GiB) stream, so memory
// stays bounded.
const mapLimit = 64 << 20

// putFile stores the file f, size bytes, under key. A file up to mapLimit
// is mapped and encoded in one pass (codec.PutBytes): no copy of the file
// into the process, and libzstd's one-shot compression, about 45% faster
// than streaming the same segment. PostgreSQL does not change a segment it
// asked us to archive, so the mapping is the file as it was. Anything
// larger, or a file that cannot be mapped, is streamed.
func putFile(ctx context.Context, st storage.Store, key string, f *os.File, size int64, opts codec.Options) (codec.Stored, error) {
	if size > 0 && size <= mapLimit {
		data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
		if err == nil {
			defer syscall.Munmap(data)
			return codec.PutBytes(ctx, st, key, data, opts)
		}
	}
	return codec.Put(ctx, st, key, f, size, opts)
}

// systemOf returns the database system identifier the file belongs to, after
// checking that a segment's header agrees with its name and size; 0 if the
// file itself cannot tell and no control file is available.
func (a *Archiver) systemOf(f *os.File, name string, kind wal.FileKind, size int64) (repo.SystemID, error) {
	switch kind {
	case wal.KindSegment, wal.KindPartial:
		h, _, err := readSegmentHeader(f, name[:24], size)
		if err != nil {
			return 0, err
		}
		if a.ControlFile != "" {
			if ctl, err := wal.ReadControlSystemID(a.ControlFile); err == nil && ctl != h.SystemID {
				return 0, fmt.Errorf("segment header names database system %d but %s belongs to %d", h.SystemID, a.ControlFile, ctl)
			}
		}
		return repo.SystemID(h.SystemID), nil
	default:
		if a.ControlFile == "" {
			return 0, nil
		}
		id, err := wal.ReadControlSystemID(a.ControlFile)
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		return repo.SystemID(id), nil
	}
}

// readSegmentHeader reads and validates the long page header of a segment
// file whose 24-character name is segName and whose length is size.
func readSegmentHeader(r io.ReaderAt, segName string, size int64) (wal.LongPageHeader, wal.SegmentSize, error) {
	buf := make([]byte, wal.LongPageHeaderSize)
	if _, err := r.ReadAt(buf, 0); err != nil {
		return wal.LongPageHeader{}, 0, fmt.Errorf("read WAL page header: %w", err)
	}
	h, err := wal.ParseLongPageHeader(buf)
	if err != nil {
		return h, 0, err
	}
	segSize, err := wal.NewSegmentSize(uint64(h.SegmentSize))
	if err != nil {
		return h, 0, err
	}
	if size != int64(segSize) {
		return h, 0, fmt.Errorf("file is %d bytes but its header says segments are %d bytes (truncated or not a WAL segment)", size, segSize)
	}
	seg, err := segSize.ParseFileName(segName)
	if err != nil {
		return h, 0, err
	}
	if err := segSize.CheckSegment(seg, h); err != nil {
		return h, 0, err
	}
	return h, segSize, nil
}

// sameAsArchived compares the local file with the archived object by size and
// checksum of the original bytes, computed the way the archived object's
// trailer records it.
func (a *Archiver) sameAsArchived(ctx context.Context, f *os.File, key string, limit int64) (bool, error) {
	archived, err := codec.ReadInfoLimit(ctx, a.Store, key, limit)
	if err != nil {
		return false, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	local, err := codec.SumOf(f, archived.Checksum)
	if err != nil {
		return false, err
	}
	return archived.Equal(local), nil
}
