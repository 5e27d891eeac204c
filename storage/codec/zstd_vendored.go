//go:build cgo && !external_libzstd

package codec

const libzstdSource = "(vendored by github.com/DataDog/zstd)"
