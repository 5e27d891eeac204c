package pitr

import (
	"context"
	"fmt"
	"io"
	"path"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// maxHistorySize bounds a .history file read from the repository; real ones
// are a line per timeline switch.
const maxHistorySize = 1 << 20

// LoadInputs reads what MakePlan needs from the repository: the backups, the
// WAL listing and every timeline history file.
func LoadInputs(ctx context.Context, st storage.Store, id repo.SystemID) (Inputs, error) {
	var in Inputs
	backups, err := basebackup.List(ctx, st, id)
	if err != nil {
		return in, err
	}
	in.Backups = backups
	if in.Tablespaces, err = archive.ListTablespaces(ctx, st, id); err != nil {
		return in, err
	}
	objs, err := st.List(ctx, repo.WALPrefix(id))
	if err != nil {
		return in, fmt.Errorf("list WAL archive: %w", err)
	}
	in.Histories = map[wal.TimelineID][]wal.HistoryEntry{}
	for _, o := range objs {
		name := path.Base(o.Key)
		kind, err := wal.Classify(name)
		if err != nil {
			continue // not ours to interpret; the planner only needs valid names
		}
		in.WAL = append(in.WAL, WALFile{Name: name, StoredSize: o.Size, ArchivedAt: o.ModTime})
		if kind != wal.KindTimelineHistory {
			continue
		}
		tli, err := wal.TimelineOfName(name)
		if err != nil {
			return in, err
		}
		entries, err := readHistory(ctx, st, o.Key, tli)
		if err != nil {
			return in, err
		}
		in.Histories[tli] = entries
	}
	return in, nil
}

func readHistory(ctx context.Context, st storage.Store, key string, tli wal.TimelineID) ([]wal.HistoryEntry, error) {
	obj, err := codec.Open(ctx, st, key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, maxHistorySize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if len(data) > maxHistorySize {
		return nil, fmt.Errorf("%s is larger than %d bytes; not a timeline history file", key, maxHistorySize)
	}
	entries, err := wal.ParseHistoryFile(tli, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return entries, nil
}
