package main

// -profile: after the tables, pitr's backup, extraction and WAL fetch run
// again in this process with the CPU profiler on, next to "what-if"
// variants of the same work that show how much a change in pitr would
// gain. Nothing here is part of the comparison tables.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/bench/internal/corpus"
	"github.com/pitr-dev/pitr/bench/internal/runas"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
	storagefs "github.com/pitr-dev/pitr/storage/fs"
	"github.com/pitr-dev/pitr/storage/retry"
)

// timing is wall and CPU (of this whole process) of one step.
type timing struct {
	wall, cpu time.Duration
}

func (t timing) String() string {
	return fmt.Sprintf("%6.2f s wall, %5.2f s CPU", t.wall.Seconds(), t.cpu.Seconds())
}

func timed(f func() error) (timing, error) {
	c0 := selfCPU()
	t0 := time.Now()
	err := f()
	return timing{wall: time.Since(t0), cpu: selfCPU() - c0}, err
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	// Children too: pg_basebackup during the in-process backup.
	var rc syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &rc)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano() + rc.Utime.Nano() + rc.Stime.Nano())
}

// withProfile runs f under the CPU profiler, writing dir/name.
func withProfile(dir, name string, f func() error) (timing, error) {
	pf, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return timing{}, err
	}
	defer pf.Close()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return timing{}, err
	}
	t, err := timed(f)
	pprof.StopCPUProfile()
	return t, err
}

func (b *bench) profile(ctx context.Context, w io.Writer, dir string, bk *backupResults, rs *restoreResults) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fsStore, err := storagefs.New(b.pitrRepo)
	if err != nil {
		return err
	}
	st := retry.New(fsStore, retry.Options{})
	id := repo.SystemID(0)
	if _, err := fmt.Sscan(b.pg.SystemIdentifier, &id); err != nil {
		return err
	}
	backup, err := basebackup.Read(ctx, st, id, bk.lastPitr)
	if err != nil {
		return err
	}
	scratch := filepath.Join(b.work, "profile")
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(scratch)

	fmt.Fprintln(w)
	fmt.Fprintf(w, "Profiles (-profile %s): pitr's code in this process, CPU profiles written there; what-if variants are bench code\n", dir)

	// --- extraction of the base backup
	key := backup.Key(repo.BackupBaseTarName)
	var base basebackup.Part
	for _, p := range backup.Parts {
		if p.Name == repo.BackupBaseTarName {
			base = p
		}
	}
	run := func(label string, f func() error) (timing, error) {
		syscall.Sync()
		t, err := timed(f)
		if err != nil {
			return t, fmt.Errorf("%s: %w", label, err)
		}
		fmt.Fprintf(w, "  %-66s %s\n", label, t)
		return t, nil
	}
	fmt.Fprintf(w, "extract %s (%s, %.0f MiB → %.0f MiB):\n", backup.Name, repo.BackupBaseTarName, mib(base.StoredSize), mib(base.Size))
	if _, err := run("zstd decode only (klauspost, 1 goroutine, as codec.Reader)", func() error {
		return decodeOnly(ctx, st, key, 1)
	}); err != nil {
		return err
	}
	if _, err := run("codec.Open → io.Discard (decode + checksum, no files)", func() error {
		obj, err := codec.Open(ctx, st, key)
		if err != nil {
			return err
		}
		defer obj.Close()
		_, err = io.Copy(io.Discard, obj)
		return err
	}); err != nil {
		return err
	}
	target := filepath.Join(scratch, "extract")
	syscall.Sync()
	t, err := withProfile(dir, "extract.pprof", func() error {
		return basebackup.Extract(ctx, st, backup, target, nil)
	})
	if err != nil {
		return fmt.Errorf("basebackup.Extract: %w", err)
	}
	fmt.Fprintf(w, "  %-66s %s\n", "basebackup.Extract as pitr restore runs it (profiled)", t)
	if err := os.RemoveAll(target); err != nil {
		return err
	}

	// --- wal-fetch of the segments the restores replayed first
	names, err := walAfter(ctx, st, id, backup)
	if err != nil {
		return err
	}
	names = names[:min(len(names), 24)]
	fetchDir := filepath.Join(scratch, "pg_wal")
	if err := os.MkdirAll(fetchDir, 0o755); err != nil {
		return err
	}
	a := &archive.Archiver{Store: st, Codec: codec.Options{Codec: codec.Default, Level: codec.DefaultLevel}, Log: slog.New(slog.DiscardHandler)}
	fmt.Fprintf(w, "wal-fetch of %d segments, in process (a wal-fetch process adds its start-up), per segment, median:\n", len(names))
	perSeg := func(label string, f func(name, dest string) error) error {
		var walls []float64
		for _, n := range names {
			dest := filepath.Join(fetchDir, "RECOVERYXLOG")
			t0 := time.Now()
			if err := f(n, dest); err != nil {
				return fmt.Errorf("%s %s: %w", label, n, err)
			}
			walls = append(walls, float64(time.Since(t0).Microseconds())/1000)
			_ = os.Remove(dest)
		}
		fmt.Fprintf(w, "  %-66s %6.1f ms\n", label, median(walls))
		return nil
	}
	walKey := func(n string) string { k, _ := repo.WALKey(id, n); return k }
	syscall.Sync()
	if err := perSeg("decode + checksum only", func(n, _ string) error {
		obj, err := codec.Open(ctx, st, walKey(n))
		if err != nil {
			return err
		}
		defer obj.Close()
		_, err = io.Copy(io.Discard, obj)
		return err
	}); err != nil {
		return err
	}
	if err := perSeg("decode + checksum + write + rename, no fsync", func(n, dest string) error {
		obj, err := codec.Open(ctx, st, walKey(n))
		if err != nil {
			return err
		}
		defer obj.Close()
		f, err := os.Create(dest + ".tmp")
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(struct{ io.Writer }{f}, obj, make([]byte, 1<<20))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		return os.Rename(dest+".tmp", dest)
	}); err != nil {
		return err
	}
	pf, err := os.Create(filepath.Join(dir, "walfetch.pprof"))
	if err != nil {
		return err
	}
	_ = pprof.StartCPUProfile(pf)
	err = perSeg("archive.Archiver.Fetch as wal-fetch runs it (fsync file + dir; profiled)", func(n, dest string) error {
		_, err := a.Fetch(ctx, n, dest)
		return err
	})
	pprof.StopCPUProfile()
	pf.Close()
	if err != nil {
		return err
	}

	// --- replay with an ideal restore_command: every segment fetched,
	// verified and fsynced beforehand, restore_command a hard link.
	if rs != nil {
		if err := b.idealReplay(ctx, w, st, id, backup, rs); err != nil {
			return err
		}
	}

	// --- the backup itself: the source cluster runs again for it.
	cl, err := corpus.StartCluster(ctx, b.u, b.binDir, b.src, b.srcLog)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Stop(context.Background()) }()
	dsn := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", cl.SockDir, cl.Port)
	old := debug.SetMemoryLimit(64 << 20) // as cmd/pitr's backup does
	syscall.Sync()
	t, err = withProfile(dir, "backup.pprof", func() error {
		_, err := basebackup.Take(ctx, basebackup.Options{
			Store: st, DSN: dsn, FastCheckpoint: true, PitrVersion: "backupbench-profile",
			Codec: codec.Options{Codec: codec.Default, Level: codec.DefaultLevel, Concurrency: 2},
			Log:   slog.New(slog.DiscardHandler),
		})
		return err
	})
	debug.SetMemoryLimit(old)
	if err != nil {
		return fmt.Errorf("basebackup.Take: %w", err)
	}
	fmt.Fprintf(w, "backup (basebackup.Take as pitr backup --fast runs it, profiled; CPU includes pg_basebackup, not the walsender):\n  %-66s %s\n", "", t)

	for _, p := range []string{"extract.pprof", "walfetch.pprof", "backup.pprof"} {
		out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=14", filepath.Join(dir, p)).Output()
		if err != nil {
			fmt.Fprintf(w, "%s: go tool pprof: %v\n", p, err)
			continue
		}
		fmt.Fprintf(w, "\n%s (go tool pprof -top):\n", p)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		for _, l := range lines {
			if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") || strings.HasPrefix(l, "Showing") {
				continue
			}
			fmt.Fprintln(w, "  "+l)
		}
	}
	return nil
}

// decodeOnly decodes an object's zstd body and throws it away: the floor
// of any extraction (no checksum, no files).
func decodeOnly(ctx context.Context, st storage.Store, key string, concurrency int) error {
	info, err := st.Stat(ctx, key)
	if err != nil {
		return err
	}
	raw, err := st.Open(ctx, key, 0)
	if err != nil {
		return err
	}
	defer raw.Close()
	body, err := objectBody(raw, info.Size)
	if err != nil {
		return err
	}
	dec, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(concurrency), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return err
	}
	defer dec.Close()
	_, err = io.Copy(io.Discard, dec)
	return err
}

// objectBody skips an object's 8-byte header and stops before its 48-byte
// trailer (DESIGN.md, "Object format"); it checks the header's codec is zstd.
func objectBody(raw io.Reader, size int64) (io.Reader, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(raw, hdr[:]); err != nil {
		return nil, err
	}
	if string(hdr[:4]) != "PITR" || hdr[5] != byte(codec.Zstd) {
		return nil, errors.New("not a zstd pitr object")
	}
	return bufio.NewReaderSize(io.LimitReader(raw, size-8-48), 1<<20), nil
}

// walAfter lists the archived segments from the backup's start on its
// timeline, in order.
func walAfter(ctx context.Context, st storage.Store, id repo.SystemID, b basebackup.Backup) ([]string, error) {
	objs, err := st.List(ctx, repo.WALPrefix(id))
	if err != nil {
		return nil, err
	}
	seg, err := b.SegmentSize()
	if err != nil {
		return nil, err
	}
	first := seg.FileName(wal.Segment{TLI: b.StartTimeline, No: seg.SegmentOf(b.StartLSN)})
	var names []string
	for _, o := range objs {
		n := filepath.Base(o.Key)
		if len(n) == 24 && n >= first && n[:8] == first[:8] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no WAL after backup %s in the repository", b.Name)
	}
	return names, nil
}

// idealReplay restores pitr's backup as pitr restore does, but replays with
// restore_command = 'ln SPOOL/%f %p' over segments that were fetched (and
// fsynced) beforehand: what recovery costs when restore_command costs
// nothing, i.e. the most a prefetching wal-fetch could gain. The spool is
// filled before the clock starts; a real prefetcher does that work on the
// other cores while PostgreSQL replays.
func (b *bench) idealReplay(ctx context.Context, w io.Writer, st storage.Store, id repo.SystemID, backup basebackup.Backup, rs *restoreResults) error {
	names, err := walAfter(ctx, st, id, backup)
	if err != nil {
		return err
	}
	spool := filepath.Join(b.work, "restore", "spool")
	if err := b.u.MkdirShared(spool); err != nil {
		return err
	}
	defer os.RemoveAll(spool)
	a := &archive.Archiver{Store: st, Codec: codec.Options{Codec: codec.Default, Level: codec.DefaultLevel}, Log: slog.New(slog.DiscardHandler)}
	for _, n := range names {
		dest := filepath.Join(spool, n)
		if _, err := a.Fetch(ctx, n, dest); err != nil {
			return err
		}
		if err := os.Chmod(dest, 0o644); err != nil {
			return err
		}
		if err := b.u.Chown(dest); err != nil {
			return err
		}
	}
	dir := filepath.Join(b.work, "restore", "ideal")
	port, err := freePort()
	if err != nil {
		return err
	}
	c := &corpus.Cluster{User: b.u, BinDir: b.binDir, DataDir: dir, SockDir: b.sockDir, Port: port}
	defer func() {
		_, _ = c.Cmd(context.Background(), "pg_ctl", "-D", dir, "-m", "immediate", "-w", "stop")
		_ = os.RemoveAll(dir)
	}()
	cmd := b.u.Command(ctx, b.work, "", b.pitrBin, "restore", "--repo", b.pitrURL(), "--target", targetText(rs.target), "--pgdata", dir)
	if _, err := runas.Run(cmd); err != nil {
		return err
	}
	auto := filepath.Join(dir, "postgresql.auto.conf")
	f, err := os.OpenFile(auto, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	// The last setting in the file wins.
	_, err = fmt.Fprintf(f, "restore_command = 'ln %s/%%f %%p'\n", spool)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "ideal.log")
	syscall.Sync()
	start := time.Now()
	if _, err := c.Cmd(ctx, "pg_ctl", "-D", dir, "-l", logPath, "-o", "-p "+fmt.Sprint(port), "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %w\n%s", err, tail(logPath))
	}
	if err := waitPromoted(ctx, dir, logPath, b.cfg.timeout); err != nil {
		return err
	}
	total := time.Since(start)
	text, err := os.ReadFile(logPath)
	if err != nil {
		return err
	}
	e, err := parseLog(text)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "replay with a free restore_command (segments fetched + fsynced beforehand; restore_command = ln), same backup and target:\n")
	fmt.Fprintf(w, "  %-66s %6.2f s (%s)\n", "replay: first WAL file → redo done", e.redoDone.Sub(e.firstRestored).Seconds(), e.stopping)
	fmt.Fprintf(w, "  %-66s %6.2f s\n", "  startup process's own CPU", e.startupCPU.Seconds())
	fmt.Fprintf(w, "  %-66s %6.2f s\n", "server start → ready (promoted)", total.Seconds())
	if len(rs.runs["pitr"]) > 0 {
		var reps []float64
		for _, r := range rs.runs["pitr"] {
			reps = append(reps, r.events.redoDone.Sub(r.events.firstRestored).Seconds())
		}
		fmt.Fprintf(w, "  %-66s %6.2f s\n", "(pitr restore's replay in the table, median)", median(reps))
	}
	return nil
}
