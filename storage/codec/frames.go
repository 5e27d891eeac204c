//go:build cgo && external_libzstd

package codec

import (
	"errors"
	"io"
	"sync"
)

// frameChunk is how much of a long stream (a base backup, a dump) goes into
// one zstd frame. Each chunk is compressed whole, by one ZSTD_compress2
// call (see writeAll), on one of Concurrency workers; the frames are written
// in order. A zstd stream of several frames is one stream to every decoder.
// On a scale-50 pgbench data directory as a tar (see DESIGN.md), 2 MiB
// frames on two workers stored 0.15% more than 4 MiB ones (each frame starts
// without the previous one's window) and need half the memory.
const frameChunk = 2 << 20

// framesBody encodes a stream as a sequence of independent zstd frames,
// compressed in parallel. Memory is fixed: workers+1 chunks of input (one
// filling while the workers compress) and as many output buffers (only the
// compressed bytes of those are touched), whatever the stream's length.
type framesBody struct {
	dst  io.Writer
	fill *frameJob // the chunk Write is filling; nil until the first Write

	free  chan *frameJob // jobs ready to be filled
	work  chan *frameJob // filled, waiting for a worker
	order chan *frameJob // filled, in stream order, for the writer
	done  chan struct{}  // closed when the writer has returned
	wg    sync.WaitGroup // workers

	mu        sync.Mutex
	err       error // first failure: of a worker or of dst
	closed    bool
	submitted bool
}

type frameJob struct {
	in, out []byte
	n       int           // compressed bytes in out
	err     error         // the worker's
	ready   chan struct{} // the worker is done with it
}

func newFramesBody(dst io.Writer, p zstdParams, workers int) (*framesBody, error) {
	b := &framesBody{
		dst:   dst,
		free:  make(chan *frameJob, workers+1),
		work:  make(chan *frameJob, workers+1),
		order: make(chan *frameJob, workers+1),
		done:  make(chan struct{}),
	}
	ctxs := make([]*cctx, 0, workers)
	for range workers {
		c, err := newCCtx(p)
		if err != nil {
			for _, c := range ctxs {
				c.free()
			}
			return nil, err
		}
		ctxs = append(ctxs, c)
	}
	for range workers + 1 {
		b.free <- &frameJob{ready: make(chan struct{}, 1)}
	}
	for _, c := range ctxs {
		b.wg.Add(1)
		go b.compress(c)
	}
	go b.write()
	return b, nil
}

func (b *framesBody) compress(c *cctx) {
	defer b.wg.Done()
	defer c.free()
	for j := range b.work {
		if b.failed() != nil {
			j.err = errFrameSkipped
		} else {
			if bound := compressBound(len(j.in)); len(j.out) < bound {
				j.out = make([]byte, bound)
			}
			j.n, j.err = c.compressWhole(j.out, j.in)
		}
		j.ready <- struct{}{}
	}
}

var errFrameSkipped = errors.New("zstd frame skipped after an earlier failure")

// write writes the frames to dst in stream order; after the first failure
// it writes nothing more, only recycles the jobs.
func (b *framesBody) write() {
	defer close(b.done)
	for j := range b.order {
		<-j.ready
		if b.failed() == nil {
			err := j.err
			if err == nil {
				_, err = b.dst.Write(j.out[:j.n])
			}
			if err != nil {
				b.setErr(err)
			}
		}
		j.in = j.in[:0]
		b.free <- j
	}
}

func (b *framesBody) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *framesBody) setErr(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
}

// submit hands the chunk being filled to the workers and the writer.
func (b *framesBody) submit() {
	j := b.fill
	b.fill = nil
	b.submitted = true
	b.work <- j
	b.order <- j
}

func (b *framesBody) Write(p []byte) (int, error) {
	if b.closed {
		return 0, errors.New("zstd encoder already closed")
	}
	written := 0
	for len(p) > 0 {
		if err := b.failed(); err != nil {
			return written, err
		}
		if b.fill == nil {
			b.fill = <-b.free
			if cap(b.fill.in) < frameChunk {
				b.fill.in = make([]byte, 0, frameChunk)
			}
		}
		n := min(len(p), frameChunk-len(b.fill.in))
		b.fill.in = append(b.fill.in, p[:n]...)
		written += n
		p = p[n:]
		if len(b.fill.in) == frameChunk {
			b.submit()
		}
	}
	return written, nil
}

// finish stops the workers and the writer once everything submitted has
// been handled; flush first submits the partial chunk, if any.
func (b *framesBody) finish(flush bool) bool {
	if b.closed {
		return false
	}
	b.closed = true
	if flush && b.failed() == nil {
		if b.fill == nil && !b.submitted {
			// An empty stream is still one (empty) frame.
			b.fill = <-b.free
		}
		if b.fill != nil {
			b.submit()
		}
	}
	close(b.work)
	close(b.order)
	b.wg.Wait()
	<-b.done
	return true
}

func (b *framesBody) Close() error {
	if !b.finish(true) {
		return errors.New("zstd encoder already closed")
	}
	return b.failed()
}

// Discard stops without writing anything more to dst, which may be the
// destination that just failed.
func (b *framesBody) Discard() {
	b.setErr(errors.New("zstd encoder discarded"))
	b.finish(false)
}
