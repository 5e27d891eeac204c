// Package s3tls runs versitygw (posix backend) over HTTPS on 127.0.0.1 with
// a self-signed certificate made per run, for the benchmarks: pgBackRest
// talks to S3 only over TLS, so both tools get TLS (a plain-HTTP pitr would
// not be doing the same work).
package s3tls

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

// Server is a running versitygw with one bucket.
type Server struct {
	cmd      *exec.Cmd
	log      *bytes.Buffer
	pool     *x509.CertPool
	Port     int
	Endpoint string // https://127.0.0.1:port
	CertFile string // the certificate, readable by everyone: it is its own CA
	Bucket   string
	Region   string
	Access   string
	Secret   string
}

// Start starts a server whose files (data, certificate, key) live in dir.
func Start(ctx context.Context, dir string) (*Server, error) {
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
	s := &Server{Bucket: "bench", Region: "us-east-1", Access: "bench-access", Secret: "bench-secret-0123456789", log: &bytes.Buffer{}}
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
	s.CertFile = filepath.Join(dir, "cert.pem")
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(s.CertFile, certPEM, 0o644); err != nil {
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
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.Endpoint = fmt.Sprintf("https://127.0.0.1:%d", s.Port)
	s.cmd = exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", s.Port), "--cert", s.CertFile, "--key", keyFile,
		"--quiet", "posix", filepath.Join(dir, "data"))
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.Access, "ROOT_SECRET_ACCESS_KEY="+s.Secret, "VGW_REGION="+s.Region)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	hc := s.httpClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(s.Endpoint)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("no answer on %s: %v\n%s", s.Endpoint, err, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.Bucket}); err != nil {
		s.Stop()
		return nil, fmt.Errorf("create bucket: %w", err)
	}
	return s, nil
}

// Stop kills the server.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

func (s *Server) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pool}}, Timeout: 30 * time.Second}
}

// Client is an SDK client that trusts the certificate.
func (s *Server) Client() *s3.Client {
	cfg := aws.Config{
		Region:                     s.Region,
		Credentials:                credentials.NewStaticCredentialsProvider(s.Access, s.Secret, ""),
		HTTPClient:                 s.httpClient(),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoint)
		o.UsePathStyle = true
	})
}

// Env is what pitr needs to reach the server through the SDK's chain.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.Access,
		"AWS_SECRET_ACCESS_KEY=" + s.Secret,
		"AWS_REGION=" + s.Region,
		"AWS_ENDPOINT_URL_S3=" + s.Endpoint,
		"AWS_CA_BUNDLE=" + s.CertFile,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// SizeUnder sums the sizes of the objects under prefix that keep accepts.
func (s *Server) SizeUnder(ctx context.Context, prefix string, keep func(string) bool) (int64, error) {
	var total int64
	p := s3.NewListObjectsV2Paginator(s.Client(), &s3.ListObjectsV2Input{Bucket: &s.Bucket, Prefix: &prefix})
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
