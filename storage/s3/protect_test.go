package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/config"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/pitr-dev/pitr/internal/s3test"
	"github.com/pitr-dev/pitr/storage"
)

func TestCheckEndpoint(t *testing.T) {
	for _, c := range []struct {
		endpoint string
		allow    bool
		ok       bool
	}{
		{"", false, true}, // AWS itself
		{"https://s3.example.com", false, true},
		{"https://10.1.2.3:9000", false, true},
		{"http://127.0.0.1:7070", false, true},
		{"http://127.8.9.10:7070", false, true},
		{"http://[::1]:7070", false, true},
		{"http://localhost:7070", false, true},
		{"http://LOCALHOST", false, true},
		{"http://s3:7070", false, false},
		{"http://10.1.2.3:9000", false, false},
		{"http://localhost.example.com", false, false},
		{"http://127.0.0.1.nip.io", false, false},
		{"http://s3:7070", true, true},
		{"ftp://s3", true, false},
		{"s3.example.com", false, false},
	} {
		err := checkEndpoint(c.endpoint, c.allow)
		if (err == nil) != c.ok {
			t.Errorf("endpoint %q (allow http: %v): %v, want ok=%v", c.endpoint, c.allow, err, c.ok)
		}
		if err != nil && strings.HasPrefix(c.endpoint, "http:") && !strings.Contains(err.Error(), "s3_allow_http") {
			t.Errorf("endpoint %q: the error does not say how to allow it: %v", c.endpoint, err)
		}
	}
}

// Contract: New refuses a non-loopback plain-http endpoint, whether it comes
// from the configuration or from the SDK's environment, unless allowed.
func TestNewRefusesPlainHTTP(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "x")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "y")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	if _, err := New(t.Context(), Config{Bucket: "b", Endpoint: "http://s3.internal:9000"}); err == nil {
		t.Error("plain http endpoint accepted")
	}
	if _, err := New(t.Context(), Config{Bucket: "b", Endpoint: "http://s3.internal:9000", AllowHTTP: true}); err != nil {
		t.Errorf("allowed plain http endpoint: %v", err)
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", "http://s3.internal:9000")
	if _, err := New(t.Context(), Config{Bucket: "b"}); err == nil {
		t.Error("plain http endpoint from AWS_ENDPOINT_URL_S3 accepted")
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", "https://s3.internal:9000")
	if _, err := New(t.Context(), Config{Bucket: "b"}); err != nil {
		t.Errorf("https endpoint from AWS_ENDPOINT_URL_S3: %v", err)
	}
}

func TestCheckProtection(t *testing.T) {
	for _, c := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{SSE: SSEAES256}, true},
		{Config{SSE: SSEKMS}, true},
		{Config{SSE: SSEKMS, SSEKMSKeyID: "arn:aws:kms:eu-central-1:1:key/k"}, true},
		{Config{SSE: SSEAES256, SSEKMSKeyID: "k"}, false},
		{Config{SSEKMSKeyID: "k"}, false},
		{Config{SSE: "aes256"}, false},
		{Config{ObjectLockMode: ObjectLockGovernance, ObjectLockDays: 30}, true},
		{Config{ObjectLockMode: ObjectLockCompliance, ObjectLockDays: 1}, true},
		{Config{ObjectLockMode: ObjectLockCompliance}, false},
		{Config{ObjectLockDays: 30}, false},
		{Config{ObjectLockMode: "governance", ObjectLockDays: 30}, false},
		{Config{ObjectLockMode: ObjectLockGovernance, ObjectLockDays: 36501}, false},
	} {
		if err := checkProtection(c.cfg); (err == nil) != c.ok {
			t.Errorf("%+v: %v, want ok=%v", c.cfg, err, c.ok)
		}
	}
}

// headerRecorder keeps the headers of every request the client sends, by
// operation, so a test can see what reached the wire.
type headerRecorder struct {
	mu   sync.Mutex
	seen map[string][]map[string]string
}

func (r *headerRecorder) option() func(*config.LoadOptions) error {
	return config.WithAPIOptions([]func(*middleware.Stack) error{func(st *middleware.Stack) error {
		return st.Finalize.Add(middleware.FinalizeMiddlewareFunc("pitrRecordHeaders",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
				middleware.FinalizeOutput, middleware.Metadata, error,
			) {
				if req, ok := in.Request.(*smithyhttp.Request); ok {
					h := map[string]string{}
					for k := range req.Header {
						h[strings.ToLower(k)] = req.Header.Get(k)
					}
					r.mu.Lock()
					if r.seen == nil {
						r.seen = map[string][]map[string]string{}
					}
					op := awsmiddleware.GetOperationName(ctx)
					r.seen[op] = append(r.seen[op], h)
					r.mu.Unlock()
				}
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
	}})
}

func (r *headerRecorder) ops(op string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[op]
}

// lockBucket creates a bucket with Object Lock enabled on srv.
func lockBucket(t *testing.T, srv *s3test.Server) string {
	t.Helper()
	name := fmt.Sprintf("pitr-lock-%d", time.Now().UnixNano())
	_, err := srv.Client().CreateBucket(t.Context(), &awss3.CreateBucketInput{
		Bucket:                     &name,
		ObjectLockEnabledForBucket: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("create bucket with object lock: %v", err)
	}
	return name
}

// Contract: with Object Lock configured, every object written (single
// PutObject and multipart) carries the retention, the server holds it, and
// Delete of such an object fails with storage.ErrLocked (permanent), which is
// what prune counts and skips. SSE headers are sent on the same requests.
func TestObjectLockAndSSE(t *testing.T) {
	srv := s3test.Shared(t)
	bucket := lockBucket(t, srv)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := &headerRecorder{}
	s := newStore(t, srv, func(c *Config) {
		c.Bucket = bucket
		c.PartSize = 5 << 20
		c.SSE = SSEAES256
		c.ObjectLockMode = ObjectLockGovernance
		c.ObjectLockDays = 7
		c.Now = func() time.Time { return now }
		c.LockKey = func(key string) bool { return !strings.HasSuffix(key, "heartbeat") }
	}, rec.option())
	ctx := t.Context()
	small := bytes.Repeat([]byte("w"), 1<<20)
	if err := s.Put(ctx, "wal/seg", bytes.NewReader(small)); err != nil {
		t.Fatalf("put with object lock: %v", err)
	}
	big := bytes.Repeat([]byte("b"), 11<<20)
	if err := s.Put(ctx, "base/big", io.MultiReader(bytes.NewReader(big))); err != nil {
		t.Fatalf("multipart put with object lock: %v", err)
	}
	// A key LockKey excludes is written without retention, so it can be
	// rewritten and deleted as usual.
	for range 2 {
		if err := s.Put(ctx, "base/heartbeat", strings.NewReader("beat")); err != nil {
			t.Fatalf("rewrite of an unlocked key: %v", err)
		}
	}
	if err := s.Delete(ctx, "base/heartbeat"); err != nil {
		t.Fatalf("delete of an unlocked key: %v", err)
	}
	wantUntil := now.Add(7 * 24 * time.Hour)
	for _, op := range []string{"PutObject", "CreateMultipartUpload"} {
		hs := rec.ops(op)
		if len(hs) == 0 {
			t.Fatalf("no %s request sent", op)
		}
		h := hs[0]
		if h["x-amz-object-lock-mode"] != "GOVERNANCE" || h["x-amz-server-side-encryption"] != "AES256" {
			t.Errorf("%s headers: lock mode %q, sse %q", op, h["x-amz-object-lock-mode"], h["x-amz-server-side-encryption"])
		}
		if got, err := time.Parse(time.RFC3339, h["x-amz-object-lock-retain-until-date"]); err != nil || !got.Equal(wantUntil) {
			t.Errorf("%s retain-until %q, want %s", op, h["x-amz-object-lock-retain-until-date"], wantUntil)
		}
	}
	for _, key := range []string{"wal/seg", "base/big"} {
		out, err := srv.Client().GetObjectRetention(ctx, &awss3.GetObjectRetentionInput{Bucket: &bucket, Key: aws.String(s.prefix + key)})
		if err != nil {
			t.Fatalf("retention of %s: %v", key, err)
		}
		if out.Retention == nil || out.Retention.Mode != "GOVERNANCE" || !aws.ToTime(out.Retention.RetainUntilDate).Equal(wantUntil) {
			t.Errorf("retention of %s on the server: %+v", key, out.Retention)
		}
		err = s.Delete(ctx, key)
		if !errors.Is(err, storage.ErrLocked) || !storage.IsPermanent(err) {
			t.Errorf("delete of locked %s: %v, want a permanent ErrLocked", key, err)
		}
		rc, err := s.Open(ctx, key, 0)
		if err != nil {
			t.Fatalf("%s gone after a refused delete: %v", key, err)
		}
		rc.Close()
	}
}
