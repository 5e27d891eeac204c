// Package holdback reads a stream whose last bytes are a trailer (a checksum,
// a footer) that must not reach the consumer as data but must be checked once
// the stream ends.
package holdback

import "io"

// Reader passes through all but the final n bytes of the underlying reader,
// which it keeps for Held once that reader is exhausted.
type Reader struct {
	r          io.Reader
	n          int
	bufSize    int
	buf        []byte // buf[start:end] was read from r but not yet released
	start, end int
	eof        bool
	rerr       error
}

// New returns a Reader that holds back the last n bytes of r, reading r in
// chunks of bufSize bytes (which must be larger than n).
func New(r io.Reader, n, bufSize int) *Reader {
	return &Reader{r: r, n: n, bufSize: bufSize}
}

func (h *Reader) Read(p []byte) (int, error) {
	if h.buf == nil {
		h.buf = make([]byte, h.bufSize)
	}
	for {
		if avail := h.end - h.start - h.n; avail > 0 {
			n := copy(p, h.buf[h.start:h.start+avail])
			h.start += n
			return n, nil
		}
		if h.eof {
			return 0, io.EOF
		}
		if h.rerr != nil {
			return 0, h.rerr
		}
		// At most n bytes are pending: move them to the front and refill.
		h.end = copy(h.buf, h.buf[h.start:h.end])
		h.start = 0
		m, err := h.r.Read(h.buf[h.end:])
		h.end += m
		if err == io.EOF {
			h.eof = true
		} else if err != nil {
			h.rerr = err
		}
	}
}

// Held returns the final n bytes once the underlying reader has reached EOF
// and everything before them was read; ok is false if the stream was shorter
// than n bytes or has not been read to its end.
func (h *Reader) Held() (held []byte, ok bool) {
	if !h.eof || h.end-h.start != h.n {
		return nil, false
	}
	return h.buf[h.start:h.end], true
}

// SourceErr is the error, other than io.EOF, that the underlying reader
// returned, if any: it tells a failing source from bad bytes when a decoder
// above this Reader fails.
func (h *Reader) SourceErr() error { return h.rerr }
