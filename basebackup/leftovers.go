package basebackup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// Incomplete is a backup directory without metadata: a backup still running,
// or what a failed or killed one left behind. It does not exist for any
// command but the ones that clean up.
type Incomplete struct {
	Name    string
	Objects []storage.ObjectInfo
	// LastWrite is the newest modification time among Objects, on the
	// repository's clock. A running backup refreshes its heartbeat object
	// every HeartbeatInterval.
	LastWrite time.Time
}

// Stale reports whether nothing was written to the directory for StaleAfter
// before now, which must be a time on the repository's clock (for example
// the modification time of an object the caller just wrote), so that clock
// skew between hosts cannot make a running backup look dead.
func (i Incomplete) Stale(now time.Time) bool {
	return now.Sub(i.LastWrite) > StaleAfter
}

// ListIncomplete returns the backup directories of a system that have no
// metadata, oldest name first.
func ListIncomplete(ctx context.Context, st storage.Store, id repo.SystemID) ([]Incomplete, error) {
	prefix := repo.BackupPrefix(id)
	objs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	byName := map[string]*Incomplete{}
	complete := map[string]bool{}
	for _, o := range objs {
		name, file, ok := strings.Cut(strings.TrimPrefix(o.Key, prefix), "/")
		if !ok {
			continue
		}
		if file == repo.BackupMetadataName {
			complete[name] = true
			continue
		}
		inc := byName[name]
		if inc == nil {
			inc = &Incomplete{Name: name}
			byName[name] = inc
		}
		inc.Objects = append(inc.Objects, o)
		if o.ModTime.After(inc.LastWrite) {
			inc.LastWrite = o.ModTime
		}
	}
	var out []Incomplete
	for name, inc := range byName {
		if !complete[name] {
			out = append(out, *inc)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeleteIncomplete deletes the objects of an incomplete backup, the
// heartbeat last, so that a deletion cut short still looks like leftovers
// and not like a new backup. A directory that gained its metadata since it
// was listed is left alone.
func DeleteIncomplete(ctx context.Context, st storage.Store, id repo.SystemID, inc Incomplete) error {
	if inc.Name == "" || strings.ContainsAny(inc.Name, "/\\") || strings.HasPrefix(inc.Name, ".") {
		return fmt.Errorf("backup name %q is not valid", inc.Name)
	}
	_, err := st.Stat(ctx, repo.BackupKey(id, inc.Name, repo.BackupMetadataName))
	if err == nil {
		return fmt.Errorf("backup %s has completed; not deleting it as leftovers", inc.Name)
	}
	if !errors.Is(err, storage.ErrNotExist) {
		return fmt.Errorf("backup %s: %w", inc.Name, err)
	}
	heartbeat := repo.BackupKey(id, inc.Name, repo.BackupInProgressName)
	for _, o := range inc.Objects {
		if o.Key == heartbeat {
			continue
		}
		if err := st.Delete(ctx, o.Key); err != nil {
			return fmt.Errorf("delete %s: %w", o.Key, err)
		}
	}
	if err := st.Delete(ctx, heartbeat); err != nil {
		return fmt.Errorf("delete %s: %w", heartbeat, err)
	}
	return nil
}
