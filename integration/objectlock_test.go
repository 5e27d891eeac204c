package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/internal/s3test"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/s3"
)

// Contract (issue 8, Object Lock): with s3_object_lock_* set on a bucket
// that has Object Lock enabled, archived WAL and backups carry the retention
// on the server, while the objects pitr rewrites or deletes in normal work
// (a backup's heartbeat, prune's lock) do not, so backups and prune keep
// working; prune then skips what it cannot delete, says so, exits 0, and the
// locked backup stays complete with its WAL. SSE is requested on the same
// uploads (versitygw accepts it).
func TestObjectLockRetention(t *testing.T) {
	srv := s3test.Shared(t)
	bucket := fmt.Sprintf("pitr-lock-%d", time.Now().UnixNano())
	if _, err := srv.Client().CreateBucket(context.Background(), &awss3.CreateBucketInput{
		Bucket: &bucket, ObjectLockEnabledForBucket: aws.Bool(true),
	}); err != nil {
		t.Fatalf("create a bucket with object lock: %v", err)
	}
	r := newRepo(t, "s3", srv)
	conf, err := os.ReadFile(r.configPath)
	if err != nil {
		t.Fatal(err)
	}
	old := r.url
	r.url = "s3://" + bucket + "/" + r.s3Prefix
	text := strings.Replace(string(conf), "repo: "+old+"\n", "repo: "+r.url+"\n", 1) +
		"s3_object_lock_mode: GOVERNANCE\ns3_object_lock_days: 1\ns3_sse: AES256\n"
	writePrivateFile(t, r.configPath, text)

	st, err := s3.New(context.Background(), s3.Config{Bucket: bucket, Prefix: r.s3Prefix, Region: srv.Region,
		Endpoint: srv.Endpoint, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, AllowHTTP: srv.External()})
	if err != nil {
		t.Fatal(err)
	}
	retention := func(key string) string {
		out, err := srv.Client().GetObjectRetention(context.Background(), &awss3.GetObjectRetentionInput{
			Bucket: &bucket, Key: aws.String(r.s3Prefix + "/" + key)})
		if err != nil || out.Retention == nil {
			return "none"
		}
		return string(out.Retention.Mode)
	}

	c := archivingCluster(t, r, 1)
	c.Exec(t, "CREATE TABLE probe (id int primary key)")
	first := r.backup(t, c)
	generateWAL(t, c, 2)
	second := r.backup(t, c)
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	m, err := repo.ReadMarker(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	id := m.SystemIdentifier
	walObjs, err := st.List(context.Background(), repo.WALPrefix(id))
	if err != nil || len(walObjs) == 0 {
		t.Fatalf("archived WAL: %v, %v", walObjs, err)
	}
	for _, key := range []string{walObjs[0].Key, repo.BackupKey(id, first, repo.BackupMetadataName), repo.BackupKey(id, first, repo.BackupBaseTarName)} {
		if got := retention(key); got != "GOVERNANCE" {
			t.Errorf("%s: retention %s, want GOVERNANCE", key, got)
		}
	}
	// The heartbeat was deleted at the end of each backup, which a
	// retention would have refused.
	for _, name := range []string{first, second} {
		if _, err := st.Stat(context.Background(), repo.BackupKey(id, name, repo.BackupInProgressName)); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("backup %s: heartbeat still there (%v)", name, err)
		}
	}

	walBefore := len(walObjs)
	work := pgtest.SharedTempDir(t)
	res := r.pitr(t, work, "prune", "--keep", "1")
	if res.code != 0 || !strings.Contains(res.stdout, "under retention") {
		t.Fatalf("prune over locked objects: %v", res)
	}
	var names []string
	for _, b := range r.listBackups(t) {
		names = append(names, b.Name)
	}
	if strings.Join(names, " ") != first+" "+second {
		t.Errorf("backups after prune: %v, want both (the older one is locked)", names)
	}
	if walObjs, err = st.List(context.Background(), repo.WALPrefix(id)); err != nil || len(walObjs) < walBefore {
		t.Errorf("WAL after prune: %d objects of %d (%v)", len(walObjs), walBefore, err)
	}
	if _, err := st.Stat(context.Background(), "locks/prune.json"); err == nil {
		t.Error("prune's lock object stayed behind")
	}
}
