package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Contract: a %p that leaves the data directory is refused with each
// command's failure status (archive-push 1, so PostgreSQL retries and counts
// it; wal-fetch above 125, since it is not "not archived"), and nothing is
// read or written.
func TestPathTraversalRefused(t *testing.T) {
	isolate(t)
	url, _ := newRepoURL(t)
	// The working directory is a data directory, as for PostgreSQL.
	if err := os.MkdirAll("global", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("global/pg_control", []byte{7, 0, 0, 0, 0, 0, 0, 0}, 0o600); err != nil {
		t.Fatal(err)
	}
	cwd, _ := os.Getwd()
	outside := filepath.Dir(cwd)
	seg := "000000010000000000000001"
	if err := os.WriteFile(filepath.Join(outside, seg), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, p := range []string{"../" + seg, "pg_wal/../../" + seg} {
		code, _, stderr := runPitr(t, "archive-push", "--repo", url, p)
		if code != 1 || !strings.Contains(stderr, "leaves the working directory") {
			t.Errorf("archive-push %s: exit %d, stderr %s", p, code, stderr)
		}
	}
	for _, p := range []string{"../evil", "pg_wal/../../evil", "global/pg_control"} {
		code, _, stderr := runPitr(t, "wal-fetch", "--repo", url, seg, p)
		if code != 255 || !strings.Contains(stderr, "pg_wal") {
			t.Errorf("wal-fetch %s: exit %d, stderr %s", p, code, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "evil")); err == nil {
		t.Error("wal-fetch wrote outside the data directory")
	}
	if b, _ := os.ReadFile("global/pg_control"); len(b) != 8 {
		t.Error("wal-fetch replaced global/pg_control")
	}
	// PostgreSQL's own form is accepted: this one is merely not archived.
	if code, _, stderr := runPitr(t, "wal-fetch", "--repo", url, seg, "pg_wal/RECOVERYXLOG"); code != 1 {
		t.Errorf("wal-fetch pg_wal/RECOVERYXLOG: exit %d, stderr %s", code, stderr)
	}
}

// Contract: a plain-http S3 endpoint on another host is refused before any
// request, with the way to allow it named; the refusal keeps each command's
// exit status (wal-fetch above 125: it is not "not archived").
func TestPlainHTTPEndpointRefused(t *testing.T) {
	isolate(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "x")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "y")
	t.Setenv("AWS_REGION", "us-east-1")
	s3 := []string{"--repo", "s3://bucket/prefix", "--s3-endpoint", "http://s3.example.com:9000"}
	for _, c := range []struct {
		args []string
		want int
	}{
		{append([]string{"wal-fetch"}, append(s3, "000000010000000000000001", "RECOVERYXLOG")...), 255},
		{append([]string{"archive-push"}, append(s3, "pg_wal/000000010000000000000001")...), 1},
		{append([]string{"backup", "list"}, s3...), 1},
	} {
		code, _, stderr := runPitr(t, c.args...)
		if code != c.want || !strings.Contains(stderr, "s3_allow_http") {
			t.Errorf("%s: exit %d (want %d), stderr %s", c.args[0], code, c.want, stderr)
		}
	}
}
