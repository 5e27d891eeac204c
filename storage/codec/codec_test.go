package codec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/pitr-dev/pitr/storage"
)

func sample(n int, compressible bool) []byte {
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		if compressible {
			b[i] = "pitr wal "[i%9] ^ byte(rng.IntN(2))
		} else {
			b[i] = byte(rng.Uint32())
		}
	}
	return b
}

func encode(t *testing.T, data []byte, c Codec) []byte {
	t.Helper()
	var buf bytes.Buffer
	info, err := Encode(&buf, bytes.NewReader(data), Options{Codec: c})
	if err != nil {
		t.Fatal(err)
	}
	if info != wantInfo(data, XXH3) {
		t.Fatalf("writer info %v does not describe the input", info)
	}
	return buf.Bytes()
}

// decode decodes obj by Read and by WriteTo, with this build's decoder and
// with the pure-Go one, concurrent (a libzstd build decodes with the C
// library otherwise), and fails unless all agree: on the bytes and Info
// when they succeed, on ErrCorrupt when not.
func decode(obj []byte, wrap func(io.Reader) io.Reader) ([]byte, Info, error) {
	out, info, err := decodeBy(obj, wrap, false, ReadOptions{})
	for _, way := range []struct {
		writeTo bool
		opts    ReadOptions
	}{{true, ReadOptions{}}, {false, ReadOptions{Concurrency: 2, pureGo: true}}, {true, ReadOptions{Concurrency: 2, pureGo: true}}} {
		out2, info2, err2 := decodeBy(obj, wrap, way.writeTo, way.opts)
		if (err == nil) != (err2 == nil) || errors.Is(err, ErrCorrupt) != errors.Is(err2, ErrCorrupt) ||
			(err == nil && (!bytes.Equal(out, out2) || info != info2)) {
			return nil, Info{}, fmt.Errorf("Read and WriteTo (%+v) disagree: %v (%d bytes) against %v (%d bytes)", way, err, len(out), err2, len(out2))
		}
	}
	return out, info, err
}

func decodeBy(obj []byte, wrap func(io.Reader) io.Reader, writeTo bool, opts ReadOptions) ([]byte, Info, error) {
	var src io.Reader = bytes.NewReader(obj)
	if wrap != nil {
		src = wrap(src)
	}
	r, err := NewReaderOptions(src, opts)
	if err != nil {
		return nil, Info{}, err
	}
	defer r.Close()
	if writeTo {
		var out bytes.Buffer
		_, err := r.WriteTo(&out)
		return out.Bytes(), r.Info(), err
	}
	out, err := io.ReadAll(r)
	return out, r.Info(), err
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []Codec{None, Zstd} {
		for _, n := range []int{0, 1, trailerSize - 1, trailerSize, trailerSize + 1, 1 << 20, 5<<20 + 3} {
			for _, compressible := range []bool{false, true} {
				data := sample(n, compressible)
				obj := encode(t, data, c)
				for name, wrap := range map[string]func(io.Reader) io.Reader{"plain": nil, "onebyte": iotest.OneByteReader, "half": iotest.HalfReader} {
					if name == "onebyte" && n > 1<<20 {
						continue
					}
					got, info, err := decode(obj, wrap)
					if err != nil {
						t.Fatalf("%v n=%d %s: %v", c, n, name, err)
					}
					if !bytes.Equal(got, data) {
						t.Fatalf("%v n=%d %s: decoded bytes differ", c, n, name)
					}
					if info != wantInfo(data, XXH3) {
						t.Fatalf("%v n=%d: reader info %v", c, n, info)
					}
				}
			}
		}
	}
}

func TestZstdCompresses(t *testing.T) {
	data := sample(4<<20, true)
	if obj := encode(t, data, Zstd); len(obj) > len(data)/3 {
		t.Fatalf("zstd object is %d bytes for %d compressible bytes", len(obj), len(data))
	}
	if obj := encode(t, data, None); len(obj) != len(data)+headerSize+trailerSize {
		t.Fatalf("none object is %d bytes for %d bytes", len(obj), len(data))
	}
}

func TestCorruptionIsDetected(t *testing.T) {
	for _, c := range []Codec{None, Zstd} {
		data := sample(300<<10, true)
		obj := encode(t, data, c)
		cases := map[string][]byte{
			"flipped body byte":    flip(obj, headerSize+len(obj)/3),
			"flipped last body":    flip(obj, len(obj)-trailerSize-1),
			"flipped checksum":     flip(obj, len(obj)-1),
			"flipped size":         flip(obj, len(obj)-trailerSize+15),
			"truncated trailer":    obj[:len(obj)-1],
			"no trailer":           obj[:len(obj)-trailerSize],
			"truncated mid body":   obj[:len(obj)/2],
			"header only":          obj[:headerSize],
			"trailing garbage":     append(bytes.Clone(obj), 'x'),
			"empty":                {},
			"bad magic":            flip(obj, 0),
			"unknown codec":        withByte(obj, 5, 9),
			"double trailer bytes": append(bytes.Clone(obj), obj[len(obj)-trailerSize:]...),
		}
		for name, bad := range cases {
			got, _, err := decode(bad, nil)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%v %s: got err=%v (decoded %d bytes), want ErrCorrupt", c, name, err, len(got))
			}
		}
	}
}

func TestNewerVersionIsUnsupportedNotCorrupt(t *testing.T) {
	obj := withByte(encode(t, sample(100, false), Zstd), 4, versionAnyChecksum+1)
	if _, _, err := decode(obj, nil); !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrUnsupported", err)
	}
	// A checksum this pitr does not know, in header and trailer alike.
	obj = encode(t, sample(100, false), Zstd)
	obj = withByte(withByte(obj, 6, 9), len(obj)-trailerSize+4, 9)
	if _, _, err := decode(obj, nil); !errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown checksum id: got %v, want ErrUnsupported", err)
	}
	if _, err := ParseTrailer(obj[len(obj)-trailerSize:]); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("ParseTrailer of an unknown checksum id: %v, want ErrUnsupported", err)
	}
}

// Contract: repositories written before format version 2 stay readable. The
// object is built by hand as version 1 defined it, not by the encoder.
func TestVersion1ObjectReads(t *testing.T) {
	data := []byte("a WAL file from an older pitr")
	obj := append([]byte("PITR\x01\x00\x00\x00"), data...)
	var tr [trailerSize]byte
	copy(tr[:], "PTRL")
	binary.BigEndian.PutUint64(tr[8:16], uint64(len(data)))
	sum := sha256.Sum256(data)
	copy(tr[16:], sum[:])
	obj = append(obj, tr[:]...)
	got, info, err := decode(obj, nil)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("version 1 object: %q, %v", got, err)
	}
	if info != wantInfo(data, SHA256) {
		t.Fatalf("version 1 object: info %v", info)
	}
	if _, _, err := decode(flip(obj, headerSize+3), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged version 1 object: %v, want ErrCorrupt", err)
	}
	// And SHA-256 objects (encrypted repositories) are still written as
	// version 1, so an older pitr reads them.
	if v := encodeSHA256(t, data, None)[4]; v != versionSHA256 {
		t.Fatalf("a SHA-256 object says version %d", v)
	}
}

// The checksum is named twice (header, trailer); a disagreement is damage.
func TestChecksumIDMismatchIsCorrupt(t *testing.T) {
	obj := encode(t, sample(1000, true), Zstd)
	if _, _, err := decode(withByte(obj, len(obj)-trailerSize+4, 0), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailer says SHA-256, header XXH3: %v, want ErrCorrupt", err)
	}
	if _, _, err := decode(flip(obj, len(obj)-trailerSize+4), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped checksum id in the trailer: %v, want ErrCorrupt", err)
	}
	if _, err := NewWriter(io.Discard, Options{Checksum: 7}); err == nil {
		t.Fatal("NewWriter accepted checksum 7")
	}
}

func flip(b []byte, i int) []byte {
	out := bytes.Clone(b)
	out[i] ^= 0x40
	return out
}

func withByte(b []byte, i int, v byte) []byte {
	out := bytes.Clone(b)
	out[i] = v
	return out
}

// An I/O error from the store is not corruption: callers retry the one and
// stop at the other.
func TestSourceErrorIsNotCorruption(t *testing.T) {
	obj := encode(t, sample(1<<20, false), Zstd)
	boom := errors.New("connection reset")
	src := io.MultiReader(bytes.NewReader(obj[:len(obj)/2]), iotest.ErrReader(boom))
	r, err := NewReader(src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(r)
	if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want the source error and not ErrCorrupt", err)
	}
	src = io.MultiReader(bytes.NewReader(obj[:len(obj)/2]), iotest.ErrReader(boom))
	if r, err = NewReader(src); err != nil {
		t.Fatal(err)
	}
	if _, err = r.WriteTo(io.Discard); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("WriteTo: got %v, want the source error and not ErrCorrupt", err)
	}
}

// WriteTo's destination failing is that failure, not corruption, and it
// gets nothing after it failed.
func TestWriteToDestinationErrorIsNotCorruption(t *testing.T) {
	obj := encode(t, sample(1<<20, true), Zstd)
	r, err := NewReader(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dst := &failAfter{limit: 100 << 10}
	if _, err := r.WriteTo(dst); err == nil || err.Error() != "disk full" {
		t.Fatalf("got %v, want the destination's error, unwrapped", err)
	}
	if dst.lateWrites != 0 {
		t.Fatalf("the destination got %d writes after it failed", dst.lateWrites)
	}
	if _, err := r.Read(make([]byte, 10)); err == nil || err.Error() != "disk full" {
		t.Fatalf("Read after a failed WriteTo: %v", err)
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]Codec{"": Zstd, "zstd": Zstd, "ZSTD": Zstd, "none": None} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := Parse("gzip"); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Errorf("Parse(gzip) error %v should name the value", err)
	}
}

// memStore is the smallest Store that honours the contract's atomicity: an
// object appears only when its Put read the whole body without error.
type memStore struct {
	mu      sync.Mutex
	objects map[string][]byte
}

func (m *memStore) Put(_ context.Context, key string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.objects == nil {
		m.objects = map[string][]byte{}
	}
	m.objects[key] = b
	return nil
}

func (m *memStore) Open(_ context.Context, key string, off int64) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objects[key]
	if !ok {
		return nil, storage.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b[off:])), nil
}

func (m *memStore) Stat(_ context.Context, key string) (storage.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objects[key]
	if !ok {
		return storage.ObjectInfo{}, storage.ErrNotExist
	}
	return storage.ObjectInfo{Key: key, Size: int64(len(b))}, nil
}

func (m *memStore) List(_ context.Context, prefix string) ([]storage.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.ObjectInfo
	for k, b := range m.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, storage.ObjectInfo{Key: k, Size: int64(len(b))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, key)
	return nil
}

func TestPutOpenThroughStore(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	for _, tc := range []struct {
		name string
		n    int
		hint func(n int) int64
	}{
		{"buffered", 3 << 20, func(n int) int64 { return int64(n) }},
		{"streamed", 3 << 20, func(int) int64 { return -1 }},
		{"streamed large", bufferLimit + 1, func(n int) int64 { return int64(n) }},
	} {
		data := sample(tc.n, true)
		stored, err := Put(ctx, st, tc.name, bytes.NewReader(data), tc.hint(tc.n), Options{Codec: Zstd})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if stored.Size != int64(tc.n) || stored.StoredSize != int64(len(st.objects[tc.name])) {
			t.Fatalf("%s: Put reported %+v, stored %d bytes", tc.name, stored, len(st.objects[tc.name]))
		}
		info, err := ReadInfo(ctx, st, tc.name)
		if err != nil || !info.Equal(stored.Info) {
			t.Fatalf("%s: ReadInfo = %v, %v; want %v", tc.name, info, err, stored.Info)
		}
	}
	if _, err := Open(ctx, st, "absent"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Open(absent) = %v, want ErrNotExist", err)
	}
}

// A source that fails halfway must not leave an object behind, whichever path Put takes.
func TestPutSourceFailureStoresNothing(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	boom := errors.New("disk read error")
	for _, hint := range []int64{2 << 20, -1} {
		src := io.MultiReader(bytes.NewReader(sample(1<<20, true)), iotest.ErrReader(boom))
		if _, err := Put(ctx, st, "k", src, hint, Options{Codec: Zstd}); !errors.Is(err, boom) {
			t.Fatalf("hint %d: Put = %v, want the source error", hint, err)
		}
		if _, ok := st.objects["k"]; ok {
			t.Fatalf("hint %d: object stored despite failed source", hint)
		}
	}
}

func TestEveryLevelAndConcurrencyRoundTrips(t *testing.T) {
	t.Logf("encoder: %s", Encoder)
	for _, compressible := range []bool{false, true} {
		data := sample(3<<20+17, compressible)
		for level := Level(1); level <= 4; level++ {
			for _, conc := range []int{1, 2} {
				var buf bytes.Buffer
				w, err := NewWriter(&buf, Options{Codec: Zstd, Level: level, Concurrency: conc})
				if err != nil {
					t.Fatal(err)
				}
				// Uneven writes, as a tar stream from pg_basebackup gives.
				for rest := data; len(rest) > 0; {
					n := min(len(rest), 100_003)
					if _, err := w.Write(rest[:n]); err != nil {
						t.Fatal(err)
					}
					rest = rest[n:]
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				got, info, err := decode(buf.Bytes(), nil)
				if err != nil || !bytes.Equal(got, data) || info != wantInfo(data, XXH3) {
					t.Fatalf("level %d concurrency %d compressible=%v: round trip failed: %v", level, conc, compressible, err)
				}
				if compressible && buf.Len() > len(data)/3 {
					t.Fatalf("level %d: %d bytes stored for %d compressible bytes", level, buf.Len(), len(data))
				}
			}
		}
	}
}

// failAfter accepts limit bytes, then fails every write and counts the
// writes that still arrive.
type failAfter struct {
	limit, n   int
	failed     bool
	lateWrites int
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.failed {
		f.lateWrites++
		return 0, errors.New("disk full")
	}
	if f.n+len(p) > f.limit {
		f.failed = true
		return 0, errors.New("disk full")
	}
	f.n += len(p)
	return len(p), nil
}

// After the destination fails, the encoder is freed without writing to it
// again: a retrying caller may already have handed the same writer's
// target to someone else.
func TestFailedDestinationGetsNothingMore(t *testing.T) {
	data := sample(4<<20, false)
	for _, conc := range []int{1, 2} {
		dst := &failAfter{limit: 1 << 20}
		if _, err := Encode(dst, bytes.NewReader(data), Options{Codec: Zstd, Concurrency: conc}); err == nil {
			t.Fatalf("concurrency %d: encode onto a failing destination succeeded", conc)
		}
		if !dst.failed || dst.lateWrites != 0 {
			t.Fatalf("concurrency %d: failed=%v, %d writes after the failure", conc, dst.failed, dst.lateWrites)
		}
		w, err := NewWriter(&failAfter{limit: 1 << 30}, Options{Codec: Zstd, Concurrency: conc})
		if err != nil {
			t.Fatal(err)
		}
		w.abort()
		if err := w.Close(); err != nil {
			t.Fatalf("close after abort: %v", err)
		}
	}
}

// EncodeBytes writes the same object format as Encode, whichever path the
// encoder takes, for every level and size (empty included).
func TestEncodeBytesRoundTrips(t *testing.T) {
	for _, c := range []Codec{None, Zstd} {
		for level := Level(1); level <= 4; level++ {
			for _, n := range []int{0, 1, 128<<10 - 1, 3<<20 + 17} {
				for _, compressible := range []bool{false, true} {
					data := sample(n, compressible)
					for _, sum := range []Checksum{XXH3, SHA256} {
						var buf bytes.Buffer
						info, err := EncodeBytes(&buf, data, Options{Codec: c, Level: level, Checksum: sum})
						if err != nil {
							t.Fatal(err)
						}
						if info != wantInfo(data, sum) {
							t.Fatalf("%v level %d n=%d: info %v does not describe the input", c, level, n, info)
						}
						if buf.Len() > encodedBound(n) {
							t.Fatalf("%v level %d n=%d: %d bytes, more than the bound %d", c, level, n, buf.Len(), encodedBound(n))
						}
						got, rinfo, err := decode(buf.Bytes(), iotest.HalfReader)
						if err != nil || !bytes.Equal(got, data) || rinfo != info {
							t.Fatalf("%v level %d n=%d compressible=%v: round trip failed: %v", c, level, n, compressible, err)
						}
						if c == Zstd && compressible && n > 1<<20 && buf.Len() > n/3 {
							t.Fatalf("level %d: %d bytes for %d compressible bytes", level, buf.Len(), n)
						}
					}
				}
			}
		}
	}
}

// PutBytes reuses its buffer from one call to the next: each object must
// still hold its own bytes, including after a larger one grew the buffer.
func TestPutBytesReusesItsBufferSafely(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	inputs := map[string][]byte{
		"a": sample(2<<20, true),
		"b": sample(5<<20, false),
		"c": sample(1<<20, true),
		"d": nil,
	}
	for _, k := range []string{"a", "b", "c", "d"} {
		stored, err := PutBytes(ctx, st, k, inputs[k], Options{Codec: Zstd})
		if err != nil {
			t.Fatal(err)
		}
		if stored.Info != wantInfo(inputs[k], XXH3) || stored.StoredSize != int64(len(st.objects[k])) {
			t.Fatalf("%s: PutBytes reported %+v, stored %d bytes", k, stored, len(st.objects[k]))
		}
	}
	for k, want := range inputs {
		got, _, err := decode(st.objects[k], nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: stored object does not read back: %v", k, err)
		}
	}
}

// A store that fails the upload fails PutBytes and keeps nothing.
func TestPutBytesStoreFailure(t *testing.T) {
	boom := errors.New("no space left on device")
	st := &failingStore{err: boom}
	if _, err := PutBytes(context.Background(), st, "k", sample(1<<20, true), Options{Codec: Zstd}); !errors.Is(err, boom) {
		t.Fatalf("PutBytes = %v, want the store's error", err)
	}
}

type failingStore struct {
	memStore
	err error
}

func (f *failingStore) Put(context.Context, string, io.Reader) error { return f.err }

// walLike is WAL-like data: pages drawn again and again from a pool, each
// time with a few bytes changed, so there are matches at every distance.
func walLike(seed uint64, poolPages, pages, changes int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	pool := make([][]byte, poolPages)
	for i := range pool {
		pool[i] = make([]byte, 8192)
		for j := range pool[i] {
			pool[i][j] = byte(rng.IntN(16))
		}
	}
	data := make([]byte, 0, pages*8192)
	for range pages {
		page := append([]byte(nil), pool[rng.IntN(len(pool))]...)
		for range changes {
			page[rng.IntN(len(page))] = byte(rng.Uint32())
		}
		data = append(data, page...)
	}
	return data
}

func BenchmarkEncodeSegment(b *testing.B) {
	data := walLike(3, 512, 2048, 16) // one 16 MiB segment
	var buf bytes.Buffer
	b.Run("stream", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			buf.Reset()
			if _, err := Encode(&buf, bytes.NewReader(data), Options{Codec: Zstd}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			buf.Reset()
			if _, err := EncodeBytes(&buf, data, Options{Codec: Zstd}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
