package crypt

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
)

// ParseRecipients reads public keys from spec: one or more age1... keys
// separated by commas or white space, or the path of a file with one key per
// line (# comments allowed). Only X25519 keys are accepted: they are what
// `pitr key generate` and age-keygen make, and they are small enough to list
// in the repository marker.
func ParseRecipients(spec string) ([]age.Recipient, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	if strings.HasPrefix(strings.ToUpper(spec), "AGE-SECRET-KEY-") {
		// Never echo it, not even as a file name in an error.
		return nil, errors.New("encryption_recipients holds a private key (AGE-SECRET-KEY-...); it takes public keys (age1...): keep private keys only in encryption_identity_file on restore hosts")
	}
	text := spec
	source := "encryption_recipients"
	if !strings.HasPrefix(spec, "age1") {
		b, err := os.ReadFile(spec)
		if err != nil {
			return nil, fmt.Errorf("encryption_recipients is neither age1... public keys nor a readable file: %w", err)
		}
		text, source = string(b), spec
	}
	var out []age.Recipient
	for i, line := range strings.Split(text, "\n") {
		if c := strings.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
			if strings.HasPrefix(f, "AGE-SECRET-KEY-") {
				// Never echo it: it is a private key in the wrong place.
				return nil, fmt.Errorf("%s line %d holds a private key (AGE-SECRET-KEY-...); encryption_recipients takes public keys (age1...): keep private keys only in encryption_identity_file on restore hosts", source, i+1)
			}
			r, err := age.ParseX25519Recipient(f)
			if err != nil {
				return nil, fmt.Errorf("%s line %d: %q is not an age X25519 public key (age1...)", source, i+1, shorten(f))
			}
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no age1... public keys", source)
	}
	return out, nil
}

func shorten(s string) string {
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}

// LoadIdentities reads private keys (AGE-SECRET-KEY-1... lines) from path.
// The file must not be accessible to group or others. Several keys support
// rotation: each object is decrypted by whichever key it was encrypted to.
func LoadIdentities(path string) ([]*age.X25519Identity, error) {
	f, err := OpenPrivateFile(path)
	if err != nil {
		return nil, fmt.Errorf("encryption_identity_file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("encryption_identity_file %s: %w", path, err)
	}
	var out []*age.X25519Identity
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, err := age.ParseX25519Identity(line)
		if err != nil {
			// The line may be a damaged private key: never print it.
			return nil, fmt.Errorf("encryption_identity_file %s line %d is not an age X25519 private key (AGE-SECRET-KEY-1...)", path, i+1)
		}
		out = append(out, id)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("encryption_identity_file %s holds no AGE-SECRET-KEY-1... lines", path)
	}
	return out, nil
}

// OpenPrivateFile opens a file that holds secrets, refusing it when its mode
// lets group or others in: the same rule as ssh and libpq's .pgpass, with
// the exact fix in the message.
func OpenPrivateFile(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := CheckPrivateMode(path, fi); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// CheckPrivateMode returns an error naming the chmod that fixes fi when it
// is accessible to group or others.
func CheckPrivateMode(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s holds secrets and is accessible by group or others (mode %04o): chmod 600 %s", path, perm, path)
	}
	return nil
}

// GenerateIdentityFile writes a new private key to path (mode 0600; an
// existing file is never overwritten) and returns its public key.
func GenerateIdentityFile(path string, now string) (string, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", err
	}
	pub := id.Recipient().String()
	content := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", now, pub, id.String())
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", err
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	// A hard link fails if path exists: a key that may already protect
	// backups is never replaced by accident.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("%s already exists; not overwriting a key (choose another file, and keep the old key for reading old backups)", path)
		}
		return "", err
	}
	return pub, nil
}
