//go:build cgo

package codec

import (
	"errors"
	"io"
	"runtime"

	ddzstd "github.com/DataDog/zstd"
)

// Encoder names the zstd encoder this binary writes with.
//
// With cgo (the default wherever a C compiler is found) objects are
// compressed by the C zstd library through DataDog/zstd: the system's
// libzstd with the external_libzstd build tag (the Makefile sets it when
// pkg-config finds one), else the C source that module vendors. On the
// benchmark's 128 pgbench WAL segments, level 3 of Debian 12's libzstd
// stores 213.4 MiB in 34 ms per segment where the pure-Go encoder's
// default stores 221.9 MiB in 45 ms: the same bytes pgBackRest's zst
// stores, from the same library. Built with CGO_ENABLED=0, pitr keeps the
// pure-Go encoder (zstd_purego.go). Both write standard zstd frames, and
// reading always uses the pure-Go decoder with its window and memory limits
// (limit.go), so which encoder wrote an object never matters to a reader.
const Encoder = "libzstd " + libzstdSource

// libzstdLevel maps pitr's levels to zstd's, keeping the meaning the
// pure-Go encoder gives them (its levels approximate zstd 1, 3, 7 and 11).
func libzstdLevel(l Level) int {
	switch l {
	case 1:
		return 1
	case 3:
		return 7
	case 4:
		return 11
	}
	return 3
}

// redirect lets Discard point the encoder's output at io.Discard, so the C
// context can be finished and freed without touching the destination.
type redirect struct{ w io.Writer }

func (r *redirect) Write(p []byte) (int, error) { return r.w.Write(p) }

// libzstdStream is one C encoder and the writer it writes through.
type libzstdStream struct {
	out *redirect
	enc *ddzstd.Writer
}

// discard finishes the stream into io.Discard, which frees its C context.
func (s *libzstdStream) discard() {
	s.out.w = io.Discard
	_ = s.enc.Close()
}

type libzstdBody struct {
	*libzstdStream
	done    bool
	cleanup runtime.Cleanup
}

func newZstdBody(dst io.Writer, opts Options) (zstdBody, error) {
	out := &redirect{w: dst}
	stream := &libzstdStream{out: out, enc: ddzstd.NewWriterLevel(out, libzstdLevel(opts.Level))}
	b := &libzstdBody{libzstdStream: stream}
	// The C context lives outside Go's heap. An encoder dropped without
	// Close or Discard (a panic in a caller) would otherwise hold a few MiB
	// for the life of a long-running agent.
	b.cleanup = runtime.AddCleanup(b, (*libzstdStream).discard, stream)
	if opts.Concurrency > 1 {
		// Not libzstd's own worker threads: their job buffers cost about
		// 40 MiB per stream (a backup to S3 peaked at 123 MiB instead of
		// 77), while one encoding goroutine beside the caller was within
		// 0.1-0.2 s of them.
		return newAsideBody(b), nil
	}
	return b, nil
}

// libzstdChunk bounds what one call hands the C encoder. The binding sizes
// its output buffer to the worst case of each call, so a whole 16 MiB
// segment in one Write would cost a fresh 16 MiB buffer per object.
const libzstdChunk = 256 << 10

func (b *libzstdBody) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), libzstdChunk)
		if _, err := b.enc.Write(p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

func (b *libzstdBody) Close() error {
	if b.done {
		return errors.New("zstd encoder already closed")
	}
	b.done = true
	b.cleanup.Stop()
	return b.enc.Close()
}

func (b *libzstdBody) Discard() {
	if b.done {
		return
	}
	b.done = true
	b.cleanup.Stop()
	b.discard()
}
