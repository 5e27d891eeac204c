package repo

import (
	"context"
	"errors"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/crypt"
	"github.com/pitr-dev/pitr/storage/fs"
)

func encrypted(t *testing.T, inner storage.Store) storage.Store {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	st, err := crypt.New(inner, crypt.Options{
		Recipients: []age.Recipient{id.Recipient()},
		Plaintext:  func(k string) bool { return !EncryptedKey(k) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// The marker records encryption, and a store whose encryption disagrees
// with it is refused by Init (writers) and ReadMarker (everyone).
func TestMarkerEncryption(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	for _, c := range []struct {
		name           string
		createEnc, use bool
	}{
		{"plain repository, encrypted writer", false, true},
		{"encrypted repository, plain writer", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			inner, err := fs.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			create, use := storage.Store(inner), storage.Store(inner)
			if c.createEnc {
				create = encrypted(t, inner)
			}
			if c.use {
				use = encrypted(t, inner)
			}
			m, err := Init(ctx, create, 42, now)
			if err != nil {
				t.Fatal(err)
			}
			if (m.Encryption != nil) != c.createEnc {
				t.Fatalf("marker encryption %+v", m.Encryption)
			}
			if c.createEnc && (m.Encryption.Scheme != crypt.Scheme || len(m.Encryption.Recipients) != 1) {
				t.Fatalf("marker encryption %+v", m.Encryption)
			}
			if _, err := Init(ctx, use, 42, now); !errors.Is(err, ErrEncryptionMismatch) {
				t.Fatalf("Init: %v", err)
			}
			if _, err := ReadMarker(ctx, use); !errors.Is(err, ErrEncryptionMismatch) {
				t.Fatalf("ReadMarker: %v", err)
			}
			if _, err := ReadMarker(ctx, create); err != nil {
				t.Fatalf("ReadMarker with matching store: %v", err)
			}
		})
	}
}

func TestEncryptedKey(t *testing.T) {
	for key, want := range map[string]bool{
		MarkerKey:                  false,
		"locks/prune.json":         false,
		"pitr-check/probe-1":       false,
		"123/wal/x":                true,
		WALPrefix(7) + "00000001":  true,
		BackupKey(7, "b", "x.tar"): true,
		"123":                      false,
		"/123/x":                   false,
		StreamStateKey(7):          false,
		"7/stream/other":           true,
	} {
		if got := EncryptedKey(key); got != want {
			t.Errorf("EncryptedKey(%q) = %v", key, got)
		}
	}
}
