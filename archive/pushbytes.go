package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

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
	start := a.now()
	res := PushResult{Name: name, Size: int64(len(data))}
	kind, err := wal.Classify(name)
	if err != nil {
		return res, fmt.Errorf("push %s: %w", name, err)
	}
	if kind == wal.KindSegment || kind == wal.KindPartial {
		if _, _, err := readSegmentHeader(bytes.NewReader(data), name[:24], int64(len(data))); err != nil {
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
		local := codec.Info{Size: int64(len(data)), SHA256: sha256.Sum256(data)}
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
	opts := a.Codec
	if opts.WindowSize == 0 {
		opts.WindowSize = walWindow
	}
	stored, err := codec.Put(ctx, a.Store, key, bytes.NewReader(data), int64(len(data)), opts)
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
	_, _, err := readSegmentHeader(bytes.NewReader(data), name, int64(len(data)))
	return err
}
