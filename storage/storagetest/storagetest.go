// Package storagetest is the conformance suite every storage.Store backend
// must pass. It checks the contract documented on storage.Store, so a backend
// that passes can be swapped for any other without callers noticing.
//
// Import it only from _test.go files.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/storage"
)

// BigSize is larger than one S3 part (16 MiB by default) and than a WAL
// segment, so it exercises multipart paths and large-file handling.
const BigSize = 17 << 20

// Run runs the conformance suite. newStore is called once per subtest and must
// return an empty store (a fresh directory, or a fresh key prefix in a shared
// bucket); it should register its own cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"OpenOffset", testOpenOffset},
		{"Stat", testStat},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"ListPrefix", testListPrefix},
		{"ListDuringPut", testListDuringPut},
		{"FailedPut", testFailedPut},
		{"CancelledPut", testCancelledPut},
		{"ConcurrentPut", testConcurrentPut},
		{"KeyCharacters", testKeyCharacters},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// RandomBytes returns n deterministic pseudo-random bytes; incompressible, so
// no layer can make a big object small by accident.
func RandomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// OnlyReader hides every method but Read, so a store cannot rewind or size
// the body: it is what a pipe or a compressor output looks like.
type OnlyReader struct{ R io.Reader }

func (o OnlyReader) Read(p []byte) (int, error) { return o.R.Read(p) }

// ErrInjected is returned by FailingReader.
var ErrInjected = errors.New("storagetest: injected read failure")

// FailingReader yields the first N bytes of Data, then ErrInjected.
type FailingReader struct {
	Data []byte
	N    int
	off  int
}

func (f *FailingReader) Read(p []byte) (int, error) {
	if f.off >= f.N {
		return 0, ErrInjected
	}
	n := copy(p, f.Data[f.off:min(f.N, len(f.Data))])
	f.off += n
	return n, nil
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func put(t *testing.T, s storage.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(ctx(t), key, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

func get(t *testing.T, s storage.Store, key string, offset int64) []byte {
	t.Helper()
	rc, err := s.Open(ctx(t), key, offset)
	if err != nil {
		t.Fatalf("Open(%q, %d): %v", key, offset, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q from %d: %v", key, offset, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("close %q: %v", key, err)
	}
	return b
}

func equal(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes (sha256 %x), want %d bytes (sha256 %x)",
			what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

func keys(infos []storage.ObjectInfo) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Key
	}
	return out
}

func list(t *testing.T, s storage.Store, prefix string) []storage.ObjectInfo {
	t.Helper()
	infos, err := s.List(ctx(t), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return infos
}

func mustNotExist(t *testing.T, s storage.Store, key string) {
	t.Helper()
	if info, err := s.Stat(ctx(t), key); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Stat(%q) = %+v, %v; want ErrNotExist", key, info, err)
	}
}

func testRoundTrip(t *testing.T, s storage.Store) {
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", []byte{}},
		{"small", []byte("hello, archive\n")},
		{"big", RandomBytes(1, BigSize)},
	}
	for _, c := range cases {
		t.Run(c.name+"/seekable", func(t *testing.T) {
			key := "rt/" + c.name + "-seekable"
			put(t, s, key, c.data)
			equal(t, key, get(t, s, key, 0), c.data)
		})
		t.Run(c.name+"/stream", func(t *testing.T) {
			key := "rt/" + c.name + "-stream"
			if err := s.Put(ctx(t), key, OnlyReader{bytes.NewReader(c.data)}); err != nil {
				t.Fatalf("Put(%q): %v", key, err)
			}
			equal(t, key, get(t, s, key, 0), c.data)
		})
	}
}

func testOverwrite(t *testing.T, s storage.Store) {
	const key = "ow/object"
	put(t, s, key, []byte("first version, rather long"))
	put(t, s, key, []byte("second"))
	equal(t, key, get(t, s, key, 0), []byte("second"))
	info, err := s.Stat(ctx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len("second")) {
		t.Fatalf("Stat size after overwrite = %d, want %d", info.Size, len("second"))
	}
	if got := keys(list(t, s, "ow/")); !slices.Equal(got, []string{key}) {
		t.Fatalf("List after overwrite = %q, want [%q]", got, key)
	}
}

func testOpenOffset(t *testing.T, s storage.Store) {
	const key = "off/object"
	data := RandomBytes(2, 100_000)
	put(t, s, key, data)
	for _, off := range []int64{0, 1, 4096, 99_999, 100_000} {
		equal(t, fmt.Sprintf("offset %d", off), get(t, s, key, off), data[off:])
	}
	// Past the end reads as empty, like a file: a resumed read never fails
	// just because it had already reached the end.
	equal(t, "offset past end", get(t, s, key, 100_010), nil)
	if _, err := s.Open(ctx(t), "off/missing", 10); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Open(missing, 10) = %v, want ErrNotExist", err)
	}
}

func testStat(t *testing.T, s storage.Store) {
	before := time.Now().Add(-time.Hour)
	for _, n := range []int{0, 1, 12345} {
		key := fmt.Sprintf("stat/%d", n)
		put(t, s, key, RandomBytes(3, n))
		info, err := s.Stat(ctx(t), key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if info.Key != key || info.Size != int64(n) {
			t.Fatalf("Stat(%q) = {Key:%q Size:%d}, want {Key:%q Size:%d}", key, info.Key, info.Size, key, n)
		}
		// Clocks of a remote server may be off a little, never by an hour.
		if info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(time.Hour)) {
			t.Fatalf("Stat(%q).ModTime = %v, not close to now", key, info.ModTime)
		}
	}
	put(t, s, "stat/dir/nested", []byte("x"))
	// A "directory" made by a nested key is not an object.
	mustNotExist(t, s, "stat/dir")
}

func testMissing(t *testing.T, s storage.Store) {
	for _, key := range []string{"missing", "no/such/key", "wal/000000010000000000000001"} {
		mustNotExist(t, s, key)
		rc, err := s.Open(ctx(t), key, 0)
		if !errors.Is(err, storage.ErrNotExist) {
			if rc != nil {
				rc.Close()
			}
			t.Fatalf("Open(%q) = %v, want ErrNotExist from Open itself", key, err)
		}
		if err := s.Delete(ctx(t), key); err != nil {
			t.Fatalf("Delete(%q) of a missing object = %v, want nil", key, err)
		}
	}
	if infos := list(t, s, ""); len(infos) != 0 {
		t.Fatalf("List(\"\") of an empty store = %q", keys(infos))
	}
	if infos := list(t, s, "no/such/"); len(infos) != 0 {
		t.Fatalf("List(\"no/such/\") = %q", keys(infos))
	}
}

func testDelete(t *testing.T, s storage.Store) {
	put(t, s, "del/a", []byte("a"))
	put(t, s, "del/b", []byte("b"))
	if err := s.Delete(ctx(t), "del/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	mustNotExist(t, s, "del/a")
	if got := keys(list(t, s, "del/")); !slices.Equal(got, []string{"del/b"}) {
		t.Fatalf("List after Delete = %q", got)
	}
	if err := s.Delete(ctx(t), "del/a"); err != nil {
		t.Fatalf("second Delete = %v, want nil", err)
	}
	// A deleted key can be written again.
	put(t, s, "del/a", []byte("again"))
	equal(t, "del/a", get(t, s, "del/a", 0), []byte("again"))
}

func testListPrefix(t *testing.T, s storage.Store) {
	objects := map[string]int{
		"wal/000000010000000000000001":            10,
		"wal/000000010000000000000002":            20,
		"wal/000000010000000100000000":            30,
		"wal/000000020000000000000001":            40,
		"wal/00000002.history":                    50,
		"walnut":                                  1,
		"basebackups/20260101T000000Z/base.tar":   60,
		"basebackups/20260101T000000Z/manifest":   70,
		"basebackups/20260101T000000Z/x/y/z.tar":  80,
		"basebackups/20260102T000000Z/manifest":   90,
		"basebackups-old/20250101T000000Z/backup": 2,
	}
	for k, n := range objects {
		put(t, s, k, RandomBytes(4, n))
	}
	all := make([]string, 0, len(objects))
	for k := range objects {
		all = append(all, k)
	}
	slices.Sort(all)
	cases := []struct {
		prefix string
		want   []string
	}{
		{"", all},
		{"wal/00000001", []string{"wal/000000010000000000000001", "wal/000000010000000000000002", "wal/000000010000000100000000"}},
		{"wal/000000010000000000000001", []string{"wal/000000010000000000000001"}},
		{"wal/00000002", []string{"wal/00000002.history", "wal/000000020000000000000001"}},
		{"wal", []string{
			"wal/000000010000000000000001", "wal/000000010000000000000002", "wal/000000010000000100000000",
			"wal/00000002.history", "wal/000000020000000000000001", "walnut",
		}},
		{"wal/", []string{
			"wal/000000010000000000000001", "wal/000000010000000000000002", "wal/000000010000000100000000",
			"wal/00000002.history", "wal/000000020000000000000001",
		}},
		{"basebackups/", []string{
			"basebackups/20260101T000000Z/base.tar", "basebackups/20260101T000000Z/manifest",
			"basebackups/20260101T000000Z/x/y/z.tar", "basebackups/20260102T000000Z/manifest",
		}},
		{"basebackups", []string{
			"basebackups-old/20250101T000000Z/backup",
			"basebackups/20260101T000000Z/base.tar", "basebackups/20260101T000000Z/manifest",
			"basebackups/20260101T000000Z/x/y/z.tar", "basebackups/20260102T000000Z/manifest",
		}},
		{"basebackups/20260101T000000Z/x", []string{"basebackups/20260101T000000Z/x/y/z.tar"}},
		{"basebackups/2026010", []string{
			"basebackups/20260101T000000Z/base.tar", "basebackups/20260101T000000Z/manifest",
			"basebackups/20260101T000000Z/x/y/z.tar", "basebackups/20260102T000000Z/manifest",
		}},
		{"wal/9", nil},
		{"nothing/here/", nil},
	}
	for _, c := range cases {
		infos := list(t, s, c.prefix)
		got := keys(infos)
		if !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("List(%q) =\n  %q\nwant\n  %q", c.prefix, got, c.want)
			continue
		}
		for _, in := range infos {
			if in.Size != int64(objects[in.Key]) {
				t.Errorf("List(%q): %s size %d, want %d", c.prefix, in.Key, in.Size, objects[in.Key])
			}
			if in.ModTime.IsZero() {
				t.Errorf("List(%q): %s has zero ModTime", c.prefix, in.Key)
			}
		}
	}
}

// blockingReader yields first, then waits until release is closed, then
// yields rest: it holds a Put in the middle of its body.
type blockingReader struct {
	first, rest []byte
	reached     chan struct{}
	release     chan struct{}
	state       int
}

func (b *blockingReader) Read(p []byte) (int, error) {
	switch b.state {
	case 0:
		n := copy(p, b.first)
		b.first = b.first[n:]
		if len(b.first) == 0 {
			b.state = 1
		}
		return n, nil
	case 1:
		close(b.reached)
		<-b.release
		b.state = 2
		fallthrough
	default:
		if len(b.rest) == 0 {
			return 0, io.EOF
		}
		n := copy(p, b.rest)
		b.rest = b.rest[n:]
		return n, nil
	}
}

func testListDuringPut(t *testing.T, s storage.Store) {
	const key = "inflight/object"
	put(t, s, "inflight/other", []byte("other"))
	data := RandomBytes(5, 3<<20)
	br := &blockingReader{
		first: data[:1<<20], rest: data[1<<20:],
		reached: make(chan struct{}), release: make(chan struct{}),
	}
	done := make(chan error, 1)
	go func() { done <- s.Put(ctx(t), key, OnlyReader{br}) }()
	select {
	case <-br.reached:
	case err := <-done:
		t.Fatalf("Put finished before its body was read: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("Put did not read its body")
	}
	// Half-way through the body: nothing but finished objects is visible.
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"inflight/other"}) {
		close(br.release)
		<-done
		t.Fatalf("List during Put = %q, want only [inflight/other]", got)
	}
	if _, err := s.Stat(ctx(t), key); !errors.Is(err, storage.ErrNotExist) {
		close(br.release)
		<-done
		t.Fatalf("Stat during Put = %v, want ErrNotExist", err)
	}
	close(br.release)
	if err := <-done; err != nil {
		t.Fatalf("Put: %v", err)
	}
	equal(t, key, get(t, s, key, 0), data)
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"inflight/object", "inflight/other"}) {
		t.Fatalf("List after Put = %q", got)
	}
}

func testFailedPut(t *testing.T, s storage.Store) {
	for _, c := range []struct {
		name    string
		size, n int
	}{
		{"small", 64 << 10, 32 << 10},
		// Fails after more than one S3 part has been sent.
		{"big", BigSize + 8<<20, BigSize},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := "fail/" + c.name
			data := RandomBytes(6, c.size)

			err := s.Put(ctx(t), key, &FailingReader{Data: data, N: c.n})
			if err == nil {
				t.Fatal("Put of a failing reader succeeded")
			}
			mustNotExist(t, s, key)
			if got := keys(list(t, s, key)); len(got) != 0 {
				t.Fatalf("List after a failed Put = %q, want nothing (no partial or temp objects)", got)
			}

			old := []byte("previous content")
			put(t, s, key, old)
			if err := s.Put(ctx(t), key, &FailingReader{Data: data, N: c.n}); err == nil {
				t.Fatal("Put of a failing reader succeeded")
			}
			equal(t, "object after failed overwrite", get(t, s, key, 0), old)
			if got := keys(list(t, s, key)); !slices.Equal(got, []string{key}) {
				t.Fatalf("List after a failed overwrite = %q, want [%q]", got, key)
			}
		})
	}
}

func testCancelledPut(t *testing.T, s storage.Store) {
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	if err := s.Put(c, "cancel/object", bytes.NewReader([]byte("data"))); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	mustNotExist(t, s, "cancel/object")
	if got := keys(list(t, s, "")); len(got) != 0 {
		t.Fatalf("List after a cancelled Put = %q", got)
	}
}

func testConcurrentPut(t *testing.T, s storage.Store) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprintf("conc/dir%d/object-%02d", i%2, i)
			errs[i] = s.Put(ctx(t), key, OnlyReader{bytes.NewReader(RandomBytes(uint64(100+i), 256<<10+i))})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Put #%d: %v", i, err)
		}
	}
	infos := list(t, s, "conc/")
	if len(infos) != n {
		t.Fatalf("List after concurrent Puts = %q, want %d objects", keys(infos), n)
	}
	for i := range n {
		key := fmt.Sprintf("conc/dir%d/object-%02d", i%2, i)
		equal(t, key, get(t, s, key, 0), RandomBytes(uint64(100+i), 256<<10+i))
	}
}

func testKeyCharacters(t *testing.T, s storage.Store) {
	ks := []string{
		"wal/00000002.history",
		"wal/000000010000000000000003.00000028.backup",
		"wal/000000010000000000000004.partial",
		"a-b_c/d.e-f_g.tar.zst",
		"UPPER/lower-Mixed.9",
		"x/.hidden",
		"x/-dash",
	}
	for _, k := range ks {
		put(t, s, k, []byte(k))
		equal(t, k, get(t, s, k, 0), []byte(k))
		info, err := s.Stat(ctx(t), k)
		if err != nil || info.Size != int64(len(k)) {
			t.Fatalf("Stat(%q) = %+v, %v", k, info, err)
		}
	}
	want := slices.Clone(ks)
	slices.Sort(want)
	if got := keys(list(t, s, "")); !slices.Equal(got, want) {
		t.Fatalf("List = %q, want %q", got, want)
	}
	for _, k := range ks {
		if err := s.Delete(ctx(t), k); err != nil {
			t.Fatalf("Delete(%q): %v", k, err)
		}
	}
	if got := keys(list(t, s, "")); len(got) != 0 {
		t.Fatalf("List after deleting all = %q", got)
	}
}
