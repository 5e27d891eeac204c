//go:build !(cgo && external_libzstd)

package codec

import "io"

// newZstdDecoder returns the decoder of a zstd body read from src; see
// unzstd_libzstd.go for the C library's.
func newZstdDecoder(src io.Reader, opts ReadOptions) (io.Reader, func(), error) {
	return newGoZstdDecoder(src, opts)
}
