package bench_test

// In-process benchmarks on real WAL from the corpus that walbench generates
// (bench/.cache, or $PITR_BENCH_CACHE). MB/s is per original (uncompressed)
// byte; "ratio" is original/stored bytes.
//
//	go test -run '^$' -bench . -benchmem ./bench/
//	go test -run '^$' -bench 'Archiver/push$' -cpuprofile cpu.out ./bench/ && go tool pprof -top cpu.out

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/bench/internal/corpus"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage/codec"
	storagefs "github.com/pitr-dev/pitr/storage/fs"
	"github.com/pitr-dev/pitr/storage/retry"
)

// sample is how many corpus segments the benchmarks cycle through: spread
// over the corpus so bulk-load and OLTP segments both count.
const sample = 8

var (
	loadOnce sync.Once
	loaded   *corpus.Corpus
	segNames []string
	segData  [][]byte
	loadErr  error
)

// segments returns the sampled corpus segments (names and bytes), or skips
// the benchmark when there is no corpus yet.
func segments(b *testing.B) (*corpus.Corpus, []string, [][]byte) {
	b.Helper()
	loadOnce.Do(func() {
		dir, err := corpus.DefaultDir()
		if err != nil {
			loadErr = err
			return
		}
		if loaded, loadErr = corpus.Load(dir); loadErr != nil {
			return
		}
		n := len(loaded.Segments)
		for i := 0; i < sample && i < n; i++ {
			name := loaded.Segments[i*n/min(sample, n)]
			data, err := os.ReadFile(loaded.Path(name))
			if err != nil {
				loadErr = err
				return
			}
			segNames = append(segNames, name)
			segData = append(segData, data)
		}
	})
	if errors.Is(loadErr, corpus.ErrMissing) {
		b.Skipf("%v: run `make bench` (or go run ./bench/cmd/walbench) once to generate it", loadErr)
	}
	if loadErr != nil {
		b.Fatal(loadErr)
	}
	return loaded, segNames, segData
}

var codecs = []struct {
	name string
	opts codec.Options
}{
	{"none", codec.Options{Codec: codec.None}},
	{"zstd-1", codec.Options{Codec: codec.Zstd, Level: 1}},
	{"zstd-2-default", codec.Options{Codec: codec.Zstd, Level: 2}},
	{"zstd-3", codec.Options{Codec: codec.Zstd, Level: 3}},
	{"zstd-4", codec.Options{Codec: codec.Zstd, Level: 4}},
}

// BenchmarkCodecEncode encodes whole segments as archive-push does (into
// memory, as codec.Put does for objects up to 64 MiB).
func BenchmarkCodecEncode(b *testing.B) {
	_, _, data := segments(b)
	for _, c := range codecs {
		b.Run(c.name, func(b *testing.B) {
			var buf bytes.Buffer
			var in, out int64
			b.SetBytes(int64(len(data[0])))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d := data[i%len(data)]
				buf.Reset()
				if _, err := codec.Encode(&buf, bytes.NewReader(d), c.opts); err != nil {
					b.Fatal(err)
				}
				in += int64(len(d))
				out += int64(buf.Len())
			}
			b.ReportMetric(float64(in)/float64(out), "ratio")
		})
	}
}

// BenchmarkCodecDecode decodes and verifies (size, SHA-256) whole segments.
func BenchmarkCodecDecode(b *testing.B) {
	_, _, data := segments(b)
	for _, c := range codecs {
		b.Run(c.name, func(b *testing.B) {
			encoded := make([][]byte, len(data))
			for i, d := range data {
				var buf bytes.Buffer
				if _, err := codec.Encode(&buf, bytes.NewReader(d), c.opts); err != nil {
					b.Fatal(err)
				}
				encoded[i] = buf.Bytes()
			}
			b.SetBytes(int64(len(data[0])))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := codec.NewReader(bytes.NewReader(encoded[i%len(encoded)]))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}

// newArchiver is what cmd/pitr builds for a file:// repository: the fs store
// behind the retry wrapper, default codec, the data directory's pg_control.
func newArchiver(b *testing.B, c *corpus.Corpus) (*archive.Archiver, *storagefs.Store) {
	b.Helper()
	st, err := storagefs.New(filepath.Join(b.TempDir(), "repo"))
	if err != nil {
		b.Fatal(err)
	}
	return &archive.Archiver{
		Store:       retry.New(st, retry.Options{}),
		Codec:       codec.Options{Codec: codec.Default, Level: codec.DefaultLevel},
		ControlFile: filepath.Join(c.DataDir(), "global", "pg_control"),
		Log:         slog.New(slog.DiscardHandler),
	}, st
}

// BenchmarkArchiver measures archive.Archiver end to end on a local fs
// repository, fsyncs included:
//
//	push          archive-push of a segment not yet archived
//	push-again    archive-push of an identical, already archived segment
//	fetch         wal-fetch of an archived segment to a new file
func BenchmarkArchiver(b *testing.B) {
	c, names, data := segments(b)
	ctx := context.Background()
	id, err := repoSystemID(c)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("push", func(b *testing.B) {
		a, st := newArchiver(b, c)
		b.SetBytes(int64(len(data[0])))
		b.ReportAllocs()
		var in, out int64
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			name := names[i%len(names)]
			res, err := a.Push(ctx, c.Path(name))
			if err != nil {
				b.Fatal(err)
			}
			in, out = in+res.Size, out+res.Stored
			b.StopTimer()
			key, err := repo.WALKey(id, name)
			if err != nil {
				b.Fatal(err)
			}
			if err := st.Delete(ctx, key); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(in)/float64(out), "ratio")
	})

	b.Run("push-again", func(b *testing.B) {
		a, _ := newArchiver(b, c)
		for _, name := range names {
			if _, err := a.Push(ctx, c.Path(name)); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(len(data[0])))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			res, err := a.Push(ctx, c.Path(names[i%len(names)]))
			if err != nil {
				b.Fatal(err)
			}
			if !res.AlreadyArchived {
				b.Fatal("expected an identical archived copy")
			}
		}
	})

	b.Run("fetch", func(b *testing.B) {
		a, _ := newArchiver(b, c)
		for _, name := range names {
			if _, err := a.Push(ctx, c.Path(name)); err != nil {
				b.Fatal(err)
			}
		}
		dest := filepath.Join(b.TempDir(), "RECOVERYXLOG")
		b.SetBytes(int64(len(data[0])))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := a.Fetch(ctx, names[i%len(names)], dest); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := os.Remove(dest); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

func repoSystemID(c *corpus.Corpus) (repo.SystemID, error) {
	var id repo.SystemID
	err := id.UnmarshalJSON([]byte(`"` + c.SystemIdentifier + `"`))
	return id, err
}

// BenchmarkBuildingBlocks measures what push and fetch are made of, outside
// pitr's code, on this machine: hashing a segment, and writing a file of a
// segment's size and of a typical compressed size with fsync (what the fs
// store and wal-fetch do per object).
func BenchmarkBuildingBlocks(b *testing.B) {
	_, _, data := segments(b)
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data[0])))
		for i := 0; i < b.N; i++ {
			sha256.Sum256(data[i%len(data)])
		}
	})
	for _, size := range []int{len(data[0]), len(data[0]) / 10} {
		b.Run("write+fsync-"+strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			dir := b.TempDir()
			buf := data[0][:size]
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				p := filepath.Join(dir, "f")
				f, err := os.Create(p)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				if err := f.Close(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.Remove(p); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
