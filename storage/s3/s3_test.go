package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/pitr-dev/pitr/internal/s3test"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/retry"
	"github.com/pitr-dev/pitr/storage/storagetest"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// newStore returns a store on srv under a fresh prefix, with credentials
// passed explicitly so the developer's ~/.aws or AWS_* cannot interfere.
func newStore(t testing.TB, srv *s3test.Server, mod func(*Config), opts ...func(*config.LoadOptions) error) *Store {
	t.Helper()
	// AllowHTTP: an external test server (docker compose) is plain http on
	// another host; the local one is loopback and would not need it.
	cfg := Config{Bucket: srv.Bucket, Prefix: srv.NewPrefix(t), Region: srv.Region, Endpoint: srv.Endpoint, AllowHTTP: true}
	if mod != nil {
		mod(&cfg)
	}
	opts = append([]func(*config.LoadOptions) error{
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, "")),
	}, opts...)
	s, err := New(t.Context(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := s3test.Shared(t)
	storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t, srv, nil) })
}

// The way users configure it: everything from AWS_* variables, and an
// endpoint from the environment implying path-style addressing.
func TestConfigFromEnvironment(t *testing.T) {
	srv := s3test.Shared(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	t.Setenv("AWS_PROFILE", "")
	prefix := srv.NewPrefix(t)
	s, err := New(t.Context(), Config{Bucket: srv.Bucket, Prefix: "/" + prefix + "/", AllowHTTP: srv.External()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "wal/x", strings.NewReader("x")); err != nil {
		t.Fatalf("Put with configuration from the environment: %v", err)
	}
	// The prefix is trimmed of slashes and joined with exactly one.
	if _, err := srv.Client().HeadObject(t.Context(), &awss3.HeadObjectInput{
		Bucket: &srv.Bucket, Key: aws.String(prefix + "/wal/x"),
	}); err != nil {
		t.Fatalf("object not stored under %s/wal/x: %v", prefix, err)
	}
	infos, err := s.List(t.Context(), "")
	if err != nil || len(infos) != 1 || infos[0].Key != "wal/x" {
		t.Fatalf("List = %+v, %v", infos, err)
	}
}

func TestNewValidation(t *testing.T) {
	ctx := t.Context()
	if _, err := New(ctx, Config{Endpoint: "http://127.0.0.1:1"}); err == nil {
		t.Error("New without a bucket succeeded")
	}
	if _, err := New(ctx, Config{Bucket: "b", Endpoint: "http://127.0.0.1:1", PartSize: 1 << 20}); err == nil {
		t.Error("New with a 1 MiB part size succeeded")
	}
	s, err := New(ctx, Config{Bucket: "b", Endpoint: "http://127.0.0.1:1"},
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("a", "b", "")))
	if err != nil {
		t.Fatal(err)
	}
	o := s.client.Options()
	if !o.UsePathStyle || o.Region == "" {
		t.Errorf("custom endpoint: UsePathStyle=%v Region=%q, want path style and a default region", o.UsePathStyle, o.Region)
	}
	if o.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired ||
		o.ResponseChecksumValidation != aws.ResponseChecksumValidationWhenRequired {
		t.Errorf("checksums: %v / %v, want when_required", o.RequestChecksumCalculation, o.ResponseChecksumValidation)
	}
	if s.uploader.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired {
		t.Errorf("uploader checksums: %v, want when_required", s.uploader.RequestChecksumCalculation)
	}
	if s.uploader.PartSize != DefaultPartSize || s.uploader.Concurrency != DefaultConcurrency {
		t.Errorf("uploader: part size %d, concurrency %d", s.uploader.PartSize, s.uploader.Concurrency)
	}
}

func TestRejectedKeysNeedNoServer(t *testing.T) {
	s, err := New(t.Context(), Config{Bucket: "b", Endpoint: "http://127.0.0.1:1"},
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("a", "b", "")))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, key := range []string{"", "/a", "a//b", "a/", "a/../b", `a\b`, "./a"} {
		if err := s.Put(ctx, key, strings.NewReader("x")); !storage.IsPermanent(err) {
			t.Errorf("Put(%q) = %v, want permanent", key, err)
		}
		if _, err := s.Stat(ctx, key); !storage.IsPermanent(err) || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Stat(%q) = %v, want permanent, not ErrNotExist", key, err)
		}
		if _, err := s.Open(ctx, key, 0); !storage.IsPermanent(err) || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Open(%q) = %v, want permanent, not ErrNotExist", key, err)
		}
		if err := s.Delete(ctx, key); !storage.IsPermanent(err) {
			t.Errorf("Delete(%q) = %v, want permanent", key, err)
		}
	}
	if _, err := s.Open(ctx, "k", -1); !storage.IsPermanent(err) {
		t.Errorf("Open(-1) = %v, want permanent", err)
	}
}

// checkAll runs every operation and checks its error with want.
func checkAll(t *testing.T, s storage.Store, want func(op string, err error)) {
	t.Helper()
	ctx := t.Context()
	_, err := s.Stat(ctx, "wal/x")
	want("Stat", err)
	rc, err := s.Open(ctx, "wal/x", 0)
	if rc != nil {
		rc.Close()
	}
	want("Open", err)
	rc, err = s.Open(ctx, "wal/x", 10)
	if rc != nil {
		rc.Close()
	}
	want("Open at offset", err)
	want("Put seekable", s.Put(ctx, "wal/y", bytes.NewReader([]byte("data"))))
	want("Put stream", s.Put(ctx, "wal/y", storagetest.OnlyReader{R: strings.NewReader("data")}))
	_, err = s.List(ctx, "wal/")
	want("List", err)
	want("Delete", s.Delete(ctx, "wal/x"))
}

func wantPermanent(t *testing.T) func(string, error) {
	return func(op string, err error) {
		t.Helper()
		if !storage.IsPermanent(err) || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("%s = %v; want a permanent error other than ErrNotExist", op, err)
		}
	}
}

func TestWrongCredentials(t *testing.T) {
	srv := s3test.Shared(t)
	// Store something first so "wrong credentials" cannot pass as "missing".
	good := newStore(t, srv, nil)
	if err := good.Put(t.Context(), "wal/x", strings.NewReader("0123456789abc")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, access, secret string }{
		{"wrong secret", srv.AccessKey, "not-the-secret"},
		{"unknown access key", "no-such-access-key", srv.SecretKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t, srv, func(cfg *Config) { cfg.Prefix = strings.TrimSuffix(good.prefix, "/") },
				config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.access, c.secret, "")))
			checkAll(t, s, wantPermanent(t))
		})
	}
}

func TestNoSuchBucket(t *testing.T) {
	srv := s3test.Shared(t)
	s := newStore(t, srv, func(cfg *Config) { cfg.Bucket = "pitr-no-such-bucket" })
	checkAll(t, s, wantPermanent(t))
}

func TestServerDown(t *testing.T) {
	srv := s3test.Start(t) // our own: it gets stopped
	s := newStore(t, srv, nil, config.WithRetryMaxAttempts(1))
	data := storagetest.RandomBytes(1, 1<<20)
	if err := s.Put(t.Context(), "wal/x", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	srv.Stop(t)
	checkAll(t, s, func(op string, err error) {
		t.Helper()
		if err == nil || storage.IsPermanent(err) {
			t.Errorf("%s with the server down = %v; want a transient error", op, err)
		}
	})

	// The outage is what storage/retry is for: the server comes back during
	// the backoff and the operation succeeds without the caller noticing.
	var once sync.Once
	rs := retry.New(s, retry.Options{Sleep: func(ctx context.Context, d time.Duration) error {
		once.Do(func() { srv.Restart(t) })
		return nil
	}})
	rc, err := rs.Open(t.Context(), "wal/x", 0)
	if err != nil {
		t.Fatalf("Open through retry across a restart: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after restart: %d bytes, %v; want the %d bytes stored before the outage", len(got), err, len(data))
	}
}

// opRecorder records the S3 operations a store sends.
type opRecorder struct {
	mu  sync.Mutex
	ops []string
}

func (r *opRecorder) option() func(*config.LoadOptions) error {
	return config.WithAPIOptions([]func(*middleware.Stack) error{func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("pitrRecordOp",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (
				middleware.InitializeOutput, middleware.Metadata, error,
			) {
				r.mu.Lock()
				r.ops = append(r.ops, awsmiddleware.GetOperationName(ctx))
				r.mu.Unlock()
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	}})
}

func (r *opRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := r.ops
	r.ops = nil
	return ops
}

// summary collapses repeated UploadPart calls: "UploadPart×3".
func summary(ops []string) string {
	var out []string
	for i := 0; i < len(ops); {
		j := i
		for j < len(ops) && ops[j] == ops[i] {
			j++
		}
		if j-i > 1 {
			out = append(out, fmt.Sprintf("%s×%d", ops[i], j-i))
		} else {
			out = append(out, ops[i])
		}
		i = j
	}
	return strings.Join(out, " ")
}

func TestPutPaths(t *testing.T) {
	srv := s3test.Shared(t)
	rec := &opRecorder{}
	s := newStore(t, srv, nil, rec.option())

	const mib = 1 << 20
	pipe := func(data []byte) io.Reader {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pr.Close() })
		go func() { _, _ = pw.Write(data); pw.Close() }()
		return pr
	}
	multipart := "CreateMultipartUpload UploadPart×3 CompleteMultipartUpload"
	for _, c := range []struct {
		name string
		size int
		body func([]byte) io.Reader
		want string
	}{
		// Seekable and within one part: a single, SDK-retryable PutObject.
		{"seekable 1MiB", mib, func(b []byte) io.Reader { return bytes.NewReader(b) }, "PutObject"},
		{"seekable one part", DefaultPartSize, func(b []byte) io.Reader { return bytes.NewReader(b) }, "PutObject"},
		{"seekable 40MiB", 40 * mib, func(b []byte) io.Reader { return bytes.NewReader(b) }, multipart},
		// A small stream fits in the uploader's first buffer: one PutObject.
		{"stream 1MiB", mib, func(b []byte) io.Reader { return storagetest.OnlyReader{R: bytes.NewReader(b)} }, "PutObject"},
		// A big stream must be multipart with bounded buffers, never read
		// into memory whole.
		{"stream 40MiB", 40 * mib, func(b []byte) io.Reader { return storagetest.OnlyReader{R: bytes.NewReader(b)} }, multipart},
		// *os.File on a pipe claims io.Seeker but cannot seek.
		{"pipe 40MiB", 40 * mib, pipe, multipart},
		{"pipe empty", 0, pipe, "PutObject"},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := "put/" + strings.ReplaceAll(c.name, " ", "-")
			data := storagetest.RandomBytes(uint64(c.size), c.size)
			rec.take()
			if err := s.Put(t.Context(), key, c.body(data)); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if got := summary(rec.take()); got != c.want {
				t.Errorf("operations = %s, want %s", got, c.want)
			}
			rc, err := s.Open(t.Context(), key, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, %v; want %d equal bytes", len(got), err, len(data))
			}
		})
	}
}

func TestFailedMultipartIsAborted(t *testing.T) {
	srv := s3test.Shared(t)
	rec := &opRecorder{}
	s := newStore(t, srv, nil, rec.option())
	data := storagetest.RandomBytes(2, 40<<20)
	err := s.Put(t.Context(), "big", &storagetest.FailingReader{Data: data, N: 36 << 20})
	if !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	ops := rec.take()
	if !slices.Contains(ops, "CreateMultipartUpload") || !slices.Contains(ops, "AbortMultipartUpload") ||
		slices.Contains(ops, "CompleteMultipartUpload") {
		t.Fatalf("operations = %s, want a multipart upload that is aborted", summary(ops))
	}
	out, err := srv.Client().ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{
		Bucket: &srv.Bucket, Prefix: aws.String(s.prefix),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 0 {
		t.Fatalf("%d multipart uploads left behind", len(out.Uploads))
	}
}

func TestStatTellsMissingBucketFromMissingKey(t *testing.T) {
	srv := s3test.Shared(t)
	rec := &opRecorder{}
	s := newStore(t, srv, nil, rec.option())
	ctx := t.Context()
	for range 3 {
		if _, err := s.Stat(ctx, "wal/missing"); !errors.Is(err, storage.ErrNotExist) {
			t.Fatalf("Stat = %v, want ErrNotExist", err)
		}
	}
	// The bucket check is paid once per store, not once per miss.
	if got := summary(rec.take()); got != "HeadObject HeadBucket HeadObject×2" {
		t.Fatalf("operations = %s", got)
	}
}

func TestMapErr(t *testing.T) {
	respErr := func(status int, err error) error {
		return &smithy.OperationError{ServiceID: "S3", OperationName: "Op", Err: &awshttp.ResponseError{
			ResponseError: &smithyhttp.ResponseError{
				Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
				Err:      err,
			},
		}}
	}
	api := func(code string) error { return &smithy.GenericAPIError{Code: code, Message: "m"} }
	for _, c := range []struct {
		name      string
		err       error
		notExist  bool
		permanent bool
	}{
		{"NoSuchKey", respErr(404, api("NoSuchKey")), true, true},
		{"HEAD 404", respErr(404, api("NotFound")), true, true},
		{"bare 404", respErr(404, errors.New("x")), true, true},
		{"NoSuchBucket", respErr(404, api("NoSuchBucket")), false, true},
		{"AccessDenied", respErr(403, api("AccessDenied")), false, true},
		{"HEAD 403", respErr(403, api("Forbidden")), false, true},
		{"InvalidAccessKeyId", respErr(403, api("InvalidAccessKeyId")), false, true},
		{"SignatureDoesNotMatch", respErr(403, api("SignatureDoesNotMatch")), false, true},
		{"RequestTimeTooSkewed", respErr(403, api("RequestTimeTooSkewed")), false, false},
		{"SlowDown", respErr(503, api("SlowDown")), false, false},
		{"InternalError", respErr(500, api("InternalError")), false, false},
		{"network", &smithy.OperationError{Err: errors.New("dial tcp: connection refused")}, false, false},
		{"cancelled", &smithy.OperationError{Err: &smithy.CanceledError{Err: context.Canceled}}, false, true},
	} {
		got := mapErr(c.err)
		if errors.Is(got, storage.ErrNotExist) != c.notExist || storage.IsPermanent(got) != c.permanent {
			t.Errorf("%s: mapErr = %v (notExist %v, permanent %v), want notExist %v, permanent %v",
				c.name, got, errors.Is(got, storage.ErrNotExist), storage.IsPermanent(got), c.notExist, c.permanent)
		}
	}
}

// A seekable body is uploaded from its current position, on both paths.
func TestPutFromCurrentPosition(t *testing.T) {
	srv := s3test.Shared(t)
	s := newStore(t, srv, nil)
	for _, size := range []int{1 << 20, 40 << 20} {
		key := fmt.Sprintf("pos/%d", size)
		data := storagetest.RandomBytes(3, size)
		r := bytes.NewReader(data)
		if _, err := r.Seek(12345, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(t.Context(), key, r); err != nil {
			t.Fatalf("Put(%s): %v", key, err)
		}
		rc, err := s.Open(t.Context(), key, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data[12345:]) {
			t.Fatalf("%s: read back %d bytes, %v; want the %d bytes after the position", key, len(got), err, len(data)-12345)
		}
	}
}
