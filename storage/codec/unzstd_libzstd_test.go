//go:build cgo && external_libzstd

package codec

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// zstdFrames compresses each part as its own zstd frame, one after another.
func zstdFrames(t *testing.T, parts ...[]byte) []byte {
	t.Helper()
	ctx, err := newCCtx(libzstdParams(DefaultLevel))
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.free()
	var out []byte
	for _, p := range parts {
		buf := make([]byte, compressBound(len(p)))
		n, err := ctx.compressWhole(buf, p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:n]...)
	}
	return out
}

// decodeLibzstd decodes body with the libzstd decoder, by Read (through a
// one-byte-at-a-time source, so every input boundary is crossed) or by
// WriteTo.
func decodeLibzstd(t *testing.T, body []byte, writeTo bool) ([]byte, error) {
	t.Helper()
	dec, closeDec, err := newZstdDecoder(iotest.OneByteReader(bytes.NewReader(body)), ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeDec()
	if _, ok := dec.(*libzstdDecoder); !ok {
		t.Fatalf("a one-goroutine reader got %T, not the libzstd decoder", dec)
	}
	var out bytes.Buffer
	if writeTo {
		_, err = dec.(io.WriterTo).WriteTo(&out)
	} else {
		_, err = io.Copy(&out, struct{ io.Reader }{dec})
	}
	return out.Bytes(), err
}

// Frames one after another decode as one stream, and what is not a whole
// frame is an error, never a short read that looks like the end: a frame
// cut anywhere, bytes after the last frame.
func TestLibzstdDecoderFramesAndDamage(t *testing.T) {
	a, b := walLike(3, 64, 700, 5), sample(300<<10, false)
	two := zstdFrames(t, a, b)
	want := append(append([]byte(nil), a...), b...)
	for _, writeTo := range []bool{false, true} {
		got, err := decodeLibzstd(t, two, writeTo)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("writeTo=%v: two frames: %d bytes, %v; want %d bytes", writeTo, len(got), err, len(want))
		}
		if got, err := decodeLibzstd(t, nil, writeTo); err != nil || len(got) != 0 {
			t.Fatalf("writeTo=%v: no frame at all: %d bytes, %v", writeTo, len(got), err)
		}
		first := len(zstdFrames(t, a))
		for _, cut := range []int{1, 5, first / 2, first - 1, first + 1, len(two) - 1} {
			if _, err := decodeLibzstd(t, two[:cut], writeTo); err == nil {
				t.Errorf("writeTo=%v: cut after %d of %d bytes: no error", writeTo, cut, len(two))
			}
		}
		if _, err := decodeLibzstd(t, append(append([]byte(nil), two...), "garbage"...), writeTo); err == nil {
			t.Errorf("writeTo=%v: bytes after the last frame: no error", writeTo)
		}
	}
}

// WriteTo after a Read hands on what the Read left first.
func TestLibzstdDecoderWriteToAfterRead(t *testing.T) {
	data := walLike(4, 64, 900, 5)
	dec, closeDec, err := newZstdDecoder(bytes.NewReader(zstdFrames(t, data)), ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeDec()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(dec, head); err != nil {
		t.Fatal(err)
	}
	var rest bytes.Buffer
	n, err := dec.(io.WriterTo).WriteTo(&rest)
	if err != nil || n != int64(len(data)-len(head)) || !bytes.Equal(append(head, rest.Bytes()...), data) {
		t.Fatalf("WriteTo after Read: %d bytes, %v; want the other %d", n, err, len(data)-len(head))
	}
}

// A failing destination stops the decoding: WriteTo returns its error as
// it is, and nothing is written to it or decoded after.
func TestLibzstdDecoderStopsWhenTheWriterFails(t *testing.T) {
	data := sample(8<<20, true)
	src := &countingReader{r: bytes.NewReader(zstdFrames(t, data))}
	dec, closeDec, err := newZstdDecoder(src, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeDec()
	dst := &failAfter{limit: 300 << 10}
	_, err = dec.(io.WriterTo).WriteTo(dst)
	if err == nil || err.Error() != "disk full" || dst.lateWrites != 0 {
		t.Fatalf("got %v and %d late writes, want the destination's error and none", err, dst.lateWrites)
	}
	if src.n == int64(src.r.Size()) {
		t.Fatalf("the decoder read all %d bytes of its source after the destination failed", src.n)
	}
	if _, err := dec.Read(make([]byte, 10)); err == nil {
		t.Fatal("Read after a failed WriteTo succeeded")
	}
}

type countingReader struct {
	r *bytes.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
