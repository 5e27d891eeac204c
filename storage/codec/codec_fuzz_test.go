package codec

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func encoded(data []byte, c Codec) []byte {
	var b bytes.Buffer
	if _, err := Encode(&b, bytes.NewReader(data), Options{Codec: c}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// FuzzReader: every object in a repository is untrusted input to the
// reader. Whatever the bytes, reading ends in an error (ErrCorrupt or
// ErrUnsupported for anything malformed) or in exactly the bytes whose size
// and SHA-256 the trailer records. The limit keeps a bomb from stalling the
// fuzzer; memory is bounded by the decoder's window.
func FuzzReader(f *testing.F) {
	f.Add(encoded([]byte("a WAL segment"), Zstd))
	f.Add(encoded(bytes.Repeat([]byte{0}, 1<<16), Zstd))
	f.Add(encoded([]byte("plain"), None))
	f.Add(encoded(nil, None))
	f.Add(bombObject(1<<20, 17))
	f.Add([]byte("PITR\x02\x01\x00\x00"))
	f.Add([]byte("PITR\x01\x07\x00\x00"))
	f.Add([]byte("PIT"))
	f.Fuzz(func(t *testing.T, obj []byte) {
		r, err := NewReader(bytes.NewReader(obj))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("header error is neither corrupt nor unsupported: %v", err)
			}
			return
		}
		defer r.Close()
		r.SetLimit(4 << 20)
		var out bytes.Buffer
		_, err = io.Copy(&out, r)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("reading a damaged object from memory: %v, want ErrCorrupt", err)
			}
			return
		}
		info := r.Info()
		want, err := SumOf(bytes.NewReader(out.Bytes()), info.Checksum)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Equal(want) {
			t.Fatalf("accepted %d bytes that the trailer does not describe (%s)", out.Len(), info)
		}
	})
}

// FuzzRoundTrip: whatever is archived decodes to the same bytes, with
// every codec and level.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("0123456789"), byte(1), byte(2))
	f.Add([]byte{}, byte(0), byte(1))
	f.Add(bytes.Repeat([]byte("ab"), 40000), byte(1), byte(4))
	f.Fuzz(func(t *testing.T, data []byte, c, level byte) {
		opts := Options{Codec: Codec(c % 2), Level: Level(level%4 + 1)}
		var b bytes.Buffer
		info, err := Encode(&b, bytes.NewReader(data), opts)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(&b)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) || !r.Info().Equal(info) {
			t.Fatalf("round trip with %+v: %v, %d bytes back of %d", opts, err, len(got), len(data))
		}
	})
}
