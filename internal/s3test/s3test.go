// Package s3test runs a real S3-compatible server for tests: versitygw with
// its posix backend on 127.0.0.1, or an external server named by
// PITR_TEST_S3_ENDPOINT (the docker-compose mode).
//
// A server that cannot be started skips the test on a developer machine and
// fails it when CI=true: CI must never go green by skipping the S3 suite.
//
// Environment:
//
//	VERSITYGW              path of the versitygw binary (else PATH, else $GOPATH/bin)
//	PITR_TEST_S3_ENDPOINT  use this server instead of starting one; credentials
//	                       from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
//	                       region from AWS_REGION (default us-east-1)
//	PITR_TEST_S3_BUCKET    bucket on the external server (default pitr-test)
package s3test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

const (
	defaultBucket = "pitr-test"
	defaultRegion = "us-east-1"
	startTimeout  = 30 * time.Second
	stopTimeout   = 10 * time.Second
)

// Server is a running S3-compatible server with one bucket.
type Server struct {
	Endpoint  string // e.g. "http://127.0.0.1:40123"
	AccessKey string
	SecretKey string
	Region    string
	Bucket    string

	external bool // PITR_TEST_S3_ENDPOINT: not ours to stop
	shared   bool // one per test binary: stopping it would break other tests

	bin     string
	addr    string // host:port, fixed for the server's lifetime so Restart keeps it
	dataDir string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *syncBuffer
}

// unavailable skips the test, or fails it in CI where a missing server is a
// broken pipeline rather than an optional extra.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("s3test: "+format, args...)
	}
	t.Skipf("s3test: "+format, args...)
}

// Start returns a server owned by the calling test: Stop and Restart are
// allowed, and it is shut down by t.Cleanup. Starting versitygw takes well
// under a second; prefer Shared when a test does not need to stop the server.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Getenv("PITR_TEST_S3_ENDPOINT") != "" {
		s, err := external()
		if err != nil {
			unavailable(t, "%v", err)
		}
		return s
	}
	s, err := startLocal(t.TempDir())
	if err != nil {
		unavailable(t, "%v", err)
	}
	t.Cleanup(s.shutdown)
	return s
}

var (
	mainActive   bool
	sharedOnce   sync.Once
	sharedServer *Server
	sharedErr    error
	sharedDir    string
)

// Main runs the tests of a package and then stops the server that Shared
// started, if any. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }
func Main(m *testing.M) int {
	mainActive = true
	code := m.Run()
	if sharedServer != nil && !sharedServer.external {
		sharedServer.shutdown()
	}
	if sharedDir != "" {
		_ = os.RemoveAll(sharedDir)
	}
	return code
}

// Shared returns one server for the whole test binary when TestMain uses
// Main, so the start-up cost is paid once; tests isolate themselves with
// NewPrefix. Without Main it falls back to Start. Stop and Restart on a
// shared server fail the test.
func Shared(t testing.TB) *Server {
	t.Helper()
	if !mainActive {
		return Start(t)
	}
	sharedOnce.Do(func() {
		if os.Getenv("PITR_TEST_S3_ENDPOINT") != "" {
			sharedServer, sharedErr = external()
			return
		}
		sharedDir, sharedErr = os.MkdirTemp("", "pitr-s3test-")
		if sharedErr != nil {
			return
		}
		sharedServer, sharedErr = startLocal(sharedDir)
		if sharedServer != nil {
			sharedServer.shared = true
		}
	})
	if sharedErr != nil {
		unavailable(t, "%v", sharedErr)
	}
	return sharedServer
}

// Env returns the AWS_* variables a child process (the pitr binary) needs to
// reach the server through the SDK's default configuration chain.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_SESSION_TOKEN=", // an inherited token would not match these keys
		"AWS_REGION=" + s.Region,
		"AWS_ENDPOINT_URL_S3=" + s.Endpoint,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Client returns an SDK client for the server, for tests that inspect or
// arrange the bucket behind the code under test.
func (s *Server) Client() *s3.Client {
	return newClient(s.Endpoint, s.Region, s.AccessKey, s.SecretKey)
}

// NewPrefix returns a fresh key prefix (no slashes) for one test, and deletes
// what the test stored under it when the test ends.
func (s *Server) NewPrefix(t testing.TB) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	prefix := "t-" + strings.Trim(name, "-") + "-" + hex.EncodeToString(b[:])
	if s.external || s.shared {
		t.Cleanup(func() { s.deletePrefix(prefix + "/") })
	}
	return prefix
}

func (s *Server) deletePrefix(prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.Client()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &s.Bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return // best effort: the server may have been stopped by the test
		}
		for _, o := range page.Contents {
			_, _ = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.Bucket, Key: o.Key})
		}
	}
}

// External reports whether the server is the one PITR_TEST_S3_ENDPOINT names
// (docker compose): it cannot be stopped or restarted by a test, so tests
// that simulate an outage skip before doing any work.
func (s *Server) External() bool { return s.external }

// Stop stops the server, keeping its port and data so Restart can bring the
// same repository back: integration tests use the pair to simulate an outage.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.checkOwned(t, "Stop")
	s.shutdown()
}

// Restart stops the server if it is running and starts it again on the same
// address and data directory.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.checkOwned(t, "Restart")
	s.shutdown()
	if err := s.launch(); err != nil {
		t.Fatalf("s3test: restart: %v", err)
	}
}

func (s *Server) checkOwned(t testing.TB, op string) {
	t.Helper()
	if s.external {
		unavailable(t, "%s: the external server at %s cannot be controlled", op, s.Endpoint)
	}
	if s.shared {
		t.Fatalf("s3test: %s on the shared server would break other tests; use Start", op)
	}
}

func external() (*Server, error) {
	s := &Server{
		external:  true,
		Endpoint:  os.Getenv("PITR_TEST_S3_ENDPOINT"),
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		Region:    cmp.Or(os.Getenv("AWS_REGION"), defaultRegion),
		Bucket:    cmp.Or(os.Getenv("PITR_TEST_S3_BUCKET"), defaultBucket),
	}
	if s.AccessKey == "" || s.SecretKey == "" {
		return nil, errors.New("PITR_TEST_S3_ENDPOINT is set but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not")
	}
	if err := s.createBucket(); err != nil {
		return nil, fmt.Errorf("external server %s: %w", s.Endpoint, err)
	}
	return s, nil
}

func findBinary() (string, error) {
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	for _, dir := range filepath.SplitList(build.Default.GOPATH) {
		p := filepath.Join(dir, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("versitygw not found (set VERSITYGW, put it on PATH, or " +
		"go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
}

func startLocal(dir string) (*Server, error) {
	bin, err := findBinary()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{
		AccessKey: "pitr-test-access",
		SecretKey: "pitr-test-secret-0123456789",
		Region:    defaultRegion,
		Bucket:    defaultBucket,
		bin:       bin,
		dataDir:   dataDir,
	}
	// Another process can grab the port between choosing and binding it;
	// try a few before giving up.
	for range 3 {
		s.addr, err = freeAddr()
		if err != nil {
			return nil, err
		}
		s.Endpoint = "http://" + s.addr
		if err = s.launch(); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if err := s.createBucket(); err != nil {
		s.shutdown()
		return nil, fmt.Errorf("create bucket on versitygw: %w\n%s", err, s.log.String())
	}
	return s, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// launch starts versitygw on s.addr and waits until it answers HTTP.
func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = &syncBuffer{}
	cmd := exec.Command(s.bin, "--port", s.addr, "--quiet", "posix", s.dataDir)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY_ID="+s.AccessKey,
		"ROOT_SECRET_ACCESS_KEY="+s.SecretKey,
		"VGW_REGION="+s.Region,
	)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("versitygw exited during start-up (%s):\n%s", cmd.ProcessState, s.log.String())
		default:
		}
		resp, err := client.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil // any HTTP answer, even 403, means it is serving
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("versitygw did not answer on %s within %v: %v\n%s", s.addr, startTimeout, err, s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

func (s *Server) createBucket() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.Bucket})
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "BucketAlreadyOwnedByYou" || ae.ErrorCode() == "BucketAlreadyExists") {
		return nil
	}
	return err
}

func newClient(endpoint, region, access, secret string) *s3.Client {
	cfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(access, secret, ""),
		// Match the store under test, which only sends checksums S3 requires.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
}

// syncBuffer collects the server's output for error messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
