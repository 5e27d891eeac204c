package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pitr-dev/pitr/internal/pgtest"
	"github.com/pitr-dev/pitr/internal/s3test"
)

// objectState identifies one stored object's bytes and write: a rewrite of
// the same bytes changes it too (modification time, ETag).
func objectState(t *testing.T, r *testRepo, name string) string {
	t.Helper()
	key := archivedKey(t, r, name) // fails unless there is exactly one
	switch r.kind {
	case "file":
		p := filepath.Join(r.dir, filepath.FromSlash(key))
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		st := fi.Sys().(*syscall.Stat_t)
		return fmt.Sprintf("%s size=%d mtime=%s inode=%d sha256=%s", key, fi.Size(), fi.ModTime().Format(time.RFC3339Nano), st.Ino, hex.EncodeToString(sum[:]))
	default:
		out, err := r.s3.Client().HeadObject(context.Background(), &awss3.HeadObjectInput{Bucket: &r.s3.Bucket, Key: &key})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s size=%d etag=%s modified=%s", key, *out.ContentLength, *out.ETag, out.LastModified.Format(time.RFC3339Nano))
	}
}

// markReady makes PostgreSQL archive name again, as after a crash between
// archive_command's success and the rename of .ready to .done.
func markReady(t *testing.T, c *pgtest.Cluster, name string) {
	t.Helper()
	status := filepath.Join(c.DataDir(), "pg_wal", "archive_status")
	if out, err := c.RunAsUser(t, "sh", "-c", fmt.Sprintf("rm -f %[1]s/%[2]s.done && touch %[1]s/%[2]s.ready", status, name)); err != nil {
		t.Fatalf("mark %s .ready: %v %s", name, err, out)
	}
}

func statusFile(c *pgtest.Cluster, name, suffix string) bool {
	_, err := os.Stat(filepath.Join(c.DataDir(), "pg_wal", "archive_status", name+suffix))
	return err == nil
}

// Scenarios 11 and 12, with PostgreSQL itself doing the pushing, on both
// backends:
//   - a crash between the upload and .done (simulated: .done deleted, .ready
//     recreated) makes the archiver push the segment again: exit 0, logged
//     as identical, .done back, no failure counted, the object untouched;
//   - a different file under an archived name (the segment in pg_wal
//     altered after it was archived) fails with exit 1: failed_count grows,
//     last_failed_wal names it, .ready stays, the archived copy is
//     untouched; once the file is right again the archiver gets past it.
func TestPostgresRearchives(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			c := archivingCluster(t, r, 1)
			var segs []string
			for range 3 {
				generateWAL(t, c, 1)
				segs = append(segs, c.SwitchWAL(t))
			}
			c.WaitArchived(t, segs[2], time.Minute)

			// Scenario 11.
			seg := segs[0]
			before := objectState(t, r, seg)
			_, failed0, _, _ := c.ArchiverStats(t)
			identical := `msg="already archived, identical" file=` + seg
			if n := c.LogCount(identical); n != 0 {
				t.Fatalf("%s was pushed twice before the test re-archived it (%d)", seg, n)
			}
			markReady(t, c, seg)
			c.SwitchWAL(t) // wakes the archiver
			c.WaitFor(t, time.Minute, func() bool { return statusFile(c, seg, ".done") })
			if n := c.LogCount(identical); n != 1 {
				t.Fatalf("server log has %d lines %q after the re-archive, want 1", n, identical)
			}
			if _, failed, _, _ := c.ArchiverStats(t); failed != failed0 {
				t.Fatalf("failed_count went from %d to %d on an identical re-push", failed0, failed)
			}
			if after := objectState(t, r, seg); after != before {
				t.Fatalf("the archived object changed on an identical re-push:\n before %s\n after  %s", before, after)
			}

			// Scenario 12.
			seg = segs[1]
			before = objectState(t, r, seg)
			path := filepath.Join(c.DataDir(), "pg_wal", seg)
			original, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			altered := bytes.Clone(original)
			altered[len(altered)-1] ^= 0xFF // past the switch: the server never reads it
			if err := os.WriteFile(path, altered, 0o600); err != nil {
				t.Fatal(err)
			}
			markReady(t, c, seg)
			c.SwitchWAL(t)
			c.WaitFor(t, time.Minute, func() bool {
				_, failed, _, lastFailed := c.ArchiverStats(t)
				return failed > failed0 && lastFailed == seg
			})
			if !statusFile(c, seg, ".ready") {
				t.Fatalf("%s.ready is gone after a failed push", seg)
			}
			if !c.LogContains("archive command failed with exit code 1") || !c.LogContains("a different file with this name is already archived") {
				t.Fatalf("the server log lacks archive-push's exit 1 for the conflicting %s", seg)
			}
			if c.LogContains("archive command was terminated") || regexp.MustCompile(`archive command failed with exit code (1[2-9][0-9]|2[0-9][0-9])`).MatchString(c.Log()) {
				t.Fatalf("archive-push failed with a status above 125 or a signal")
			}
			if after := objectState(t, r, seg); after != before {
				t.Fatalf("the archived object changed on a conflicting push:\n before %s\n after  %s", before, after)
			}
			work := pgtest.SharedTempDir(t)
			if res := r.pitr(t, work, "wal-fetch", seg, "out"); res.code != 0 {
				t.Fatalf("wal-fetch %s: %v", seg, res)
			}
			if got, _ := os.ReadFile(filepath.Join(work, "out")); !bytes.Equal(got, original) {
				t.Fatalf("the archive no longer holds the original %s", seg)
			}
			if err := os.WriteFile(path, original, 0o600); err != nil {
				t.Fatal(err)
			}
			last := c.SwitchWAL(t)
			c.WaitFor(t, 3*time.Minute, func() bool { return statusFile(c, seg, ".done") })
			c.WaitArchived(t, last, time.Minute)
		})
	}
}

// Scenario 26: a standby with archive_mode = always archives into the same
// repository as its primary. The standby's archiving is held back (its
// archive_command fails) until the primary has archived every segment and
// the objects' states are recorded; then every one of the standby's pushes
// is an identical re-push: all succeed, no object is rewritten (same bytes,
// same inode or ETag and modification time), nothing fails on either side.
func TestArchiveModeAlwaysStandby(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			primary := archivingCluster(t, r, 1)
			standby := pgtest.NewStandby(t, primary, pgtest.Options{ArchiveCommand: "false",
				ExtraConf: map[string]string{"archive_mode": "always", "wal_keep_size": "2GB"}})
			standby.Start(t)
			var segs []string
			for range 3 {
				generateWAL(t, primary, 1)
				segs = append(segs, primary.SwitchWAL(t))
			}
			primary.WaitArchived(t, segs[2], time.Minute)
			standby.WaitFor(t, time.Minute, func() bool { return statusFile(standby, segs[2], ".ready") })
			states := map[string]string{}
			for _, seg := range segs {
				states[seg] = objectState(t, r, seg)
			}
			time.Sleep(1100 * time.Millisecond) // S3 modification times have 1 s resolution

			offset := len(standby.Log())
			standby.AppendAutoConf(t, "archive_command = '"+strings.ReplaceAll(r.archiveCommand(), "'", "''")+"'")
			standby.Exec(t, "SELECT pg_reload_conf()")
			for _, seg := range segs {
				standby.WaitFor(t, 2*time.Minute, func() bool { return statusFile(standby, seg, ".done") })
			}
			for _, seg := range segs {
				if got := objectState(t, r, seg); got != states[seg] {
					t.Fatalf("%s was rewritten by the standby's identical re-push:\n before %s\n after  %s", seg, states[seg], got)
				}
			}
			since := standby.Log()[offset:]
			if strings.Contains(since, "The failed archive command was: "+pitrBin) {
				t.Fatalf("a re-push of an identical file failed on the standby:\n%s", since)
			}
			if !strings.Contains(since, `msg="already archived, identical"`) || strings.Contains(since, "msg=archived ") {
				t.Fatalf("the standby's pushes were not identical re-pushes:\n%s", since)
			}
			if _, failed, _, _ := primary.ArchiverStats(t); failed != 0 {
				t.Fatalf("failed_count = %d on the primary", failed)
			}
			assertFetchesIdentical(t, r, primary, segs)
		})
	}
}

// setDirsWritable adds or removes the write bits of every directory under
// root (files are never written in place by pitr).
func setDirsWritable(t *testing.T, root string, writable bool) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		mode := os.FileMode(0o555)
		if writable {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// archivedLine is archive-push's log line for the file PostgreSQL asked for,
// whether it stored it now, found it archived ahead by an earlier call, or
// found an identical copy: one line per successful archive_command call.
var archivedLine = regexp.MustCompile(`msg=(?:archived|"archived earlier, ahead of this call"|"already archived, identical") file=(\S+)`)

// archivedOrder is the order in which PostgreSQL's archive_command calls
// succeeded, from the server log from offset on.
func archivedOrder(c *pgtest.Cluster, offset int) []string {
	var out []string
	for _, m := range archivedLine.FindAllStringSubmatch(c.Log()[offset:], -1) {
		out = append(out, m[1])
	}
	return out
}

// Scenario 13, a read-only destination: a restored cluster promotes to
// timeline 2 while the repository cannot be written. archive-push exits 1
// for 00000002.history and every new segment, PostgreSQL keeps them .ready
// and counts the failures; once the repository is writable again the
// history file is archived first, then the segments in order.
func TestArchiveDestinationReadOnly(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", time.Second)
	rc := s.restoreOnly(t, pgtest.Options{ArchiveCommand: s.repo.archiveCommand()}, "--target", "latest")
	setDirsWritable(t, s.repo.dir, false)
	t.Cleanup(func() { setDirsWritable(t, s.repo.dir, true) })
	rc.Start(t)
	waitPromoted(t, rc)
	assertRestoredData(t, rc, s.afterB)
	var switched []string
	for range 2 {
		generateWAL(t, rc, 1)
		switched = append(switched, rc.SwitchWAL(t))
	}
	rc.WaitFor(t, time.Minute, func() bool {
		_, failed, _, _ := rc.ArchiverStats(t)
		return failed > 0
	})
	for _, name := range append([]string{"00000002.history"}, switched...) {
		if !statusFile(rc, name, ".ready") {
			t.Fatalf("%s is not .ready while the repository is read-only", name)
		}
	}
	if !rc.LogContains("archive command failed with exit code 1") || rc.LogContains("archive command was terminated") {
		t.Fatalf("archive-push did not fail with exit 1 on a read-only repository")
	}
	if slices.Contains(archivedWAL(t, s.repo, systemID(t, s.repo)), "00000002.history") {
		t.Fatalf("00000002.history reached a read-only repository")
	}

	offset := len(rc.Log())
	setDirsWritable(t, s.repo.dir, true)
	last := rc.SwitchWAL(t)
	rc.WaitArchived(t, last, 3*time.Minute)
	order := archivedOrder(rc, offset)
	if len(order) == 0 || order[0] != "00000002.history" {
		t.Fatalf("after the repository became writable, archived first %v; want 00000002.history first", order)
	}
	var segs []string
	for _, n := range order {
		if pgtest.IsSegmentName(n) {
			segs = append(segs, n)
		}
	}
	if !slices.IsSorted(segs) || !slices.Contains(segs, switched[0]) || !slices.Contains(segs, last) {
		t.Fatalf("segments archived out of order or missing after the outage: %v", order)
	}
	if ready, _ := filepath.Glob(filepath.Join(rc.DataDir(), "pg_wal", "archive_status", "*.ready")); len(ready) > 0 {
		t.Fatalf(".ready files left after the repository came back: %v", ready)
	}
}

// Scenario 13, a full destination: a repository on a 4 MiB tmpfs filled to
// the last byte. archive-push exits 1, leaves nothing under the segment's
// name, PostgreSQL keeps the segments .ready; with space again they are
// archived in order and come back byte for byte.
func TestArchiveDestinationFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system needs root")
	}
	mnt := pgtest.SharedTempDir(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount a 4 MiB tmpfs: %v %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	pgtest.MakeShared(t, mnt)
	r := newRepoAt(t, filepath.Join(mnt, "repo"))
	c := archivingCluster(t, r, 1)
	generateWAL(t, c, 1)
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)

	filler := filepath.Join(mnt, "filler")
	fillUp(t, filler)
	var during []string
	for range 2 {
		generateWAL(t, c, 1)
		during = append(during, c.SwitchWAL(t))
	}
	c.WaitFor(t, time.Minute, func() bool {
		_, failed, _, _ := c.ArchiverStats(t)
		return failed > 0
	})
	for _, seg := range during {
		if !statusFile(c, seg, ".ready") {
			t.Fatalf("%s is not .ready while the repository is full", seg)
		}
	}
	if !c.LogContains("archive command failed with exit code 1") {
		t.Fatalf("archive-push did not fail with exit 1 on a full repository")
	}
	archived := archivedWAL(t, r, systemID(t, r))
	for _, seg := range during {
		if slices.Contains(archived, seg) {
			t.Fatalf("%s is in the repository although the disk was full", seg)
		}
	}

	offset := len(c.Log())
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	last := c.SwitchWAL(t)
	c.WaitArchived(t, last, 3*time.Minute)
	order := archivedOrder(c, offset)
	if !slices.IsSorted(order) || !slices.Contains(order, during[0]) || !slices.Contains(order, last) {
		t.Fatalf("archived after the disk had space again: %v; want %s .. %s in order", order, during[0], last)
	}
	assertFetchesIdentical(t, r, c, append(during, last))
}

// newRepoAt is a file repository in dir (made by the test).
func newRepoAt(t *testing.T, dir string) *testRepo {
	t.Helper()
	r := newRepo(t, "file", nil)
	r.dir = dir
	r.url = "file://" + dir
	if err := os.WriteFile(r.configPath, []byte("repo: "+r.url+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// fillUp writes zeros to path until the file system is full.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	_ = f.Sync()
}

// Scenario 13, durability: archive-push killed with SIGKILL in the middle of
// an upload leaves nothing under the segment's name (wal-fetch says "not
// archived"), or, when the kill came after the upload, a complete object;
// a new push then archives it. On the file backend the kill is aimed at the
// moment the upload's temporary file exists; on S3 at increasing delays.
func TestArchivePushKilledMidUpload(t *testing.T) {
	for _, kind := range backends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t, kind, nil)
			c := pgtest.NewCluster(t, pgtest.Options{ArchiveCommand: "false", ExtraConf: map[string]string{"wal_keep_size": "2GB"}})
			c.Start(t)
			// Incompressible WAL, so that the upload takes a while.
			c.Exec(t, "CREATE TABLE rnd (b bytea); ALTER TABLE rnd ALTER COLUMN b SET STORAGE EXTERNAL")
			var segs []string
			for range 3 {
				c.Exec(t, "INSERT INTO rnd SELECT (SELECT decode(string_agg(md5(random()::text) || md5(g::text || random()), ''), 'hex') FROM generate_series(1, 30000) g) FROM generate_series(1, 12)")
				segs = append(segs, c.SwitchWAL(t))
			}
			// Copies outside pg_wal: pushed one by one, without archive-push
			// draining the .ready backlog of pg_wal ahead of the test.
			copies := pgtest.SharedTempDir(t)
			for _, seg := range segs {
				b, err := os.ReadFile(filepath.Join(c.DataDir(), "pg_wal", seg))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(copies, seg), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// The repository exists (the first push creates it).
			if res := r.pitr(t, c.DataDir(), "archive-push", filepath.Join(copies, segs[0])); res.code != 0 {
				t.Fatalf("archive-push %s: %v", segs[0], res)
			}
			seg := segs[1]
			work := pgtest.SharedTempDir(t)
			caught, lastCode := false, -1
			for _, delay := range []time.Duration{0, 20 * time.Millisecond, 40 * time.Millisecond, 60 * time.Millisecond, 80 * time.Millisecond,
				100 * time.Millisecond, 150 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond} {
				cmd := exec.Command(pitrBin, "archive-push", filepath.Join(copies, seg))
				cmd.Dir = c.DataDir()
				cmd.Env = append(os.Environ(), "PITR_CONFIG="+r.configPath)
				pgtest.RunAs(cmd)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				midUpload := false
				if kind == "file" {
					deadline := time.Now().Add(10 * time.Second)
					for !midUpload && time.Now().Before(deadline) {
						midUpload = hasTempUpload(r.dir)
						if !midUpload {
							time.Sleep(time.Millisecond)
						}
					}
				} else {
					time.Sleep(delay)
				}
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
				res := r.pitr(t, work, "wal-fetch", seg, "out")
				lastCode = res.code
				t.Logf("archive-push killed (after %v; upload's temporary file seen: %v): wal-fetch exit %d", delay, midUpload, res.code)
				switch res.code {
				case 1: // nothing under the final name
					assertEmptyDir(t, work)
					caught = true
				case 0:
					want, _ := os.ReadFile(filepath.Join(c.DataDir(), "pg_wal", seg))
					got, _ := os.ReadFile(filepath.Join(work, "out"))
					if !bytes.Equal(got, want) {
						t.Fatalf("after archive-push was killed, %s is archived but differs from pg_wal's copy", seg)
					}
					os.Remove(filepath.Join(work, "out"))
				default:
					t.Fatalf("after archive-push was killed (mid-upload: %v), wal-fetch %s: %v", midUpload, seg, res)
				}
				if kind == "file" && caught && midUpload {
					break // killed while the temporary file existed: the case to see
				}
				if res.code == 0 {
					break // too late: the object is complete
				}
			}
			if !caught {
				t.Fatalf("no kill landed before the upload of %s finished", seg)
			}
			// Absent after the last kill: stored now. Complete: found identical.
			if res := r.pitr(t, c.DataDir(), "archive-push", filepath.Join(copies, seg)); res.code != 0 || strings.Contains(res.stderr, "already archived") != (lastCode == 0) {
				t.Fatalf("push after the killed one (wal-fetch said %d after the last kill): %v", lastCode, res)
			}
			assertFetchesIdentical(t, r, c, []string{seg})
		})
	}
}

// hasTempUpload reports whether the fs backend has an upload in flight
// (a .tmp-* file) anywhere under dir.
func hasTempUpload(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// moreSegments writes and archives n more segments after the probe's B and
// returns the archived segment names in order.
func moreSegments(t *testing.T, c *pgtest.Cluster, n int) []string {
	t.Helper()
	for range n {
		generateWAL(t, c, 1)
		c.SwitchWAL(t)
	}
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	var segs []string
	for _, name := range archivedNames(t, c) {
		if pgtest.IsSegmentName(name) {
			segs = append(segs, name)
		}
	}
	slices.Sort(segs)
	return segs
}

// Scenario 10: the object store goes away while recovery fetches a segment
// in the middle of the archive (after the backup's end).
//   - It stays away: wal-fetch retries, gives up with exit 255 (never 1),
//     PostgreSQL stops with FATAL and does not promote.
//   - It comes back while wal-fetch retries (the same data directory,
//     restarted): the fetch succeeds, recovery replays to the end and the
//     data equals the source's.
func TestWalFetchTransientS3Failure(t *testing.T) {
	t.Parallel()
	server := s3test.Start(t)
	if server.External() {
		t.Skip("the S3 server named by PITR_TEST_S3_ENDPOINT cannot be stopped by a test")
	}
	s := newProbe(t, probeOpts{kind: "s3", server: server, gap: time.Second})
	// The held segment must come from the store while it is down; with
	// wal-fetch's prefetch it would already be waiting in the spool.
	appendConfig(t, s.repo, "fetch_ahead: off\n")
	segs := moreSegments(t, s.src, 3)
	final := snapshot(t, s.src, "at the end of the archive")
	hold := segs[len(segs)-3]
	rc := s.restoreOnly(t, pgtest.Options{}, "--target", "latest")
	w := newFetchWrapper(t, s.repo, hold)
	w.install(t, rc)

	rc.Start(t) // consistent (the held segment is past the backup's end)
	w.waitHeld(t, 2*time.Minute)
	server.Stop(t)
	w.release()
	rc.WaitStopped(t, 3*time.Minute)
	assertLog(t, rc, `FATAL:  could not restore file "`+hold+`" from archive: child process exited with exit code 255`,
		"storage operation failed, retrying", "giving up after")
	if rc.LogContains("archive recovery complete") || rc.LogContains("selected new timeline") {
		t.Fatalf("recovery promoted although %s could not be fetched", hold)
	}
	for _, c := range w.callsFor(t, hold) {
		if c.code != 255 {
			t.Fatalf("wal-fetch of %s with the store down exited %d, want 255: %v", hold, c.code, w.callsFor(t, hold))
		}
	}

	server.Restart(t)
	w.rearm(t)
	retries := rc.LogCount("storage operation failed, retrying")
	fatals := rc.LogCount("FATAL")
	rc.Start(t)
	w.waitHeld(t, 2*time.Minute)
	server.Stop(t)
	w.release()
	rc.WaitFor(t, time.Minute, func() bool { return rc.LogCount("storage operation failed, retrying") > retries })
	server.Restart(t)
	waitPromoted(t, rc)
	calls := w.callsFor(t, hold)
	if last := calls[len(calls)-1]; last.code != 0 {
		t.Fatalf("wal-fetch of %s after the store came back: %v", hold, calls)
	}
	for _, c := range calls {
		if c.code == 1 {
			t.Fatalf("wal-fetch of %s exited 1 (\"not archived\") during an outage: %v", hold, calls)
		}
	}
	if n := rc.LogCount("FATAL"); n != fatals {
		t.Fatalf("the second recovery logged a FATAL")
	}
	if got := probeRows(t, rc); got != "before backup,A,B" {
		t.Fatalf("rows %q after recovering through the outage", got)
	}
	assertRestoredData(t, rc, final)
}

// truncateObject cuts the stored object of an archived file to half its size.
func truncateObject(t *testing.T, r *testRepo, name string) {
	t.Helper()
	key := archivedKey(t, r, name)
	switch r.kind {
	case "file":
		p := filepath.Join(r.dir, filepath.FromSlash(key))
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	case "s3":
		ctx := context.Background()
		out, err := r.s3.Client().GetObject(ctx, &awss3.GetObjectInput{Bucket: &r.s3.Bucket, Key: &key})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.s3.Client().PutObject(ctx, &awss3.PutObjectInput{Bucket: &r.s3.Bucket, Key: &key, Body: bytes.NewReader(b[:len(b)/2])}); err != nil {
			t.Fatal(err)
		}
	}
}

// Scenario 18, on both backends and on 1 and 64 MiB segments: a truncated
// object makes wal-fetch exit above 125 with nothing at %p, so PostgreSQL
// stops with FATAL (pitr's own check comes first: the server never gets a
// file of the wrong size) instead of promoting; archive-push refuses a
// truncated segment file.
func TestWalFetchTruncatedObject(t *testing.T) {
	for _, kind := range backends {
		for _, l := range []walLayout{walLayouts[0], walLayouts[2]} {
			t.Run(kind+"/"+l.name, func(t *testing.T) {
				t.Parallel()
				s := newProbe(t, probeOpts{kind: kind, segMB: l.segMB, gap: time.Second})
				segs := moreSegments(t, s.src, 3)
				victim := segs[len(segs)-3]
				truncateObject(t, s.repo, victim)

				work := pgtest.SharedTempDir(t)
				res := s.repo.pitr(t, work, "wal-fetch", victim, "RECOVERYXLOG")
				if res.code <= 125 || !strings.Contains(res.stderr, victim) {
					t.Fatalf("wal-fetch of a truncated object: %v; want exit > 125 naming %s", res, victim)
				}
				assertEmptyDir(t, work)

				full, err := os.ReadFile(filepath.Join(s.src.DataDir(), "pg_wal", victim))
				if err != nil {
					t.Fatal(err)
				}
				short := filepath.Join(work, victim)
				if err := os.WriteFile(short, full[:len(full)/2], 0o644); err != nil {
					t.Fatal(err)
				}
				if res := s.repo.pitr(t, s.src.DataDir(), "archive-push", short); res.code != 1 || !strings.Contains(res.stderr, "truncated") {
					t.Fatalf("archive-push of a truncated segment file: %v", res)
				}

				rc := s.restoreOnly(t, pgtest.Options{}, "--target", "latest")
				_ = rc.TryStart(t)
				rc.WaitStopped(t, 3*time.Minute)
				assertLog(t, rc, `FATAL:  could not restore file "`+victim+`" from archive: child process exited with exit code 255`)
				if rc.LogContains("has wrong size") || rc.LogContains("archive recovery complete") || rc.LogContains("selected new timeline") {
					t.Fatalf("recovery went past the truncated %s", victim)
				}
			})
		}
	}
}

// Scenario 22: a pg_basebackup -X stream copy carries WAL in its pg_wal;
// PostgreSQL takes every segment from the archive through wal-fetch
// (restore_command wins over pg_wal copies), here proven by garbling the
// copies: recovery replays everything and the data equals the source's.
// (Every pitr backup is -X none; all restore tests use archive WAL only.)
func TestRestoreArchiveWinsOverPgWal(t *testing.T) {
	t.Parallel()
	r := newRepo(t, "file", nil)
	backupDir, final := plainBackupThenCommits(t, r, "stream")

	entries, err := os.ReadDir(filepath.Join(backupDir, "pg_wal"))
	if err != nil {
		t.Fatal(err)
	}
	var copies []string
	for _, e := range entries {
		if !pgtest.IsSegmentName(e.Name()) {
			continue
		}
		p := filepath.Join(backupDir, "pg_wal", e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := 8192; i < len(b); i++ {
			b[i] = 0xA5
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, e.Name())
	}
	if len(copies) == 0 {
		t.Fatalf("pg_basebackup -X stream left no WAL in the backup")
	}
	restored := recoverFromArchive(t, r, backupDir)
	for _, seg := range copies {
		assertLog(t, restored, `restored log file "`+seg+`" from archive`)
	}
	if n := restored.QueryInt(t, "SELECT count(*) FROM probe"); n != 3 {
		t.Fatalf("restored cluster has %d probe rows, want 3", n)
	}
	assertRestoredData(t, restored, final)
}

// Scenario 20, CREATE TABLESPACE after the backup: replaying it makes the
// restored server use the tablespace's absolute path, which on the same
// host is the source's live directory (PostgreSQL docs §26.3.7). pitr must
// refuse or warn. If it does neither, the test shows the consequence: the
// restored cluster's pg_tblspc link points into the source's directory and
// its writes change the source's files.
func TestRestoreTablespaceCreatedAfterBackup(t *testing.T) {
	t.Parallel()
	s := newProbeScenario(t, "file", time.Second)
	c := s.src
	tsDir := pgtest.SharedTempDir(t)
	c.Exec(t, "CREATE TABLESPACE late LOCATION '"+tsDir+"'")
	c.Exec(t, "CREATE TABLE in_late TABLESPACE late AS SELECT g FROM generate_series(1, 1000) g")
	c.Exec(t, "CHECKPOINT")
	c.WaitArchived(t, c.SwitchWAL(t), time.Minute)
	oid := c.QueryString(t, "SELECT oid FROM pg_tablespace WHERE spcname = 'late'")

	pgdata, res := s.restore(t, "--target", "latest")
	said := res.stdout + res.stderr
	if res.code != 0 {
		if !strings.Contains(said, "tablespace") {
			t.Fatalf("restore failed without naming the tablespace created after the backup: %v", res)
		}
		assertNotCreated(t, pgdata)
		return // refused: fine
	}
	if strings.Contains(said, tsDir) {
		return // warned, naming the location: fine
	}

	before := treeDigest(t, tsDir)
	rc := pgtest.RestoredCluster(t, pgdata, pgtest.Options{})
	rc.Start(t)
	waitPromoted(t, rc)
	link, _ := os.Readlink(filepath.Join(pgdata, "pg_tblspc", oid))
	rc.Exec(t, "INSERT INTO in_late SELECT g FROM generate_series(1001, 50000) g")
	rc.Exec(t, "CHECKPOINT")
	rc.Stop(t)
	changed := treeDigest(t, tsDir) != before
	t.Fatalf("pitr restore said nothing about tablespace %q (OID %s) created after backup %s; the restored server's pg_tblspc/%s points to %q (the source's directory: %v) and its writes changed the source's tablespace files: %v",
		"late", oid, s.backup, oid, link, link == tsDir, changed)
}

// treeDigest hashes the names, sizes and contents of every file under dir.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
