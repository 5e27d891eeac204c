// Command backupbench compares pitr's base backups and point-in-time
// restores with pgBackRest's, on a real PostgreSQL 15 cluster holding a
// pgbench database (scale 50, about 750 MB), in one run on one machine:
//
//	go run ./bench/cmd/backupbench [flags]      (make bench runs it)
//
// Backup (issue 3): `pitr backup --fast` into a file:// repository against
// `pgbackrest backup --type=full --start-fast=y` with its defaults
// (process-max=1, compress-type=gz), with compress-type=zst and with
// process-max=2, interleaved over several rounds: wall time, stored size,
// CPU and peak RSS.
//
// Restore (issue 4): about 1 GiB of pgbench WAL is written after the
// backups and archived by both tools (one archive_command pushes every file
// to both), then `pitr restore --target TIME --start` and `pgbackrest
// restore --type=time` + pg_ctl start restore the latest backup of each to
// the same target time and wait until recovery promoted; the time is split
// into download+extract and replay from the server log.
//
// The cluster (pgbench -i -s 50) is created once and cached next to the WAL
// corpus (bench/.cache/pgbench-s50); each run works on a copy. Any failure
// exits 1; a missed target exits 0 unless -require-target.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/bench/internal/benchkit"
	"github.com/pitr-dev/pitr/bench/internal/corpus"
	"github.com/pitr-dev/pitr/bench/internal/runas"
	"github.com/pitr-dev/pitr/bench/internal/s3tls"
	"github.com/pitr-dev/pitr/storage/codec"
)

type config struct {
	cacheDir      string
	scale         int
	rounds        int
	restoreRounds int
	walMiB        int
	clients       int
	pitrBin       string
	keep          bool
	requireTarget bool
	skipRestore   bool
	onlyDefault   bool
	timeout       time.Duration
	profileDir    string
	jsonPath      string
	quick         bool
	s3            bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.cacheDir, "cache", "", "cache directory (default $PITR_BENCH_CACHE or bench/.cache); the cluster goes to <cache>/pgbench-s<scale>")
	flag.IntVar(&cfg.scale, "scale", 50, "pgbench scale of the database (50: about 750 MB)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "backup rounds (each backs up with every tool once, in rotating order)")
	flag.IntVar(&cfg.restoreRounds, "restore-rounds", 3, "restore rounds (each restores with both tools, in rotating order)")
	flag.IntVar(&cfg.walMiB, "wal-mib", 1024, "WAL to write after the backups, to be replayed by the restores (MiB)")
	flag.IntVar(&cfg.clients, "clients", 4, "pgbench clients while writing that WAL")
	flag.StringVar(&cfg.pitrBin, "pitr", "", "pitr binary to measure (default: go build ./cmd/pitr)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (cluster, repositories, restore logs)")
	flag.BoolVar(&cfg.requireTarget, "require-target", false, "exit 1 when pitr misses an issue's target")
	flag.BoolVar(&cfg.skipRestore, "skip-restore", false, "only the backup table")
	flag.BoolVar(&cfg.onlyDefault, "only-default", false, "back up only with pitr and pgBackRest's defaults (no zst, no process-max=2)")
	flag.DurationVar(&cfg.timeout, "restore-timeout", 20*time.Minute, "give up on one restore after this long")
	flag.StringVar(&cfg.profileDir, "profile", "", "afterwards, profile pitr's backup, extraction and WAL fetch in process (with what-if variants) and write CPU profiles to this directory")
	flag.StringVar(&cfg.jsonPath, "json", "", "also write the backup and restore rows of benchtable's table (medians: pitr, pgBackRest default, pgBackRest fastest) to this file")
	flag.BoolVar(&cfg.quick, "quick", false, "validation run: one backup and one restore round, 64 MiB of WAL")
	flag.BoolVar(&cfg.s3, "s3", false, "both tools' repositories on versitygw over TLS (self-signed certificate) instead of local directories")
	flag.Parse()
	if cfg.s3 && cfg.profileDir != "" {
		fmt.Fprintln(os.Stderr, "backupbench: -profile reads a local repository; not with -s3")
		os.Exit(2)
	}
	if cfg.quick {
		cfg.rounds, cfg.restoreRounds, cfg.walMiB = 1, 1, 64
	}
	if flag.NArg() != 0 || cfg.rounds < 1 || cfg.restoreRounds < 1 || cfg.walMiB < 16 {
		fmt.Fprintln(os.Stderr, "backupbench: takes no arguments; -rounds and -restore-rounds ≥ 1, -wal-mib ≥ 16")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	met, err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "backupbench: FAIL: %v\n", err)
		os.Exit(1)
	}
	if !met && cfg.requireTarget {
		fmt.Fprintln(os.Stderr, "backupbench: target missed (-require-target)")
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "backupbench: "+format+"\n", args...)
}

// bench is one run: the work directory and everything in it.
type bench struct {
	cfg        config
	u          runas.User
	binDir     string
	pgbackrest string
	pg         *corpus.PGBenchCluster

	work     string
	src      string // the source cluster's data directory (a copy of the cache)
	srcLog   string
	sockDir  string // socket directory of restored servers (from the source's settings)
	scratch  string // GNU time output
	pitrBin  string
	pitrRev  string
	pitrRepo string
	pgbrConf string
	pgbrRepo string
	pgbrVer  string

	cl *corpus.Cluster // the running source cluster
	s3 *s3tls.Server   // -s3: where both repositories live
}

func (b *bench) pitrURL() string {
	if b.s3 != nil {
		return "s3://" + b.s3.Bucket + "/pitr"
	}
	return "file://" + b.pitrRepo
}

// pitrCmd runs pitr as the cluster user, with what it needs to reach an S3
// repository (a restored server started by pitr restore --start inherits
// it, so its restore_command does too).
func (b *bench) pitrCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := b.u.Command(ctx, b.work, "", b.pitrBin, args...)
	if b.s3 != nil {
		cmd.Env = append(cmd.Env, b.s3.Env()...)
	}
	return cmd
}

// repoName describes where the repositories are, for the report and -json.
func (b *bench) repoName() string {
	if b.s3 != nil {
		return "s3"
	}
	return "local"
}

func run(ctx context.Context, cfg config) (bool, error) {
	b := &bench{cfg: cfg}
	var err error
	if b.u, err = runas.Lookup(); err != nil {
		return false, err
	}
	if b.binDir, err = corpus.BinDir(); err != nil {
		return false, err
	}
	if b.pgbackrest, err = exec.LookPath("pgbackrest"); err != nil {
		return false, fmt.Errorf("pgbackrest not found (run scripts/install-deps.sh): %w", err)
	}
	if _, err := os.Stat(runas.GNUTime); err != nil {
		return false, fmt.Errorf("%s not found (Debian package time; scripts/install-deps.sh): %w", runas.GNUTime, err)
	}
	if cfg.cacheDir == "" {
		if cfg.cacheDir, err = corpus.DefaultDir(); err != nil {
			return false, err
		}
	}
	t0 := time.Now()
	pg, generated, err := corpus.EnsurePGBench(ctx, corpus.PGBenchDir(cfg.cacheDir, cfg.scale), b.u, cfg.scale, logf)
	if err != nil {
		return false, err
	}
	b.pg = pg
	if generated {
		logf("created the pgbench cluster in %s (%.0f s)", pg.Dir, time.Since(t0).Seconds())
	} else {
		logf("using the cached pgbench cluster in %s", pg.Dir)
	}

	if b.work, err = os.MkdirTemp("", "pitr-backupbench-"); err != nil {
		return false, err
	}
	if cfg.keep {
		defer logf("kept work directory %s", b.work)
	} else {
		defer os.RemoveAll(b.work)
	}
	if err := b.u.MkdirShared(b.work); err != nil {
		return false, err
	}
	b.src = filepath.Join(b.work, "src")
	b.srcLog = filepath.Join(b.work, "src.log")
	b.sockDir = filepath.Join(b.work, "sock")
	b.scratch = filepath.Join(b.work, "scratch")
	b.pitrRepo = filepath.Join(b.work, "pitr-repo")
	b.pgbrRepo = filepath.Join(b.work, "pgbr", "repo")
	for _, d := range []string{b.sockDir, b.scratch, b.pitrRepo, filepath.Join(b.work, "pgbr"), b.pgbrRepo,
		filepath.Join(b.work, "pgbr", "log"), filepath.Join(b.work, "pgbr", "lock"), filepath.Join(b.work, "pgbr", "spool"), filepath.Join(b.work, "restore")} {
		if err := b.u.MkdirShared(d); err != nil {
			return false, err
		}
	}
	if b.pitrBin, b.pitrRev, err = benchkit.BuildPitr(ctx, cfg.pitrBin, b.work, logf); err != nil {
		return false, err
	}
	if cfg.s3 {
		if b.s3, err = s3tls.Start(ctx, filepath.Join(b.work, "s3")); err != nil {
			return false, fmt.Errorf("versitygw: %w", err)
		}
		defer b.s3.Stop()
		logf("repositories on versitygw at %s (TLS)", b.s3.Endpoint)
	}
	out, _ := runas.Run(exec.CommandContext(ctx, b.pgbackrest, "version"))
	b.pgbrVer = strings.TrimSpace(out)

	logf("copying the cluster to %s", b.src)
	if err := corpus.CopyDataDir(ctx, pg.DataDir(), b.src); err != nil {
		return false, err
	}
	if err := b.configureSource(); err != nil {
		return false, err
	}
	if b.cl, err = corpus.StartCluster(ctx, b.u, b.binDir, b.src, b.srcLog); err != nil {
		return false, err
	}
	defer func() { _ = b.cl.Stop(context.Background()) }()
	if err := b.setupPGBackRest(ctx); err != nil {
		return false, err
	}
	// Both archives must work before anything is measured.
	if err := b.switchAndWait(ctx); err != nil {
		return false, err
	}

	bk, err := b.backups(ctx)
	if err != nil {
		return false, err
	}
	var rs *restoreResults
	if !cfg.skipRestore {
		if rs, err = b.restores(ctx, bk); err != nil {
			return false, err
		}
	}
	met := b.report(os.Stdout, bk, rs)
	if cfg.jsonPath != "" {
		if err := b.writeJSON(cfg.jsonPath, bk, rs); err != nil {
			return met, err
		}
	}
	if cfg.profileDir != "" {
		if err := b.cl.Stop(ctx); err != nil {
			return met, err
		}
		dir, err := filepath.Abs(cfg.profileDir)
		if err != nil {
			return met, err
		}
		if err := b.profile(ctx, os.Stdout, dir, bk, rs); err != nil {
			return met, fmt.Errorf("profile: %w", err)
		}
	}
	if rs != nil && len(rs.problems) > 0 {
		return met, fmt.Errorf("restores disagree: %s", strings.Join(rs.problems, "; "))
	}
	return met, nil
}

// archiveScript is the source cluster's archive_command: every WAL file goes
// to pitr's repository, then to pgBackRest's, so that both tools' backups
// pass their archive checks and both restores find the same WAL. The two
// pushes run for every backup and every segment alike, so neither tool's
// backup waits longer for its last segment than the other's. Restored
// copies of the cluster (another working directory) archive nothing: they
// are thrown away after measuring, and must not add timelines to the
// repositories.
const archiveScript = `#!/bin/sh
# Written by pitr's bench/cmd/backupbench: archive_command of its source cluster.
[ "$(pwd -P)" = %[1]q ] || exit 0
%[2]q archive-push --repo %[3]q "$1" || exit 1
exec %[4]q --config=%[5]q --stanza=bench archive-push "$1"
`

// sourceSettings are the benchmark cluster's settings besides archiving.
// Restored copies inherit them (they live in the data directory), so both
// tools' restores run the same server configuration. The server log gets
// millisecond UTC timestamps for the phase split.
func (b *bench) sourceSettings(archiveCommand string) [][2]string {
	return [][2]string{
		{"wal_level", "replica"},
		{"max_wal_senders", "10"},
		{"archive_mode", "on"},
		{"archive_command", archiveCommand},
		{"synchronous_commit", "off"}, // speeds up writing the WAL; changes nothing in what is replayed
		{"logging_collector", "off"},
		{"log_line_prefix", "%m [%p] "},
		{"log_timezone", "UTC"},
		{"log_checkpoints", "on"},
		{"unix_socket_directories", b.sockDir}, // restored servers; the source overrides it with -k
	}
}

func (b *bench) configureSource() error {
	real, err := filepath.EvalSymlinks(b.src)
	if err != nil {
		return err
	}
	b.pgbrConf = filepath.Join(b.work, "pgbr", "pgbackrest.conf")
	// pgBackRest insists that archive_command contains "pgbackrest".
	script := filepath.Join(b.work, "archive-to-pitr-and-pgbackrest.sh")
	text := fmt.Sprintf(archiveScript, real, b.pitrBin, b.pitrURL(), b.pgbackrest, b.pgbrConf)
	if b.s3 != nil {
		// The source server's environment has no AWS_* variables.
		var exports strings.Builder
		for _, e := range b.s3.Env() {
			k, v, _ := strings.Cut(e, "=")
			fmt.Fprintf(&exports, "export %s='%s'\n", k, v)
		}
		first, rest, _ := strings.Cut(text, "\n")
		text = first + "\n" + exports.String() + rest
	}
	if err := os.WriteFile(script, []byte(text), 0o755); err != nil {
		return err
	}
	if err := b.u.Chown(script); err != nil {
		return err
	}
	c := corpus.NewCluster(b.u, b.binDir, b.src, b.srcLog)
	return c.WriteConf(b.sourceSettings(script + " %p"))
}

// setupPGBackRest writes pgBackRest's configuration (paths and the
// connection only: every other option keeps its default) and creates the
// stanza, which needs the running cluster.
func (b *bench) setupPGBackRest(ctx context.Context) error {
	base := filepath.Join(b.work, "pgbr")
	repo := "repo1-path=" + b.pgbrRepo
	if b.s3 != nil {
		// pgBackRest checks the certificate's host name (not IP SANs).
		repo = fmt.Sprintf("repo1-type=s3\nrepo1-path=/pgbr\nrepo1-s3-bucket=%s\nrepo1-s3-endpoint=localhost\nrepo1-storage-port=%d\n"+
			"repo1-s3-region=%s\nrepo1-s3-key=%s\nrepo1-s3-key-secret=%s\nrepo1-s3-uri-style=path\nrepo1-storage-ca-file=%s",
			b.s3.Bucket, b.s3.Port, b.s3.Region, b.s3.Access, b.s3.Secret, b.s3.CertFile)
	}
	text := fmt.Sprintf("[global]\n%s\nlog-path=%s\nlock-path=%s\nspool-path=%s\n\n[bench]\npg1-path=%s\npg1-port=%d\npg1-socket-path=%s\npg1-user=postgres\n",
		repo, filepath.Join(base, "log"), filepath.Join(base, "lock"), filepath.Join(base, "spool"), b.src, b.cl.Port, b.cl.SockDir)
	if err := os.WriteFile(b.pgbrConf, []byte(text), 0o644); err != nil {
		return err
	}
	if err := b.u.Chown(b.pgbrConf); err != nil {
		return err
	}
	_, err := runas.Run(b.pgbr(ctx, "stanza-create"))
	return err
}

func (b *bench) pgbr(ctx context.Context, args ...string) *exec.Cmd {
	return b.u.Command(ctx, b.work, "", b.pgbackrest, append([]string{"--config=" + b.pgbrConf, "--stanza=bench"}, args...)...)
}

// switchAndWait switches to a new WAL segment and waits until the archiver
// has archived it into both repositories.
func (b *bench) switchAndWait(ctx context.Context) error {
	name, err := b.cl.Query(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		out, err := b.cl.Query(ctx, "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver")
		if err != nil {
			return err
		}
		f := strings.Split(out, "|")
		if len(f) == 3 && len(f[0]) == 24 && f[0] >= name {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not archived within 10 min (archiver: %s); see %s", name, out, b.srcLog)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ---------------------------------------------------------------- backups

type variant struct {
	name    string
	short   string
	args    []string // extra pgBackRest options; nil for pitr
	pitr    bool
	fastest bool // pgBackRest's fastest settings, restored too
}

type backupRun struct {
	usage     runas.TreeUsage
	serverCPU time.Duration // backends that exited during the run (walsender, pgBackRest's sessions)
	name      string        // backup name / label
	stored    int64         // bytes in the repository for this backup
	busy      float64       // share of all CPUs busy during the run (everything)
}

type backupResults struct {
	variants  []variant
	runs      [][]backupRun // per variant
	dataBytes int64         // pitr's tar size: what a backup copies
	load      *benchkit.Load
	lastPitr  string
	lastPGBR  string // latest default (gz, process-max=1) pgBackRest backup
	lastFast  string // latest pgBackRest backup with its fastest settings
}

func (b *bench) variants() []variant {
	vs := []variant{
		{name: "pitr", short: "pitr", pitr: true},
		{name: "pgBackRest gz (defaults: process-max=1)", short: "pgBR gz", args: []string{}},
	}
	if !b.cfg.onlyDefault {
		vs = append(vs,
			variant{name: "pgBackRest zst (compress-type=zst)", short: "pgBR zst", args: []string{"--compress-type=zst"}},
			variant{name: "pgBackRest gz, process-max=2", short: "gz p=2", args: []string{"--process-max=2"}},
			variant{name: "pgBackRest fastest (zst, process-max=2)", short: "pgBR fast", args: []string{"--compress-type=zst", "--process-max=2"}, fastest: true})
	}
	return vs
}

// order is the order of the variants in round r of n: it rotates so that
// no tool always goes first (after a sync, with a cold checkpoint), and the
// last round ends with pitr then pgBackRest's default, so the two backups
// the restores use are adjacent, pitr's the older one (its restore replays
// the few segments of pgBackRest's backup too).
func order(nv, r, n int) []int {
	var out []int
	// In the last round, rotation nv-2 puts pitr (0) second to last and the
	// default pgBackRest (1) last.
	rot := ((r-(n-1)+nv-2)%nv + nv) % nv
	for i := 0; i < nv; i++ {
		out = append(out, (i+rot)%nv)
	}
	return out
}

func (b *bench) backups(ctx context.Context) (*backupResults, error) {
	vs := b.variants()
	res := &backupResults{variants: vs, runs: make([][]backupRun, len(vs))}
	res.load = benchkit.StartLoad("measured tools + server backends")
	logf("backups: %d rounds × %d tools (fast checkpoint; one archive_command feeds both repositories)", b.cfg.rounds, len(vs))
	pid, err := b.cl.PostmasterPID()
	if err != nil {
		return nil, err
	}
	for r := 0; r < b.cfg.rounds; r++ {
		for _, k := range order(len(vs), r, b.cfg.rounds) {
			v := vs[k]
			syscall.Sync() // no write-back of the previous backup during this one
			before, err := b.listBackups(v)
			if err != nil {
				return nil, err
			}
			var cmd *exec.Cmd
			if v.pitr {
				dsn := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", b.cl.SockDir, b.cl.Port)
				cmd = b.pitrCmd(ctx, "backup", "--fast", "--repo", b.pitrURL(), "--dsn", dsn)
			} else {
				args := append([]string{"--type=full", "--start-fast=y"}, v.args...)
				cmd = b.pgbr(ctx, append(args, "backup")...)
			}
			cpu0, _ := runas.ChildrenCPU(pid)
			b0, t0 := benchkit.BusyNow()
			tu, out, err := runas.MeasureTree(cmd, 0, b.scratch, 50*time.Millisecond)
			b1, t1 := benchkit.BusyNow()
			cpu1, _ := runas.ChildrenCPU(pid)
			if err != nil {
				return nil, fmt.Errorf("%s backup: %w", v.name, err)
			}
			after, err := b.listBackups(v)
			if err != nil {
				return nil, err
			}
			name := newName(before, after)
			if name == "" {
				return nil, fmt.Errorf("%s backup: no new backup in the repository; output: %s", v.name, out)
			}
			dir := b.backupDir(v, name)
			stored, err := b.backupBytes(ctx, v, name)
			if err != nil {
				return nil, err
			}
			run := backupRun{usage: tu, serverCPU: cpu1 - cpu0, name: name, stored: stored, busy: benchkit.BusyShare(b0, t0, b1, t1)}
			res.runs[k] = append(res.runs[k], run)
			res.load.Add(tu.CPU() + run.serverCPU)
			logf("  round %d %-40s %6.1f s  %7.1f MiB  peak RSS %5.1f MiB (tree %5.1f)  machine busy %3.0f%%",
				r+1, v.name, tu.Wall.Seconds(), mib(stored), mib(tu.MaxRSS), mib(tu.TreeRSS), 100*run.busy)
			if v.pitr {
				res.lastPitr = name
				if res.dataBytes, err = b.pitrBackupSize(ctx, dir, name); err != nil {
					return nil, err
				}
			} else if len(v.args) == 0 {
				res.lastPGBR = name
			} else if v.fastest {
				res.lastFast = name
			}
		}
	}
	res.load.Stop()
	return res, nil
}

func (b *bench) listBackups(v variant) ([]string, error) {
	dir := filepath.Join(b.pgbrRepo, "backup", "bench")
	re := regexp.MustCompile(`^\d{8}-\d{6}F$`)
	if v.pitr {
		dir = filepath.Join(b.pitrRepo, b.pg.SystemIdentifier, "basebackups")
		re = regexp.MustCompile(`^\d{8}T\d{6}Z`)
	}
	if b.s3 != nil {
		return b.listS3(s3BackupPrefix(b, v), re)
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && re.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (b *bench) backupDir(v variant, name string) string {
	if v.pitr {
		return filepath.Join(b.pitrRepo, b.pg.SystemIdentifier, "basebackups", name)
	}
	return filepath.Join(b.pgbrRepo, "backup", "bench", name)
}

func newName(before, after []string) string {
	seen := map[string]bool{}
	for _, n := range before {
		seen[n] = true
	}
	for _, n := range after {
		if !seen[n] {
			return n
		}
	}
	return ""
}

var sizeRE = regexp.MustCompile(`"size":\s*(\d+)`)

// pitrBackupSize reads the original (uncompressed) size from backup.json.
func (b *bench) pitrBackupSize(ctx context.Context, dir, name string) (int64, error) {
	var data []byte
	var err error
	if b.s3 != nil {
		key := s3BackupPrefix(b, variant{pitr: true}) + name + "/backup.json"
		var out *s3.GetObjectOutput
		if out, err = b.s3.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: &b.s3.Bucket, Key: &key}); err == nil {
			data, err = io.ReadAll(out.Body)
			out.Body.Close()
		}
	} else {
		data, err = os.ReadFile(filepath.Join(dir, "backup.json"))
	}
	if err != nil {
		return 0, err
	}
	m := sizeRE.FindSubmatch(data)
	if m == nil {
		return 0, fmt.Errorf("%s/backup.json: no size", dir)
	}
	return strconv.ParseInt(string(m[1]), 10, 64)
}

// ---------------------------------------------------------------- restores

type restoreRun struct {
	tool     string
	total    time.Duration
	cmd      runas.TreeUsage // pitr restore (incl. waiting), or pgbackrest restore
	recovery time.Duration   // CPU of the startup process and its restore_command children
	events   logEvents
	start    time.Time
	end      time.Time
	history  string // count(*) of pgbench_history on the restored server
	busy     float64
}

type restoreResults struct {
	target   time.Time
	walBytes int64 // written after the last backup
	walSecs  float64
	tps      float64
	runs     map[string][]restoreRun
	load     *benchkit.Load
	problems []string
	genLoad  string
}

func (b *bench) restores(ctx context.Context, bk *backupResults) (*restoreResults, error) {
	rs := &restoreResults{runs: map[string][]restoreRun{}}
	if err := b.writeWAL(ctx, rs); err != nil {
		return nil, err
	}
	// The source stops: restores run alone, and its archive_command cannot
	// race with them.
	if err := b.cl.Stop(ctx); err != nil {
		return nil, err
	}
	syscall.Sync()
	tools := restoreTools(bk)
	rs.load = benchkit.StartLoad("measured tools + recovering servers")
	for r := 0; r < b.cfg.restoreRounds; r++ {
		for i := range tools {
			tool := tools[(i+r)%len(tools)]
			rr, err := b.restoreOnce(ctx, tool, r, bk, rs.target)
			if err != nil {
				return nil, err
			}
			rs.runs[tool] = append(rs.runs[tool], rr)
			rs.load.Add(rr.cmd.CPU() + rr.recovery)
			logf("  round %d %-10s total %6.1f s (to server start %5.1f s, replay %5.1f s); %d WAL files; %s",
				r+1, tool, rr.total.Seconds(), rr.events.first.Sub(rr.start).Seconds(),
				rr.events.redoDone.Sub(rr.events.firstRestored).Seconds(), rr.events.restored, rr.events.stopping)
		}
	}
	rs.load.Stop()
	// Every restore must have stopped at the same transaction.
	var ref *restoreRun
	for _, t := range tools {
		for i := range rs.runs[t] {
			r := &rs.runs[t][i]
			if ref == nil {
				ref = r
				continue
			}
			if r.history != ref.history || stopXID(r.events.stopping) != stopXID(ref.events.stopping) {
				rs.problems = append(rs.problems, fmt.Sprintf("%s stopped at %q with %s pgbench_history rows, %s at %q with %s",
					r.tool, r.events.stopping, r.history, ref.tool, ref.events.stopping, ref.history))
			}
		}
	}
	return rs, nil
}

var xidRE = regexp.MustCompile(`transaction (\d+)`)

func stopXID(line string) string {
	if m := xidRE.FindStringSubmatch(line); m != nil {
		return m[1]
	}
	return line
}

// writeWAL runs pgbench until cfg.walMiB of WAL was written after the
// backups, picks the target time, writes a few more seconds past it (so
// recovery stops at a commit after the target rather than at the end of the
// archive), and waits until everything is in both archives.
func (b *bench) writeWAL(ctx context.Context, rs *restoreResults) error {
	want := int64(b.cfg.walMiB) << 20
	startLSN, err := b.cl.Query(ctx, "SELECT pg_current_wal_lsn()")
	if err != nil {
		return err
	}
	written := func() (int64, error) {
		out, err := b.cl.Query(ctx, fmt.Sprintf("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')::bigint", startLSN))
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(out, 10, 64)
	}
	logf("writing %d MiB of WAL with pgbench -c %d (archived into both repositories as it goes)", b.cfg.walMiB, b.cfg.clients)
	load := benchkit.StartLoad("")
	t0 := time.Now()
	tpsRe := regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	var txns, runSecs float64
	pgbench := func(secs int) error {
		t := time.Now()
		out, err := b.cl.Cmd(ctx, "pgbench", "-n", "-T", strconv.Itoa(secs), "-c", strconv.Itoa(b.cfg.clients), "-j", "2")
		if err != nil {
			return err
		}
		d := time.Since(t).Seconds()
		runSecs += d
		if m := tpsRe.FindStringSubmatch(out); m != nil {
			tps, _ := strconv.ParseFloat(m[1], 64)
			txns += tps * d
		}
		return nil
	}
	chunk := 10
	for {
		n, err := written()
		if err != nil {
			return err
		}
		if n >= want {
			break
		}
		if time.Since(t0) > 15*time.Minute {
			return fmt.Errorf("only %d MiB of WAL after %v of pgbench", n>>20, time.Since(t0).Round(time.Second))
		}
		t := time.Now()
		if err := pgbench(chunk); err != nil {
			return err
		}
		n2, err := written()
		if err != nil {
			return err
		}
		rate := float64(n2-n) / time.Since(t).Seconds()
		chunk = 10
		if rate > 0 {
			chunk = int(math.Ceil(float64(want-n2)/rate)) + 1
		}
		chunk = min(max(chunk, 2), 60)
		logf("  %d/%d MiB", n2>>20, want>>20)
	}
	// The target: a whole second shortly ahead, so the next pgbench commits
	// on both sides of it.
	rs.target = time.Now().UTC().Truncate(time.Second).Add(3 * time.Second)
	if err := pgbench(6); err != nil {
		return err
	}
	n, err := written()
	if err != nil {
		return err
	}
	rs.walBytes = n
	if runSecs > 0 {
		rs.tps = txns / runSecs
	}
	logf("waiting for the archiver")
	if err := b.switchAndWait(ctx); err != nil {
		return err
	}
	rs.walSecs = time.Since(t0).Seconds()
	load.Stop()
	rs.genLoad = load.BusyString() + " (pgbench, PostgreSQL, archiving into both repositories)"
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// targetText is the target time for both tools, as UTC with an offset.
func targetText(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + "+00" }

func (b *bench) restoreOnce(ctx context.Context, tool string, round int, bk *backupResults, target time.Time) (restoreRun, error) {
	rr := restoreRun{tool: tool}
	dir := filepath.Join(b.work, "restore", fmt.Sprintf("%s-%d", strings.ReplaceAll(strings.ToLower(tool), " ", "-"), round+1))
	port, err := freePort()
	if err != nil {
		return rr, err
	}
	c := &corpus.Cluster{User: b.u, BinDir: b.binDir, DataDir: dir, SockDir: b.sockDir, Port: port}
	defer func() {
		// Never leave a server behind; the directory goes with it.
		_, _ = c.Cmd(context.Background(), "pg_ctl", "-D", dir, "-m", "immediate", "-w", "stop")
		if !b.cfg.keep {
			_ = os.RemoveAll(dir)
		}
	}()
	logPath := filepath.Join(dir, "pitr-restore.log") // where pitr restore --start logs
	if tool != "pitr" {
		logPath = filepath.Join(dir, "pgbr-restore.log")
		if strings.Contains(dir, " ") {
			return rr, fmt.Errorf("restore directory %q has a space", dir)
		}
		// pgBackRest restores into an existing directory.
		if err := os.Mkdir(dir, 0o700); err != nil {
			return rr, err
		}
		if err := b.u.Chown(dir); err != nil {
			return rr, err
		}
	}
	syscall.Sync()
	b0, t0 := benchkit.BusyNow()
	rr.start = time.Now()
	if tool == "pitr" {
		cmd := b.pitrCmd(ctx, "restore", "--repo", b.pitrURL(), "--target", targetText(target),
			"--pgdata", dir, "--start", "--port", strconv.Itoa(port), "--start-timeout", b.cfg.timeout.String())
		tu, out, err := runas.MeasureTree(cmd, 0, b.scratch, 50*time.Millisecond)
		rr.end = time.Now()
		rr.cmd = tu
		if err != nil {
			return rr, fmt.Errorf("pitr restore: %w\n%s", err, tail(logPath))
		}
		if !strings.Contains(out, bk.lastPitr) {
			return rr, fmt.Errorf("pitr restore did not restore backup %s:\n%s", bk.lastPitr, out)
		}
	} else {
		args := []string{"--pg1-path=" + dir, "--set=" + bk.lastPGBR, "--type=time", "--target=" + targetText(target), "--target-action=promote"}
		if tool == restoreFastest {
			// Its fastest settings: two processes for the restore, and
			// archive-get asynchronous with two processes (its prefetch).
			args = []string{"--pg1-path=" + dir, "--set=" + bk.lastFast, "--type=time", "--target=" + targetText(target), "--target-action=promote",
				"--process-max=2", "--recovery-option=restore_command=" + b.pgbackrest + " --config=" + b.pgbrConf + " --stanza=bench --pg1-path=" + dir +
					" --archive-async=y --process-max=2 archive-get %f \"%p\""}
		}
		cmd := b.pgbr(ctx, append(args, "restore")...)
		tu, _, err := runas.MeasureTree(cmd, 0, b.scratch, 50*time.Millisecond)
		rr.cmd = tu
		if err != nil {
			return rr, fmt.Errorf("pgbackrest restore: %w", err)
		}
		// Started the way pitr restore --start starts it.
		if _, err := c.Cmd(ctx, "pg_ctl", "-D", dir, "-l", logPath, "-o", "-p "+strconv.Itoa(port), "start"); err != nil {
			return rr, fmt.Errorf("pg_ctl start: %w\n%s", err, tail(logPath))
		}
		if err := waitPromoted(ctx, dir, logPath, b.cfg.timeout); err != nil {
			return rr, err
		}
		rr.end = time.Now()
	}
	rr.total = rr.end.Sub(rr.start)
	b1, t1 := benchkit.BusyNow()
	rr.busy = benchkit.BusyShare(b0, t0, b1, t1)

	if pid, err := c.PostmasterPID(); err == nil {
		rr.recovery, _ = runas.ChildrenCPU(pid)
	}
	logText, err := os.ReadFile(logPath)
	if err != nil {
		return rr, err
	}
	if rr.events, err = parseLog(logText); err != nil {
		return rr, fmt.Errorf("%s restore: %w (%s)", tool, err, logPath)
	}
	if rr.history, err = c.Query(ctx, "SELECT count(*) FROM pgbench_history"); err != nil {
		return rr, fmt.Errorf("%s restore: query the restored server: %w", tool, err)
	}
	return rr, nil
}

// The log lines that mark recovery's progress (PostgreSQL 15), as pitr's
// own StartAndWait reads them.
var (
	reRecComplete = regexp.MustCompile(`archive recovery complete`)
	reReady       = regexp.MustCompile(`database system is ready to accept connections`)
	reFatal       = regexp.MustCompile(`(?:FATAL|PANIC):\s+(.*)`)
)

// waitPromoted follows the server log until recovery is complete and the
// server accepts connections: the moment pitr restore --start reports
// success. It polls every 50 ms, as pitr does.
func waitPromoted(ctx context.Context, pgdata, logPath string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		log, _ := os.ReadFile(logPath)
		if ia := reRecComplete.FindAllIndex(log, -1); len(ia) > 0 && reReady.Match(log[ia[len(ia)-1][1]:]) {
			return nil
		}
		if _, err := os.Stat(filepath.Join(pgdata, "postmaster.pid")); err != nil {
			msg := "the server stopped during recovery"
			if m := reFatal.FindAllSubmatch(log, -1); len(m) > 0 {
				msg = string(m[len(m)-1][1])
			}
			return fmt.Errorf("pgBackRest restore: %s; see %s", msg, logPath)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgBackRest restore: recovery did not finish within %v; see %s", timeout, logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logEvents are the moments of one recovery, from the server log.
type logEvents struct {
	first         time.Time // the first line: the server starts
	firstRestored time.Time // first "restored log file"
	redoStart     wal.LSN
	redoDone      time.Time
	redoDoneLSN   wal.LSN
	complete      time.Time // "archive recovery complete"
	ready         time.Time // last "ready to accept connections"
	restored      int       // files restore_command restored
	stopping      string    // "recovery stopping ..." line
	timeline      string
	startupCPU    time.Duration // the startup process's own CPU until redo done ("system usage" of that line)
	fetchTime     time.Duration // sum of pitr wal-fetch's own "duration" (pitr only)
	fetches       int
}

var (
	reTS        = regexp.MustCompile(`^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}) UTC \[\d+\] `)
	reRestored  = regexp.MustCompile(`LOG:\s+restored log file "[0-9A-F]{24}" from archive`)
	reRedoStart = regexp.MustCompile(`LOG:\s+redo starts at ([0-9A-F]+/[0-9A-F]+)`)
	reRedoDone  = regexp.MustCompile(`LOG:\s+redo done at ([0-9A-F]+/[0-9A-F]+)(.*)`)
	reStopping  = regexp.MustCompile(`LOG:\s+(recovery stopping .*)`)
	reTimeline  = regexp.MustCompile(`LOG:\s+selected new timeline ID: (\d+)`)
	reUsage     = regexp.MustCompile(`CPU: user: ([0-9.]+) s, system: ([0-9.]+) s`)
	// pitr wal-fetch's own log line (on the server's stderr, so in its log).
	reFetched = regexp.MustCompile(`level=INFO msg=fetched .*duration=([0-9.]+(?:ms|s|µs|us))`)
)

func parseLog(log []byte) (logEvents, error) {
	var e logEvents
	for _, line := range strings.Split(string(log), "\n") {
		if fm := reFetched.FindStringSubmatch(line); fm != nil {
			if d, err := time.ParseDuration(fm[1]); err == nil {
				e.fetchTime += d
				e.fetches++
			}
			continue
		}
		m := reTS.FindStringSubmatch(line)
		if m == nil {
			continue // restore_command output and continuation lines
		}
		ts, err := time.Parse("2006-01-02 15:04:05.000", m[1])
		if err != nil {
			continue
		}
		if e.first.IsZero() {
			e.first = ts
		}
		switch {
		case reRestored.MatchString(line):
			if e.firstRestored.IsZero() {
				e.firstRestored = ts
			}
			e.restored++
		case reRedoStart.MatchString(line):
			e.redoStart, _ = wal.ParseLSN(reRedoStart.FindStringSubmatch(line)[1])
		case reRedoDone.MatchString(line):
			sm := reRedoDone.FindStringSubmatch(line)
			e.redoDone = ts
			e.redoDoneLSN, _ = wal.ParseLSN(sm[1])
			if um := reUsage.FindStringSubmatch(sm[2]); um != nil {
				u, _ := strconv.ParseFloat(um[1], 64)
				sy, _ := strconv.ParseFloat(um[2], 64)
				e.startupCPU = time.Duration((u + sy) * float64(time.Second))
			}
		case reStopping.MatchString(line):
			e.stopping = reStopping.FindStringSubmatch(line)[1]
		case reTimeline.MatchString(line):
			e.timeline = reTimeline.FindStringSubmatch(line)[1]
		case reRecComplete.MatchString(line):
			e.complete = ts
		case reReady.MatchString(line):
			e.ready = ts
		}
	}
	switch {
	case e.first.IsZero():
		return e, errors.New("no timestamped lines in the server log")
	case e.firstRestored.IsZero(), e.redoDone.IsZero(), e.ready.IsZero(), e.ready.Before(e.redoDone):
		return e, errors.New("the server log does not show a complete recovery from the archive")
	}
	return e, nil
}

func tail(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "--- " + p + " ---\n" + strings.Join(lines, "\n")
}

// ---------------------------------------------------------------- report

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// row prints a metric per column and pitr's advantage over every other
// column (>1 means pitr is better): other/pitr when lower is better,
// pitr/other when higher is better.
func row(w io.Writer, label, format string, v []float64, higherBetter bool) {
	fmt.Fprintf(w, "  %-44s", label)
	for _, x := range v {
		if math.IsNaN(x) {
			fmt.Fprintf(w, " %10s", "-")
		} else {
			fmt.Fprintf(w, " %10s", fmt.Sprintf(format, x))
		}
	}
	for _, other := range v[1:] {
		adv := math.NaN()
		switch {
		case higherBetter && other > 0:
			adv = v[0] / other
		case !higherBetter && v[0] > 0:
			adv = other / v[0]
		}
		if math.IsNaN(adv) || math.IsInf(adv, 0) {
			fmt.Fprintf(w, " %10s", "-")
		} else {
			fmt.Fprintf(w, " %9.2f×", adv)
		}
	}
	fmt.Fprintln(w)
}

// plainRow prints a metric per column without ratios (context, not a
// comparison).
func plainRow(w io.Writer, label, format string, v []float64) {
	cells := make([]string, len(v))
	for i, x := range v {
		cells[i] = "-"
		if !math.IsNaN(x) {
			cells[i] = fmt.Sprintf(format, x)
		}
	}
	textRow(w, label, cells)
}

// textRow prints a row of free text cells (no ratios).
func textRow(w io.Writer, label string, cells []string) {
	fmt.Fprintf(w, "  %-44s", label)
	for _, c := range cells {
		fmt.Fprintf(w, " %10s", c)
	}
	fmt.Fprintln(w)
}

func (b *bench) report(w io.Writer, bk *backupResults, rs *restoreResults) bool {
	fmt.Fprintln(w)
	if b.s3 != nil {
		fmt.Fprintf(w, "pitr vs pgBackRest: base backup and point-in-time restore of a pgbench database, repositories on versitygw over TLS (%s)\n", b.s3.Endpoint)
	} else {
		fmt.Fprintln(w, "pitr vs pgBackRest: base backup and point-in-time restore of a pgbench database, local repositories")
	}
	fmt.Fprintf(w, "database: pgbench -i -s %d on PostgreSQL %s (%.0f MiB in pg_database_size; %.0f MiB backed up), no data checksums, system %s\n",
		b.pg.Scale, b.pg.PostgreSQL, mib(b.pg.DatabaseBytes), mib(bk.dataBytes), b.pg.SystemIdentifier)
	fmt.Fprintf(w, "pitr:     %s; `pitr backup --fast`, zstd level %d (default), file:// repository\n", b.pitrRev, codec.DefaultLevel)
	fmt.Fprintf(w, "pgBR:     %s; `pgbackrest backup --type=full --start-fast=y`, every other option default (process-max=1, gz level 6, archive-check)\n", b.pgbrVer)
	fmt.Fprintf(w, "archive:  one archive_command pushes each WAL file to pitr, then to pgBackRest (gz): both tools' backups wait for the same pushes\n")
	fmt.Fprintf(w, "machine:  %s; tools run as user %q\n", benchkit.Machine(), b.u.Name)

	vs := bk.variants
	each := func(f func(backupRun) float64) []float64 {
		out := make([]float64, len(vs))
		for i := range vs {
			var xs []float64
			for _, r := range bk.runs[i] {
				xs = append(xs, f(r))
			}
			out[i] = median(xs)
		}
		return out
	}
	maxOf := func(f func(backupRun) float64) []float64 {
		out := make([]float64, len(vs))
		for i := range vs {
			for _, r := range bk.runs[i] {
				out[i] = max(out[i], f(r))
			}
		}
		return out
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Backup (issue 3): %d rounds, tools interleaved in rotating order, sync before each; medians\n", b.cfg.rounds)
	fmt.Fprintf(w, "load:     %s\n", bk.load)
	fmt.Fprintf(w, "  %-44s", "")
	for _, v := range vs {
		fmt.Fprintf(w, " %10s", v.short)
	}
	for _, v := range vs[1:] {
		fmt.Fprintf(w, " %10s", "vs "+v.short)
	}
	fmt.Fprintln(w)
	wall := each(func(r backupRun) float64 { return r.usage.Wall.Seconds() })
	row(w, "wall time (s)", "%.1f", wall, false)
	var cells []string
	for i := range vs {
		var s []string
		for _, r := range bk.runs[i] {
			s = append(s, fmt.Sprintf("%.1f", r.usage.Wall.Seconds()))
		}
		cells = append(cells, strings.Join(s, "/"))
	}
	textRow(w, "  each round (s)", cells)
	row(w, "throughput (MB/s of data backed up)", "%.0f", each(func(r backupRun) float64 {
		return float64(bk.dataBytes) / 1e6 / r.usage.Wall.Seconds()
	}), true)
	stored := each(func(r backupRun) float64 { return mib(r.stored) })
	row(w, "stored size (MiB)", "%.1f", stored, false)
	row(w, "compression ratio (data/stored)", "%.2f", each(func(r backupRun) float64 { return float64(bk.dataBytes) / float64(r.stored) }), true)
	row(w, "CPU user+sys, tool's processes (s)", "%.1f", each(func(r backupRun) float64 { return r.usage.CPU().Seconds() }), false)
	row(w, "CPU of server backends (s)", "%.1f", each(func(r backupRun) float64 { return r.serverCPU.Seconds() }), false)
	row(w, "CPU total (s)", "%.1f", each(func(r backupRun) float64 { return (r.usage.CPU() + r.serverCPU).Seconds() }), false)
	rss := maxOf(func(r backupRun) float64 { return mib(r.usage.MaxRSS) })
	row(w, "peak RSS, largest process (MiB)", "%.1f", rss, false)
	row(w, "peak RSS, all its processes (MiB)", "%.1f", maxOf(func(r backupRun) float64 { return mib(r.usage.TreeRSS) }), false)
	plainRow(w, "machine busy during the run (%)", "%.0f", each(func(r backupRun) float64 { return 100 * r.busy }))
	fmt.Fprintln(w, "  (ratios: >1.00× means pitr is better. Tool's processes: pitr + pg_basebackup; pgbackrest + its local processes.")
	fmt.Fprintln(w, "   Server backends: the walsender that reads and sends the files for pitr; pgBackRest's SQL sessions, since it reads the")
	fmt.Fprintln(w, "   files itself. Archiving is in neither. RSS of all processes is sampled every 50 ms.)")

	met := true
	timeOK := wall[0] <= wall[1]
	sizeOK := stored[0] <= stored[1]
	memOK := rss[0] < 100
	fmt.Fprintf(w, "target (issue 3): time ≤ pgBackRest process-max=1 (its default): %.1f s vs %.1f s → %s; size ≤: %.1f vs %.1f MiB → %s; peak RSS < 100 MB: %.1f MiB → %s\n",
		wall[0], wall[1], verdict(timeOK), stored[0], stored[1], verdict(sizeOK), rss[0], verdict(memOK))
	met = timeOK && sizeOK && memOK

	if rs == nil {
		return met
	}
	tools := restoreTools(bk)
	per := func(f func(restoreRun) float64) []float64 {
		out := make([]float64, len(tools))
		for i, t := range tools {
			var xs []float64
			for _, r := range rs.runs[t] {
				xs = append(xs, f(r))
			}
			out[i] = median(xs)
		}
		return out
	}
	secs := func(a, b time.Time) float64 { return b.Sub(a).Seconds() }
	ref := rs.runs["pitr"][0]
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Restore (issue 4): latest backup + %.0f MiB of WAL to a time target, until the server promoted; %d round(s), rotating order, medians\n",
		mib(rs.walBytes), b.cfg.restoreRounds)
	fmt.Fprintf(w, "WAL:      pgbench -c %d -j 2 (%.0f tps) after the backups; target %s, %s (%s pgbench_history rows); written and archived to both in %.0f s\n",
		b.cfg.clients, rs.tps, targetText(rs.target), ref.events.stopping, ref.history, rs.walSecs)
	fmt.Fprintf(w, "backups:  pitr %s, pgBackRest %s (gz, defaults; taken right after pitr's, so pitr's restore replays a little more)\n", bk.lastPitr, bk.lastPGBR)
	fmt.Fprintf(w, "how:      `pitr restore --target T --pgdata D --start --port P` | `pgbackrest restore --set B --type=time --target=T --target-action=promote` + `pg_ctl start`,\n")
	fmt.Fprintf(w, "          then the log is polled until \"archive recovery complete\" + \"ready to accept connections\" (both every 50 ms);\n")
	fmt.Fprintf(w, "          pitr promotes with pg_ctl promote at a pause at the target, pgBackRest's recovery_target_action = 'promote' waits for an end-of-recovery checkpoint\n")
	fmt.Fprintf(w, "          restore_command: pitr wal-fetch | pgbackrest archive-get (default: synchronous, no prefetch); source cluster stopped, same server settings\n")
	fmt.Fprintf(w, "load:     %s\n", rs.load)
	fmt.Fprintf(w, "  %-44s", "")
	for _, t := range tools {
		fmt.Fprintf(w, " %10s", restoreShort[t])
	}
	for _, t := range tools[1:] {
		fmt.Fprintf(w, " %10s", "vs "+restoreShort[t])
	}
	fmt.Fprintln(w)
	total := per(func(r restoreRun) float64 { return r.total.Seconds() })
	row(w, "end to end (s)", "%.1f", total, false)
	cells = nil
	for _, t := range tools {
		var s []string
		for _, r := range rs.runs[t] {
			s = append(s, fmt.Sprintf("%.1f", r.total.Seconds()))
		}
		cells = append(cells, strings.Join(s, "/"))
	}
	textRow(w, "  each round (s)", cells)
	row(w, "  download + extract, to server start (s)", "%.1f", per(func(r restoreRun) float64 { return secs(r.start, r.events.first) }), false)
	row(w, "  server start → first WAL file restored", "%.1f", per(func(r restoreRun) float64 { return secs(r.events.first, r.events.firstRestored) }), false)
	row(w, "  replay: first WAL file → redo done (s)", "%.1f", per(func(r restoreRun) float64 { return secs(r.events.firstRestored, r.events.redoDone) }), false)
	row(w, "    of which inside pitr wal-fetch (its log)", "%.1f", per(func(r restoreRun) float64 {
		if r.events.fetches == 0 {
			return math.NaN()
		}
		return r.events.fetchTime.Seconds()
	}), false)
	row(w, "    startup process's own CPU (redo done)", "%.1f", per(func(r restoreRun) float64 { return r.events.startupCPU.Seconds() }), false)
	row(w, "  end of recovery: redo done → ready (s)", "%.1f", per(func(r restoreRun) float64 { return secs(r.events.redoDone, r.events.ready) }), false)
	row(w, "  noticing it: ready → command returns", "%.1f", per(func(r restoreRun) float64 { return secs(r.events.ready, r.end) }), false)
	plainRow(w, "WAL replayed (MiB, redo start → done)", "%.0f", per(func(r restoreRun) float64 { return mib(int64(r.events.redoDoneLSN - r.events.redoStart)) }))
	plainRow(w, "WAL files restored by restore_command", "%.0f", per(func(r restoreRun) float64 { return float64(r.events.restored) }))
	row(w, "replay rate (MB/s of WAL)", "%.0f", per(func(r restoreRun) float64 {
		return float64(r.events.redoDoneLSN-r.events.redoStart) / 1e6 / secs(r.events.firstRestored, r.events.redoDone)
	}), true)
	row(w, "CPU, restore command (s)", "%.1f", per(func(r restoreRun) float64 { return r.cmd.CPU().Seconds() }), false)
	row(w, "CPU, startup process + restore_command (s)", "%.1f", per(func(r restoreRun) float64 { return r.recovery.Seconds() }), false)
	row(w, "peak RSS, restore command (MiB)", "%.1f", per(func(r restoreRun) float64 { return mib(r.cmd.MaxRSS) }), false)
	plainRow(w, "machine busy during the run (%)", "%.0f", per(func(r restoreRun) float64 { return 100 * r.busy }))
	fmt.Fprintln(w, "  (phases from the restored server's log timestamps; \"restore command\" is pitr restore (which also starts and waits) or")
	fmt.Fprintln(w, "   pgbackrest restore; the startup process's CPU includes every restore_command it ran)")
	restoreOK := total[0] <= total[1]
	fmt.Fprintf(w, "target (issue 4): end-to-end restore ≤ pgBackRest's: %.1f s vs %.1f s → %s\n", total[0], total[1], verdict(restoreOK))
	fmt.Fprintf(w, "while writing the WAL: %s\n", rs.genLoad)
	return met && restoreOK
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}

// restoreFastest restores pgBackRest's fastest backup with its fastest
// settings; "pgBackRest" is its default backup and settings.
const restoreFastest = "pgBackRest fastest"

var restoreShort = map[string]string{"pitr": "pitr", "pgBackRest": "pgBackRest", restoreFastest: "pgBR fast"}

func restoreTools(bk *backupResults) []string {
	tools := []string{"pitr", "pgBackRest"}
	if bk.lastFast != "" {
		tools = append(tools, restoreFastest)
	}
	return tools
}

// tableRow is one row of benchtable's table (its jsonRow).
type tableRow struct {
	Row    string  `json:"row"`
	Target string  `json:"target"`
	Tool   string  `json:"tool"`
	Wall   float64 `json:"wall_s"`
	MBps   float64 `json:"mb_s"`
	CPU    float64 `json:"cpu_s"`
	RSS    float64 `json:"peak_rss_mib"`
	Stored float64 `json:"stored_mib"`
	Runs   int     `json:"runs"`
}

// writeJSON writes the medians of pitr, pgBackRest's defaults and its
// fastest settings for benchtable: backup (MB/s of data backed up; CPU of
// the tool's processes) and restore to a target time (end to end until
// promoted; MB/s of data plus WAL written after the backups; CPU of the
// restore command plus the startup process and its restore_commands).
func (b *bench) writeJSON(path string, bk *backupResults, rs *restoreResults) error {
	var rows []tableRow
	names := map[string]string{"pitr": "pitr", "pgBackRest": "pgBackRest default", restoreFastest: "pgBackRest fastest"}
	for i, v := range bk.variants {
		name := ""
		switch {
		case v.pitr:
			name = "pitr"
		case len(v.args) == 0:
			name = "pgBackRest default"
		case v.fastest:
			name = "pgBackRest fastest"
		default:
			continue
		}
		med := func(f func(backupRun) float64) float64 {
			var xs []float64
			for _, r := range bk.runs[i] {
				xs = append(xs, f(r))
			}
			return median(xs)
		}
		wall := med(func(r backupRun) float64 { return r.usage.Wall.Seconds() })
		rows = append(rows, tableRow{Row: "backup", Target: b.repoName(), Tool: name, Wall: wall,
			MBps: float64(bk.dataBytes) / 1e6 / wall, CPU: med(func(r backupRun) float64 { return r.usage.CPU().Seconds() }),
			RSS: med(func(r backupRun) float64 { return mib(r.usage.MaxRSS) }), Stored: med(func(r backupRun) float64 { return mib(r.stored) }),
			Runs: len(bk.runs[i])})
	}
	if rs != nil {
		for _, t := range restoreTools(bk) {
			med := func(f func(restoreRun) float64) float64 {
				var xs []float64
				for _, r := range rs.runs[t] {
					xs = append(xs, f(r))
				}
				return median(xs)
			}
			wall := med(func(r restoreRun) float64 { return r.total.Seconds() })
			rows = append(rows, tableRow{Row: "restore to a time", Target: b.repoName(), Tool: names[t], Wall: wall,
				MBps: float64(bk.dataBytes+rs.walBytes) / 1e6 / wall, CPU: med(func(r restoreRun) float64 { return (r.cmd.CPU() + r.recovery).Seconds() }),
				RSS: med(func(r restoreRun) float64 { return mib(r.cmd.MaxRSS) }), Stored: -1, Runs: len(rs.runs[t])})
		}
	}
	data, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// s3BackupPrefix is where a tool's backups are in the bucket.
func s3BackupPrefix(b *bench, v variant) string {
	if v.pitr {
		return "pitr/" + b.pg.SystemIdentifier + "/basebackups/"
	}
	return "pgbr/backup/bench/"
}

// listS3 lists the "directories" under prefix whose names match re.
func (b *bench) listS3(prefix string, re *regexp.Regexp) ([]string, error) {
	var out []string
	delim := "/"
	p := s3.NewListObjectsV2Paginator(b.s3.Client(), &s3.ListObjectsV2Input{Bucket: &b.s3.Bucket, Prefix: &prefix, Delimiter: &delim})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			return nil, err
		}
		for _, cp := range page.CommonPrefixes {
			if cp.Prefix == nil {
				continue
			}
			name := strings.TrimSuffix(strings.TrimPrefix(*cp.Prefix, prefix), "/")
			if re.MatchString(name) {
				out = append(out, name)
			}
		}
	}
	return out, nil
}

// backupBytes is what one backup occupies in its repository.
func (b *bench) backupBytes(ctx context.Context, v variant, name string) (int64, error) {
	if b.s3 != nil {
		return b.s3.SizeUnder(ctx, s3BackupPrefix(b, v)+name+"/", func(string) bool { return true })
	}
	return corpus.DirBytes(b.backupDir(v, name))
}
