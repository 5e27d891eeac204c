package codec

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// bombObject builds a pitr object whose zstd body decodes to n zero bytes
// from about n/32768 bytes: raw-coded RLE blocks of 128 KiB each, the
// largest ratio zstd allows. The trailer claims the true size, so only a
// limit can stop it. windowLog is the frame's declared window (log2).
func bombObject(n int64, windowLog uint) []byte {
	var b bytes.Buffer
	b.Write(headerMagic[:])
	b.Write([]byte{versionSHA256, byte(Zstd), 0, 0})
	binary.Write(&b, binary.LittleEndian, uint32(0xFD2FB528)) // zstd frame magic
	b.WriteByte(0)                                            // no content size, no checksum, not single-segment
	b.WriteByte(byte(windowLog-10) << 3)                      // window descriptor, no mantissa
	const blk = 128 << 10
	for n > 0 {
		size := min(n, blk)
		n -= size
		hdr := uint32(size)<<3 | 1<<1 // RLE block
		if n == 0 {
			hdr |= 1 // last block
		}
		b.Write([]byte{byte(hdr), byte(hdr >> 8), byte(hdr >> 16), 0})
	}
	var tr [trailerSize]byte
	copy(tr[:4], trailerMagic[:])
	binary.BigEndian.PutUint64(tr[8:16], uint64(1)<<40)
	b.Write(tr[:])
	return b.Bytes()
}

// Contract: with a limit, a decompression bomb stops with ErrCorrupt after at
// most the limit of output, in memory independent of its claimed size.
func TestLimitRefusesDecompressionBomb(t *testing.T) {
	const limit = 16 << 20
	obj := bombObject(4<<30, 17) // 4 GiB of zeros in 128 KiB of object
	if len(obj) > 200<<10 {
		t.Fatalf("bomb is %d bytes, want a giant ratio", len(obj))
	}
	// Both ways out of a Reader: Read into a caller's buffer, and WriteTo.
	for name, drain := range map[string]func(*Reader) (int64, error){
		"Read":    func(r *Reader) (int64, error) { return io.CopyBuffer(io.Discard, readerOnly{r}, make([]byte, 32<<10)) },
		"WriteTo": func(r *Reader) (int64, error) { return r.WriteTo(io.Discard) },
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r, err := NewReader(bytes.NewReader(obj))
		if err != nil {
			t.Fatal(err)
		}
		r.SetLimit(limit)
		n, err := drain(r)
		r.Close()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: bomb read %d bytes and ended with %v, want ErrCorrupt", name, n, err)
		}
		if n > limit+1<<20 {
			t.Errorf("%s: read %d bytes past a limit of %d", name, n, limit)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
			t.Errorf("%s: decoding the bomb allocated %d MiB", name, alloc>>20)
		}
	}
	// Control: the same object without a limit decodes far beyond it, so
	// the limit (not some other check) is what stopped it above.
	r2, err := NewReader(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if n, _ := io.CopyN(io.Discard, r2, 4*limit); n != 4*limit {
		t.Fatalf("unlimited reader stopped after %d bytes", n)
	}
}

// Contract: a limit at or above the real size changes nothing.
func TestLimitAllowsObjectsWithinIt(t *testing.T) {
	data := bytes.Repeat([]byte("pitr"), 1<<18) // 1 MiB
	var obj bytes.Buffer
	if _, err := Encode(&obj, bytes.NewReader(data), Options{Codec: Zstd}); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{int64(len(data)), int64(len(data)) - 1} {
		r, err := NewReader(bytes.NewReader(obj.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		r.SetLimit(limit)
		got, err := io.ReadAll(r)
		r.Close()
		if ok := limit >= int64(len(data)); ok != (err == nil) {
			t.Fatalf("limit %d on %d bytes: %v", limit, len(data), err)
		}
		if err == nil && !bytes.Equal(got, data) {
			t.Fatal("decoded bytes differ")
		}
	}
}

// Contract: a frame that asks for a window larger than MaxWindow is refused
// as corrupt before the decoder allocates it.
func TestHugeWindowRefused(t *testing.T) {
	obj := bombObject(1<<20, 27) // declares a 128 MiB window
	// A true trailer, so that only the window can be what is refused.
	tr := obj[len(obj)-trailerSize:]
	binary.BigEndian.PutUint64(tr[8:16], 1<<20)
	sum := sha256.Sum256(make([]byte, 1<<20))
	copy(tr[16:], sum[:])
	r, err := NewReader(bytes.NewReader(obj))
	if err == nil {
		defer r.Close()
		_, err = io.Copy(io.Discard, r)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("128 MiB window: %v, want ErrCorrupt", err)
	}
}
