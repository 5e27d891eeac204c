package holdback

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

func TestHoldsBackTheTrailer(t *testing.T) {
	for _, size := range []int{0, 3, 4, 5, 100, 1000} {
		src := bytes.Repeat([]byte("abcdefg"), size)[:size]
		h := New(iotest.OneByteReader(bytes.NewReader(src)), 4, 16)
		body, err := io.ReadAll(h)
		if err != nil {
			t.Fatal(err)
		}
		held, ok := h.Held()
		if size < 4 {
			if ok {
				t.Errorf("size %d: Held reported a trailer from a stream shorter than it", size)
			}
			continue
		}
		if !ok || !bytes.Equal(held, src[size-4:]) || !bytes.Equal(body, src[:size-4]) {
			t.Errorf("size %d: body %q held %q ok %v", size, body, held, ok)
		}
	}
}

func TestHeldNeedsEOF(t *testing.T) {
	h := New(bytes.NewReader(make([]byte, 100)), 4, 16)
	if _, err := h.Read(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.Held(); ok {
		t.Fatal("Held before EOF")
	}
}
