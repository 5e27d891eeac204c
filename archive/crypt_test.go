package archive

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage/crypt"
)

// A database host configured with only the public key archives through the
// encrypting store: an identical re-push succeeds and different content is
// a conflict, both without decrypting; it cannot fetch, and that is never
// "not archived"; tablespace records it cannot read are kept, not rewritten.
func TestPushWithPublicKeyOnly(t *testing.T) {
	f := newFixture(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pubOnly, err := crypt.New(f.store, crypt.Options{
		Recipients: []age.Recipient{id.Recipient()},
		Plaintext:  func(k string) bool { return !repo.EncryptedKey(k) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.a.Store = pubOnly
	dataDir := t.TempDir()
	os.MkdirAll(filepath.Join(dataDir, "pg_tblspc"), 0o700)
	os.MkdirAll(filepath.Join(dataDir, "pg_wal"), 0o700)
	if err := os.Symlink("/srv/ts1", filepath.Join(dataDir, "pg_tblspc", "16400")); err != nil {
		t.Fatal(err)
	}
	f.a.DataDir = dataDir
	var logs bytes.Buffer
	f.a.Log = slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.a.Now = func() time.Time { return now }

	seg := makeSegment(t, f.src, 1, 5, testSysID, 1)
	if _, err := f.a.Push(f.ctx, seg); err != nil {
		t.Fatal(err)
	}
	tsKey := repo.TablespaceKey(testSysID, 16400)
	before, err := f.store.Stat(f.ctx, tsKey)
	if err != nil {
		t.Fatalf("tablespace not recorded: %v", err)
	}
	// A new data directory (a failover) has no spool cache.
	os.RemoveAll(filepath.Join(dataDir, "pg_wal", SpoolDir))
	now = now.Add(time.Hour)

	res, err := f.a.Push(f.ctx, seg)
	if err != nil || !res.AlreadyArchived {
		t.Fatalf("identical re-push with only the public key: %+v %v", res, err)
	}
	other := t.TempDir()
	makeSegment(t, other, 1, 5, testSysID, 9)
	if _, err := f.a.Push(f.ctx, filepath.Join(other, filepath.Base(seg))); !errors.Is(err, ErrConflict) {
		t.Fatalf("different content with only the public key: %v, want ErrConflict", err)
	}
	after, err := f.store.Stat(f.ctx, tsKey)
	if err != nil || !after.ModTime.Equal(before.ModTime) {
		t.Fatalf("tablespace record rewritten by a host that cannot read it: %v", err)
	}
	if logs.Len() > 0 {
		t.Fatalf("warnings while archiving with only the public key:\n%s", logs.String())
	}

	_, err = f.fetch(t, filepath.Base(seg))
	if !errors.Is(err, crypt.ErrNoIdentity) || errors.Is(err, ErrNotArchived) {
		t.Fatalf("fetch with only the public key: %v", err)
	}
	// The same from a data directory, where pg_control names the system
	// and the marker is read only after the failure.
	f.a.ControlFile = writeControl(t, t.TempDir(), testSysID)
	_, err = f.fetch(t, filepath.Base(seg))
	if !errors.Is(err, crypt.ErrNoIdentity) || errors.Is(err, ErrNotArchived) {
		t.Fatalf("fetch from a data directory with only the public key: %v", err)
	}
}
