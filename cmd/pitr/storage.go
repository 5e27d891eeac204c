package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
	"github.com/pitr-dev/pitr/storage/crypt"
	"github.com/pitr-dev/pitr/storage/fs"
	"github.com/pitr-dev/pitr/storage/retry"
	"github.com/pitr-dev/pitr/storage/s3"
)

// Retry budgets per kind of command. wal-fetch is patient: while it retries,
// recovery waits; once it gives up, recovery aborts and someone must restart
// it. The others fail fast and are retried by their caller (PostgreSQL's
// archiver retries archive-push; people and schedulers retry the rest).
var (
	defaultRetries = retry.Options{}                                    // 5 attempts, ~1.5 s
	fetchRetries   = retry.Options{Attempts: 10, Max: 10 * time.Second} // ~30 s
)

// openStore is the one place where the storage stack is composed:
// backend → retry → crypt (when encryption is configured), so retries
// resend ciphertext and the codec above compresses before encrypting.
// Callers above see one Store.
func openStore(ctx context.Context, cfg Config, log *slog.Logger, retries retry.Options) (storage.Store, error) {
	if cfg.Repo == "" {
		return nil, fmt.Errorf("no repository configured: set --repo, PITR_REPO or repo: in %s", DefaultConfigFile)
	}
	u, err := url.Parse(cfg.Repo)
	if err != nil {
		return nil, fmt.Errorf("repository URL %q: %w", cfg.Repo, err)
	}
	var backend storage.Store
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("repository URL %q: file URLs take an absolute path (file:///var/lib/pitr)", cfg.Repo)
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("repository URL %q: file URLs take an absolute path (file:///var/lib/pitr)", cfg.Repo)
		}
		backend, err = fs.New(u.Path)
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("repository URL %q: no bucket (s3://bucket/prefix)", cfg.Repo)
		}
		backend, err = s3.New(ctx, s3.Config{
			Bucket:          u.Host,
			Prefix:          strings.Trim(u.Path, "/"),
			Region:          cfg.S3Region,
			Endpoint:        cfg.S3Endpoint,
			ForcePathStyle:  cfg.S3ForcePathStyle,
			AccessKeyID:     cfg.S3AccessKeyID,
			SecretAccessKey: cfg.S3SecretKey,
			AllowHTTP:       cfg.S3AllowHTTP,
			SSE:             cfg.S3SSE,
			SSEKMSKeyID:     cfg.S3SSEKMSKeyID,
			ObjectLockMode:  strings.ToUpper(cfg.S3ObjectLockMode),
			ObjectLockDays:  cfg.S3ObjectLockDays,
			LockKey:         repo.Retained,
		})
	default:
		return nil, fmt.Errorf("repository URL %q: unsupported scheme %q (want file:// or s3://)", cfg.Repo, u.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", cfg.Repo, err)
	}
	retries.Logger = log
	return withEncryption(retry.New(backend, retries), cfg)
}

// withEncryption adds the crypt wrapper when encryption_recipients or
// encryption_identity_file is set. A host with only an identity file (a
// drill host writing its report) encrypts to the file's first key, so after
// a rotation the new key goes first.
func withEncryption(st storage.Store, cfg Config) (storage.Store, error) {
	recipients, err := crypt.ParseRecipients(cfg.EncryptionRecipients)
	if err != nil {
		return nil, err
	}
	var identities []age.Identity
	if cfg.EncryptionIdentityFile != "" {
		ids, err := crypt.LoadIdentities(cfg.EncryptionIdentityFile)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			identities = append(identities, id)
		}
		if len(recipients) == 0 {
			recipients = []age.Recipient{ids[0].Recipient()}
		}
	}
	if len(recipients) == 0 && len(identities) == 0 {
		return st, nil
	}
	return crypt.New(st, crypt.Options{
		Recipients: recipients,
		Identities: identities,
		// The marker says the repository is encrypted, so it must be
		// readable without a key (see repo.EncryptedKey for the rest).
		Plaintext: func(key string) bool { return !repo.EncryptedKey(key) },
	})
}

func codecOptions(cfg Config) (codec.Options, error) {
	c, err := codec.Parse(cfg.Compression)
	if err != nil {
		return codec.Options{}, err
	}
	level := codec.Level(cfg.CompressionLevel)
	if level == 0 {
		level = codec.DefaultLevel
	}
	if level < 1 || level > 4 {
		return codec.Options{}, fmt.Errorf("compression_level %d is out of range 1..4", cfg.CompressionLevel)
	}
	opts := codec.Options{Codec: c, Level: level}
	if cfg.EncryptionRecipients != "" || cfg.EncryptionIdentityFile != "" {
		// Encrypted objects keep SHA-256: their plaintext footer shows it
		// (docs/security.md), and there a checksum that resists crafted
		// collisions is worth its CPU next to the cipher's.
		opts.Checksum = codec.SHA256
	}
	return opts, nil
}

// openRepository loads the configuration, sets up logging and opens the
// repository store: the common start of every command that is not called by
// PostgreSQL.
func openRepository(ctx context.Context, env *environment, load func() (Config, error)) (Config, storage.Store, error) {
	cfg, err := load()
	if err != nil {
		return cfg, nil, err
	}
	if err := setupLogging(env, cfg); err != nil {
		return cfg, nil, err
	}
	st, err := openStore(ctx, cfg, env.log, defaultRetries)
	return cfg, st, err
}
