//go:build cgo && external_libzstd

package codec

import (
	"errors"
	"sync"
)

const (
	asideChunk  = 256 << 10
	asideChunks = 4
)

// asideBody runs an encoder on its own goroutine, fed copies of what is
// written (at most asideChunks × asideChunk bytes in flight), so that
// compression overlaps the caller's own work: reading and checking a tar
// stream, hashing. Write reports an encoder error on a later call, and
// Close always does.
type asideBody struct {
	enc  zstdBody
	full chan []byte
	free chan []byte
	done chan struct{}

	mu     sync.Mutex
	err    error
	closed bool
}

func newAsideBody(enc zstdBody) *asideBody {
	b := &asideBody{
		enc:  enc,
		full: make(chan []byte, asideChunks),
		free: make(chan []byte, asideChunks),
		done: make(chan struct{}),
	}
	for range asideChunks {
		b.free <- make([]byte, asideChunk)
	}
	go b.run()
	return b
}

func (b *asideBody) run() {
	defer close(b.done)
	for chunk := range b.full {
		if b.failed() == nil {
			if _, err := b.enc.Write(chunk); err != nil {
				b.mu.Lock()
				b.err = err
				b.mu.Unlock()
			}
		}
		b.free <- chunk[:cap(chunk)]
	}
}

func (b *asideBody) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *asideBody) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if err := b.failed(); err != nil {
			return written, err
		}
		chunk := <-b.free
		n := copy(chunk, p)
		b.full <- chunk[:n]
		written += n
		p = p[n:]
	}
	return written, nil
}

// finish stops the goroutine once everything written has been encoded.
func (b *asideBody) finish() bool {
	if b.closed {
		return false
	}
	b.closed = true
	close(b.full)
	<-b.done
	return true
}

func (b *asideBody) Close() error {
	if !b.finish() {
		return errors.New("zstd encoder already closed")
	}
	if err := b.failed(); err != nil {
		b.enc.Discard()
		return err
	}
	return b.enc.Close()
}

func (b *asideBody) Discard() {
	if b.finish() {
		b.enc.Discard()
	}
}
