//go:build cgo && external_libzstd

package codec

import (
	"bytes"
	"testing"
)

// A long stream encoded with Concurrency > 1 becomes independent frames
// compressed in parallel; they must come out in order, whatever the write
// sizes, at exact chunk boundaries, and for an empty stream.
func TestParallelFramesRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, frameChunk - 1, frameChunk, 2 * frameChunk, 4*frameChunk + 12345} {
		for _, compressible := range []bool{false, true} {
			data := sample(n, compressible)
			for _, conc := range []int{2, 3} {
				var buf bytes.Buffer
				w, err := NewWriter(&buf, Options{Codec: Zstd, Concurrency: conc})
				if err != nil {
					t.Fatal(err)
				}
				for rest, step := data, 1; len(rest) > 0; step = step*7%(1<<20) + 1 {
					k := min(len(rest), step)
					if _, err := w.Write(rest[:k]); err != nil {
						t.Fatal(err)
					}
					rest = rest[k:]
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				got, info, err := decode(buf.Bytes(), nil)
				if err != nil || !bytes.Equal(got, data) || info != wantInfo(data, XXH3) {
					t.Fatalf("n=%d compressible=%v concurrency %d: round trip failed: %v", n, compressible, conc, err)
				}
				if compressible && n >= frameChunk && buf.Len() > n/3 {
					t.Fatalf("n=%d: %d bytes for compressible data", n, buf.Len())
				}
			}
		}
	}
}
