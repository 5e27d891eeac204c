package basebackup

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// Contract: leftovers of interrupted backups are found by the absence of
// backup.json; only those nothing wrote to for StaleAfter are stale; a
// completed backup is never deleted as leftovers.
func TestIncompleteBackups(t *testing.T) {
	st, root := newTestStore(t)
	ctx := context.Background()
	put := func(name, object string, age time.Duration) {
		t.Helper()
		key := repo.BackupKey(testSystem, name, object)
		if err := st.Put(ctx, key, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(filepath.Join(root, filepath.FromSlash(key)), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	put("20260101T000000Z", repo.BackupBaseTarName, time.Hour)
	put("20260101T000000Z", repo.BackupMetadataName, time.Hour) // complete
	put("20260102T000000Z", repo.BackupBaseTarName, time.Hour)  // killed an hour ago
	put("20260102T000000Z", repo.BackupInProgressName, time.Hour)
	put("20260103T000000Z", repo.BackupBaseTarName, time.Hour) // running: heartbeat is fresh
	put("20260103T000000Z", repo.BackupInProgressName, time.Second)

	inc, err := ListIncomplete(ctx, st, testSystem)
	if err != nil {
		t.Fatal(err)
	}
	if len(inc) != 2 || inc[0].Name != "20260102T000000Z" || inc[1].Name != "20260103T000000Z" {
		t.Fatalf("incomplete: %+v", inc)
	}
	now := time.Now()
	if !inc[0].Stale(now) || inc[1].Stale(now) {
		t.Fatalf("stale: killed=%v running=%v; want true, false", inc[0].Stale(now), inc[1].Stale(now))
	}
	if err := DeleteIncomplete(ctx, st, testSystem, inc[0]); err != nil {
		t.Fatal(err)
	}
	objs, _ := st.List(ctx, repo.BackupPrefix(testSystem)+"20260102T000000Z/")
	if len(objs) != 0 {
		t.Fatalf("leftovers remain: %+v", objs)
	}
	// A backup that completed since it was listed is left alone.
	done := Incomplete{Name: "20260101T000000Z"}
	if err := DeleteIncomplete(ctx, st, testSystem, done); err == nil {
		t.Fatal("a completed backup was deleted as leftovers")
	}
	if _, err := st.Stat(ctx, repo.BackupKey(testSystem, "20260101T000000Z", repo.BackupBaseTarName)); err != nil {
		t.Fatal(err)
	}
}

// fakePGBin makes a directory with a pg_basebackup script reporting version.
func fakePGBin(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho 'pg_basebackup (PostgreSQL) " + version + "'\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_basebackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Contract: a pg_basebackup of another major version, or none, is refused
// with both versions named.
func TestCheckPGBaseBackup(t *testing.T) {
	ctx := context.Background()
	srv := Server{VersionNum: 150008}
	if _, err := checkPGBaseBackup(ctx, fakePGBin(t, "15.2 (Debian 15.2-1)"), srv); err != nil {
		t.Fatalf("matching major version refused: %v", err)
	}
	for _, v := range []string{"14.9", "16.1", "9.6.24"} {
		_, err := checkPGBaseBackup(ctx, fakePGBin(t, v), srv)
		if !errors.Is(err, ErrClientVersion) || !strings.Contains(err.Error(), "version "+v[:strings.LastIndex(v, ".")]) ||
			!strings.Contains(err.Error(), "PostgreSQL 15.8") {
			t.Errorf("client %s: %v; want ErrClientVersion naming both versions", v, err)
		}
	}
	_, err := checkPGBaseBackup(ctx, filepath.Join(t.TempDir(), "nothing"), srv)
	if !errors.Is(err, ErrClientVersion) || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "15.8") {
		t.Errorf("missing binary: %v", err)
	}
	if got := DefaultPGBinDir(17); got != "/usr/lib/postgresql/17/bin" {
		t.Errorf("default bin dir %q", got)
	}
}

func TestCheckArchiving(t *testing.T) {
	cases := []struct {
		s    Server
		want string
	}{
		{Server{ArchiveMode: "off", ArchiveCommand: "pitr archive-push %p"}, "archive_mode is off"},
		{Server{ArchiveMode: "on"}, "archive_command is empty"},
		{Server{ArchiveMode: "on", ArchiveCommand: "pitr archive-push %p"}, ""},
		{Server{ArchiveMode: "always", ArchiveLibrary: "basic_archive"}, ""},
		{Server{ArchiveMode: "off", InRecovery: true}, ""}, // a standby's primary archives
	}
	for _, tc := range cases {
		err := checkArchiving(tc.s)
		if tc.want == "" && err != nil || tc.want != "" && (!errors.Is(err, ErrArchivingOff) || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.s, err, tc.want)
		}
	}
}

func TestBaseBackupCommandAndOptions(t *testing.T) {
	o := &Options{FastCheckpoint: true}
	got := baseBackupCommand(o, "it's mine", "CRC32C", 2048)
	want := "BASE_BACKUP (LABEL 'it''s mine', CHECKPOINT 'fast', WAIT true, TABLESPACE_MAP, MANIFEST 'yes', " +
		"MANIFEST_CHECKSUMS 'CRC32C', TARGET 'client', MAX_RATE 2048)"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	for in, want := range map[string]int{"": 0, "32": 32, "100k": 100, "50M": 51200} {
		if got, err := maxRateKB(in); err != nil || got != want {
			t.Errorf("maxRateKB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"10", "2G", "-5", "fast", "2000M"} {
		if _, err := maxRateKB(bad); err == nil {
			t.Errorf("maxRateKB(%q) accepted", bad)
		}
	}
	args := strings.Join(pgBaseBackupArgs(&Options{DSN: "host=x", MaxRate: "50M"}, "l", "SHA256"), " ")
	for _, want := range []string{"-D - -F tar -X none -c spread", "-l l", "--manifest-checksums=SHA256", "-d host=x", "-r 50M"} {
		if !strings.Contains(args, want) {
			t.Errorf("pg_basebackup args %q lack %q", args, want)
		}
	}
	if err := checkLabel("two\nlines"); err == nil {
		t.Error("multi-line label accepted")
	}
	name, path, err := parseNewArchive([]byte("16384.tar\x00/srv/ts\x00"))
	if err != nil || name != "16384.tar" || path != "/srv/ts" {
		t.Errorf("parseNewArchive: %q %q %v", name, path, err)
	}
	if _, _, err := parseNewArchive([]byte("base.tar")); err == nil {
		t.Error("unterminated new-archive message accepted")
	}
}

// Contract: an archive that fails verification while it streams is never
// stored as a complete object; a good one is stored byte for byte.
func TestRepoSinkStoresOnlyVerifiedArchives(t *testing.T) {
	st, _ := newTestStore(t)
	ctx := context.Background()
	r := &run{o: &Options{Store: st}, srv: Server{SystemID: testSystem}, log: (&Options{}).log(), name: "n"}
	check, _ := newStreamCheck("CRC32C")
	sink := &repoSink{ctx: ctx, r: r, check: check}

	good := makeTar(t, baseFiles())
	if err := sink.archive(repo.BackupBaseTarName, 0, bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	obj, err := codec.Open(ctx, st, r.key(repo.BackupBaseTarName))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, good) {
		t.Fatalf("stored archive differs from the stream (%v)", err)
	}
	if len(sink.parts) != 1 || sink.parts[0].Size != int64(len(good)) || r.streamed.Load() != int64(len(good)) {
		t.Fatalf("parts %+v, streamed %d", sink.parts, r.streamed.Load())
	}

	// A tablespace archive that turns to garbage after its first member,
	// large enough that the upload is still reading when the check fails.
	bad := append(makeTar(t, tsFiles)[:1024], bytes.Repeat([]byte("garbage!"), 128<<10)...)
	err = sink.archive("16384.tar", 16384, bytes.NewReader(bad))
	if err == nil || !strings.Contains(err.Error(), "16384.tar") {
		t.Fatalf("garbage archive: %v", err)
	}
	if _, err := st.Stat(ctx, r.key("16384.tar")); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("an archive that failed verification was stored: %v", err)
	}
	if len(sink.parts) != 1 || sink.hasTablespace(16384) {
		t.Fatalf("failed archive recorded: %+v", sink.parts)
	}
}
