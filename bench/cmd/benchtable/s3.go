package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3Server is versitygw (posix backend) serving HTTPS on 127.0.0.1 with a
// self-signed certificate. pgBackRest talks to S3 only over TLS, so both
// tools get TLS: a plain-HTTP pitr would not be the same work.
type s3Server struct {
	cmd      *exec.Cmd
	log      *bytes.Buffer
	port     int
	endpoint string
	certFile string
	pool     *x509.CertPool
	bucket   string
	region   string
	access   string
	secret   string
}

func startS3(ctx context.Context, dir string) (*s3Server, error) {
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			gopath = filepath.Join(os.Getenv("HOME"), "go")
		}
		bin = filepath.Join(gopath, "bin", "versitygw")
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("versitygw not found (go install github.com/versity/versitygw/cmd/versitygw@latest): %w", err)
		}
	}
	s := &s3Server{bucket: "bench", region: "us-east-1", access: "bench-access", secret: "bench-secret-0123456789", log: &bytes.Buffer{}}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	// The certificate must be readable by the cluster user (pitr and
	// pgBackRest run as it); the key only by versitygw.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	s.certFile = filepath.Join(dir, "cert.pem")
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(s.certFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	s.pool = x509.NewCertPool()
	s.pool.AppendCertsFromPEM(certPEM)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.endpoint = fmt.Sprintf("https://127.0.0.1:%d", s.port)
	s.cmd = exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", s.port), "--cert", s.certFile, "--key", keyFile,
		"--quiet", "posix", filepath.Join(dir, "data"))
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.access, "ROOT_SECRET_ACCESS_KEY="+s.secret, "VGW_REGION="+s.region)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	hc := s.httpClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(s.endpoint)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("no answer on %s: %v\n%s", s.endpoint, err, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := s.client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket}); err != nil {
		s.stop()
		return nil, fmt.Errorf("create bucket: %w", err)
	}
	return s, nil
}

func (s *s3Server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

func (s *s3Server) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pool}}, Timeout: 30 * time.Second}
}

func (s *s3Server) client() *s3.Client {
	cfg := aws.Config{
		Region:                     s.region,
		Credentials:                credentials.NewStaticCredentialsProvider(s.access, s.secret, ""),
		HTTPClient:                 s.httpClient(),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.endpoint)
		o.UsePathStyle = true
	})
}

// env is what pitr needs to reach the server through the SDK's chain.
func (s *s3Server) env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.access,
		"AWS_SECRET_ACCESS_KEY=" + s.secret,
		"AWS_REGION=" + s.region,
		"AWS_ENDPOINT_URL_S3=" + s.endpoint,
		"AWS_CA_BUNDLE=" + s.certFile,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// sizeUnder sums the sizes of the objects under prefix that keep accepts.
func (s *s3Server) sizeUnder(ctx context.Context, prefix string, keep func(string) bool) (int64, error) {
	var total int64
	p := s3.NewListObjectsV2Paginator(s.client(), &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, err
		}
		for _, o := range page.Contents {
			if o.Key != nil && keep(*o.Key) && o.Size != nil && !strings.HasSuffix(*o.Key, "/") {
				total += *o.Size
			}
		}
	}
	return total, nil
}

// selfSigned makes a certificate for 127.0.0.1 that is its own CA.
func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
