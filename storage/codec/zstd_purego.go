//go:build !(cgo && external_libzstd)

package codec

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Encoder names the zstd encoder this binary writes with; see
// zstd_libzstd.go for why a cgo build uses the C library instead.
const Encoder = "pure Go (klauspost/compress)"

func newZstdBody(dst io.Writer, opts Options) (zstdBody, error) {
	zopts := []zstd.EOption{
		zstd.WithEncoderLevel(zstdLevel(opts.Level)),
		zstd.WithEncoderConcurrency(max(opts.Concurrency, 1)),
		// Our own trailer carries a stronger checksum of the same bytes.
		zstd.WithEncoderCRC(false),
	}
	if opts.WindowSize > 0 {
		zopts = append(zopts, zstd.WithWindowSize(opts.WindowSize))
	}
	enc, err := zstd.NewWriter(dst, zopts...)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return goZstdBody{enc}, nil
}

func zstdLevel(l Level) zstd.EncoderLevel {
	switch l {
	case 1:
		return zstd.SpeedFastest
	case 3:
		return zstd.SpeedBetterCompression
	case 4:
		return zstd.SpeedBestCompression
	}
	return zstd.SpeedDefault
}

type goZstdBody struct{ *zstd.Encoder }

// Discard has nothing to free: the encoder is garbage like any other.
func (goZstdBody) Discard() {}
