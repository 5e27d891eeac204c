package pitr_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/fs"
)

// lockingStore refuses to delete keys it considers under retention, the way
// storage/s3 reports S3 Object Lock (tested against a real server there).
type lockingStore struct {
	storage.Store
	locked func(key string) bool
}

func (l *lockingStore) Delete(ctx context.Context, key string) error {
	if l.locked(key) {
		return storage.Permanent(fmt.Errorf("s3 delete %s: %w", key, storage.ErrLocked))
	}
	return l.Store.Delete(ctx, key)
}

func newLockingStore(t *testing.T, locked func(string) bool) *lockingStore {
	base, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &lockingStore{Store: base, locked: locked}
}

// Contract: objects under retention are skipped and counted, not a failure;
// everything else still goes.
func TestExecutePruneSkipsLockedWAL(t *testing.T) {
	lockedWAL := walName(1, 12)
	st := newLockingStore(t, func(key string) bool { return strings.HasSuffix(key, "/"+lockedWAL) })
	bs, files := fourBackups()
	in := populate(t, st, bs, files)
	p := mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 2})
	res, err := pitr.ExecutePrune(context.Background(), st, p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("prune with a locked WAL file failed: %v", err)
	}
	if res.Locked != 1 || res.Backups != 2 || res.WAL != 21 {
		t.Fatalf("result %+v, want 1 locked, 2 backups and 21 WAL files deleted", res)
	}
	walLeft := listKeys(t, st, repo.WALPrefix(pruneSys))
	if !slices.ContainsFunc(walLeft, func(k string) bool { return strings.HasSuffix(k, lockedWAL) }) || len(walLeft) != len(files)-21 {
		t.Fatalf("WAL left: %d files, locked one present: %v", len(walLeft), walLeft[:2])
	}
}

// Contract: a backup whose metadata is under retention stays whole and
// complete, and no WAL is deleted in that run (it may be what the backup
// needs, and WAL is written, so unlocked, before its backup).
func TestExecutePruneKeepsLockedBackupAndItsWAL(t *testing.T) {
	st := newLockingStore(t, func(key string) bool { return strings.Contains(key, "/b2/") })
	bs, files := fourBackups()
	in := populate(t, st, bs, files)
	p := mustPlan(t, in, pitr.RetentionPolicy{KeepCount: 2})
	res, err := pitr.ExecutePrune(context.Background(), st, p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("prune with a locked backup failed: %v", err)
	}
	if res.Backups != 1 || res.WAL != 0 || !slices.Equal(res.LockedBackups, []string{"b2"}) || res.Locked != 1 {
		t.Fatalf("result %+v, want b1 deleted, b2 locked, no WAL deleted", res)
	}
	if _, err := st.Stat(context.Background(), repo.BackupKey(pruneSys, "b2", repo.BackupMetadataName)); err != nil {
		t.Fatalf("b2's metadata: %v", err)
	}
	if got := listKeys(t, st, repo.WALPrefix(pruneSys)); len(got) != len(files) {
		t.Fatalf("%d of %d WAL files left", len(got), len(files))
	}
}
