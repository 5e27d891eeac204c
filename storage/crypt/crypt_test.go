package crypt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
	"github.com/pitr-dev/pitr/storage/fs"
)

var ctx = context.Background()

func newKey(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func backend(t *testing.T) (storage.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st, dir
}

func wrap(t *testing.T, inner storage.Store, recipients []*age.X25519Identity, identities ...*age.X25519Identity) *Store {
	t.Helper()
	var opts Options
	for _, r := range recipients {
		opts.Recipients = append(opts.Recipients, r.Recipient())
	}
	for _, id := range identities {
		opts.Identities = append(opts.Identities, id)
	}
	opts.Plaintext = func(key string) bool { return key == "marker.json" }
	s, err := New(inner, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(st storage.Store, key string) ([]byte, error) {
	obj, err := codec.Open(ctx, st, key)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

func putCodec(t *testing.T, st storage.Store, key string, data []byte, sizeHint int64) {
	t.Helper()
	if _, err := codec.Put(ctx, st, key, bytes.NewReader(data), sizeHint, codec.Options{Codec: codec.None}); err != nil {
		t.Fatal(err)
	}
}

// Both Put paths (buffered for a seekable body, streamed through a pipe
// otherwise) produce objects that decrypt to the codec stream, and the
// backend holds neither the plaintext nor a codec header.
func TestRoundTrip(t *testing.T) {
	key := newKey(t)
	inner, dir := backend(t)
	st := wrap(t, inner, []*age.X25519Identity{key}, key)
	secret := []byte("row value: the-quick-brown-fox-42\n")
	data := bytes.Repeat(secret, 20000) // several age chunks
	for _, c := range []struct {
		name string
		hint int64
	}{{"buffered", int64(len(data))}, {"streamed", -1}, {"empty", 0}} {
		t.Run(c.name, func(t *testing.T) {
			k := "1/wal/" + c.name
			d := data
			if c.name == "empty" {
				d = nil
			}
			putCodec(t, st, k, d, c.hint)
			got, err := readAll(st, k)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, d) {
				t.Fatalf("got %d bytes, want %d", len(got), len(d))
			}
			raw, err := os.ReadFile(filepath.Join(dir, k))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(raw, []byte("quick-brown-fox")) || bytes.Contains(raw, []byte("PITR")) {
				t.Fatal("stored object holds plaintext")
			}
			if !bytes.HasPrefix(raw, []byte("PAGE")) {
				t.Fatalf("stored object starts %q", raw[:8])
			}
		})
	}
	// Plain (non-codec) objects such as backup.json round-trip too.
	if err := st.Put(ctx, "1/backup.json", strings.NewReader(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	rc, err := st.Open(ctx, "1/backup.json", 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != `{"a":1}` {
		t.Fatalf("%q %v", b, err)
	}
	// The plaintext key stays readable without the wrapper.
	if err := st.Put(ctx, "marker.json", strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, "marker.json")); string(raw) != "{}" {
		t.Fatalf("marker stored as %q", raw)
	}
}

func TestWrongAndMissingKey(t *testing.T) {
	key, other := newKey(t), newKey(t)
	inner, _ := backend(t)
	putCodec(t, wrap(t, inner, []*age.X25519Identity{key}), "1/wal/x", []byte("data"), 4)

	_, err := readAll(wrap(t, inner, nil, other), "1/wal/x")
	if !errors.Is(err, ErrWrongKey) || errors.Is(err, codec.ErrCorrupt) || errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("wrong key: %v", err)
	}
	_, err = readAll(wrap(t, inner, []*age.X25519Identity{key}), "1/wal/x")
	if !errors.Is(err, ErrNoIdentity) || errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("no identity: %v", err)
	}
	// Without a recipient nothing can be written, and nothing is.
	err = wrap(t, inner, nil, key).Put(ctx, "1/wal/y", strings.NewReader("x"))
	if !errors.Is(err, ErrNoRecipients) {
		t.Fatalf("no recipients: %v", err)
	}
	if _, err := inner.Stat(ctx, "1/wal/y"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("object written without recipients: %v", err)
	}
}

// Rotation: objects written to the old key stay readable with both keys in
// the identity file; new ones are written to the new key only.
func TestRotation(t *testing.T) {
	oldKey, newK := newKey(t), newKey(t)
	inner, _ := backend(t)
	putCodec(t, wrap(t, inner, []*age.X25519Identity{oldKey}), "1/wal/old", []byte("old"), 3)
	putCodec(t, wrap(t, inner, []*age.X25519Identity{newK}), "1/wal/new", []byte("new"), 3)

	both := wrap(t, inner, nil, newK, oldKey)
	for k, want := range map[string]string{"1/wal/old": "old", "1/wal/new": "new"} {
		got, err := readAll(both, k)
		if err != nil || string(got) != want {
			t.Fatalf("%s: %q %v", k, got, err)
		}
	}
	if _, err := readAll(wrap(t, inner, nil, oldKey), "1/wal/new"); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old key read a new object: %v", err)
	}
}

func TestTruncatedAndTampered(t *testing.T) {
	key := newKey(t)
	inner, dir := backend(t)
	st := wrap(t, inner, []*age.X25519Identity{key}, key)
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	putCodec(t, st, "1/wal/seg", data, int64(len(data)))
	path := filepath.Join(dir, "1/wal/seg")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pubOnly := wrap(t, inner, []*age.X25519Identity{key})
	cases := map[string]func([]byte) []byte{
		"truncated mid-body":  func(b []byte) []byte { return b[:len(b)/2] },
		"footer cut off":      func(b []byte) []byte { return b[:len(b)-footerSize] },
		"one byte short":      func(b []byte) []byte { return b[:len(b)-1] },
		"header only":         func(b []byte) []byte { return b[:headerSize] },
		"flipped ciphertext":  func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"tampered footer sum": func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"tampered footer size": func(b []byte) []byte {
			b[len(b)-footerSize+8+15] ^= 1
			return b
		},
		"footer flag cleared": func(b []byte) []byte { b[len(b)-footerSize+4] = 0; return b },
		"bad magic":           func(b []byte) []byte { b[0] = 'X'; return b },
		"appended garbage":    func(b []byte) []byte { return append(b, make([]byte, 100)...) },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, mutate(bytes.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readAll(st, "1/wal/seg")
			if err == nil {
				t.Fatalf("read %d bytes of a damaged object without error", len(got))
			}
			if !errors.Is(err, codec.ErrCorrupt) {
				t.Fatalf("want ErrCorrupt, got %v", err)
			}
		})
	}
	// A tampered footer fools a public-key-only host (it cannot check the
	// footer), but only into reporting different content: never a match.
	b := bytes.Clone(orig)
	b[len(b)-1] ^= 1
	os.WriteFile(path, b, 0o600)
	info, ok, err := pubOnly.StoredInfo(ctx, "1/wal/seg")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if info.Size != int64(len(data)) {
		t.Fatalf("size %d", info.Size)
	}
}

// A host with only the public key learns size and SHA-256 of the original
// bytes from the footer, which is how archive-push tells an identical
// re-push from a conflicting one.
func TestStoredInfoWithoutPrivateKey(t *testing.T) {
	key := newKey(t)
	inner, _ := backend(t)
	pubOnly := wrap(t, inner, []*age.X25519Identity{key})
	data := bytes.Repeat([]byte("wal"), 100000)
	putCodec(t, pubOnly, "1/wal/seg", data, int64(len(data)))
	want, err := codec.Encode(io.Discard, bytes.NewReader(data), codec.Options{Codec: codec.Zstd})
	if err != nil {
		t.Fatal(err)
	}
	got, err := codec.ReadInfo(ctx, pubOnly, "1/wal/seg")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(want) {
		t.Fatalf("info %v, want %v", got, want)
	}
	// With the private key the same answer comes from decrypting.
	got2, err := codec.ReadInfo(ctx, wrap(t, inner, nil, key), "1/wal/seg")
	if err != nil || !got2.Equal(want) {
		t.Fatalf("%v %v", got2, err)
	}
	// A plain JSON object has no content checksum to offer.
	if err := pubOnly.Put(ctx, "1/backup.json", strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := codec.ReadInfo(ctx, pubOnly, "1/backup.json"); !errors.Is(err, codec.ErrCorrupt) {
		t.Fatalf("%v", err)
	}
	if _, err := codec.ReadInfo(ctx, pubOnly, "1/wal/absent"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("%v", err)
	}
}

// Objects written without encryption are refused, not read as if encrypted.
func TestPlaintextObjectRefused(t *testing.T) {
	key := newKey(t)
	inner, _ := backend(t)
	putCodec(t, inner, "1/wal/plain", []byte("plain"), 5)
	if err := inner.Put(ctx, "1/backup.json", strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	}
	st := wrap(t, inner, []*age.X25519Identity{key}, key)
	if _, err := readAll(st, "1/wal/plain"); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("%v", err)
	}
	if _, err := st.Open(ctx, "1/backup.json", 0); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("%v", err)
	}
	// Nor does a public-key-only host take a plaintext codec trailer for a footer.
	if _, _, err := wrap(t, inner, []*age.X25519Identity{key}).StoredInfo(ctx, "1/wal/plain"); !errors.Is(err, codec.ErrCorrupt) {
		t.Fatalf("StoredInfo of a plaintext object: %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.txt")
	pub, err := GenerateIdentityFile(path, "now")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", fi.Mode(), err)
	}
	if _, err := GenerateIdentityFile(path, "now"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("overwrote a key: %v", err)
	}
	ids, err := LoadIdentities(path)
	if err != nil || len(ids) != 1 || ids[0].Recipient().String() != pub {
		t.Fatalf("%v %v", ids, err)
	}
	os.Chmod(path, 0o640)
	_, err = LoadIdentities(path)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Fatalf("group-readable key accepted: %v", err)
	}
	secret, _ := os.ReadFile(path)
	if strings.Contains(err.Error(), "AGE-SECRET-KEY") || strings.Contains(err.Error(), string(secret)) {
		t.Fatal("error shows the key")
	}

	rs, err := ParseRecipients(pub + ", " + newKey(t).Recipient().String())
	if err != nil || len(rs) != 2 {
		t.Fatalf("%v %v", rs, err)
	}
	rfile := filepath.Join(dir, "recipients.txt")
	os.WriteFile(rfile, []byte("# current\n"+pub+"\n"), 0o644)
	if rs, err := ParseRecipients(rfile); err != nil || len(rs) != 1 {
		t.Fatalf("%v %v", rs, err)
	}
	priv := newKey(t).String()
	_, err = ParseRecipients(priv)
	if err == nil || strings.Contains(err.Error(), priv[20:]) {
		t.Fatalf("private key as recipient: %v", err)
	}
	os.WriteFile(rfile, []byte(priv+"\n"), 0o644)
	_, err = ParseRecipients(rfile)
	if err == nil || strings.Contains(err.Error(), priv[20:]) || !strings.Contains(err.Error(), "private key") {
		t.Fatalf("private key in recipients file: %v", err)
	}
}
