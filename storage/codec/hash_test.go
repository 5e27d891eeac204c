package codec

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"
)

// HashAside only moves the SHA-256 to another goroutine: objects are the same
// bytes, readable with or without it, and verified the same way.
func TestHashAsideRoundTrip(t *testing.T) {
	for _, c := range []Codec{None, Zstd} {
		for _, n := range []int{0, 1, asyncSumChunk - 1, asyncSumChunk, asyncSumChunk*asyncSumChunks + 1, 5<<20 + 3} {
			data := sample(n, true)
			var plain, aside bytes.Buffer
			if _, err := Encode(&plain, bytes.NewReader(data), Options{Codec: c, Checksum: SHA256}); err != nil {
				t.Fatal(err)
			}
			info, err := Encode(&aside, iotest.HalfReader(bytes.NewReader(data)), Options{Codec: c, Checksum: SHA256, HashAside: true})
			if err != nil {
				t.Fatal(err)
			}
			if info != wantInfo(data, SHA256) {
				t.Fatalf("%v n=%d: writer info %v does not describe the input", c, n, info)
			}
			if !bytes.Equal(plain.Bytes(), aside.Bytes()) {
				t.Fatalf("%v n=%d: HashAside changed the object's bytes", c, n)
			}
			r, err := NewReaderOptions(iotest.HalfReader(bytes.NewReader(aside.Bytes())), ReadOptions{HashAside: true})
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%v n=%d: decoded %d bytes, err=%v", c, n, len(got), err)
			}
			if r.Info() != wantInfo(data, SHA256) {
				t.Fatalf("%v n=%d: reader info %v", c, n, r.Info())
			}
		}
	}
}

// encodeSHA256 is encode for an object with a SHA-256, the checksum
// HashAside moves off the caller's goroutine.
func encodeSHA256(t *testing.T, data []byte, c Codec) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Encode(&buf, bytes.NewReader(data), Options{Codec: c, Checksum: SHA256}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestHashAsideDetectsCorruption(t *testing.T) {
	for _, c := range []Codec{None, Zstd} {
		obj := encodeSHA256(t, sample(3<<20, true), c)
		cases := map[string][]byte{
			"flipped body byte": flip(obj, headerSize+len(obj)/3),
			"flipped last body": flip(obj, len(obj)-trailerSize-1),
			"flipped checksum":  flip(obj, len(obj)-1),
			"flipped size":      flip(obj, len(obj)-trailerSize+15),
		}
		for name, bad := range cases {
			r, err := NewReaderOptions(bytes.NewReader(bad), ReadOptions{HashAside: true})
			if err == nil {
				_, err = io.Copy(io.Discard, r)
				r.Close()
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%v %s: got err=%v, want ErrCorrupt", c, name, err)
			}
		}
	}
}

// A reader closed before EOF (a failed fetch) must not leave its hashing
// goroutine behind: the prefetcher runs for a whole recovery.
func TestHashAsideCloseEndsGoroutine(t *testing.T) {
	obj := encodeSHA256(t, sample(3<<20, true), None)
	before := runtime.NumGoroutine()
	for range 20 {
		r, err := NewReaderOptions(bytes.NewReader(obj), ReadOptions{HashAside: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	// The goroutines end on their own once Close returns; give the
	// scheduler a moment to run them to their end.
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 500 {
			t.Fatalf("%d goroutines before, %d after closing the readers", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantInfo computes what an object of data must record, with the hash
// libraries directly rather than through the codec's summers.
func wantInfo(data []byte, c Checksum) Info {
	info := Info{Size: int64(len(data)), Checksum: c}
	switch c {
	case SHA256:
		info.Sum = sha256.Sum256(data)
	case XXH3:
		d := xxh3.Hash128(data).Bytes()
		copy(info.Sum[:], d[:])
	}
	return info
}

// The decoder skips zstd's own frame checksum (the trailer covers the same
// bytes): damage is still caught with concurrent decoding, and a frame that
// does carry a zstd checksum still reads.
func TestConcurrentDecodingDetectsCorruption(t *testing.T) {
	data := sample(3<<20, true)
	var buf bytes.Buffer
	if _, err := Encode(&buf, bytes.NewReader(data), Options{Codec: Zstd}); err != nil {
		t.Fatal(err)
	}
	obj := buf.Bytes()
	for _, at := range []int{headerSize + 5, headerSize + len(obj)/3, len(obj)/2 + 7, len(obj) - trailerSize - 1, len(obj) - 1} {
		r, err := NewReaderOptions(bytes.NewReader(flip(obj, at)), ReadOptions{Concurrency: 2, pureGo: true})
		if err == nil {
			_, err = io.Copy(io.Discard, r)
			r.Close()
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("byte %d of %d flipped: got err=%v, want ErrCorrupt", at, len(obj), err)
		}
	}

	var withCRC bytes.Buffer
	withCRC.Write(obj[:headerSize])
	enc, err := zstd.NewWriter(&withCRC, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(data)
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	withCRC.Write(obj[len(obj)-trailerSize:])
	for _, opts := range []ReadOptions{{}, {Concurrency: 1, pureGo: true}, {Concurrency: 2, pureGo: true}} {
		got, info, err := decodeOptions(withCRC.Bytes(), opts)
		if err != nil || !bytes.Equal(got, data) || info != wantInfo(data, XXH3) {
			t.Fatalf("%+v: a frame with its own checksum did not read back: %v", opts, err)
		}
	}
}

func decodeOptions(obj []byte, opts ReadOptions) ([]byte, Info, error) {
	r, err := NewReaderOptions(bytes.NewReader(obj), opts)
	if err != nil {
		return nil, Info{}, err
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	return out, r.Info(), err
}
