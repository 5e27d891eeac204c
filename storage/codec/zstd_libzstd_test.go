//go:build cgo && external_libzstd

package codec

import (
	"bytes"
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
	data := walLike(1, 256, 512, 8)
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
