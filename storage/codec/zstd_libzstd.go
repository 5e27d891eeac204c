//go:build cgo && external_libzstd

package codec

/*
#cgo pkg-config: libzstd
#include <stdlib.h>
#include <zstd.h>

// pitr_compress runs one streaming step. The buffer descriptors are built
// here, on the C side: cgo lets Go pass pointers to memory without Go
// pointers in it (the byte slices, the positions), not structs holding
// them.
static size_t pitr_compress(ZSTD_CCtx *cctx, void *dst, size_t dst_cap, size_t *dst_pos,
		const void *src, size_t src_size, size_t *src_pos, int end) {
	ZSTD_outBuffer out = { dst, dst_cap, *dst_pos };
	ZSTD_inBuffer in = { src, src_size, *src_pos };
	size_t r = ZSTD_compressStream2(cctx, &out, &in, end ? ZSTD_e_end : ZSTD_e_continue);
	*dst_pos = out.pos;
	*src_pos = in.pos;
	return r;
}
*/
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"unsafe"
)

// Encoder names the zstd encoder this binary writes with.
//
// Built with cgo and the external_libzstd tag (the Makefile, demo.sh and
// the Dockerfile set it when pkg-config finds libzstd), objects are
// compressed by the system's C zstd library, the one PostgreSQL links: on
// the benchmark's 128 pgbench WAL segments it is about a quarter faster than
// the pure-Go encoder and stores 4% less. Otherwise pitr keeps the pure-Go
// encoder (zstd_purego.go). Both write standard zstd frames, and both
// decoders (unzstd_libzstd.go) refuse the same windows (limit.go), so which
// encoder wrote an object never matters to a reader.
const Encoder = "libzstd (system library)"

// zstdParams are what a pitr level means to libzstd.
type zstdParams struct {
	level int
	// Overrides of the level's table sizes (log2); 0 keeps the level's own.
	hashLog, chainLog int
}

// libzstdParams maps pitr's levels to zstd settings. Level 2, the default,
// is zstd's level 3 with hash and chain tables of 2^13 entries instead of
// 2^17 and 2^16: WAL (page images, then records that touch the same pages)
// and PostgreSQL's data files repeat at short distances, so small tables
// that stay in the CPU's caches find the matches that count. Measured with
// libzstd 1.5.4 on one core (see DESIGN.md): on the benchmark's 128 pgbench
// WAL segments, 773 MB/s and 221.1 MB against level 3's 590 MB/s and
// 223.2 MB; on a scale-50 pgbench data directory, 1306 MB/s and 35.4 MB
// against 967 MB/s and 36.2 MB.
func libzstdParams(l Level) zstdParams {
	switch l {
	case 1:
		return zstdParams{level: 1}
	case 3:
		return zstdParams{level: 7}
	case 4:
		return zstdParams{level: 11}
	}
	return zstdParams{level: 3, hashLog: 13, chainLog: 13}
}

// cctx is one libzstd compression context, set up for p.
type cctx struct{ c *C.ZSTD_CCtx }

func newCCtx(p zstdParams) (*cctx, error) {
	c := C.ZSTD_createCCtx()
	if c == nil {
		return nil, errors.New("zstd: cannot allocate a compression context")
	}
	x := &cctx{c: c}
	// The level first: setting it resets the parameters it implies. A 0
	// keeps libzstd's own. No frame checksum is asked for (libzstd's
	// default): the object's trailer checks the same bytes.
	for _, s := range [...]struct {
		param C.ZSTD_cParameter
		v     int
	}{
		{C.ZSTD_c_compressionLevel, p.level},
		{C.ZSTD_c_hashLog, p.hashLog},
		{C.ZSTD_c_chainLog, p.chainLog},
	} {
		if s.v == 0 {
			continue
		}
		if r := C.ZSTD_CCtx_setParameter(c, s.param, C.int(s.v)); C.ZSTD_isError(r) != 0 {
			x.free()
			return nil, fmt.Errorf("zstd: set parameter %d to %d: %s", int(s.param), s.v, C.GoString(C.ZSTD_getErrorName(r)))
		}
	}
	return x, nil
}

func (x *cctx) free() {
	if x.c != nil {
		C.ZSTD_freeCCtx(x.c)
		x.c = nil
	}
}

// libzstdOut is the size of the buffer compressed bytes collect in before
// they are written on (ZSTD_CStreamOutSize, a block and its header).
var libzstdOut = int(C.ZSTD_CStreamOutSize())

type libzstdBody struct {
	ctx     *cctx
	dst     io.Writer
	out     []byte
	err     error
	ended   bool // writeAll wrote the whole frame
	cleanup runtime.Cleanup
}

func newZstdBody(dst io.Writer, opts Options) (zstdBody, error) {
	if opts.Concurrency > 1 {
		// Independent frames on our own workers, not libzstd's worker
		// threads: their job buffers cost about 40 MiB per stream (a
		// backup to S3 peaked at 123 MiB instead of 77).
		return newFramesBody(dst, libzstdParams(opts.Level), opts.Concurrency)
	}
	ctx, err := newCCtx(libzstdParams(opts.Level))
	if err != nil {
		return nil, err
	}
	b := &libzstdBody{ctx: ctx, dst: dst, out: make([]byte, libzstdOut)}
	// The context lives outside Go's heap: an encoder dropped without
	// Close or Discard (a panic in a caller) would otherwise hold its
	// tables for the life of a long-running agent.
	b.cleanup = runtime.AddCleanup(b, (*cctx).free, ctx)
	return b, nil
}

// step feeds p (all of it) to the encoder, ending the frame when end is
// set, and writes every compressed byte it produces to dst.
func (b *libzstdBody) step(p []byte, end bool) error {
	if b.err != nil {
		return b.err
	}
	if b.ctx.c == nil {
		return errors.New("zstd encoder already closed")
	}
	var src unsafe.Pointer
	if len(p) > 0 {
		src = unsafe.Pointer(&p[0])
	}
	var srcPos C.size_t
	endFlag := C.int(0)
	if end {
		endFlag = 1
	}
	for {
		var dstPos C.size_t
		r := C.pitr_compress(b.ctx.c, unsafe.Pointer(&b.out[0]), C.size_t(len(b.out)), &dstPos,
			src, C.size_t(len(p)), &srcPos, endFlag)
		if C.ZSTD_isError(r) != 0 {
			b.err = fmt.Errorf("zstd: %s", C.GoString(C.ZSTD_getErrorName(r)))
			return b.err
		}
		if dstPos > 0 {
			if _, err := b.dst.Write(b.out[:dstPos]); err != nil {
				b.err = err
				return err
			}
		}
		// Done when the input is consumed and, at the end, the frame is
		// flushed completely (r is what is left to flush).
		if int(srcPos) == len(p) && (!end || r == 0) {
			return nil
		}
	}
}

// writeAll encodes p as the whole frame with one ZSTD_compress2 call and
// writes it to dst. libzstd then reads p where it is and writes straight
// into a buffer of ZSTD_compressBound bytes. Streaming copies every input
// byte into a window-sized ring first, and once the ring wraps it searches
// the part before the wrap as a separate segment (its "extDict" path): on
// the benchmark's WAL one call is about 45% faster, for the same output.
func (b *libzstdBody) writeAll(p []byte) error {
	if b.err != nil {
		return b.err
	}
	if b.ctx.c == nil || b.ended {
		return errors.New("zstd encoder already closed")
	}
	bound := compressBound(len(p))
	var out []byte
	if bb, ok := b.dst.(*bytes.Buffer); ok {
		// Encode into the buffer's own spare room: Write below then
		// copies the bytes onto themselves.
		bb.Grow(bound)
		out = bb.AvailableBuffer()[:bound]
	} else {
		out = make([]byte, bound)
	}
	n, err := b.ctx.compressWhole(out, p)
	if err != nil {
		b.err = err
		return err
	}
	b.ended = true
	if _, err := b.dst.Write(out[:n]); err != nil {
		b.err = err
		return err
	}
	return nil
}

// compressBound is ZSTD_compressBound: the largest frame n bytes can give.
func compressBound(n int) int { return int(C.ZSTD_compressBound(C.size_t(n))) }

// compressWhole compresses p as one frame into dst, which must hold
// compressBound(len(p)) bytes, and returns the frame's length.
func (x *cctx) compressWhole(dst, p []byte) (int, error) {
	var src unsafe.Pointer
	if len(p) > 0 {
		src = unsafe.Pointer(&p[0])
	}
	r := C.ZSTD_compress2(x.c, unsafe.Pointer(&dst[0]), C.size_t(len(dst)), src, C.size_t(len(p)))
	if C.ZSTD_isError(r) != 0 {
		return 0, fmt.Errorf("zstd: %s", C.GoString(C.ZSTD_getErrorName(r)))
	}
	return int(r), nil
}

func (b *libzstdBody) Write(p []byte) (int, error) {
	if b.ended {
		return 0, errors.New("zstd frame already ended")
	}
	if err := b.step(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (b *libzstdBody) Close() error {
	if b.ctx.c == nil {
		return errors.New("zstd encoder already closed")
	}
	var err error
	if b.ended {
		err = b.err
	} else {
		err = b.step(nil, true)
	}
	b.release()
	return err
}

// Discard frees the context without writing anything more to dst, which
// may be the destination that just failed.
func (b *libzstdBody) Discard() { b.release() }

func (b *libzstdBody) release() {
	b.cleanup.Stop()
	b.ctx.free()
}
