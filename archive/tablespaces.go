package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/crypt"
)

// Tablespace records that a user tablespace existed in the data directory
// at a location. Replay of CREATE TABLESPACE uses the absolute path written
// in WAL, so a restore that replays past the creation of a tablespace the
// base backup does not have writes wherever that path is on the restoring
// host: possibly into the source cluster's live directory. These records
// let the restore planner see such tablespaces before anything happens.
type Tablespace struct {
	OID      uint32    `json:"oid"`
	Location string    `json:"location"`
	SeenAt   time.Time `json:"seen_at"` // when archive-push first saw it: after its creation
}

// recordTablespaces records every tablespace under dataDir/pg_tblspc that
// the repository does not know yet. Most clusters have none, and then this
// is one readdir. A record once written is remembered in the spool, so each
// tablespace costs one repository request per data directory, not per call.
func (a *Archiver) recordTablespaces(ctx context.Context, dataDir string, id repo.SystemID) error {
	entries, err := os.ReadDir(filepath.Join(dataDir, "pg_tblspc"))
	if err != nil || len(entries) == 0 {
		return nil
	}
	spool := filepath.Join(dataDir, "pg_wal", SpoolDir)
	for _, e := range entries {
		oid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		loc, err := os.Readlink(filepath.Join(dataDir, "pg_tblspc", e.Name()))
		if err != nil {
			continue // in-place tablespaces (a directory, not a link) move with the data directory
		}
		cache := filepath.Join(spool, fmt.Sprintf("tablespace-%d", oid))
		if b, err := os.ReadFile(cache); err == nil && string(b) == loc {
			continue
		}
		key := repo.TablespaceKey(id, uint32(oid))
		switch known, err := readTablespace(ctx, a.Store, key); {
		case err == nil && known.Location == loc:
		case errors.Is(err, crypt.ErrNoIdentity):
			// Recorded already, encrypted, and this host holds only public
			// keys. Keep the record: rewriting it would move its SeenAt
			// later than the tablespace's creation.
		case err == nil || errors.Is(err, storage.ErrNotExist):
			// New, or an OID reused for another location: record what is there now.
			b, _ := json.Marshal(Tablespace{OID: uint32(oid), Location: loc, SeenAt: a.now().UTC()})
			if err := a.Store.Put(ctx, key, bytes.NewReader(b)); err != nil {
				return fmt.Errorf("record tablespace %d: %w", oid, err)
			}
		default:
			return fmt.Errorf("read tablespace record %d: %w", oid, err)
		}
		if err := os.MkdirAll(spool, 0o700); err == nil {
			_ = os.WriteFile(cache, []byte(loc), 0o600)
		}
	}
	return nil
}

func readTablespace(ctx context.Context, st storage.Store, key string) (Tablespace, error) {
	// A record is one short line of JSON.
	const maxRecord = 64 << 10
	b, err := repo.ReadSmall(ctx, st, key, maxRecord)
	if err != nil {
		return Tablespace{}, err
	}
	var t Tablespace
	if err := json.Unmarshal(b, &t); err != nil {
		return Tablespace{}, fmt.Errorf("%s: %w", key, err)
	}
	return t, nil
}

// ListTablespaces returns every tablespace record of a system.
func ListTablespaces(ctx context.Context, st storage.Store, id repo.SystemID) ([]Tablespace, error) {
	objs, err := st.List(ctx, repo.TablespacePrefix(id))
	if err != nil {
		return nil, fmt.Errorf("list tablespace records: %w", err)
	}
	var out []Tablespace
	for _, o := range objs {
		t, err := readTablespace(ctx, st, o.Key)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}
