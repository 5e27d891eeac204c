package codec

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/pitr-dev/pitr/storage"
)

// bufferLimit is the largest input that Put encodes into memory before
// uploading. A buffered object is seekable, so the store can retry the upload
// by itself; a 16 MiB WAL segment fits, a 1 GiB segment or a base backup streams.
const bufferLimit = 64 << 20

// Stored describes an object that Put wrote.
type Stored struct {
	Info             // the original bytes
	StoredSize int64 // bytes in the repository
}

// PutBytes encodes p as one object, in one pass (EncodeBytes), and stores it
// under key. The encoded bytes collect in a buffer that is reused by later
// calls: a background archiver puts one segment after another, and a fresh
// buffer each time would be a fresh 16 MiB for the runtime to zero.
func PutBytes(ctx context.Context, st storage.Store, key string, p []byte, opts Options) (Stored, error) {
	bp, _ := encodedBuffers.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer encodedBuffers.Put(bp)
	if n := encodedBound(len(p)); cap(*bp) < n {
		// make, not bytes.Buffer.Grow: Grow zeroes all of it, touching
		// every page, while fresh memory from make is only touched where
		// the encoder writes.
		*bp = make([]byte, 0, n)
	}
	buf := bytes.NewBuffer((*bp)[:0])
	info, err := EncodeBytes(buf, p, opts)
	*bp = buf.Bytes()[:0] // keep what Grow allocated for the next call
	if err != nil {
		return Stored{}, fmt.Errorf("encode %s: %w", key, err)
	}
	if err := st.Put(ctx, key, bytes.NewReader(buf.Bytes())); err != nil {
		return Stored{}, err
	}
	return Stored{Info: info, StoredSize: int64(buf.Len())}, nil
}

var encodedBuffers sync.Pool

// encodedBound is the most bytes an object of n original bytes can take:
// header, trailer and zstd's worst case (ZSTD_COMPRESSBOUND), which is more
// than the codec none's n.
func encodedBound(n int) int {
	bound := n + n>>8
	if n < 128<<10 {
		bound += (128<<10 - n) >> 11
	}
	return headerSize + bound + trailerSize
}

// Put encodes src as one object and stores it under key. sizeHint is the
// length of src if known, or -1.
func Put(ctx context.Context, st storage.Store, key string, src io.Reader, sizeHint int64, opts Options) (Stored, error) {
	if sizeHint >= 0 && sizeHint <= bufferLimit {
		var buf bytes.Buffer
		// WAL compresses 5-10x: a quarter avoids regrowth in the usual case
		// without zeroing megabytes that are never written.
		buf.Grow(int(sizeHint/4) + headerSize + trailerSize)
		info, err := Encode(&buf, src, opts)
		if err != nil {
			return Stored{}, fmt.Errorf("encode %s: %w", key, err)
		}
		stored := int64(buf.Len())
		if err := st.Put(ctx, key, bytes.NewReader(buf.Bytes())); err != nil {
			return Stored{}, err
		}
		return Stored{Info: info, StoredSize: stored}, nil
	}

	pr, pw := io.Pipe()
	counter := &countingWriter{w: pw}
	result := make(chan Info, 1)
	go func() {
		info, err := Encode(counter, src, opts)
		result <- info
		// CloseWithError(nil) is Close: the store sees EOF only after the trailer.
		pw.CloseWithError(err)
	}()
	err := st.Put(ctx, key, pr)
	// Unblock the encoder if the store stopped reading early.
	pr.CloseWithError(fmt.Errorf("upload of %s ended", key))
	info := <-result
	if err != nil {
		return Stored{}, err
	}
	return Stored{Info: info, StoredSize: counter.n}, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Object is an open, decoding reader of a stored object.
type Object struct {
	*Reader
	raw io.ReadCloser
}

// Close releases the decoder and the underlying store reader.
func (o *Object) Close() error {
	o.Reader.Close()
	return o.raw.Close()
}

// Open returns a reader of the original bytes stored under key. Read ends
// with io.EOF only after the checksum has been verified.
func Open(ctx context.Context, st storage.Store, key string) (*Object, error) {
	return OpenOptions(ctx, st, key, ReadOptions{})
}

// OpenOptions is Open with decoding tuned by opts.
func OpenOptions(ctx context.Context, st storage.Store, key string, opts ReadOptions) (*Object, error) {
	raw, err := st.Open(ctx, key, 0)
	if err != nil {
		return nil, err
	}
	r, err := NewReaderOptions(raw, opts)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	return &Object{Reader: r, raw: raw}, nil
}

// ReadInfo decodes the whole object and returns what its trailer vouches for.
// It is how callers compare a stored object with local bytes. A store that
// is an InfoReader may answer without decoding.
func ReadInfo(ctx context.Context, st storage.Store, key string) (Info, error) {
	return ReadInfoLimit(ctx, st, key, 0)
}

// ReadInfoLimit is ReadInfo for an object that cannot legitimately decode to
// more than limit bytes (see Reader.SetLimit; 0: no limit), so that comparing
// with a crafted giant-ratio object ends early instead of decoding for hours.
func ReadInfoLimit(ctx context.Context, st storage.Store, key string, limit int64) (Info, error) {
	if ir, ok := st.(InfoReader); ok {
		info, ok, err := ir.StoredInfo(ctx, key)
		if err != nil {
			return Info{}, fmt.Errorf("read %s: %w", key, err)
		}
		if ok {
			return info, nil
		}
	}
	obj, err := Open(ctx, st, key)
	if err != nil {
		return Info{}, err
	}
	defer obj.Close()
	obj.SetLimit(limit)
	if _, err := io.Copy(io.Discard, obj); err != nil {
		return Info{}, fmt.Errorf("read %s: %w", key, err)
	}
	return obj.Info(), nil
}
