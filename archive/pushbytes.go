package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// PushBytes archives a WAL file held in memory (the streamer's finished
// segment, a .history file from TIMELINE_HISTORY) under the same rules as
// Push: a segment's page header must match its name and size, an identical
// archived copy is success without a write, a different one is ErrConflict
// and stays, a corrupt one is replaced. The caller has checked that id is the
// repository's system. Both archive-push and the streamer may archive the
// same segment; whichever comes second finds identical content.
func (a *Archiver) PushBytes(ctx context.Context, id repo.SystemID, name string, data []byte) (PushResult, error) {
	return a.PushReaderAt(ctx, id, name, bytes.NewReader(data), int64(len(data)))
}

// PushReaderAt is PushBytes for a file of size bytes readable at r (the
// streamer keeps segments above its memory limit in a temporary file): the
// same checks and outcomes, reading r sequentially for the hash and the
// upload so memory does not grow with the file.
func (a *Archiver) PushReaderAt(ctx context.Context, id repo.SystemID, name string, r io.ReaderAt, size int64) (PushResult, error) {
	start := a.now()
	res := PushResult{Name: name, Size: size}
	kind, err := wal.Classify(name)
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	if kind == wal.KindSegment || kind == wal.KindPartial {
		if _, _, err := readSegmentHeader(r, name[:24], size); err != nil {
			return res, fmt.Errorf("push %s: %w", name, err)
		}
	}
	key, err := repo.WALKey(id, name)
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	res.Key = key
	switch archived, err := codec.ReadInfoLimit(ctx, a.Store, key, MaxFileSize(kind)); {
	case err == nil:
		local, err := codec.SumOf(io.NewSectionReader(r, 0, size), archived.Checksum)
		if err != nil {
			return res, fmt.Errorf("push %s: hash: %w", name, err)
		}
		if archived.Equal(local) {
			res.AlreadyArchived = true
			res.Duration = a.now().Sub(start)
			return res, nil
		}
		return res, fmt.Errorf("push %s: %w (archived copy left unchanged)", name, ErrConflict)
	case errors.Is(err, storage.ErrNotExist):
	case errors.Is(err, codec.ErrCorrupt):
		a.log().Warn("archived copy is corrupt; replacing it", "file", name, "key", key, "err", err)
		res.Replaced = true
	default:
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	stored, err := codec.Put(ctx, a.Store, key, io.NewSectionReader(r, 0, size), size, walCodecOptions(a.Codec, size))
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	res.Stored = stored.StoredSize
	res.Duration = a.now().Sub(start)
	return res, nil
}

// CheckSegmentBytes checks that data is the whole segment name (24 hex
// digits): its long page header names that segment and its size.
func CheckSegmentBytes(name string, data []byte) error {
	return CheckSegmentReaderAt(name, bytes.NewReader(data), int64(len(data)))
}

// CheckSegmentReaderAt is CheckSegmentBytes for a segment of size bytes at r;
// only its first page is read.
func CheckSegmentReaderAt(name string, r io.ReaderAt, size int64) error {
	_, _, err := readSegmentHeader(r, name, size)
	return err
}
