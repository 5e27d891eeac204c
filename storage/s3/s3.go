// Package s3 stores objects in an S3 bucket or an S3-compatible server
// (MinIO, versitygw, Ceph RGW, R2, ...), using aws-sdk-go-v2.
//
// Credentials, region and endpoint come from the SDK's default chain
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3,
// AWS_PROFILE, shared config files, instance roles), so the tool behaves like
// every other AWS client; Config only overrides what it sets.
//
// Uploads never use conditional writes (If-None-Match): versitygw answers a
// large conditional PUT on an existing key by resetting the connection, which
// the SDK reports as a generic send failure, indistinguishable from a network
// error. Callers that must not overwrite check with Stat first.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/pitr-dev/pitr/storage"
)

// Defaults for Config. Memory used by a streamed Put is about
// PartSize × (Concurrency + 1), so the defaults stay under 64 MiB while a
// 16 MiB WAL segment still goes up as a single PutObject.
const (
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 2
)

// Config selects the bucket and tunes uploads. Zero fields keep the SDK's
// default configuration (environment, profile) or the package defaults.
type Config struct {
	Bucket string
	// Prefix is prepended to every key ("repo" → "repo/<key>").
	Prefix string
	// Region overrides AWS_REGION / the profile's region.
	Region string
	// Endpoint overrides AWS_ENDPOINT_URL_S3 (e.g. "http://127.0.0.1:7070").
	// Any custom endpoint, from here or the environment, implies path-style
	// addressing, which every S3-compatible server supports.
	Endpoint string
	// ForcePathStyle uses path-style addressing with AWS's own endpoints too.
	ForcePathStyle bool
	// PartSize is the multipart part size for streamed uploads, and the
	// largest seekable body sent as one PutObject. Minimum 5 MiB.
	PartSize int64
	// Concurrency is the number of parts uploaded in parallel.
	Concurrency int
	// AccessKeyID and SecretAccessKey, when both set, replace the SDK's
	// credential chain (for keys kept in pitr's config file).
	AccessKeyID, SecretAccessKey string

	// AllowHTTP permits a plain-http endpoint on another machine. Without
	// it only https is accepted, except on loopback (see checkEndpoint).
	AllowHTTP bool
	// SSE asks the server to encrypt every object it stores: "" (the
	// bucket's default), SSEAES256 (SSE-S3) or SSEKMS (SSE-KMS, with
	// SSEKMSKeyID or the account's default KMS key).
	SSE         string
	SSEKMSKeyID string
	// ObjectLockMode (ObjectLockGovernance or ObjectLockCompliance) and
	// ObjectLockDays put a retention period on every object written, so
	// that it cannot be deleted or overwritten until then, even with this
	// store's credentials. The bucket must have Object Lock enabled.
	ObjectLockMode string
	ObjectLockDays int
	// LockKey selects the keys that get the retention (nil: all). Objects
	// that are rewritten or deleted in normal operation (heartbeats, locks)
	// must not be locked: a server without versioning refuses to replace
	// them, and on S3 each rewrite leaves a locked version behind.
	LockKey func(key string) bool
	// Now is the clock retention dates count from; nil: time.Now.
	Now func() time.Time
}

// Values of Config.SSE and Config.ObjectLockMode, as S3 spells them.
const (
	SSEAES256            = "AES256"
	SSEKMS               = "aws:kms"
	ObjectLockGovernance = "GOVERNANCE"
	ObjectLockCompliance = "COMPLIANCE"
)

// Store is a storage.Store backed by one bucket.
type Store struct {
	//lint:ignore SA1019 feature/s3/transfermanager (its successor) is not a dependency yet
	uploader *manager.Uploader
	client   *awss3.Client
	bucket   string
	prefix   string // "" or ends with "/"
	partSize int64
	cfg      Config // SSE and Object Lock settings applied to every Put

	// bucketSeen is set once the bucket answered, so that Stat pays for
	// telling "no such key" from "no such bucket" at most once.
	bucketSeen atomic.Bool
}

var _ storage.Store = (*Store)(nil)

// New creates a Store. It loads the SDK's default configuration and applies
// cfg on top; optFns are applied last, so callers (and tests) can set
// credentials or retry limits explicitly. It makes no network request.
func New(ctx context.Context, cfg Config, optFns ...func(*config.LoadOptions) error) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket configured")
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < manager.MinUploadPartSize {
		return nil, fmt.Errorf("s3: part size %d is below the S3 minimum of %d", cfg.PartSize, manager.MinUploadPartSize)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if err := checkProtection(cfg); err != nil {
		return nil, err
	}

	// S3-compatible servers often reject (or mis-verify) the CRC checksums
	// the SDK adds by default since 2025; send and check them only where the
	// S3 API requires them.
	opts := []func(*config.LoadOptions) error{
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" || cfg.SecretAccessKey != "" {
		if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
			return nil, errors.New("s3: set both the access key id and the secret access key, or neither")
		}
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, append(opts, optFns...)...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS configuration: %w", err)
	}
	client := awss3.NewFromConfig(awsCfg, func(o *awss3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		if cfg.ForcePathStyle || o.BaseEndpoint != nil {
			o.UsePathStyle = true
		}
		// S3-compatible servers mostly ignore the region, but SigV4 needs one.
		if o.Region == "" && o.BaseEndpoint != nil {
			o.Region = "us-east-1"
		}
	})
	if client.Options().Region == "" {
		return nil, errors.New("s3: no region configured (set AWS_REGION or the region option)")
	}
	// Checked on the endpoint the SDK resolved, so one that comes from
	// AWS_ENDPOINT_URL_S3 or a profile is held to the same rule.
	if err := checkEndpoint(aws.ToString(client.Options().BaseEndpoint), cfg.AllowHTTP); err != nil {
		return nil, err
	}
	//lint:ignore SA1019 feature/s3/transfermanager (its successor) is not a dependency yet
	uploader := manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = cfg.PartSize
		u.Concurrency = cfg.Concurrency
		// The uploader has its own checksum default (always CRC32) that
		// ignores the client's setting.
		u.RequestChecksumCalculation = client.Options().RequestChecksumCalculation
	})

	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &Store{
		client:   client,
		uploader: uploader,
		bucket:   cfg.Bucket,
		prefix:   prefix,
		partSize: cfg.PartSize,
		cfg:      cfg,
	}, nil
}

func (s *Store) key(key string) *string { return aws.String(s.prefix + key) }

// Put uploads r. A seekable body that fits in one part goes up with a single
// PutObject, which the SDK can retry by rewinding; anything else streams
// through the multipart uploader with bounded memory. A failed multipart
// upload is aborted, and S3 only makes an object visible on completion, so
// neither path can expose a partial object.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("s3 put %s: %w", key, err)
	}
	if rs, ok := r.(io.ReadSeeker); ok {
		pos, size, ok := remaining(rs)
		switch {
		case !ok:
			// Hide the broken Seek from the uploader, which would try it.
			r = readerOnly{r}
		case pos != 0:
			// The uploader reads an io.ReaderAt from offset 0, whatever the
			// current position; make it stream from here instead.
			r = readerOnly{r}
		}
		if ok && size <= s.partSize {
			in := s.putInput(key, rs)
			in.ContentLength = aws.Int64(size)
			_, err := s.client.PutObject(ctx, in)
			if err != nil {
				return fmt.Errorf("s3 put %s: %w", key, mapErr(err))
			}
			s.bucketSeen.Store(true)
			return nil
		}
	}
	_, err := s.uploader.Upload(ctx, s.putInput(key, r))
	if err != nil {
		return fmt.Errorf("s3 put %s: %w", key, mapErr(err))
	}
	s.bucketSeen.Store(true)
	return nil
}

type readerOnly struct{ r io.Reader }

func (o readerOnly) Read(p []byte) (int, error) { return o.r.Read(p) }

// remaining reports the current position of rs and how many bytes follow
// it, or false if it cannot seek (an *os.File on a pipe is an io.Seeker too).
func remaining(rs io.ReadSeeker) (pos, size int64, ok bool) {
	cur, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, 0, false
	}
	end, err := rs.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, 0, false
	}
	if _, err := rs.Seek(cur, io.SeekStart); err != nil {
		return 0, 0, false
	}
	return cur, end - cur, true
}

// Open returns the object from offset, using a Range request when offset > 0.
func (s *Store) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("s3 open %s: %w", key, err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("s3 open %s: %w", key, storage.Permanent(fmt.Errorf("negative offset %d", offset)))
	}
	in := &awss3.GetObjectInput{Bucket: &s.bucket, Key: s.key(key)}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		if offset > 0 && statusCode(err) == http.StatusRequestedRangeNotSatisfiable {
			return s.openPastEnd(ctx, key, offset, err)
		}
		return nil, fmt.Errorf("s3 open %s: %w", key, mapErr(err))
	}
	s.bucketSeen.Store(true)
	return out.Body, nil
}

// openPastEnd handles an offset at or beyond the end, which S3 refuses with
// 416: like a file, such an object reads as empty, so a reader resuming
// exactly at the end does not fail.
func (s *Store) openPastEnd(ctx context.Context, key string, offset int64, rangeErr error) (io.ReadCloser, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	if offset >= info.Size {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	return nil, fmt.Errorf("s3 open %s at %d: %w", key, offset, mapErr(rangeErr))
}

// Stat uses HeadObject. A HEAD response has no body, so a missing bucket and
// a missing key both arrive as a bare 404; until the bucket has been seen to
// exist, a 404 is double-checked with HeadBucket so a misconfigured bucket is
// reported as such instead of as "not archived".
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("s3 stat %s: %w", key, err)
	}
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &s.bucket, Key: s.key(key)})
	if err != nil {
		err = mapErr(err)
		if errors.Is(err, storage.ErrNotExist) && !s.bucketSeen.Load() {
			if berr := s.checkBucket(ctx); berr != nil {
				return storage.ObjectInfo{}, fmt.Errorf("s3 stat %s: %w", key, berr)
			}
		}
		return storage.ObjectInfo{}, fmt.Errorf("s3 stat %s: %w", key, err)
	}
	s.bucketSeen.Store(true)
	info := storage.ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength)}
	if out.LastModified != nil {
		info.ModTime = *out.LastModified
	}
	return info, nil
}

// checkBucket returns a permanent error if the bucket does not exist. Any
// other failure (HeadBucket needs s3:ListBucket, which a restricted policy may
// not grant) is ignored: the key's 404 stands.
func (s *Store) checkBucket(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: &s.bucket})
	if err == nil {
		s.bucketSeen.Store(true)
		return nil
	}
	if statusCode(err) == http.StatusNotFound {
		return storage.Permanent(fmt.Errorf("bucket %s does not exist or these credentials are unknown to the server: %w", s.bucket, err))
	}
	return nil
}

// List returns every object under prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	if strings.Contains(prefix, "..") || strings.HasPrefix(prefix, "/") || strings.Contains(prefix, `\`) {
		return nil, fmt.Errorf("s3 list %s: %w", prefix, storage.Permanent(fmt.Errorf("invalid prefix %q", prefix)))
	}
	full := s.prefix + prefix
	p := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{
		Bucket: &s.bucket,
		Prefix: &full,
	})
	var out []storage.ObjectInfo
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3 list %s: %w", prefix, mapErr(err))
		}
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			// Folder markers ("dir/") made by consoles or by servers backed
			// by a file system are not objects.
			if strings.HasSuffix(k, "/") || !strings.HasPrefix(k, full) {
				continue
			}
			info := storage.ObjectInfo{Key: strings.TrimPrefix(k, s.prefix), Size: aws.ToInt64(o.Size)}
			if o.LastModified != nil {
				info.ModTime = *o.LastModified
			}
			out = append(out, info)
		}
	}
	s.bucketSeen.Store(true)
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes the object. S3 answers 204 for a missing key; a 404 from a
// server that does not is treated the same.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("s3 delete %s: %w", key, err)
	}
	_, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &s.bucket, Key: s.key(key)})
	if err != nil {
		if err = mapErr(err); errors.Is(err, storage.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("s3 delete %s: %w", key, err)
	}
	return nil
}

// putInput is the request for every upload: single PutObject and multipart
// (the uploader copies encryption and lock settings into
// CreateMultipartUpload).
func (s *Store) putInput(key string, body io.Reader) *awss3.PutObjectInput {
	in := &awss3.PutObjectInput{Bucket: &s.bucket, Key: s.key(key), Body: body}
	switch s.cfg.SSE {
	case SSEAES256:
		in.ServerSideEncryption = types.ServerSideEncryptionAes256
	case SSEKMS:
		in.ServerSideEncryption = types.ServerSideEncryptionAwsKms
		if s.cfg.SSEKMSKeyID != "" {
			in.SSEKMSKeyId = aws.String(s.cfg.SSEKMSKeyID)
		}
	}
	if s.cfg.ObjectLockMode != "" && (s.cfg.LockKey == nil || s.cfg.LockKey(key)) {
		now := time.Now
		if s.cfg.Now != nil {
			now = s.cfg.Now
		}
		in.ObjectLockMode = types.ObjectLockMode(s.cfg.ObjectLockMode)
		in.ObjectLockRetainUntilDate = aws.Time(now().UTC().Add(time.Duration(s.cfg.ObjectLockDays) * 24 * time.Hour))
		// S3 requires an integrity checksum on uploads that set a
		// retention (Content-MD5 or an x-amz-checksum-*), which the client
		// otherwise sends only where an operation demands it.
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	return in
}

// checkKey applies the same rules as the fs backend, so a key that works on
// one backend works on all; S3-compatible servers backed by a file system
// would otherwise map ".." or "a//b" onto surprising paths.
func checkKey(key string) error {
	switch {
	case key == "":
		return storage.Permanent(errors.New("empty key"))
	case strings.HasPrefix(key, "/"):
		return storage.Permanent(fmt.Errorf("invalid key %q: absolute", key))
	case strings.Contains(key, ".."):
		return storage.Permanent(fmt.Errorf("invalid key %q: contains \"..\"", key))
	case strings.ContainsAny(key, "\\\x00"):
		return storage.Permanent(fmt.Errorf("invalid key %q: backslash or NUL", key))
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." {
			return storage.Permanent(fmt.Errorf("invalid key %q: empty segment", key))
		}
	}
	return nil
}

// permanentCodes are S3 error codes that retrying cannot fix: the
// configuration (credentials, bucket, permissions) is wrong.
var permanentCodes = map[string]bool{
	"AccessDenied":          true,
	"AllAccessDisabled":     true,
	"AccountProblem":        true,
	"InvalidAccessKeyId":    true,
	"InvalidBucketName":     true,
	"NoSuchBucket":          true,
	"SignatureDoesNotMatch": true,
	"InvalidToken":          true,
	"ExpiredToken":          true,
	"XAdminUserNotFound":    true, // versitygw: unknown access key
}

// mapErr translates SDK errors into the storage error contract:
// storage.ErrNotExist for a missing key, storage.Permanent for errors a retry
// cannot fix, and the error unchanged (transient) for everything else,
// including network failures.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	status := statusCode(err)
	switch {
	case isLocked(code, err):
		return storage.Permanent(fmt.Errorf("%w: %w", storage.ErrLocked, err))
	case permanentCodes[code]:
		return storage.Permanent(err)
	case code == "NoSuchKey" || code == "NotFound" || (code == "" && status == http.StatusNotFound):
		// "NotFound" is what the SDK makes of a HEAD's bodiless 404.
		return storage.ErrNotExist
	case status == http.StatusNotFound:
		// Any other 404 names something else that is missing (versitygw
		// answers an unknown access key with 404 XAdminUserNotFound): a
		// configuration error, never "not archived".
		return storage.Permanent(err)
	case code == "RequestTimeTooSkewed":
		return err // the SDK corrects its clock offset on retry
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// HEAD errors carry no code, only the status.
		return storage.Permanent(err)
	}
	return err
}

func statusCode(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
