// Command benchtable prints issue 6's one comparison table: pitr against
// pgBackRest with its default settings and with its fastest ones, each to a
// local repository and to an S3-compatible server (versitygw over TLS),
// on the same real WAL, measured the way PostgreSQL runs the tools:
//
//	sequential push     archive_command once per segment, one .ready at a time
//	backlog drain       128 .ready segments, archived by a simulated archiver
//	                    (one call at a time, .ready → .done after each success)
//	sequential fetch    restore_command once per segment (pitr fetch_ahead=off)
//	fetch with prefetch the same, pitr with its default prefetch, pgBackRest
//	                    with archive-async (its prefetch queue)
//	backup, restore     from backupbench -json (pgbench scale 50, local
//	                    repository), merged into the same table
//
// Columns: wall time (median of -runs), MB/s, CPU seconds (user+sys of the
// command and of every process it left behind: archive-async daemons,
// pitr's prefetcher), peak RSS of the largest process, stored bytes, and
// the pgBackRest/pitr wall-time ratio (above 1: pitr is faster).
//
//	go run ./bench/cmd/benchtable [-runs 3] [-quick]   (make bench runs it)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/bench/internal/benchkit"
	"github.com/pitr-dev/pitr/bench/internal/corpus"
	"github.com/pitr-dev/pitr/bench/internal/runas"
	"github.com/pitr-dev/pitr/bench/internal/s3tls"
	"github.com/pitr-dev/pitr/storage/codec"
)

type config struct {
	cacheDir   string
	runs       int
	segments   int
	quick      bool
	s3         bool
	pitrBin    string
	keep       bool
	backupJSON string
	only       string
	pitrEnv    string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.cacheDir, "cache", "", "corpus cache directory (default $PITR_BENCH_CACHE or bench/.cache)")
	flag.IntVar(&cfg.runs, "runs", 3, "repeat every measurement this many times; the table shows the median")
	flag.IntVar(&cfg.segments, "segments", 128, "WAL segments per row (the corpus has at least 128)")
	flag.BoolVar(&cfg.quick, "quick", false, "validation run: 16 segments, 1 run")
	flag.BoolVar(&cfg.s3, "s3", true, "also measure against versitygw (TLS, self-signed certificate)")
	flag.StringVar(&cfg.pitrBin, "pitr", "", "pitr binary to measure (default: go build ./cmd/pitr)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory")
	flag.StringVar(&cfg.backupJSON, "backup-json", "", "merge the backup and restore rows of these backupbench -json files (comma-separated)")
	flag.StringVar(&cfg.only, "only", "", "comma-separated rows to run: push,drain,fetch,prefetch (default all; fetch and prefetch read what push stored, so they need it)")
	flag.StringVar(&cfg.pitrEnv, "pitr-env", "", "extra environment for every pitr call, comma-separated (what-ifs, e.g. PITR_ARCHIVE_AHEAD=8)")
	flag.Parse()
	if flag.NArg() != 0 || cfg.runs < 1 || cfg.segments < 2 {
		flag.Usage()
		os.Exit(2)
	}
	if cfg.quick {
		cfg.runs, cfg.segments = 1, min(cfg.segments, 16)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtable: FAIL: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchtable: "+format+"\n", args...)
}

// tool is one program with one set of settings.
type tool struct {
	name string
	pitr bool
	fast bool // pgBackRest's fastest settings
}

var tools = []tool{
	{name: "pitr", pitr: true},
	{name: "pgBackRest default", fast: false},
	{name: "pgBackRest fastest", fast: true},
}

// target is where a repository lives.
type target struct {
	name string // "local" or "s3"
}

type bench struct {
	ctx        context.Context
	cfg        config
	u          runas.User
	binDir     string
	pgbackrest string
	reaper     string // benchreap, where the cluster user can run it
	work       string
	scratch    string
	pitrBin    string
	c          *corpus.Corpus
	segs       []string
	s3         *s3tls.Server
	pgbrConfs  map[string]string // slot → pgbackrest.conf
}

// measurement is one row's cost for one tool, one run.
type measurement struct {
	wall   time.Duration
	cpu    time.Duration
	rss    int64 // bytes, largest process
	stored int64 // bytes; -1: not applicable
	bytes  int64 // bytes of WAL or data the row moved (for MB/s)
}

// cell is the median over the runs.
type cell struct {
	m  measurement
	ok bool
}

func run(ctx context.Context, cfg config) error {
	b := &bench{ctx: ctx, cfg: cfg, pgbrConfs: map[string]string{}}
	var err error
	if b.u, err = runas.Lookup(); err != nil {
		return err
	}
	if b.binDir, err = corpus.BinDir(); err != nil {
		return err
	}
	if b.pgbackrest, err = exec.LookPath("pgbackrest"); err != nil {
		return fmt.Errorf("pgbackrest not found (run scripts/install-deps.sh): %w", err)
	}
	if _, err := os.Stat(runas.GNUTime); err != nil {
		return fmt.Errorf("%s not found (Debian package time): %w", runas.GNUTime, err)
	}
	if cfg.cacheDir == "" {
		if cfg.cacheDir, err = corpus.DefaultDir(); err != nil {
			return err
		}
	}
	c, generated, err := corpus.Ensure(ctx, cfg.cacheDir, b.u, corpus.Options{MinSegments: 128, Logf: logf})
	if err != nil {
		return err
	}
	if generated {
		logf("generated the WAL corpus in %s", c.Dir)
	}
	b.c = c
	b.segs = c.Segments[:min(cfg.segments, len(c.Segments))]

	if b.work, err = os.MkdirTemp("", "pitr-benchtable-"); err != nil {
		return err
	}
	if cfg.keep {
		defer logf("kept work directory %s", b.work)
	} else {
		defer os.RemoveAll(b.work)
	}
	if err := b.u.MkdirShared(b.work); err != nil {
		return err
	}
	b.scratch = filepath.Join(b.work, "scratch")
	for _, d := range []string{b.scratch, filepath.Join(b.work, "data"), filepath.Join(b.work, "pitr-repos")} {
		if err := b.u.MkdirShared(d); err != nil {
			return err
		}
	}
	if b.reaper, err = benchkit.BuildReaper(ctx, b.work); err != nil {
		return err
	}
	if b.pitrBin, _, err = benchkit.BuildPitr(ctx, cfg.pitrBin, b.work, logf); err != nil {
		return err
	}
	targets := []target{{name: "local"}}
	if cfg.s3 {
		if b.s3, err = s3tls.Start(ctx, filepath.Join(b.work, "s3")); err != nil {
			return fmt.Errorf("versitygw: %w", err)
		}
		defer b.s3.Stop()
		targets = append(targets, target{name: "s3"})
	}
	rows := []string{"push", "drain", "fetch", "prefetch"}
	if cfg.only != "" {
		rows = strings.Split(cfg.only, ",")
	}
	if err := b.createStanzas(targets); err != nil {
		return err
	}
	for _, s := range b.segs {
		if err := readAll(c.Path(s)); err != nil {
			return err
		}
	}
	limit := b.machineLimit()

	// results[row][target][tool] = one measurement per run
	results := map[string]map[string][][]measurement{}
	for _, r := range rows {
		results[r] = map[string][][]measurement{}
		for _, t := range targets {
			results[r][t.name] = make([][]measurement, len(tools))
		}
	}
	t0 := time.Now()
	for run := 0; run < cfg.runs; run++ {
		for _, tg := range targets {
			for _, row := range rows {
				for j := range tools {
					k := (j + run) % len(tools) // rotate who goes first
					syscall.Sync()
					m, err := b.measure(row, tg, tools[k], run)
					if err != nil {
						return fmt.Errorf("%s, %s, %s, run %d: %w", row, tg.name, tools[k].name, run+1, err)
					}
					logf("run %d %-8s %-5s %-19s %7.2f s  %6.1f MB/s  CPU %6.2f s  RSS %5.1f MiB",
						run+1, row, tg.name, tools[k].name, m.wall.Seconds(), mbps(m.bytes, m.wall), m.cpu.Seconds(), mib(m.rss))
					results[row][tg.name][k] = append(results[row][tg.name][k], m)
				}
			}
		}
	}
	logf("measured in %.0f s", time.Since(t0).Seconds())

	var extra []jsonRow
	for _, p := range strings.Split(cfg.backupJSON, ",") {
		if p == "" {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var rows []jsonRow
		if err := json.Unmarshal(data, &rows); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		extra = append(extra, rows...)
	}
	// Backup rows first, then restores; local before s3 within each.
	sort.SliceStable(extra, func(i, j int) bool {
		if extra[i].Row != extra[j].Row {
			return extra[i].Row == "backup"
		}
		return extra[i].Target == "local" && extra[j].Target != "local"
	})
	b.print(os.Stdout, rows, targets, results, extra, limit)
	return nil
}

func readAll(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}

// slot names one fresh repository: one per row that writes, target, tool
// and run, so no measurement finds work already done by another.
func slot(purpose string, tg target, t tool, run int) string {
	name := "pitr"
	if !t.pitr {
		name = "pgbr-default"
		if t.fast {
			name = "pgbr-fast"
		}
	}
	return fmt.Sprintf("%s-%s-%s-%d", purpose, tg.name, name, run)
}

// createStanzas writes a pgBackRest configuration per slot and runs
// stanza-create for each (it needs the corpus cluster running, once).
func (b *bench) createStanzas(targets []target) error {
	logf("starting the corpus cluster for pgbackrest stanza-create")
	cl, err := corpus.StartCluster(b.ctx, b.u, b.binDir, b.c.DataDir(), b.c.LogPath())
	if err != nil {
		return err
	}
	defer cl.Stop(context.Background())
	for run := 0; run < b.cfg.runs; run++ {
		for _, tg := range targets {
			for _, t := range tools[1:] {
				for _, purpose := range []string{"push", "drain"} {
					name := slot(purpose, tg, t, run)
					dir := filepath.Join(b.work, "pgbr", name)
					for _, d := range []string{dir, filepath.Join(dir, "repo"), filepath.Join(dir, "log"), filepath.Join(dir, "lock"), filepath.Join(dir, "spool")} {
						if err := b.u.MkdirShared(d); err != nil {
							return err
						}
					}
					var conf strings.Builder
					fmt.Fprintf(&conf, "[global]\nlog-path=%s\nlock-path=%s\nspool-path=%s\n",
						filepath.Join(dir, "log"), filepath.Join(dir, "lock"), filepath.Join(dir, "spool"))
					if tg.name == "s3" {
						fmt.Fprintf(&conf, "repo1-type=s3\nrepo1-path=/%s\nrepo1-s3-bucket=%s\nrepo1-s3-endpoint=localhost\nrepo1-storage-port=%d\n"+
							"repo1-s3-region=%s\nrepo1-s3-key=%s\nrepo1-s3-key-secret=%s\nrepo1-s3-uri-style=path\nrepo1-storage-ca-file=%s\n",
							name, b.s3.Bucket, b.s3.Port, b.s3.Region, b.s3.Access, b.s3.Secret, b.s3.CertFile)
					} else {
						fmt.Fprintf(&conf, "repo1-path=%s\n", filepath.Join(dir, "repo"))
					}
					if t.fast {
						// pgBackRest's fastest settings for WAL: zstd, the
						// asynchronous archive-push/-get with two processes.
						conf.WriteString("compress-type=zst\narchive-async=y\nprocess-max=2\n")
					}
					fmt.Fprintf(&conf, "\n[bench]\npg1-path=%s\npg1-port=%d\npg1-socket-path=%s\npg1-user=postgres\n", b.c.DataDir(), cl.Port, cl.SockDir)
					p := filepath.Join(dir, "pgbackrest.conf")
					if err := os.WriteFile(p, []byte(conf.String()), 0o644); err != nil {
						return err
					}
					if err := b.u.Chown(p); err != nil {
						return err
					}
					cmd := b.u.Command(b.ctx, b.c.DataDir(), b.binDir, b.pgbackrest, "--config="+p, "--stanza=bench", "stanza-create")
					if _, err := runas.Run(cmd); err != nil {
						return err
					}
					b.pgbrConfs[name] = p
				}
			}
		}
	}
	logf("created %d pgBackRest stanzas", len(b.pgbrConfs))
	return cl.Stop(b.ctx)
}

// dataDir makes a scratch data directory as the tools see one: the
// corpus's global/pg_control and PG_VERSION, a pg_wal holding links to
// the corpus segments (when withWAL) and archive_status.
func (b *bench) dataDir(name string, withWAL bool) (string, error) {
	dir := filepath.Join(b.work, "data", name)
	for _, d := range []string{dir, filepath.Join(dir, "global"), filepath.Join(dir, "pg_wal"), filepath.Join(dir, "pg_wal", "archive_status")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", err
		}
	}
	for _, f := range []string{"global/pg_control", "PG_VERSION"} {
		data, err := os.ReadFile(filepath.Join(b.c.DataDir(), f))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			return "", err
		}
	}
	if withWAL {
		for _, s := range b.segs {
			dst := filepath.Join(dir, "pg_wal", s)
			if err := os.Link(b.c.Path(s), dst); err != nil {
				if err := copyFile(b.c.Path(s), dst); err != nil {
					return "", err
				}
			}
		}
	}
	return dir, b.u.ChownTree(dir)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// pitrRepo is the --repo URL of a pitr slot, and the environment to reach it.
func (b *bench) pitrRepo(name string, tg target) (string, []string) {
	var env []string
	if b.cfg.pitrEnv != "" {
		env = strings.Split(b.cfg.pitrEnv, ",")
	}
	if tg.name == "s3" {
		return "s3://" + b.s3.Bucket + "/" + name, append(env, b.s3.Env()...)
	}
	return "file://" + filepath.Join(b.work, "pitr-repos", name), env
}

// pushArgv is archive_command for a segment path as PostgreSQL passes it.
func (b *bench) pushArgv(t tool, slotName, tgName, dataDir, walPath string) ([]string, []string) {
	if t.pitr {
		url, env := b.pitrRepo(slotName, target{name: tgName})
		return []string{b.pitrBin, "archive-push", "--repo", url, walPath}, env
	}
	return []string{b.pgbackrest, "--config=" + b.pgbrConfs[slotName], "--stanza=bench", "--pg1-path=" + dataDir, "archive-push", walPath}, nil
}

func (b *bench) measure(row string, tg target, t tool, run int) (measurement, error) {
	switch row {
	case "push", "drain":
		return b.measurePush(row, tg, t, run)
	case "fetch", "prefetch":
		return b.measureFetch(row, tg, t, run)
	}
	return measurement{}, fmt.Errorf("unknown row %q (want push, drain, fetch or prefetch)", row)
}

// measurePush archives every segment from a scratch data directory the way
// PostgreSQL's archiver does: one call at a time, in order, renaming
// .ready to .done after each success. For "push" only the segment being
// archived is .ready (a server keeping up); for "drain" all are .ready
// from the start (a backlog, which pitr's archive_ahead and pgBackRest's
// archive-async work through concurrently).
func (b *bench) measurePush(row string, tg target, t tool, run int) (measurement, error) {
	name := slot(row, tg, t, run)
	dir, err := b.dataDir(name, true)
	if err != nil {
		return measurement{}, err
	}
	status := filepath.Join(dir, "pg_wal", "archive_status")
	ready := func(s string) error {
		p := filepath.Join(status, s+".ready")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return err
		}
		return b.u.Chown(p)
	}
	if row == "drain" {
		for _, s := range b.segs {
			if err := ready(s); err != nil {
				return measurement{}, err
			}
		}
	}
	if t.pitr && tg.name == "local" {
		if err := b.u.MkdirShared(filepath.Join(b.work, "pitr-repos", name)); err != nil {
			return measurement{}, err
		}
	}
	m := measurement{bytes: int64(len(b.segs)) * b.c.SegmentSize}
	var calls []*call
	start := time.Now()
	for _, s := range b.segs {
		if row == "push" {
			if err := ready(s); err != nil {
				return m, err
			}
		}
		argv, env := b.pushArgv(t, name, tg.name, dir, filepath.Join("pg_wal", s))
		c, err := b.startCall(dir, env, argv...)
		if err != nil {
			return m, err
		}
		calls = append(calls, c)
		if c.status != 0 {
			return m, fmt.Errorf("archive-push %s: exit status %d: %s", s, c.status, c.out.String())
		}
		if err := os.Rename(filepath.Join(status, s+".ready"), filepath.Join(status, s+".done")); err != nil {
			return m, err
		}
		if row == "push" {
			m.wall += c.wall
		}
	}
	if row == "drain" {
		m.wall = time.Since(start)
	}
	if err := b.finishCalls(calls, &m); err != nil {
		return m, err
	}
	if m.stored, err = b.storedWAL(name, tg, t); err != nil {
		return m, err
	}
	return m, os.RemoveAll(dir)
}

func (b *bench) finishCalls(calls []*call, m *measurement) error {
	for _, c := range calls {
		if err := c.finish(2 * time.Minute); err != nil {
			return err
		}
		m.cpu += c.cpu
		m.rss = max(m.rss, c.fgRSS, c.orphRSS)
	}
	return nil
}

// measureFetch fetches every segment, as restore_command in recovery:
// from a scratch data directory with recovery.signal, into
// pg_wal/RECOVERYXLOG, one call at a time. After each call it does what the
// startup process does before replaying the file (KeepFileRestoredFromArchive:
// durable_rename to pg_wal/<name>, which fsyncs the file and pg_wal), timed
// as part of the call since recovery waits for it too; so a tool that
// leaves its output unsynced pays for the flush here, as it would under
// PostgreSQL. The result is then compared with the original and removed.
// The repository is the one the "push" row of the same run filled.
func (b *bench) measureFetch(row string, tg target, t tool, run int) (measurement, error) {
	src := slot("push", tg, t, run)
	name := slot(row, tg, t, run)
	dir, err := b.dataDir(name, false)
	if err != nil {
		return measurement{}, err
	}
	signalFile := filepath.Join(dir, "recovery.signal")
	if err := os.WriteFile(signalFile, nil, 0o600); err != nil {
		return measurement{}, err
	}
	if err := b.u.Chown(signalFile); err != nil {
		return measurement{}, err
	}
	m := measurement{bytes: int64(len(b.segs)) * b.c.SegmentSize, stored: -1}
	var calls []*call
	dest := filepath.Join("pg_wal", "RECOVERYXLOG")
	for _, s := range b.segs {
		var argv, env []string
		if t.pitr {
			url, e := b.pitrRepo(src, tg)
			env = e
			if row == "fetch" {
				env = append(env, "PITR_FETCH_AHEAD=off")
			}
			argv = []string{b.pitrBin, "wal-fetch", "--repo", url, s, dest}
		} else {
			args := []string{"--config=" + b.pgbrConfs[src], "--stanza=bench", "--pg1-path=" + dir}
			if row == "fetch" && t.fast {
				// Without prefetch: the same settings, archive-get synchronous.
				args = append(args, "--no-archive-async")
			}
			argv = append([]string{b.pgbackrest}, append(args, "archive-get", s, dest)...)
		}
		c, err := b.startCall(dir, env, argv...)
		if err != nil {
			return m, err
		}
		calls = append(calls, c)
		if c.status != 0 {
			return m, fmt.Errorf("fetch %s: exit status %d: %s", s, c.status, c.out.String())
		}
		kept := filepath.Join(dir, "pg_wal", s)
		t0 := time.Now()
		if err := durableRename(filepath.Join(dir, dest), kept); err != nil {
			return m, fmt.Errorf("fetch %s: keep it as PostgreSQL does: %w", s, err)
		}
		m.wall += c.wall + time.Since(t0)
		if err := sameFile(kept, b.c.Path(s)); err != nil {
			return m, fmt.Errorf("fetch %s: %w", s, err)
		}
		if err := os.Remove(kept); err != nil {
			return m, err
		}
	}
	// Recovery ends: pitr's prefetcher sees the signal file go and exits.
	if err := os.Remove(signalFile); err != nil {
		return m, err
	}
	if err := b.finishCalls(calls, &m); err != nil {
		return m, err
	}
	return m, os.RemoveAll(dir)
}

// durableRename is PostgreSQL's durable_rename: fsync the file, rename it,
// fsync the directory.
func durableRename(from, to string) error {
	f, err := os.OpenFile(from, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(from, to); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(to))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func sameFile(a, b string) error {
	x, err := os.ReadFile(a)
	if err != nil {
		return err
	}
	y, err := os.ReadFile(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(x, y) {
		return fmt.Errorf("fetched bytes differ from the original")
	}
	return nil
}

// storedWAL is the bytes of WAL objects in a slot's repository.
func (b *bench) storedWAL(name string, tg target, t tool) (int64, error) {
	var prefix string
	switch {
	case t.pitr:
		prefix = name + "/" + b.c.SystemIdentifier + "/wal/"
	default:
		prefix = name + "/archive/bench/"
	}
	if tg.name == "s3" {
		return b.s3.SizeUnder(b.ctx, prefix, func(key string) bool { return !strings.Contains(key, "archive.info") })
	}
	root := filepath.Join(b.work, "pitr-repos")
	if !t.pitr {
		root = filepath.Join(b.work, "pgbr", name, "repo")
		prefix = "archive/bench/"
	}
	var total int64
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(prefix)), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), "archive.info") {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	return total, err
}

// limit is what the machine allows for archiving a backlog.
type limit struct {
	zstdPerCore float64 // MB/s of WAL, one core, pitr's codec (zstd and checksum)
	ratio       float64 // WAL bytes per stored byte, same codec
	cores       int
	disk        float64 // MB/s, sequential write + fsync
}

// The drain writes compressed objects, so the disk bounds it at its write
// speed times the compression ratio, in MB/s of WAL.
func (l limit) String() string {
	cpu := l.zstdPerCore * float64(l.cores)
	disk := l.disk * l.ratio
	return fmt.Sprintf("machine limit for backlog drain: pitr's codec (%s, %s, one pass as archive-push) %.0f MB/s per core × %d cores = %.0f MB/s; disk write+fsync %.0f MB/s × compression ratio %.2f = %.0f MB/s of WAL; so about %.0f MB/s, before any per-file cost (process start, fsync)",
		codec.Encoder, codec.XXH3, l.zstdPerCore, l.cores, cpu, l.disk, l.ratio, disk, min(cpu, disk))
}

func (b *bench) machineLimit() limit {
	l := limit{cores: runtime.NumCPU()}
	// Segments spread over the corpus: its first ones (bulk load) compress
	// better and faster than the OLTP rest.
	var data [][]byte
	step := max(len(b.segs)/16, 1)
	for i := 0; i < len(b.segs); i += step {
		d, err := os.ReadFile(b.c.Path(b.segs[i]))
		if err == nil {
			data = append(data, d)
		}
	}
	start := time.Now()
	var total, stored int64
	var out bytes.Buffer
	for _, d := range data {
		out.Reset()
		if _, err := codec.EncodeBytes(&out, d, codec.Options{Codec: codec.Zstd, Level: codec.DefaultLevel, WindowSize: 1 << 20}); err == nil {
			total += int64(len(d))
			stored += int64(out.Len())
		}
	}
	l.zstdPerCore = mbps(total, time.Since(start))
	if stored > 0 {
		l.ratio = float64(total) / float64(stored)
	}

	p := filepath.Join(b.work, "disk-probe")
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	f, err := os.Create(p)
	if err == nil {
		start = time.Now()
		var written int64
		for range 256 {
			n, err := f.Write(buf)
			written += int64(n)
			if err != nil {
				break
			}
		}
		_ = f.Sync()
		l.disk = mbps(written, time.Since(start))
		f.Close()
		os.Remove(p)
	}
	logf("%s", l)
	return l
}

// jsonRow is one row backupbench -json writes, merged into the table.
type jsonRow struct {
	Row    string  `json:"row"`
	Target string  `json:"target"`
	Tool   string  `json:"tool"` // one of tools' names
	Wall   float64 `json:"wall_s"`
	MBps   float64 `json:"mb_s"`
	CPU    float64 `json:"cpu_s"`
	RSS    float64 `json:"peak_rss_mib"`
	Stored float64 `json:"stored_mib"` // -1: not applicable
	Runs   int     `json:"runs"`
}

func median(ms []measurement) (measurement, bool) {
	if len(ms) == 0 {
		return measurement{}, false
	}
	pick := func(f func(measurement) float64) float64 {
		v := make([]float64, len(ms))
		for i, m := range ms {
			v[i] = f(m)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return measurement{
		wall:   time.Duration(pick(func(m measurement) float64 { return float64(m.wall) })),
		cpu:    time.Duration(pick(func(m measurement) float64 { return float64(m.cpu) })),
		rss:    int64(pick(func(m measurement) float64 { return float64(m.rss) })),
		stored: int64(pick(func(m measurement) float64 { return float64(m.stored) })),
		bytes:  ms[0].bytes,
	}, true
}

var rowTitles = map[string]string{
	"push":     "sequential push",
	"drain":    "backlog drain",
	"fetch":    "sequential fetch",
	"prefetch": "fetch with prefetch",
}

func (b *bench) print(w io.Writer, rows []string, targets []target, results map[string]map[string][][]measurement, extra []jsonRow, l limit) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "pitr vs pgBackRest — %d WAL segments of %d MiB from pgbench (%s), median of %d run(s)\n",
		len(b.segs), b.c.SegmentSize>>20, b.c.Dir, b.cfg.runs)
	fmt.Fprintf(w, "pgBackRest default: its defaults (gz, synchronous). fastest: compress-type=zst, archive-async=y, process-max=2.\n")
	fmt.Fprintf(w, "pitr: defaults (archive_ahead, fetch_ahead), except fetch_ahead=off in \"sequential fetch\".\n")
	if b.cfg.pitrEnv != "" {
		fmt.Fprintf(w, "pitr's environment adds (-pitr-env): %s\n", b.cfg.pitrEnv)
	}
	fmt.Fprintf(w, "s3: versitygw on 127.0.0.1 over TLS (self-signed certificate; pitr trusts it through AWS_CA_BUNDLE, pgBackRest through repo1-storage-ca-file).\n")
	fmt.Fprintf(w, "ratio: the pgBackRest wall time over pitr's (above 1: pitr is faster); CPU includes background processes (archive-async daemons, prefetcher).\n\n")
	fmt.Fprintf(w, "%-20s %-6s %-19s %9s %8s %8s %9s %10s %8s\n", "work", "repo", "tool", "wall s", "MB/s", "CPU s", "RSS MiB", "stored MiB", "ratio")
	line := func(title, tg, tool string, wall, rate, cpu, rss, stored float64, ratio string) {
		st := "-"
		if stored >= 0 {
			st = fmt.Sprintf("%.1f", stored)
		}
		fmt.Fprintf(w, "%-20s %-6s %-19s %9.2f %8.1f %8.2f %9.1f %10s %8s\n", title, tg, tool, wall, rate, cpu, rss, st, ratio)
	}
	for _, row := range rows {
		for _, tg := range targets {
			per := results[row][tg.name]
			pm, _ := median(per[0])
			for k, t := range tools {
				m, ok := median(per[k])
				if !ok {
					continue
				}
				ratio := "-"
				if k > 0 && pm.wall > 0 {
					ratio = fmt.Sprintf("%.2f×", m.wall.Seconds()/pm.wall.Seconds())
				}
				stored := -1.0
				if m.stored >= 0 {
					stored = mib(m.stored)
				}
				title := ""
				if k == 0 {
					title = rowTitles[row]
				}
				line(title, tg.name, t.name, m.wall.Seconds(), mbps(m.bytes, m.wall), m.cpu.Seconds(), mib(m.rss), stored, ratio)
			}
			if row == "drain" && tg.name == "local" {
				fmt.Fprintf(w, "  %s\n", l)
			}
		}
	}
	// Rows measured by backupbench, same columns.
	var last string
	var pitrWall float64
	for _, r := range extra {
		title := ""
		if r.Row+r.Target != last {
			title, last, pitrWall = r.Row, r.Row+r.Target, 0
		}
		ratio := "-"
		if r.Tool == "pitr" {
			pitrWall = r.Wall
		} else if pitrWall > 0 {
			ratio = fmt.Sprintf("%.2f×", r.Wall/pitrWall)
		}
		line(title, r.Target, r.Tool, r.Wall, r.MBps, r.CPU, r.RSS, r.Stored, ratio)
	}
	if len(extra) == 0 {
		fmt.Fprintln(w, "(backup and restore rows: run with -backup-json from backupbench -json; make bench does)")
	}
}
