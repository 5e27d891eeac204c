package codec

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
)

// HeaderSize and TrailerSize are the lengths of an object's header and
// trailer, for wrappers below the codec that need to recognise an object
// (storage/crypt keeps a plaintext copy of the trailer).
const (
	HeaderSize  = headerSize
	TrailerSize = trailerSize
)

// IsObjectHeader reports whether b starts like an object in this format.
func IsObjectHeader(b []byte) bool {
	return len(b) >= headerSize && bytes.Equal(b[:4], headerMagic[:]) && (b[4] == versionSHA256 || b[4] == versionAnyChecksum)
}

// ParseTrailer returns the Info a trailer records, or ErrCorrupt if b is
// not a trailer.
func ParseTrailer(b []byte) (Info, error) {
	if len(b) != trailerSize || !bytes.Equal(b[:4], trailerMagic[:]) {
		return Info{}, fmt.Errorf("%w: missing or damaged trailer", ErrCorrupt)
	}
	checksum, ok := checksumByID(b[4])
	if !ok {
		return Info{}, fmt.Errorf("%w: checksum id %d (upgrade pitr)", ErrUnsupported, b[4])
	}
	info := Info{Size: int64(binary.BigEndian.Uint64(b[8:16])), Checksum: checksum}
	copy(info.Sum[:], b[16:])
	return info, nil
}

// InfoReader is implemented by stores that can vouch for an object's Info
// without handing out its bytes: storage/crypt on a host that holds only
// public keys, where the object cannot be decoded at all.
type InfoReader interface {
	// StoredInfo returns what the object under key records about its
	// original bytes. ok is false when the store has no cheaper way than
	// decoding the object; the caller then decodes it.
	StoredInfo(ctx context.Context, key string) (info Info, ok bool, err error)
}
