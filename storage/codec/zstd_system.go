//go:build cgo && external_libzstd

package codec

const libzstdSource = "(system library)"
