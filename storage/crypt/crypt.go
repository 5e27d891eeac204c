// Package crypt wraps a storage.Store so that objects are encrypted with age
// (filippo.io/age: X25519 recipients, ChaCha20-Poly1305 STREAM in 64 KiB
// chunks, so memory stays bounded and every chunk is authenticated).
//
// An encrypted object is
//
//	header (8 bytes)   "PAGE" | format version (1) | 3 reserved zero bytes
//	body               an age file: recipient stanzas, then the encrypted payload
//	footer (56 bytes)  "PAGF" | flags | 3 reserved zero bytes | 48 bytes
//
// When the plaintext is a storage/codec object (flags bit 0), the footer's 48
// bytes are a copy of its codec trailer: the size and SHA-256 of the original
// bytes. That is a deliberate, bounded leak (see DESIGN.md): it lets a host
// holding only public keys tell an identical re-push from a conflicting one
// without decrypting, as pgBackRest does with checksums in object names.
// Whoever decrypts the object checks the footer against the decrypted
// trailer, so a tampered footer is caught by every restore and drill.
// Other plaintexts (backup.json, drill reports) get a footer of zeros.
//
// Keys for which Options.Plaintext reports true are passed through
// unencrypted (the repository marker, which says the repository is encrypted).
package crypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/pitr-dev/pitr/storage/internal/holdback"
	"io"

	"filippo.io/age"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// Scheme names the encryption in the repository marker.
const Scheme = "age-x25519"

const (
	headerSize = 8
	footerSize = 56
	version    = 1

	flagCodecTrailer = 1
)

var (
	headerMagic = [4]byte{'P', 'A', 'G', 'E'}
	footerMagic = [4]byte{'P', 'A', 'G', 'F'}
)

var (
	// ErrNoIdentity: the object is encrypted and this host has no private key.
	ErrNoIdentity = errors.New("no encryption identity configured (this host holds only public keys)")
	// ErrWrongKey: none of the configured private keys opens the object.
	ErrWrongKey = errors.New("none of the configured encryption identities can decrypt it")
	// ErrNoRecipients: the store cannot encrypt because it knows no public key.
	ErrNoRecipients = errors.New("no encryption recipients configured")
	// ErrNotEncrypted: a plaintext object where only encrypted ones belong.
	ErrNotEncrypted = errors.New("object is not encrypted but encryption is configured (pitr does not mix plaintext and encrypted objects in one repository)")
)

// Options configure the wrapper.
type Options struct {
	// Recipients are the public keys new objects are encrypted to.
	Recipients []age.Recipient
	// Identities are the private keys tried, in order, to decrypt an
	// object; with several, objects written before a key rotation stay
	// readable. Empty on hosts that only write.
	Identities []age.Identity
	// Plaintext reports keys stored unencrypted. Nil: none.
	Plaintext func(key string) bool
}

// Store is the encrypting wrapper returned by New.
type Store struct {
	inner storage.Store
	opts  Options
}

var (
	_ storage.Store     = (*Store)(nil)
	_ storage.Unwrapper = (*Store)(nil)
	_ codec.InfoReader  = (*Store)(nil)
)

// New wraps inner. At least one recipient or identity is required.
func New(inner storage.Store, opts Options) (*Store, error) {
	if len(opts.Recipients) == 0 && len(opts.Identities) == 0 {
		return nil, errors.New("encryption needs at least one recipient or identity")
	}
	return &Store{inner: inner, opts: opts}, nil
}

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() storage.Store { return s.inner }

// EncryptionScheme names the encryption for the repository marker.
func (s *Store) EncryptionScheme() string { return Scheme }

// EncryptionRecipients returns the public keys new objects are encrypted to.
func (s *Store) EncryptionRecipients() []string {
	out := make([]string, 0, len(s.opts.Recipients))
	for _, r := range s.opts.Recipients {
		if str, ok := r.(fmt.Stringer); ok {
			out = append(out, str.String())
		}
	}
	return out
}

func (s *Store) plain(key string) bool { return s.opts.Plaintext != nil && s.opts.Plaintext(key) }

// bufferLimit is the largest in-memory object Put encrypts into memory, so
// that the store below can rewind and retry the upload (a WAL segment
// arrives as a *bytes.Reader from codec.Put). Larger or streamed objects are
// encrypted on the fly and get one attempt, as they would unencrypted.
const bufferLimit = 64 << 20

// Put encrypts r and stores it under key.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	if s.plain(key) {
		return s.inner.Put(ctx, key, r)
	}
	if len(s.opts.Recipients) == 0 {
		return fmt.Errorf("encrypt %s: %w", key, ErrNoRecipients)
	}
	if lr, ok := r.(interface {
		io.Seeker
		Len() int
	}); ok && lr.Len() <= bufferLimit {
		var buf bytes.Buffer
		buf.Grow(lr.Len() + headerSize + footerSize + 1024)
		if err := s.encrypt(&buf, r); err != nil {
			return fmt.Errorf("encrypt %s: %w", key, err)
		}
		return s.inner.Put(ctx, key, bytes.NewReader(buf.Bytes()))
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := s.encrypt(pw, r)
		done <- err
		// The store sees EOF only after the footer; an encryption error
		// makes its upload fail instead of storing a short object.
		pw.CloseWithError(err)
	}()
	err := s.inner.Put(ctx, key, pr)
	pr.CloseWithError(fmt.Errorf("upload of %s ended", key))
	eerr := <-done
	if err != nil {
		return err
	}
	if eerr != nil {
		return fmt.Errorf("encrypt %s: %w", key, eerr)
	}
	return nil
}

func (s *Store) encrypt(dst io.Writer, src io.Reader) error {
	hdr := [headerSize]byte{}
	copy(hdr[:], headerMagic[:])
	hdr[4] = version
	if _, err := dst.Write(hdr[:]); err != nil {
		return err
	}
	aw, err := age.Encrypt(dst, s.opts.Recipients...)
	if err != nil {
		return err
	}
	var t tracker
	if _, err := io.CopyBuffer(aw, io.TeeReader(src, &t), make([]byte, 256<<10)); err != nil {
		return err
	}
	if err := aw.Close(); err != nil {
		return err
	}
	_, err = dst.Write(t.footer())
	return err
}

// tracker remembers the first and last bytes of a stream: enough to tell
// whether it is a codec object and to copy its trailer.
type tracker struct {
	head  [codec.HeaderSize]byte
	headN int
	tail  []byte
	size  int64
}

func (t *tracker) Write(p []byte) (int, error) {
	if t.headN < len(t.head) {
		t.headN += copy(t.head[t.headN:], p)
	}
	t.size += int64(len(p))
	if len(p) >= codec.TrailerSize {
		t.tail = append(t.tail[:0], p[len(p)-codec.TrailerSize:]...)
	} else {
		t.tail = append(t.tail, p...)
		if over := len(t.tail) - codec.TrailerSize; over > 0 {
			t.tail = append(t.tail[:0], t.tail[over:]...)
		}
	}
	return len(p), nil
}

// trailer returns the codec trailer of the stream, if it is a codec object.
func (t *tracker) trailer() ([]byte, bool) {
	if t.headN < len(t.head) || !codec.IsObjectHeader(t.head[:]) || t.size < codec.HeaderSize+codec.TrailerSize {
		return nil, false
	}
	if _, err := codec.ParseTrailer(t.tail); err != nil {
		return nil, false
	}
	return t.tail, true
}

func (t *tracker) footer() []byte {
	f := make([]byte, footerSize)
	copy(f, footerMagic[:])
	if tr, ok := t.trailer(); ok {
		f[4] = flagCodecTrailer
		copy(f[8:], tr)
	}
	return f
}

// Open returns the decrypted bytes of key. Encrypted objects are read from
// the start only (offset must be 0). Read returns io.EOF only after the last
// chunk has been authenticated and the footer checked.
func (s *Store) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	if s.plain(key) {
		return s.inner.Open(ctx, key, offset)
	}
	if offset != 0 {
		return nil, fmt.Errorf("open %s at %d: encrypted objects are read from the start", key, offset)
	}
	raw, err := s.inner.Open(ctx, key, 0)
	if err != nil {
		return nil, err
	}
	r, err := s.newReader(key, raw)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return r, nil
}

func checkHeader(key string, hdr []byte) error {
	if bytes.Equal(hdr[:4], headerMagic[:]) {
		if hdr[4] != version {
			return fmt.Errorf("decrypt %s: %w: encrypted object format version %d (this pitr reads version %d; upgrade pitr)", key, codec.ErrUnsupported, hdr[4], version)
		}
		return nil
	}
	if codec.IsObjectHeader(hdr) || (len(hdr) > 0 && (hdr[0] == '{' || hdr[0] == '[')) {
		return fmt.Errorf("decrypt %s: %w", key, ErrNotEncrypted)
	}
	return fmt.Errorf("decrypt %s: %w: not an encrypted pitr object (bad magic %q)", key, codec.ErrCorrupt, hdr[:4])
}

func (s *Store) newReader(key string, raw io.ReadCloser) (*reader, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(raw, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// A short JSON object (a plaintext record) ends up here too.
			if err := checkHeader(key, hdr[:]); errors.Is(err, ErrNotEncrypted) {
				return nil, err
			}
			return nil, fmt.Errorf("decrypt %s: %w: object shorter than its header", key, codec.ErrCorrupt)
		}
		return nil, fmt.Errorf("decrypt %s: %w", key, err)
	}
	if err := checkHeader(key, hdr[:]); err != nil {
		return nil, err
	}
	if len(s.opts.Identities) == 0 {
		return nil, fmt.Errorf("decrypt %s: %w", key, ErrNoIdentity)
	}
	hb := holdback.New(raw, footerSize, 128<<10)
	plain, err := age.Decrypt(hb, s.opts.Identities...)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		switch {
		case errors.As(err, &nomatch):
			return nil, fmt.Errorf("decrypt %s: %w (it was encrypted to other public keys; is the identity file the one for this repository, with old keys kept after a rotation?)", key, ErrWrongKey)
		case hb.SourceErr() != nil:
			return nil, fmt.Errorf("decrypt %s: %w", key, hb.SourceErr())
		}
		return nil, fmt.Errorf("decrypt %s: %w: %v", key, codec.ErrCorrupt, err)
	}
	return &reader{key: key, raw: raw, hb: hb, plain: plain}, nil
}

type reader struct {
	key   string
	raw   io.ReadCloser
	hb    *holdback.Reader
	plain io.Reader
	t     tracker
	done  bool
	err   error
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.done {
		return 0, io.EOF
	}
	n, err := r.plain.Read(p)
	r.t.Write(p[:n])
	switch {
	case err == io.EOF:
		if verr := r.verify(); verr != nil {
			r.err = verr
			return n, verr
		}
		r.done = true
		return n, io.EOF
	case err != nil:
		if r.hb.SourceErr() != nil {
			// The store failed, not the bytes.
			r.err = fmt.Errorf("decrypt %s: %w", r.key, r.hb.SourceErr())
		} else {
			r.err = fmt.Errorf("decrypt %s: %w: %v", r.key, codec.ErrCorrupt, err)
		}
		return n, r.err
	}
	return n, nil
}

// verify runs once the payload is authenticated to its last chunk: the
// footer must be intact and agree with the plaintext it describes.
func (r *reader) verify() error {
	if _, err := io.Copy(io.Discard, r.hb); err != nil {
		return fmt.Errorf("decrypt %s: %w", r.key, err)
	}
	f, ok := r.hb.Held()
	if !ok || !bytes.Equal(f[:4], footerMagic[:]) {
		return fmt.Errorf("decrypt %s: %w: missing or damaged footer (object truncated?)", r.key, codec.ErrCorrupt)
	}
	tr, isCodec := r.t.trailer()
	switch {
	case f[4] == flagCodecTrailer && isCodec && bytes.Equal(f[8:], tr):
	case f[4] == 0 && !isCodec && bytes.Equal(f[8:], make([]byte, footerSize-8)):
	default:
		return fmt.Errorf("decrypt %s: %w: the plaintext footer does not match the encrypted content (tampered with?)", r.key, codec.ErrCorrupt)
	}
	return nil
}

func (r *reader) Close() error { return r.raw.Close() }

// StoredInfo reports the size and SHA-256 of a codec object's original
// bytes from its footer, without decrypting, when this host has no private
// key. With keys, it defers to decoding, which also authenticates.
func (s *Store) StoredInfo(ctx context.Context, key string) (codec.Info, bool, error) {
	if s.plain(key) || len(s.opts.Identities) > 0 {
		return codec.Info{}, false, nil
	}
	st, err := s.inner.Stat(ctx, key)
	if err != nil {
		return codec.Info{}, false, err
	}
	if st.Size < headerSize+footerSize {
		return codec.Info{}, false, fmt.Errorf("%w: %s is shorter than an encrypted object", codec.ErrCorrupt, key)
	}
	// Only the footer is read (one ranged GET): its magic is enough to
	// tell an encrypted object from a plaintext one, whose last bytes are
	// a codec trailer or JSON.
	rc, err := s.inner.Open(ctx, key, st.Size-footerSize)
	if err != nil {
		return codec.Info{}, false, err
	}
	defer rc.Close()
	f := make([]byte, footerSize+1)
	n, err := io.ReadFull(rc, f)
	if err != io.ErrUnexpectedEOF {
		if err == nil {
			err = fmt.Errorf("%w: %s grew while being read", codec.ErrCorrupt, key)
		}
		return codec.Info{}, false, fmt.Errorf("read footer of %s: %w", key, err)
	}
	f = f[:n]
	if n != footerSize || !bytes.Equal(f[:4], footerMagic[:]) || f[4] != flagCodecTrailer {
		return codec.Info{}, false, fmt.Errorf("%w: %s has no valid footer", codec.ErrCorrupt, key)
	}
	info, err := codec.ParseTrailer(f[8:])
	if err != nil {
		return codec.Info{}, false, fmt.Errorf("footer of %s: %w", key, err)
	}
	return info, true, nil
}

func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	return s.inner.Stat(ctx, key)
}

func (s *Store) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	return s.inner.List(ctx, prefix)
}

func (s *Store) Delete(ctx context.Context, key string) error {
	return s.inner.Delete(ctx, key)
}
