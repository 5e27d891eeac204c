package crypt

import (
	"bytes"
	"context"
	"io"
	"testing"

	"filippo.io/age"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// fuzzKey is fixed so that seeds encrypted to it stay decryptable.
const fuzzKey = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"

// memStore holds one object in memory; enough for the readers below.
type memStore struct{ data []byte }

func (m *memStore) Put(_ context.Context, _ string, r io.Reader) error {
	b, err := io.ReadAll(r)
	m.data = b
	return err
}

func (m *memStore) Open(_ context.Context, _ string, off int64) (io.ReadCloser, error) {
	if off > int64(len(m.data)) {
		off = int64(len(m.data))
	}
	return io.NopCloser(bytes.NewReader(m.data[off:])), nil
}

func (m *memStore) Stat(_ context.Context, key string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{Key: key, Size: int64(len(m.data))}, nil
}
func (m *memStore) List(context.Context, string) ([]storage.ObjectInfo, error) { return nil, nil }
func (m *memStore) Delete(context.Context, string) error                       { return nil }

// Whatever bytes the bucket holds, reading them through the wrapper (with
// the key, and without it for the plaintext footer) ends in data or an
// error, never a panic or a hang. The seeds are real objects, so mutations
// reach the age header, the payload and the footer checks.
func FuzzEncryptedObject(f *testing.F) {
	id, err := age.ParseX25519Identity(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	seedStore := &memStore{}
	writer, _ := New(seedStore, Options{Recipients: []age.Recipient{id.Recipient()}})
	for _, plain := range [][]byte{nil, []byte("{}"), bytes.Repeat([]byte("wal page "), 10000)} {
		if _, err := codec.Put(context.Background(), writer, "1/k", bytes.NewReader(plain), int64(len(plain)), codec.Options{Codec: codec.Zstd}); err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(seedStore.data))
		writer.Put(context.Background(), "1/k", bytes.NewReader(plain))
		f.Add(bytes.Clone(seedStore.data))
	}
	f.Add([]byte("PAGE\x01\x00\x00\x00"))
	f.Add([]byte("PITR\x01\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, stored []byte) {
		inner := &memStore{data: stored}
		withKey, _ := New(inner, Options{Identities: []age.Identity{id}})
		if rc, err := withKey.Open(context.Background(), "1/k", 0); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(rc, 64<<20))
			rc.Close()
		}
		pubOnly, _ := New(inner, Options{Recipients: []age.Recipient{id.Recipient()}})
		_, _, _ = pubOnly.StoredInfo(context.Background(), "1/k")
	})
}
