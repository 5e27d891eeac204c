package codec

import (
	"crypto/sha256"
	"hash"
	"sync"
)

// summer is the SHA-256 of an object's original bytes, computed inline or,
// with HashAside, on its own goroutine beside the codec and the caller.
type summer interface {
	Write(p []byte)
	// Sum waits for everything written and returns the digest.
	Sum() [sha256.Size]byte
	// Stop ends a summer whose Sum will not be called.
	Stop()
}

func newSummer(aside bool) summer {
	if aside {
		return newAsyncSum()
	}
	return &syncSum{h: sha256.New()}
}

type syncSum struct{ h hash.Hash }

func (s *syncSum) Write(p []byte) { s.h.Write(p) }
func (s *syncSum) Stop()          {}

func (s *syncSum) Sum() (out [sha256.Size]byte) {
	copy(out[:], s.h.Sum(nil))
	return out
}

const (
	asyncSumChunk = 256 << 10
	// asyncSumChunks bounds the bytes copied but not yet hashed (1 MiB):
	// the hash keeps up with the codec, so a few chunks suffice to keep
	// both busy, and Write blocks if it falls behind.
	asyncSumChunks = 4
)

// asyncSum copies written bytes into a small ring of chunks that a goroutine
// hashes in order. The copy is what makes it safe: the caller owns p again
// as soon as Write returns.
type asyncSum struct {
	h    hash.Hash
	full chan []byte
	free chan []byte
	done chan struct{}
	once sync.Once
}

func newAsyncSum() *asyncSum {
	s := &asyncSum{
		h:    sha256.New(),
		full: make(chan []byte, asyncSumChunks),
		free: make(chan []byte, asyncSumChunks),
		done: make(chan struct{}),
	}
	for range asyncSumChunks {
		s.free <- make([]byte, asyncSumChunk)
	}
	go func() {
		defer close(s.done)
		for b := range s.full {
			s.h.Write(b)
			s.free <- b[:cap(b)]
		}
	}()
	return s
}

func (s *asyncSum) Write(p []byte) {
	for len(p) > 0 {
		b := <-s.free
		n := copy(b, p)
		s.full <- b[:n]
		p = p[n:]
	}
}

func (s *asyncSum) Stop() { s.once.Do(func() { close(s.full) }) }

func (s *asyncSum) Sum() (out [sha256.Size]byte) {
	s.Stop()
	<-s.done
	copy(out[:], s.h.Sum(nil))
	return out
}
