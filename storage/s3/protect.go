package s3

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/aws/smithy-go"
)

// checkEndpoint refuses a plain-http endpoint unless allowed: S3 requests
// carry the repository's data and, signed or not, reveal it to anyone on the
// path. Loopback is exempt because the bytes never leave the machine (a local
// test server, or a TLS-terminating proxy on the same host). "" is AWS's own
// endpoint, which the SDK always reaches over https.
func checkEndpoint(endpoint string, allowHTTP bool) error {
	if endpoint == "" {
		return nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return fmt.Errorf("s3: endpoint %q is not a URL (want https://host[:port])", endpoint)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		if allowHTTP || isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("s3: endpoint %s is plain http, which sends the repository's data and requests unencrypted; use https, or set s3_allow_http for a trusted network", endpoint)
	}
	return fmt.Errorf("s3: endpoint %q: scheme %q is neither https nor http", endpoint, u.Scheme)
}

// isLoopback accepts only names that cannot leave the machine: localhost and
// literal loopback addresses (not a DNS name that might resolve to one today).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkProtection validates the server-side encryption and Object Lock
// settings before anything is sent.
func checkProtection(cfg Config) error {
	switch cfg.SSE {
	case "", SSEAES256:
		if cfg.SSEKMSKeyID != "" {
			return errors.New("s3: a KMS key id needs server-side encryption aws:kms")
		}
	case SSEKMS:
	default:
		return fmt.Errorf("s3: server-side encryption %q is not %s or %s", cfg.SSE, SSEAES256, SSEKMS)
	}
	switch cfg.ObjectLockMode {
	case "":
		if cfg.ObjectLockDays != 0 {
			return fmt.Errorf("s3: object lock retention of %d days needs a mode (%s or %s)", cfg.ObjectLockDays, ObjectLockGovernance, ObjectLockCompliance)
		}
	case ObjectLockGovernance, ObjectLockCompliance:
		// S3 itself caps retention at 100 years; a typo such as 3650000
		// would lock the bucket's contents for good.
		if cfg.ObjectLockDays < 1 || cfg.ObjectLockDays > 36500 {
			return fmt.Errorf("s3: object lock retention of %d days is out of range 1..36500", cfg.ObjectLockDays)
		}
	default:
		return fmt.Errorf("s3: object lock mode %q is not %s or %s", cfg.ObjectLockMode, ObjectLockGovernance, ObjectLockCompliance)
	}
	return nil
}

// isLocked recognises a refusal because of Object Lock retention or a legal
// hold. S3 and versitygw answer AccessDenied with a message naming the lock;
// some S3-compatible servers use the code ObjectLocked.
func isLocked(code string, err error) bool {
	if code == "ObjectLocked" {
		return true
	}
	var ae smithy.APIError
	return code == "AccessDenied" && errors.As(err, &ae) &&
		strings.Contains(strings.ToLower(ae.ErrorMessage()), "object lock")
}
