package writeback

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// Whatever the sizes of the writes, around and across Chunk, the file
// holds exactly the bytes written, in order.
func TestWriterWritesEverything(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	want := make([]byte, 3*Chunk+12345)
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewWriter(f)
	for rest := want; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(Chunk/3))
		if m, err := w.Write(rest[:n]); err != nil || m != n {
			t.Fatalf("write %d: %d, %v", n, m, err)
		}
		rest = rest[n:]
	}
	if w.submitted == 0 || w.submitted > w.written {
		t.Fatalf("write-back submitted %d of %d bytes", w.submitted, w.written)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file holds %d bytes, not the %d written", len(got), len(want))
	}
}
