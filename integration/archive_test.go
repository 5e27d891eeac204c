package integration

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/internal/s3test"
)

// archivingCluster starts a cluster whose archive_command is pitr, keeping
// enough WAL in pg_wal that the test can compare archived copies with the
// originals.
func archivingCluster(t *testing.T, r *testRepo, segMB int) *pgtest.Cluster {
	t.Helper()
	c := pgtest.NewCluster(t, pgtest.Options{
		WalSegSizeMB:   segMB,
		ArchiveCommand: r.archiveCommand(),
		ExtraConf:      map[string]string{"wal_keep_size": "2GB"},
	})
	c.Start(t)
	return c
}

// assertFetchesIdentical fetches every named file with wal-fetch, as
// restore_command would (to a %p whose name differs from %f), and compares it
// with PostgreSQL's own copy in pg_wal.
func assertFetchesIdentical(t *testing.T, r *testRepo, c *pgtest.Cluster, names []string) {
	t.Helper()
	work := pgtest.SharedTempDir(t)
	checked := 0
	for _, name := range names {
		want, err := os.ReadFile(filepath.Join(c.DataDir(), "pg_wal", name))
		if os.IsNotExist(err) {
			continue // a segment PostgreSQL already recycled
		}
		if err != nil {
			t.Fatal(err)
		}
		res := r.pitr(t, work, "wal-fetch", name, "RECOVERYXLOG")
		if res.code != 0 {
			t.Fatalf("wal-fetch %s: %v", name, res)
		}
		got, err := os.ReadFile(filepath.Join(work, "RECOVERYXLOG"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("fetched %s differs from pg_wal's copy (%d vs %d bytes)", name, len(got), len(want))
		}
		os.Remove(filepath.Join(work, "RECOVERYXLOG"))
		checked++
	}
	if checked == 0 {
		t.Fatalf("no archived file was still in pg_wal to compare (archived: %v)", names)
	}
	t.Logf("%d archived files fetched back byte-identical", checked)
}

// Contract: every segment PostgreSQL hands to archive_command comes back byte
// for byte through wal-fetch, on both backends.
func TestArchiveRoundTrip(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			c := archivingCluster(t, r, 1)
			var last string
			for range 4 {
				generateWAL(t, c, 2)
				last = c.SwitchWAL(t)
			}
			c.WaitArchived(t, last, time.Minute)
			if _, failed, _, _ := c.ArchiverStats(t); failed != 0 {
				t.Fatalf("pg_stat_archiver.failed_count = %d, want 0\n%s", failed, c.Log())
			}
			names := archivedNames(t, c)
			if len(names) < 8 {
				t.Fatalf("only %d files archived: %v", len(names), names)
			}
			assertFetchesIdentical(t, r, c, names)
			if !strings.Contains(c.Log(), "msg=archived") {
				t.Fatalf("server log has no archive-push log line")
			}
		})
	}
}

// Contract (restore_command): PostgreSQL itself recovers through wal-fetch:
// it asks for RECOVERYHISTORY probes and RECOVERYXLOG segments, treats exit 1
// as the end of the archive and promotes with all archived commits present.
func TestRecoveryThroughWalFetch(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			backupDir, final := plainBackupThenCommits(t, r, "none")

			restored := recoverFromArchive(t, r, backupDir)
			if n := restored.QueryInt(t, "SELECT count(*) FROM probe"); n != 3 {
				t.Fatalf("restored cluster has %d probe rows, want 3\n%s", n, restored.Log())
			}
			log := restored.Log()
			for _, want := range []string{`restored log file "000000010000000000000`, "selected new timeline ID: 2", "archive recovery complete"} {
				if !strings.Contains(log, want) {
					t.Errorf("server log lacks %q", want)
				}
			}
			if strings.Contains(log, "FATAL") {
				t.Errorf("server log has a FATAL:\n%s", log)
			}
			assertRestoredData(t, restored, final)
		})
	}
}

// Contract (archive_command, PG-CONTRACTS §2.3): an identical re-push
// succeeds without rewriting; different content under an archived name fails
// with exit 1 and leaves the archived copy; .history files are never
// overwritten.
func TestArchivePushIdempotence(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := archivingCluster(t, r, 1)
	generateWAL(t, c, 1)
	seg := c.SwitchWAL(t)
	c.WaitArchived(t, seg, time.Minute)
	original, err := os.ReadFile(filepath.Join(c.DataDir(), "pg_wal", seg))
	if err != nil {
		t.Fatal(err)
	}

	// PostgreSQL re-archives after a crash between the upload and .done.
	if res := r.pitr(t, c.DataDir(), "archive-push", "pg_wal/"+seg); res.code != 0 || !strings.Contains(res.stderr, "already archived") {
		t.Fatalf("identical re-push: %v", res)
	}

	// Same name, different bytes (past the header, so only content differs).
	other := pgtest.SharedTempDir(t)
	tampered := bytes.Clone(original)
	tampered[len(tampered)/2] ^= 0xFF
	if err := os.WriteFile(filepath.Join(other, seg), tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	res := r.pitr(t, c.DataDir(), "archive-push", filepath.Join(other, seg))
	if res.code != 1 || !strings.Contains(res.stderr, seg) || !strings.Contains(res.stderr, "different file") {
		t.Fatalf("different content under an archived name: %v", res)
	}
	work := pgtest.SharedTempDir(t)
	if res := r.pitr(t, work, "wal-fetch", seg, "out"); res.code != 0 {
		t.Fatalf("wal-fetch after refused push: %v", res)
	}
	if got, _ := os.ReadFile(filepath.Join(work, "out")); !bytes.Equal(got, original) {
		t.Fatalf("the archived copy changed after a refused push")
	}

	// .history: the first copy stays forever.
	hist := filepath.Join(other, "00000002.history")
	os.WriteFile(hist, []byte("1\t0/3000000\tno recovery target specified\n"), 0o644)
	if res := r.pitr(t, c.DataDir(), "archive-push", hist); res.code != 0 {
		t.Fatalf("history push: %v", res)
	}
	os.WriteFile(hist, []byte("1\t0/5000000\tsomething else\n"), 0o644)
	if res := r.pitr(t, c.DataDir(), "archive-push", hist); res.code != 1 {
		t.Fatalf("history overwrite attempt: %v", res)
	}
	if res := r.pitr(t, work, "wal-fetch", "00000002.history", "h"); res.code != 0 {
		t.Fatalf("fetch history: %v", res)
	}
	if got, _ := os.ReadFile(filepath.Join(work, "h")); !strings.Contains(string(got), "0/3000000") {
		t.Fatalf("history file was overwritten: %q", got)
	}
}

// Contract (restore_command, PG-CONTRACTS §3.2): a file that is not archived
// exits 1 quickly with nothing at %p; a corrupt object exits above 125 (so
// recovery stops instead of ending early), also with nothing at %p.
func TestWalFetchMissingAndCorrupt(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			c := archivingCluster(t, r, 1)
			generateWAL(t, c, 1)
			seg := c.SwitchWAL(t)
			c.WaitArchived(t, seg, time.Minute)
			work := pgtest.SharedTempDir(t)

			for _, missing := range []string{"00000009.history", "0000000100000000000000FF"} {
				start := time.Now()
				res := r.pitr(t, work, "wal-fetch", missing, "RECOVERYHISTORY")
				if res.code != 1 {
					t.Fatalf("wal-fetch of missing %s: %v", missing, res)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("wal-fetch of missing %s took %v; PostgreSQL probes missing files at every start", missing, d)
				}
				assertEmptyDir(t, work)
			}

			corruptObject(t, r, seg)
			res := r.pitr(t, work, "wal-fetch", seg, "RECOVERYXLOG")
			if res.code <= 125 || !strings.Contains(res.stderr, "corrupt") {
				t.Fatalf("wal-fetch of corrupt object: %v; want exit > 125 naming the corruption", res)
			}
			assertEmptyDir(t, work)
		})
	}
}

// Without a repository, "not found" would be a lie that ends recovery early.
func TestWalFetchWithoutRepositoryAbortsRecovery(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	work := pgtest.SharedTempDir(t)
	res := r.pitr(t, work, "wal-fetch", "000000010000000000000001", "RECOVERYXLOG")
	if res.code <= 125 || !strings.Contains(res.stderr, "no pitr repository") {
		t.Fatalf("wal-fetch from an empty location: %v", res)
	}
	// A misconfigured restore_command must stop recovery too, not look like "not found".
	res = r.pitr(t, work, "wal-fetch", "000000010000000000000001")
	if res.code <= 125 {
		t.Fatalf("wal-fetch with a missing argument: %v", res)
	}
	assertEmptyDir(t, work)
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("%s left in %s", e.Name(), dir)
	}
}

// corruptObject flips a byte in the middle of the archived object of name.
func corruptObject(t *testing.T, r *testRepo, name string) {
	t.Helper()
	key := archivedKey(t, r, name)
	switch r.kind {
	case "file":
		p := filepath.Join(r.dir, filepath.FromSlash(key))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	case "s3":
		ctx := context.Background()
		client := r.s3.Client()
		out, err := client.GetObject(ctx, &awss3.GetObjectInput{Bucket: &r.s3.Bucket, Key: &key})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x01
		if _, err := client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &r.s3.Bucket, Key: &key, Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
}

// archivedKey finds the bucket/directory key of an archived WAL file.
func archivedKey(t *testing.T, r *testRepo, name string) string {
	t.Helper()
	var keys []string
	switch r.kind {
	case "file":
		filepath.WalkDir(r.dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == name {
				rel, _ := filepath.Rel(r.dir, p)
				keys = append(keys, filepath.ToSlash(rel))
			}
			return nil
		})
	case "s3":
		prefix := r.s3Prefix + "/"
		p := awss3.NewListObjectsV2Paginator(r.s3.Client(), &awss3.ListObjectsV2Input{Bucket: &r.s3.Bucket, Prefix: &prefix})
		for p.HasMorePages() {
			page, err := p.NextPage(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range page.Contents {
				if strings.HasSuffix(*o.Key, "/"+name) {
					keys = append(keys, *o.Key)
				}
			}
		}
	}
	if len(keys) != 1 {
		t.Fatalf("want exactly one archived object for %s, found %v", name, keys)
	}
	return keys[0]
}

// Contract (archive_command, PG-CONTRACTS §2.2): while the object store is
// down, archive-push fails with exit 1, PostgreSQL keeps the segments
// (.ready) and counts failures; once it is back, every segment arrives.
func TestS3OutageLosesNothing(t *testing.T) {
	t.Parallel()
	server := s3test.Start(t) // stopped and restarted below: not shared
	if server.External() {
		t.Skip("the S3 server named by PITR_TEST_S3_ENDPOINT cannot be stopped by a test")
	}
	r := newRepo(t, "s3", server)
	c := archivingCluster(t, r, 1)
	generateWAL(t, c, 1)
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	server.Stop(t)
	var during []string
	for range 3 {
		generateWAL(t, c, 1)
		during = append(during, c.SwitchWAL(t))
	}
	c.WaitFor(t, 90*time.Second, func() bool {
		_, failed, _, _ := c.ArchiverStats(t)
		return failed > 0
	})
	for _, seg := range during {
		if _, err := os.Stat(filepath.Join(c.DataDir(), "pg_wal", "archive_status", seg+".ready")); err != nil {
			t.Fatalf("%s is not .ready while the store is down: %v", seg, err)
		}
	}
	if strings.Contains(c.Log(), "archive command was terminated") || strings.Contains(c.Log(), "archiver process") && strings.Contains(c.Log(), "exited with exit code") {
		t.Fatalf("archive-push died instead of failing with exit 1:\n%s", c.Log())
	}

	server.Restart(t)
	generateWAL(t, c, 1)
	last := c.SwitchWAL(t) // wakes the archiver instead of waiting for its 60 s timer
	c.WaitArchived(t, last, 3*time.Minute)
	assertFetchesIdentical(t, r, c, append(during, last))
}

// A cluster with 64 MiB segments archives and fetches correctly across the
// rollover of the low 8 hex digits (…0000003F → …0000000100000000), reached
// cheaply with pg_resetwal before the first start.
func TestWalSegSize64AcrossRollover(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	c := pgtest.NewCluster(t, pgtest.Options{
		WalSegSizeMB:   64,
		ArchiveCommand: r.archiveCommand(),
		ExtraConf:      map[string]string{"wal_keep_size": "2GB"},
	})
	if out, err := c.RunAsUser(t, "pg_resetwal", "-l", "00000001000000000000003E", "-D", c.DataDir()); err != nil {
		t.Fatalf("pg_resetwal: %v %s", err, out)
	}
	c.Start(t)
	var switched []string
	for range 3 {
		generateWAL(t, c, 1)
		switched = append(switched, c.SwitchWAL(t))
	}
	c.WaitArchived(t, switched[len(switched)-1], 2*time.Minute)
	names := archivedNames(t, c)
	joined := strings.Join(names, " ")
	for _, want := range []string{"00000001000000000000003F", "000000010000000100000000"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("%s not archived; archived: %v", want, names)
		}
	}
	assertFetchesIdentical(t, r, c, names)
}

func deleteS3Object(t *testing.T, r *testRepo, key string) {
	t.Helper()
	if _, err := r.s3.Client().DeleteObject(context.Background(), &awss3.DeleteObjectInput{Bucket: &r.s3.Bucket, Key: &key}); err != nil {
		t.Fatal(err)
	}
}

// plainBackupThenCommits runs an archiving cluster, commits probe row 1,
// takes a plain pg_basebackup with the given -X method, commits rows 2 and 3
// around some WAL, waits until all of it is archived and stops the cluster.
// It returns the backup's directory and the source's data at the end.
func plainBackupThenCommits(t *testing.T, r *testRepo, walMethod string) (string, dataState) {
	t.Helper()
	c := archivingCluster(t, r, 1)
	c.Exec(t, "CREATE TABLE probe (id int primary key, note text)")
	c.Exec(t, "INSERT INTO probe VALUES (1, 'before backup')")
	backupDir := filepath.Join(pgtest.SharedTempDir(t), "data")
	if out, err := c.RunAsUser(t, "pg_basebackup", "-D", backupDir, "-X", walMethod, "-c", "fast"); err != nil {
		t.Fatalf("pg_basebackup: %v %s", err, out)
	}
	c.Exec(t, "INSERT INTO probe VALUES (2, 'after backup')")
	generateWAL(t, c, 2)
	c.Exec(t, "INSERT INTO probe VALUES (3, 'last commit')")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	final := snapshot(t, c, "at the end of the archive")
	c.Stop(t)
	return backupDir, final
}
