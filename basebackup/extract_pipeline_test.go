package basebackup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// randomBody is incompressible, so that stored objects are as large as the
// data and every pipeline buffer fills.
func randomBody(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// Contract: the pipelined extraction (parts concurrently, read-ahead,
// decoding ahead, fsync on workers) writes exactly the bytes of every tar
// member, across chunk boundaries and in every part.
func TestExtractPipelineIdenticalData(t *testing.T) {
	st, _ := newTestStore(t)
	base := baseFiles()
	base[1] = tarFile{name: "tablespace_map", body: "16384 /srv/ts1\n16385 /srv/ts2\n"}
	sizes := []int{0, 1, pipeChunk - 1, pipeChunk, pipeChunk + 1, 3*pipeChunk + 7, 4096}
	for i, n := range sizes {
		base = append(base, tarFile{name: "base/1/" + string(rune('a'+i)), body: randomBody(uint64(i), n)})
	}
	// Many small files: more than the sync queue holds.
	for i := range 2 * syncQueue {
		base = append(base, tarFile{name: "base/1/small" + strings.Repeat("x", i%7) + string(rune('A'+i%26)) + string(rune('a'+i/26)), body: randomBody(uint64(1000+i), i*37)})
	}
	ts1 := []tarFile{{name: "PG_15_202209061/", typ: tar.TypeDir}, {name: "PG_15_202209061/5/", typ: tar.TypeDir},
		{name: "PG_15_202209061/5/16386", body: randomBody(77, 2*pipeChunk+3)}}
	ts2 := []tarFile{{name: "PG_15_202209061/", typ: tar.TypeDir}, {name: "PG_15_202209061/5/16387", body: randomBody(78, 5*pipeChunk)}}
	tss := []Tablespace{{OID: 16384, Name: "ts1", Location: "/srv/ts1", Part: "16384.tar"}, {OID: 16385, Name: "ts2", Location: "/srv/ts2", Part: "16385.tar"}}
	b := storeBackup(t, st, map[string][]byte{
		repo.BackupBaseTarName: makeTar(t, base), "16384.tar": makeTar(t, ts1), "16385.tar": makeTar(t, ts2),
	}, []string{repo.BackupBaseTarName, "16384.tar", "16385.tar"}, tss)

	dir := t.TempDir()
	pgdata := filepath.Join(dir, "data")
	loc := map[uint32]string{16384: filepath.Join(dir, "ts1"), 16385: filepath.Join(dir, "ts2")}
	if err := Extract(context.Background(), st, b, pgdata, loc); err != nil {
		t.Fatal(err)
	}
	check := func(root string, files []tarFile) {
		t.Helper()
		for _, f := range files {
			if f.typ != 0 || f.name == "tablespace_map" {
				continue
			}
			got, err := os.ReadFile(filepath.Join(root, f.name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, []byte(f.body)) {
				t.Errorf("%s: %d bytes restored differ from the %d in the backup", filepath.Join(root, f.name), len(got), len(f.body))
			}
		}
	}
	check(pgdata, base)
	check(loc[16384], ts1)
	check(loc[16385], ts2)
}

// failingStore serves some parts through a reader the test controls.
type failingStore struct {
	storage.Store
	readers map[string]func(ctx context.Context, r io.ReadCloser) io.ReadCloser
}

func (s *failingStore) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	r, err := s.Store.Open(ctx, key, offset)
	if err != nil {
		return nil, err
	}
	for suffix, wrap := range s.readers {
		if strings.HasSuffix(key, "/"+suffix) {
			return wrap(ctx, r), nil
		}
	}
	return r, nil
}

// stallingReader passes the first n bytes, then blocks until the context
// of the Open that returned it is cancelled: a download that only the
// pipeline's cancellation can end.
type stallingReader struct {
	io.ReadCloser
	ctx      context.Context
	n        int
	stalled  chan struct{} // closed when the reader first blocks
	released chan struct{} // closed when cancellation ended the block
	once     sync.Once
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		m, err := r.ReadCloser.Read(p[:min(len(p), r.n)])
		r.n -= m
		return m, err
	}
	r.once.Do(func() { close(r.stalled) })
	<-r.ctx.Done()
	select {
	case <-r.released:
	default:
		close(r.released)
	}
	return 0, r.ctx.Err()
}

type failAfter struct {
	io.ReadCloser
	n   int
	err error
}

func (r *failAfter) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, r.err
	}
	m, err := r.ReadCloser.Read(p[:min(len(p), r.n)])
	r.n -= m
	return m, err
}

var errInjected = errors.New("injected read failure")

// assertNothingLeft fails unless none of paths exists.
func assertNothingLeft(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the failed restore left %s behind (%v)", p, err)
		}
	}
}

// Contract: a failure in one part's download stops the other parts, which
// are still downloading (cancellation reaches a storage read that would
// otherwise never end), reports the failure itself rather than the
// cancellation, and leaves no directory that could pass for a restore.
func TestExtractPartFailureCancelsOthers(t *testing.T) {
	fsst, _ := newTestStore(t)
	base := baseFiles()
	base = append(base, tarFile{name: "base/1/big", body: randomBody(1, 6*pipeChunk)})
	b := storeBackup(t, fsst, map[string][]byte{
		repo.BackupBaseTarName: makeTar(t, base), "16384.tar": makeTar(t, append(tsFiles, tarFile{name: "PG_15_202209061/5/big", body: randomBody(2, 2*pipeChunk)})),
	}, []string{repo.BackupBaseTarName, "16384.tar"}, []Tablespace{{OID: 16384, Name: "ts1", Location: "/srv/ts1", Part: "16384.tar"}})

	stall := &stallingReader{n: pipeChunk, stalled: make(chan struct{}), released: make(chan struct{})}
	st := &failingStore{Store: fsst, readers: map[string]func(context.Context, io.ReadCloser) io.ReadCloser{
		repo.BackupBaseTarName: func(ctx context.Context, r io.ReadCloser) io.ReadCloser {
			stall.ReadCloser, stall.ctx = r, ctx
			return stall
		},
		"16384.tar": func(_ context.Context, r io.ReadCloser) io.ReadCloser {
			// Fail only once the base part is stuck in its download, so
			// the failure has something to cancel.
			return &waitThen{ReadCloser: &failAfter{ReadCloser: r, n: 300 << 10, err: errInjected}, wait: stall.stalled}
		},
	}}
	dir := t.TempDir()
	pgdata, tsDir := filepath.Join(dir, "data"), filepath.Join(dir, "ts")
	err := Extract(context.Background(), st, b, pgdata, map[uint32]string{16384: tsDir})
	if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "part 16384.tar") {
		t.Fatalf("got %v, want the injected failure of part 16384.tar", err)
	}
	select {
	case <-stall.released:
	default:
		t.Fatal("the base part's download was never cancelled")
	}
	assertNothingLeft(t, pgdata, tsDir)
}

// waitThen delays its first Read until wait is closed.
type waitThen struct {
	io.ReadCloser
	wait <-chan struct{}
}

func (r *waitThen) Read(p []byte) (int, error) {
	<-r.wait
	return r.ReadCloser.Read(p)
}

// Contract: when the tar stage refuses a member, the stages before it
// (a download still in progress, the decoder) are stopped, and nothing is
// left behind.
func TestExtractRefusalStopsDownload(t *testing.T) {
	fsst, _ := newTestStore(t)
	files := []tarFile{{name: "PG_VERSION", body: "15\n"}, {name: "base/hard", typ: tar.TypeLink, linkname: "/etc/passwd"},
		{name: "base/big", body: randomBody(3, 8*pipeChunk)}}
	b := storeBackup(t, fsst, map[string][]byte{repo.BackupBaseTarName: makeTar(t, files)}, []string{repo.BackupBaseTarName}, nil)
	stall := &stallingReader{n: 2 * pipeChunk, stalled: make(chan struct{}), released: make(chan struct{})}
	st := &failingStore{Store: fsst, readers: map[string]func(context.Context, io.ReadCloser) io.ReadCloser{
		repo.BackupBaseTarName: func(ctx context.Context, r io.ReadCloser) io.ReadCloser {
			stall.ReadCloser, stall.ctx = r, ctx
			return stall
		},
	}}
	pgdata := filepath.Join(t.TempDir(), "data")
	err := Extract(context.Background(), st, b, pgdata, nil)
	if err == nil || !strings.Contains(err.Error(), "a link") {
		t.Fatalf("got %v, want the link refused", err)
	}
	assertNothingLeft(t, pgdata)
}

// Contract: a corrupt tablespace part fails the whole restore with
// ErrCorrupt naming it, and the data directory extracted beside it is
// removed too.
func TestExtractCorruptTablespaceRemovesAll(t *testing.T) {
	st, root := newTestStore(t)
	base := baseFiles()
	b := storeBackup(t, st, map[string][]byte{
		repo.BackupBaseTarName: makeTar(t, base), "16384.tar": makeTar(t, append(tsFiles, tarFile{name: "PG_15_202209061/5/big", body: randomBody(4, 3*pipeChunk)})),
	}, []string{repo.BackupBaseTarName, "16384.tar"}, []Tablespace{{OID: 16384, Name: "ts1", Location: "/srv/ts1", Part: "16384.tar"}})
	p := filepath.Join(root, filepath.FromSlash(b.Key("16384.tar")))
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-100<<10] ^= 0x01
	if err := os.WriteFile(p, raw, 0o640); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pgdata, tsDir := filepath.Join(dir, "data"), filepath.Join(dir, "ts")
	err = Extract(context.Background(), st, b, pgdata, map[uint32]string{16384: tsDir})
	if !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), "16384.tar is corrupt") {
		t.Fatalf("got %v, want 16384.tar corrupt", err)
	}
	assertNothingLeft(t, pgdata, tsDir)
}

// readAhead returns its source's bytes and final error unchanged, whatever
// the sizes of the reads on either side.
func TestReadAheadPassesThrough(t *testing.T) {
	data := []byte(randomBody(9, 3*pipeChunk+5))
	src := &failAfter{ReadCloser: io.NopCloser(&oddReader{r: bytes.NewReader(data)}), n: len(data), err: errInjected}
	ra := startReadAhead(context.Background(), src, 4096, 3)
	var got bytes.Buffer
	buf := make([]byte, 1000)
	var err error
	for err == nil {
		var n int
		n, err = ra.Read(buf[:1+len(got.Bytes())%999])
		got.Write(buf[:n])
	}
	ra.wait()
	if !errors.Is(err, errInjected) || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read %d of %d bytes, then %v", got.Len(), len(data), err)
	}
}

// oddReader returns reads of varying small sizes.
type oddReader struct {
	r *bytes.Reader
	i int
}

func (o *oddReader) Read(p []byte) (int, error) {
	o.i++
	return o.r.Read(p[:min(len(p), 1+o.i%5000)])
}

// Contract: Extract returns only once every file it wrote is fsynced (a
// restore that reports success must survive a crash before the server's
// first start), and a failed fsync fails the extraction and removes what
// was written.
func TestExtractSyncsEveryFileBeforeReturning(t *testing.T) {
	st, _ := newTestStore(t)
	base := slices.DeleteFunc(baseFiles(), func(f tarFile) bool { return f.name == "tablespace_map" })
	for i := range 2 * syncQueue {
		base = append(base, tarFile{name: fmt.Sprintf("base/1/%d", 16000+i), body: randomBody(uint64(i), i*101)})
	}
	b := storeBackup(t, st, map[string][]byte{repo.BackupBaseTarName: makeTar(t, base)}, []string{repo.BackupBaseTarName}, nil)

	var mu sync.Mutex
	synced := map[string]bool{}
	fail := ""
	orig := fsyncPath
	t.Cleanup(func() { fsyncPath = orig })
	fsyncPath = func(p string) error {
		mu.Lock()
		defer mu.Unlock()
		if fail != "" && strings.HasSuffix(p, fail) {
			return fmt.Errorf("sync %s: %w", p, syscall.EIO)
		}
		synced[p] = true
		return orig(p)
	}

	pgdata := filepath.Join(t.TempDir(), "data")
	if err := Extract(context.Background(), st, b, pgdata, nil); err != nil {
		t.Fatal(err)
	}
	var files int
	err := filepath.WalkDir(pgdata, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		mu.Lock()
		defer mu.Unlock()
		if !synced[p] {
			t.Errorf("%s was not fsynced by the time Extract returned", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2*syncQueue {
		t.Fatalf("only %d files extracted", files)
	}

	fail = "base/1/16007"
	pgdata2 := filepath.Join(t.TempDir(), "data")
	err = Extract(context.Background(), st, b, pgdata2, nil)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("Extract with a failing fsync: %v, want EIO", err)
	}
	if _, err := os.Stat(pgdata2); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after the failed fsync %s is still there (%v)", pgdata2, err)
	}
}
