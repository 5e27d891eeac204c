// Package codec defines pitr's object format: every object in a repository is
//
//	header  (8 bytes)  "PITR" | format version (1 or 2) | codec id | checksum id (version 2; 0 in 1) | 1 reserved zero byte
//	body               the original bytes, encoded by the codec (zstd or none)
//	trailer (48 bytes) "PTRL" | checksum id | 3 reserved zero bytes | original size (uint64 BE) | checksum (32 bytes)
//
// The checksum is of the original bytes: SHA-256 (id 0, the only one in
// format version 1) or XXH3-128 (id 1, format version 2, the digest's 16
// bytes big-endian and 16 zero bytes). Objects with XXH3-128 say version 2
// so that a pitr from before it reports them as unsupported, not corrupt.
// The header names the checksum so a reader hashes with it from the first
// byte; the trailer repeats it because storage/crypt copies the trailer
// alone into its plaintext footer.
//
// The header names the codec, so readers never guess from a key's extension.
// The trailer comes last so an object can be written in one pass from a
// stream of unknown length (a base backup); a reader verifies it at EOF and
// fails with ErrCorrupt instead of returning io.EOF when anything disagrees.
//
// Encryption, when it comes, wraps whole objects below this layer (as a
// storage.Store wrapper), so nothing here or in callers changes.
package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/pitr-dev/pitr/storage/internal/holdback"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// ErrCorrupt reports an object whose bytes do not decode to what was stored:
// a bad header, a truncated body, or a size or checksum mismatch.
var ErrCorrupt = errors.New("object is corrupt")

// ErrUnsupported reports an object written in a newer format than this pitr
// reads. It is not corruption: the object may be fine for a newer pitr.
var ErrUnsupported = errors.New("object format not supported")

// Codec identifies how an object's body is encoded.
type Codec byte

const (
	None Codec = 0
	Zstd Codec = 1
)

// Default is the codec used when the configuration names none.
const Default = Zstd

func (c Codec) String() string {
	switch c {
	case None:
		return "none"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", byte(c))
}

// Parse maps a configuration value to a Codec.
func Parse(s string) (Codec, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "zstd":
		return Zstd, nil
	case "none":
		return None, nil
	}
	return 0, fmt.Errorf("unknown compression %q (want zstd or none)", s)
}

// Level is a compression effort, 1 (fastest) to 4 (smallest).
type Level int

const DefaultLevel Level = 2

const (
	headerSize  = 8
	trailerSize = 48
	// versionSHA256 objects carry a SHA-256; versionAnyChecksum ones name
	// their checksum in the header and the trailer.
	versionSHA256      = 1
	versionAnyChecksum = 2
)

var (
	headerMagic  = [4]byte{'P', 'I', 'T', 'R'}
	trailerMagic = [4]byte{'P', 'T', 'R', 'L'}
)

// Options select how new objects are encoded.
type Options struct {
	Codec Codec
	Level Level // 0 means DefaultLevel
	// Concurrency bounds the goroutines one zstd stream may use; 0 means 1,
	// because archive-push runs once per segment and the process should stay
	// light next to the database it serves.
	Concurrency int
	// WindowSize is the pure-Go encoder's zstd window in bytes (a power of
	// two); 0 keeps its default of 8 MiB. WAL compresses as well with 1 MiB
	// and the encoder then needs a quarter of the memory. libzstd chooses
	// its window from the level (2 MiB at the default).
	WindowSize int
	// Checksum is what the trailer records of the original bytes; the zero
	// value is XXH3-128.
	Checksum Checksum
	// HashAside computes a SHA-256 of the original bytes on its own
	// goroutine instead of inside Write, beside the compression. For long
	// streams (base backups) where wall time matters more than one more
	// goroutine. XXH3-128 is always computed inline: copying the bytes
	// would cost more than hashing them.
	HashAside bool
}

// Info describes the original bytes of an object.
type Info struct {
	Size     int64
	Checksum Checksum
	// Sum is the digest: all 32 bytes for SHA-256, the first 16 for
	// XXH3-128 (the rest zero).
	Sum [32]byte
}

// Equal reports whether two objects hold the same original bytes. Infos
// with different checksums are never equal: compute the local side with
// the archived object's Checksum (SumOf).
func (i Info) Equal(o Info) bool {
	return i.Size == o.Size && i.Checksum == o.Checksum && i.Sum == o.Sum
}

// Digest is the checksum as text: algorithm, colon, hex digest.
func (i Info) Digest() string {
	return i.Checksum.String() + ":" + hex.EncodeToString(i.Sum[:i.Checksum.size()])
}

// Record is what metadata files (backup.json, dump manifests) keep of the
// checksum: the bare hex SHA-256 in their sha256 field, as they always have,
// or any other checksum's Digest in their checksum field.
func (i Info) Record() (sha256Hex, checksum string) {
	if i.Checksum == SHA256 {
		return hex.EncodeToString(i.Sum[:]), ""
	}
	return "", i.Digest()
}

// Matches reports whether i is what a metadata file recorded with Record.
func (i Info) Matches(sha256Hex, checksum string) bool {
	got, gotChecksum := i.Record()
	return got == sha256Hex && gotChecksum == checksum
}

func (i Info) String() string {
	return fmt.Sprintf("%d bytes %s:%x", i.Size, i.Checksum, i.Sum[:8])
}

// Writer encodes one object onto an underlying writer.
type Writer struct {
	dst    io.Writer
	body   io.WriteCloser // encoder writing to dst
	sum    summer
	size   int64
	closed bool
	err    error
	info   Info
}

// NewWriter writes the header to dst and returns a Writer for the original
// bytes. Close must be called to write the trailer; an object without its
// trailer is rejected by every reader.
func NewWriter(dst io.Writer, opts Options) (*Writer, error) {
	if opts.Checksum != SHA256 && opts.Checksum != XXH3 {
		return nil, fmt.Errorf("encode: unsupported checksum %v", opts.Checksum)
	}
	hdr := [headerSize]byte{}
	copy(hdr[:4], headerMagic[:])
	hdr[4] = versionAnyChecksum
	if opts.Checksum == SHA256 {
		hdr[4] = versionSHA256
	}
	hdr[5] = byte(opts.Codec)
	hdr[6] = opts.Checksum.id()
	if _, err := dst.Write(hdr[:]); err != nil {
		return nil, fmt.Errorf("write object header: %w", err)
	}
	w := &Writer{dst: dst, info: Info{Checksum: opts.Checksum}}
	switch opts.Codec {
	case None:
		w.body = nopCloser{dst}
	case Zstd:
		body, err := newZstdBody(dst, opts)
		if err != nil {
			return nil, err
		}
		w.body = body
	default:
		return nil, fmt.Errorf("encode: unsupported codec %v", opts.Codec)
	}
	w.sum = newSummer(opts.Checksum, opts.HashAside)
	return w, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.body.Write(p)
	w.sum.Write(p[:n])
	w.size += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// ReadFrom lets io.Copy feed the encoder without an intermediate buffer.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			m, err := w.Write(buf[:n])
			total += int64(m)
			if err != nil {
				return total, err
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// Close flushes the body and writes the trailer. It does not close dst.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		w.discardBody()
		w.sum.Stop()
		return w.err
	}
	if err := w.body.Close(); err != nil {
		w.sum.Stop()
		w.err = fmt.Errorf("finish object body: %w", err)
		return w.err
	}
	w.info.Size = w.size
	w.info.Sum = w.sum.Sum()
	var tr [trailerSize]byte
	copy(tr[:4], trailerMagic[:])
	tr[4] = w.info.Checksum.id()
	binary.BigEndian.PutUint64(tr[8:16], uint64(w.info.Size))
	copy(tr[16:], w.info.Sum[:])
	if _, err := w.dst.Write(tr[:]); err != nil {
		w.err = fmt.Errorf("write object trailer: %w", err)
		return w.err
	}
	return nil
}

// abort ends the hash of an object that stays unfinished (no trailer).
func (w *Writer) abort() {
	if w.closed {
		return
	}
	w.closed = true
	w.discardBody()
	w.sum.Stop()
}

// zstdBody is a zstd encoder; Discard frees one whose object will not be
// finished.
type zstdBody interface {
	io.WriteCloser
	Discard()
}

func (w *Writer) discardBody() {
	if b, ok := w.body.(zstdBody); ok {
		b.Discard()
	}
}

// Info returns size and checksum of the original bytes; valid after Close.
func (w *Writer) Info() Info { return w.info }

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// wholeEncoder is a zstdBody that can encode an input it is given whole in
// one call, faster than streaming it (libzstd's, see writeAll).
type wholeEncoder interface {
	writeAll(p []byte) error
}

// EncodeBytes writes p as one complete object to dst, like Encode of a
// reader of p, but in one pass when the encoder can take a whole input.
func EncodeBytes(dst io.Writer, p []byte, opts Options) (Info, error) {
	w, err := NewWriter(dst, opts)
	if err != nil {
		return Info{}, err
	}
	if whole, ok := w.body.(wholeEncoder); ok {
		if err := whole.writeAll(p); err != nil {
			w.err = err
			w.abort()
			return Info{}, err
		}
		w.sum.Write(p)
		w.size = int64(len(p))
	} else if _, err := w.Write(p); err != nil {
		w.abort()
		return Info{}, err
	}
	if err := w.Close(); err != nil {
		return Info{}, err
	}
	return w.Info(), nil
}

// Encode writes src as one complete object to dst.
func Encode(dst io.Writer, src io.Reader, opts Options) (Info, error) {
	w, err := NewWriter(dst, opts)
	if err != nil {
		return Info{}, err
	}
	if _, err := io.Copy(w, src); err != nil {
		w.abort()
		return Info{}, err
	}
	if err := w.Close(); err != nil {
		return Info{}, err
	}
	return w.Info(), nil
}

// Reader decodes one object. Read returns io.EOF only after the trailer has
// been checked against the decoded bytes; any disagreement is ErrCorrupt.
type Reader struct {
	src      *holdback.Reader
	codec    Codec
	body     io.Reader
	closer   func()
	checksum Checksum // from the header
	sum      summer
	size     int64
	info     Info
	done     bool
	err      error
	limit    int64 // see SetLimit; 0: none
}

// ReadOptions tune decoding; the zero value is what NewReader does.
type ReadOptions struct {
	// Concurrency lets the pure-Go zstd decoder decode up to this many
	// blocks ahead on its own goroutines, so Read (and the checksum it
	// computes) runs beside the decoding instead of after it. 0 or 1:
	// decoding happens inside Read, which suits one-segment commands. A
	// build with libzstd decodes with it on the calling goroutine whatever
	// this says: on one core it is faster than the pure-Go decoder on two
	// (unzstd_libzstd.go).
	Concurrency int
	// HashAside computes the SHA-256 on its own goroutine instead of
	// inside Read. Hashing costs about as much CPU as decoding WAL, so a
	// 16 MiB segment then decodes and verifies in little more than the
	// decoding time; unlike decoder Concurrency, which costs more than it
	// gains on one segment.
	HashAside bool
	// pureGo makes a libzstd build decode with the pure-Go decoder, so
	// that its tests cover both decoders.
	pureGo bool
}

// NewReader reads the header from src and returns a Reader of the original bytes.
func NewReader(src io.Reader) (*Reader, error) {
	return NewReaderOptions(src, ReadOptions{})
}

// NewReaderOptions is NewReader with decoding tuned by opts.
func NewReaderOptions(src io.Reader, opts ReadOptions) (*Reader, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(src, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: object shorter than its header", ErrCorrupt)
		}
		return nil, fmt.Errorf("read object header: %w", err)
	}
	if !bytes.Equal(hdr[:4], headerMagic[:]) {
		return nil, fmt.Errorf("%w: not a pitr object (bad magic %q)", ErrCorrupt, hdr[:4])
	}
	if hdr[4] != versionSHA256 && hdr[4] != versionAnyChecksum {
		return nil, fmt.Errorf("%w: object format version %d (this pitr reads versions %d and %d; upgrade pitr)", ErrUnsupported, hdr[4], versionSHA256, versionAnyChecksum)
	}
	checksum := SHA256
	if hdr[4] == versionAnyChecksum {
		var ok bool
		if checksum, ok = checksumByID(hdr[6]); !ok {
			return nil, fmt.Errorf("%w: checksum id %d (upgrade pitr)", ErrUnsupported, hdr[6])
		}
	}
	r := &Reader{src: holdback.New(src, trailerSize, 256<<10), codec: Codec(hdr[5]), checksum: checksum}
	switch r.codec {
	case None:
		r.body = r.src
		r.closer = func() {}
	case Zstd:
		body, closer, err := newZstdDecoder(r.src, opts)
		if err != nil {
			return nil, err
		}
		r.body = body
		r.closer = closer
	default:
		return nil, fmt.Errorf("%w: unknown codec id %d in header", ErrCorrupt, hdr[5])
	}
	r.sum = newSummer(checksum, opts.HashAside)
	return r, nil
}

// Codec reports how the object's body was encoded.
func (r *Reader) Codec() Codec { return r.codec }

func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.done {
		return 0, io.EOF
	}
	n, err := r.body.Read(p)
	if n > 0 {
		r.sum.Write(p[:n])
		r.size += int64(n)
	}
	if r.limit > 0 && r.size > r.limit {
		r.err = r.tooLarge()
		return n, r.err
	}
	switch {
	case err == io.EOF:
		if verr := r.verify(); verr != nil {
			r.err = verr
			return n, verr
		}
		r.done = true
		return n, io.EOF
	case err != nil:
		// The decoder's own errors are many and mostly untyped; what matters
		// is whose fault it is. If the source read fine, the bytes are bad.
		if r.src.SourceErr() == nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		r.err = err
		return n, err
	}
	return n, nil
}

// verify runs once the body is exhausted: the rest of the source must be
// exactly the trailer, and the trailer must describe the bytes we produced.
func (r *Reader) verify() error {
	// A codec may stop reading at the end of its frame; anything left before
	// the trailer is garbage that was never written by pitr.
	extra, err := io.Copy(io.Discard, r.src)
	if err != nil {
		return fmt.Errorf("read object: %w", err)
	}
	if extra != 0 {
		return fmt.Errorf("%w: %d unexpected bytes after the body", ErrCorrupt, extra)
	}
	tr, ok := r.src.Held()
	if !ok || !bytes.Equal(tr[:4], trailerMagic[:]) {
		return fmt.Errorf("%w: missing or damaged trailer (object truncated?)", ErrCorrupt)
	}
	want, err := ParseTrailer(tr)
	if errors.Is(err, ErrUnsupported) {
		// The header named a checksum this pitr knows; a trailer naming
		// another is damage, not a newer format.
		return fmt.Errorf("%w: the trailer names checksum id %d, the header %s", ErrCorrupt, tr[4], r.checksum)
	}
	if err != nil {
		return err
	}
	if want.Checksum != r.checksum {
		return fmt.Errorf("%w: the trailer records a %s checksum, the header %s", ErrCorrupt, want.Checksum, r.checksum)
	}
	r.info = Info{Size: r.size, Checksum: r.checksum, Sum: r.sum.Sum()}
	if r.info.Size != want.Size {
		return fmt.Errorf("%w: decoded %d bytes, trailer records %d", ErrCorrupt, r.info.Size, want.Size)
	}
	if r.info.Sum != want.Sum {
		return fmt.Errorf("%w: %s of decoded bytes %x does not match recorded %x", ErrCorrupt, r.checksum, r.info.Sum[:8], want.Sum[:8])
	}
	return nil
}

// Info returns size and checksum of the decoded bytes; valid after Read
// returned io.EOF.
func (r *Reader) Info() Info { return r.info }

// Close releases decoder resources. It does not close the source.
func (r *Reader) Close() error {
	r.sum.Stop()
	r.closer()
	return nil
}

// WriteTo writes the original bytes to w straight from the decoder's own
// buffers, when the decoder can (zstd): one copy of every byte fewer than
// Read into a caller's buffer. It returns nil only after the trailer has
// been checked, like Read's io.EOF.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	wt, ok := r.body.(io.WriterTo)
	if !ok || r.err != nil || r.done || r.size != 0 {
		// Read's path (codec none, or a Reader already part read), with
		// a buffer large enough that a segment takes 16 writes, not 512.
		return io.CopyBuffer(w, readerOnly{r}, make([]byte, 1<<20))
	}
	cw := &checkingWriter{r: r, w: w}
	n, err := wt.WriteTo(cw)
	switch {
	case err == nil:
		if verr := r.verify(); verr != nil {
			r.err = verr
			return n, verr
		}
		r.done = true
		return n, nil
	case cw.err != nil && errors.Is(err, cw.err):
		// Our own limit, or w's failure: already what it should be.
	case r.src.SourceErr() == nil:
		err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	r.err = err
	return n, err
}

// checkingWriter hashes, counts and limits what the decoder writes, as
// Read does, before passing it on.
type checkingWriter struct {
	r   *Reader
	w   io.Writer
	err error
}

func (c *checkingWriter) Write(p []byte) (int, error) {
	c.r.sum.Write(p)
	c.r.size += int64(len(p))
	if c.r.limit > 0 && c.r.size > c.r.limit {
		c.err = c.r.tooLarge()
		return 0, c.err
	}
	n, err := c.w.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

type readerOnly struct{ r io.Reader }

func (o readerOnly) Read(p []byte) (int, error) { return o.r.Read(p) }

// newGoZstdDecoder decodes with klauspost/compress's pure-Go decoder.
func newGoZstdDecoder(src io.Reader, opts ReadOptions) (io.Reader, func(), error) {
	dec, err := zstd.NewReader(src,
		zstd.WithDecoderConcurrency(max(opts.Concurrency, 1)),
		// Bounds memory on hostile input: our encoder never uses a larger window.
		zstd.WithDecoderMaxWindow(MaxWindow),
		zstd.WithDecoderMaxMemory(MaxWindow),
		// The trailer's checksum covers every byte. Without this, the
		// decoder's concurrent mode hashes all output with XXH64 even
		// for frames that carry no checksum (ours never do): 7% of a
		// restore's extraction CPU.
		zstd.IgnoreChecksum(true))
	if err != nil {
		return nil, nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return dec, dec.Close, nil
}
