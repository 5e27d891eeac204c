package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage/codec"
	"github.com/pitr-dev/pitr/storage/fs"
)

// A config file that sets a secret is refused when group or others can
// read it, with the exact chmod; one without secrets is not.
func TestConfigFileWithSecretsMustBePrivate(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	const secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
	withSecret := filepath.Join(dir, "secret.yaml")
	os.WriteFile(withSecret, []byte("repo: file:///nonexistent\ns3_secret_access_key: "+secret+"\n"), 0o644)
	os.Chmod(withSecret, 0o644)
	code, stdout, stderr := runPitr(t, "status", "--config", withSecret)
	if code == 0 || !strings.Contains(stderr, "chmod 600 "+withSecret) || !strings.Contains(stderr, "s3_secret_access_key") {
		t.Fatalf("group-readable config with a secret: exit %d\n%s", code, stderr)
	}
	if strings.Contains(stdout+stderr, secret) {
		t.Fatalf("the secret is printed:\n%s", stderr)
	}

	os.Chmod(withSecret, 0o600)
	if _, _, stderr := runPitr(t, "status", "--config", withSecret); strings.Contains(stderr, "chmod") {
		t.Fatalf("private config refused:\n%s", stderr)
	}
	plain := filepath.Join(dir, "plain.yaml")
	os.WriteFile(plain, []byte("repo: file:///nonexistent\n"), 0o644)
	if _, _, stderr := runPitr(t, "status", "--config", plain); strings.Contains(stderr, "chmod") {
		t.Fatalf("config without secrets refused:\n%s", stderr)
	}
}

func TestKeyGenerate(t *testing.T) {
	isolate(t)
	path := filepath.Join(t.TempDir(), "key.txt")
	code, stdout, stderr := runPitr(t, "key", "generate", path)
	pub := strings.TrimSpace(stdout)
	if code != 0 || !strings.HasPrefix(pub, "age1") {
		t.Fatalf("exit %d stdout %q stderr %s", code, stdout, stderr)
	}
	key, _ := os.ReadFile(path)
	if strings.Contains(stdout+stderr, "AGE-SECRET-KEY") || !strings.Contains(string(key), "AGE-SECRET-KEY-1") {
		t.Fatalf("private key printed or not written:\n%s%s", stdout, stderr)
	}
	if code, out, _ := runPitr(t, "key", "public", path); code != 0 || strings.TrimSpace(out) != pub {
		t.Fatalf("key public: %d %q, want %s", code, out, pub)
	}
	if code, _, stderr := runPitr(t, "key", "generate", path); code == 0 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("overwrote a key: %d %s", code, stderr)
	}
}

// The agent on a database host with only the public key anchors its
// schedule on when the newest backup.json was written, since it cannot
// read it: a restart neither backs up at once nor waits a whole interval.
func TestAgentScheduleWithPublicKeyOnly(t *testing.T) {
	ctx := context.Background()
	inner, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	st, err := withEncryption(inner, Config{EncryptionRecipients: id.Recipient().String()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(ctx, st, 42, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, repo.BackupKey(42, "20260101T000000Z", repo.BackupMetadataName), strings.NewReader("{}")); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	got := newestBackupStart(ctx, slog.New(slog.NewTextHandler(&logs, nil)), st)
	if got.IsZero() || time.Since(got) > time.Minute || logs.Len() > 0 {
		t.Fatalf("newest backup %v, logs:\n%s", got, logs.String())
	}
}

// Encrypted repositories keep SHA-256 in every object: the plaintext
// footer shows it to hosts with only the public key (docs/security.md).
// Plain repositories use the cheaper XXH3-128.
func TestEncryptedRepositoriesKeepSHA256(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want codec.Checksum
	}{
		{Config{}, codec.XXH3},
		{Config{EncryptionRecipients: "age1xyz"}, codec.SHA256},
		{Config{EncryptionIdentityFile: "/etc/pitr/key"}, codec.SHA256},
	} {
		opts, err := codecOptions(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if opts.Checksum != c.want {
			t.Errorf("%+v: checksum %v, want %v", c.cfg, opts.Checksum, c.want)
		}
	}
}
