//go:build cgo && external_libzstd

package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// A setting libzstd refuses must fail the object, not leave the encoder on
// defaults nobody chose.
func TestLibzstdRefusedParameterFails(t *testing.T) {
	if _, err := newCCtx(zstdParams{level: 3, hashLog: 99}); err == nil {
		t.Fatal("hashLog 99 was accepted")
	}
}

// Every level's settings are ones libzstd accepts and that change the
// output: the default's small tables give other bytes than level 3 as
// shipped, which a dropped setting would not.
func TestLibzstdDefaultLevelUsesItsTables(t *testing.T) {
	// Pages drawn again and again from a pool, each time with a few
	// bytes changed: matches at every distance, as in WAL.
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([][]byte, 256)
	for i := range pool {
		pool[i] = make([]byte, 8192)
		for j := range pool[i] {
			pool[i][j] = byte(rng.IntN(16))
		}
	}
	var data []byte
	for range 512 {
		page := append([]byte(nil), pool[rng.IntN(len(pool))]...)
		for range 8 {
			page[rng.IntN(len(page))] = byte(rng.Uint32())
		}
		data = append(data, page...)
	}
	encode := func(p zstdParams) []byte {
		t.Helper()
		ctx, err := newCCtx(p)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		b := &libzstdBody{ctx: ctx, dst: &out, out: make([]byte, libzstdOut)}
		if _, err := b.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	for l := Level(1); l <= 4; l++ {
		encode(libzstdParams(l))
	}
	if bytes.Equal(encode(libzstdParams(DefaultLevel)), encode(zstdParams{level: 3})) {
		t.Fatal("the default level wrote what zstd level 3 with its own tables writes")
	}
}
