package codec

import "fmt"

// MaxWindow is the largest zstd window (and, for streams, decoder memory)
// a reader accepts. Encoders here never use more (WAL uses 1 MiB, backups
// the level's default of at most 8 MiB), so a frame asking for more is
// hostile and refused before anything is allocated.
const MaxWindow = 64 << 20

// SetLimit makes Read fail with ErrCorrupt as soon as the decoded bytes
// exceed n (n <= 0: no limit). The trailer's size comes last and is as
// untrusted as the rest of the object, so a caller that knows how large an
// object can legitimately be (a WAL segment, a metadata file) says so: a
// crafted object with a giant compression ratio is then refused after at
// most n bytes of output, instead of filling a disk or running for hours.
// Memory is bounded independently by the decoder's window (MaxWindow).
func (r *Reader) SetLimit(n int64) { r.limit = n }

func (r *Reader) tooLarge() error {
	return fmt.Errorf("%w: decodes to more than %d bytes, the most this object can hold", ErrCorrupt, r.limit)
}
