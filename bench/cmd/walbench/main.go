// Command walbench compares pitr with pgBackRest on real WAL, the way
// PostgreSQL uses them: one process per segment for archive_command
// (pitr archive-push / pgbackrest archive-push) and restore_command
// (pitr wal-fetch / pgbackrest archive-get), into fresh local repositories,
// on the same segments in the same run, interleaved segment by segment.
//
//	go run ./bench/cmd/walbench [flags]      (make bench runs it)
//
// It generates the corpus once (bench/internal/corpus; cached), then prints a
// table of per-invocation wall time (median, p95), throughput, CPU time, peak
// RSS and compression ratio per tool, with pitr's advantage over pgBackRest
// gz (its default) and zst, the fixed cost of an invocation, and pitr's
// in-process cost for comparison. Every fetched segment is compared byte for
// byte with the original. Any failure exits 1; a missed target exits 0
// unless -require-target.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/bench/internal/benchkit"
	"github.com/pitr-dev/pitr/bench/internal/corpus"
	"github.com/pitr-dev/pitr/bench/internal/runas"
	"github.com/pitr-dev/pitr/storage/codec"
	storagefs "github.com/pitr-dev/pitr/storage/fs"
	"github.com/pitr-dev/pitr/storage/retry"
)

type config struct {
	cacheDir      string
	minSegments   int
	segments      int
	pitrBin       string
	keep          bool
	requireTarget bool
	fixedRuns     int
	scale         int
	clients       int
	samplesCSV    string
	walSegSizeMiB int
}

func main() {
	var cfg config
	flag.StringVar(&cfg.cacheDir, "cache", "", "corpus cache directory (default $PITR_BENCH_CACHE or bench/.cache)")
	flag.IntVar(&cfg.minSegments, "min-segments", 128, "generate at least this many WAL segments")
	flag.IntVar(&cfg.segments, "segments", 0, "benchmark only the first N segments of the corpus (0: all)")
	flag.StringVar(&cfg.pitrBin, "pitr", "", "pitr binary to measure (default: go build ./cmd/pitr)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work directory (repositories, pgBackRest logs)")
	flag.BoolVar(&cfg.requireTarget, "require-target", false, "exit 1 when pitr misses the issue's target")
	flag.IntVar(&cfg.fixedRuns, "fixed-runs", 30, "invocations per tool to measure fixed (startup) cost")
	flag.IntVar(&cfg.scale, "scale", 20, "pgbench scale when generating the corpus")
	flag.IntVar(&cfg.clients, "clients", 4, "pgbench clients when generating the corpus")
	flag.StringVar(&cfg.samplesCSV, "samples", "", "also write every invocation's measurements to this CSV file")
	flag.IntVar(&cfg.walSegSizeMiB, "wal-segsize", 16, "WAL segment size of the corpus in MiB (initdb --wal-segsize; others than 16 are cached in a subdirectory)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "walbench: takes no arguments")
		os.Exit(2)
	}
	if n := cfg.walSegSizeMiB; n < 1 || n > 1024 || n&(n-1) != 0 {
		fmt.Fprintf(os.Stderr, "walbench: -wal-segsize %d: PostgreSQL takes a power of two from 1 to 1024 (MiB)\n", n)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	met, err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "walbench: FAIL: %v\n", err)
		os.Exit(1)
	}
	if !met && cfg.requireTarget {
		fmt.Fprintln(os.Stderr, "walbench: target missed (-require-target)")
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "walbench: "+format+"\n", args...)
}

// tool is one archiver under test.
type tool struct {
	name    string
	short   string
	push    func(ctx context.Context, path string) *exec.Cmd
	fetch   func(ctx context.Context, name, dest string) *exec.Cmd
	version func(ctx context.Context) *exec.Cmd
	fetchTo string // directory for restore_command's %p
	walSize func() (objects int, bytes int64, err error)
}

type results struct {
	push, fetch, version, missing []runas.Usage
	objects                       int
	stored                        int64
	pushRSS, fetchRSS             int64 // bytes; 0: not measured
}

func run(ctx context.Context, cfg config) (targetMet bool, err error) {
	u, err := runas.Lookup()
	if err != nil {
		return false, err
	}
	binDir, err := corpus.BinDir()
	if err != nil {
		return false, err
	}
	pgbackrest, err := exec.LookPath("pgbackrest")
	if err != nil {
		return false, fmt.Errorf("pgbackrest not found (run scripts/install-deps.sh): %w", err)
	}
	if cfg.cacheDir == "" {
		if cfg.cacheDir, err = corpus.DefaultDir(); err != nil {
			return false, err
		}
	}

	segSize := int64(cfg.walSegSizeMiB) << 20
	t0 := time.Now()
	c, generated, err := corpus.Ensure(ctx, corpus.SizedDir(cfg.cacheDir, segSize), u, corpus.Options{
		MinSegments: cfg.minSegments, SegmentSize: segSize, Scale: cfg.scale, Clients: cfg.clients, Logf: logf})
	if err != nil {
		return false, err
	}
	if generated {
		logf("generated corpus in %s (%.0f s)", c.Dir, time.Since(t0).Seconds())
	} else {
		logf("using cached corpus in %s", c.Dir)
	}
	segs := c.Segments
	if cfg.segments > 0 && cfg.segments < len(segs) {
		segs = segs[:cfg.segments]
	}
	segBytes := int64(len(segs)) * c.SegmentSize

	work, err := os.MkdirTemp("", "pitr-bench-")
	if err != nil {
		return false, err
	}
	if cfg.keep {
		defer logf("kept work directory %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	if err := u.MkdirShared(work); err != nil {
		return false, err
	}

	pitrBin, pitrRev, err := benchkit.BuildPitr(ctx, cfg.pitrBin, work, logf)
	if err != nil {
		return false, err
	}
	pgbrVersion, _ := runas.Run(exec.CommandContext(ctx, pgbackrest, "version"))

	sets, err := setupTools(ctx, u, binDir, c, work, pitrBin, pgbackrest, "main", "rss")
	if err != nil {
		return false, err
	}
	tools, rssTools := sets[0], sets[1]

	// Same starting point for everyone: the corpus in the page cache, every
	// binary loaded once.
	for _, s := range segs {
		if err := readAll(c.Path(s)); err != nil {
			return false, err
		}
	}
	for _, t := range tools {
		for i := 0; i < 3; i++ {
			if _, _, err := runas.Measure(t.version(ctx), 0); err != nil {
				return false, err
			}
		}
	}

	res := make([]results, len(tools))
	// Start every phase with no write-back pending (the corpus generation
	// leaves gigabytes of dirty pages), so fsync latency is the tools' own.
	syscall.Sync()
	load := benchkit.StartLoad("measured tools")
	logf("archive-push: %d segments × %d tools, one process per segment", len(segs), len(tools))
	for i, s := range segs {
		for j := range tools {
			k := (i + j) % len(tools) // rotate the order so no tool always goes first
			t := tools[k]
			us, _, err := runas.Measure(t.push(ctx, c.Path(s)), 0)
			if err != nil {
				return false, fmt.Errorf("%s push %s: %w", t.name, s, err)
			}
			res[k].push = append(res[k].push, us)
		}
		if (i+1)%32 == 0 {
			logf("  pushed %d/%d", i+1, len(segs))
		}
	}
	for k, t := range tools {
		n, b, err := t.walSize()
		if err != nil {
			return false, fmt.Errorf("%s repository: %w", t.name, err)
		}
		if n != len(segs) {
			return false, fmt.Errorf("%s repository holds %d WAL objects after pushing %d segments", t.name, n, len(segs))
		}
		res[k].objects, res[k].stored = n, b
	}

	syscall.Sync()
	logf("fetch: %d segments × %d tools, verified byte for byte", len(segs), len(tools))
	for i, s := range segs {
		orig, err := os.ReadFile(c.Path(s))
		if err != nil {
			return false, err
		}
		for j := range tools {
			k := (i + j) % len(tools)
			t := tools[k]
			dest := filepath.Join(t.fetchTo, "RECOVERYXLOG") // what PostgreSQL passes as %p
			us, _, err := runas.Measure(t.fetch(ctx, s, dest), 0)
			if err != nil {
				return false, fmt.Errorf("%s fetch %s: %w", t.name, s, err)
			}
			got, err := os.ReadFile(dest)
			if err != nil {
				return false, fmt.Errorf("%s fetch %s: %w", t.name, s, err)
			}
			if !bytes.Equal(got, orig) {
				return false, fmt.Errorf("%s fetch %s: fetched bytes differ from the original", t.name, s)
			}
			if err := os.Remove(dest); err != nil {
				return false, err
			}
			res[k].fetch = append(res[k].fetch, us)
		}
		if (i+1)%32 == 0 {
			logf("  fetched %d/%d", i+1, len(segs))
		}
	}

	load.Stop()
	for _, r := range res {
		for _, u := range append(append([]runas.Usage(nil), r.push...), r.fetch...) {
			load.Add(u.CPU())
		}
	}

	logf("fixed cost: %d × (version, fetch of a missing .history) per tool", cfg.fixedRuns)
	for i := 0; i < cfg.fixedRuns; i++ {
		for j := range tools {
			k := (i + j) % len(tools)
			t := tools[k]
			us, _, err := runas.Measure(t.version(ctx), 0)
			if err != nil {
				return false, err
			}
			res[k].version = append(res[k].version, us)
			dest := filepath.Join(t.fetchTo, "RECOVERYHISTORY")
			us, _, err = runas.Measure(t.fetch(ctx, "0000000A.history", dest), 1)
			if err != nil {
				return false, fmt.Errorf("%s fetch of a missing file must exit 1: %w", t.name, err)
			}
			if _, err := os.Stat(dest); err == nil {
				return false, fmt.Errorf("%s left %s after a missing file", t.name, dest)
			}
			res[k].missing = append(res[k].missing, us)
		}
	}

	if _, err := os.Stat(gnuTime); err == nil {
		k := min(8, len(segs))
		logf("peak RSS: %d segments per tool under %s, into separate repositories", k, gnuTime)
		for _, s := range segs[:k] {
			orig, err := os.ReadFile(c.Path(s))
			if err != nil {
				return false, err
			}
			for j, t := range rssTools {
				scratch := filepath.Dir(t.fetchTo)
				rss, err := peakRSS(t.push(ctx, c.Path(s)), 0, scratch)
				if err != nil {
					return false, fmt.Errorf("%s push %s: %w", t.name, s, err)
				}
				res[j].pushRSS = max(res[j].pushRSS, rss)
				dest := filepath.Join(t.fetchTo, "RECOVERYXLOG")
				if rss, err = peakRSS(t.fetch(ctx, s, dest), 0, scratch); err != nil {
					return false, fmt.Errorf("%s fetch %s: %w", t.name, s, err)
				}
				res[j].fetchRSS = max(res[j].fetchRSS, rss)
				if got, err := os.ReadFile(dest); err != nil || !bytes.Equal(got, orig) {
					return false, fmt.Errorf("%s fetch %s: fetched bytes differ from the original (%v)", t.name, s, err)
				}
				if err := os.Remove(dest); err != nil {
					return false, err
				}
			}
		}
	} else {
		logf("peak RSS: %s not found (Debian package time); not measured", gnuTime)
	}

	logf("pitr in-process: archive.Archiver Push and Fetch of the same segments")
	inPush, inFetch, err := inProcess(ctx, c, segs, filepath.Join(work, "inprocess"))
	if err != nil {
		return false, err
	}

	if cfg.samplesCSV != "" {
		if err := writeSamples(cfg.samplesCSV, tools, res, segs); err != nil {
			return false, err
		}
	}

	rep := report{
		corpus: c, segs: len(segs), segBytes: segBytes, tools: tools, res: res,
		inPush: inPush, inFetch: inFetch,
		pitrRev: pitrRev, pgbrVersion: strings.TrimSpace(pgbrVersion),
		load: load,
	}
	return rep.print(os.Stdout), nil
}

// setupTools creates fresh repositories for each set name (pitr file://,
// pgBackRest gz, pgBackRest zst) and pgBackRest's stanzas, which need the
// cluster running once. It returns one []*tool per set, in the order pitr,
// pgBackRest gz, pgBackRest zst.
func setupTools(ctx context.Context, u runas.User, binDir string, c *corpus.Corpus, work, pitrBin, pgbackrest string, sets ...string) ([][]*tool, error) {
	data := c.DataDir()
	for _, set := range sets {
		base := filepath.Join(work, set)
		dirs := []string{base, filepath.Join(base, "pitr-repo")}
		for _, d := range []string{"fetch-pitr", "fetch-gz", "fetch-zst"} {
			dirs = append(dirs, filepath.Join(base, d))
		}
		for _, v := range []string{"gz", "zst"} {
			for _, d := range []string{"", "repo", "log", "lock"} {
				dirs = append(dirs, filepath.Join(base, "pgbr-"+v, d))
			}
		}
		for _, d := range dirs {
			if err := u.MkdirShared(d); err != nil {
				return nil, err
			}
		}
	}

	logf("starting the corpus cluster for pgbackrest stanza-create")
	cl, err := corpus.StartCluster(ctx, u, binDir, data, c.LogPath())
	if err != nil {
		return nil, err
	}
	defer cl.Stop(context.Background())
	confs := map[string]string{}
	for _, set := range sets {
		for _, v := range []string{"gz", "zst"} {
			base := filepath.Join(work, set, "pgbr-"+v)
			conf := filepath.Join(base, "pgbackrest.conf")
			// Only paths: every other option keeps pgBackRest's default.
			text := fmt.Sprintf("[global]\nrepo1-path=%s\nlog-path=%s\nlock-path=%s\n\n[bench]\npg1-path=%s\npg1-port=%d\npg1-socket-path=%s\npg1-user=postgres\n",
				filepath.Join(base, "repo"), filepath.Join(base, "log"), filepath.Join(base, "lock"), data, cl.Port, cl.SockDir)
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				return nil, err
			}
			if err := u.Chown(conf); err != nil {
				return nil, err
			}
			cmd := u.Command(ctx, data, binDir, pgbackrest, "--config="+conf, "--stanza=bench", "stanza-create")
			if _, err := runas.Run(cmd); err != nil {
				return nil, err
			}
			confs[set+"/"+v] = conf
		}
	}
	if err := cl.Stop(ctx); err != nil {
		return nil, err
	}

	var out [][]*tool
	for _, set := range sets {
		base := filepath.Join(work, set)
		pitrRepo := filepath.Join(base, "pitr-repo")
		pitrURL := "file://" + pitrRepo
		tools := []*tool{{
			name:  "pitr",
			short: "pitr",
			// The working directory is the data directory, as for PostgreSQL's
			// archive_command and restore_command: pitr cross-checks global/pg_control.
			push: func(ctx context.Context, p string) *exec.Cmd {
				return u.Command(ctx, data, "", pitrBin, "archive-push", "--repo", pitrURL, p)
			},
			fetch: func(ctx context.Context, name, dest string) *exec.Cmd {
				return u.Command(ctx, data, "", pitrBin, "wal-fetch", "--repo", pitrURL, name, dest)
			},
			version: func(ctx context.Context) *exec.Cmd { return u.Command(ctx, data, "", pitrBin, "version") },
			fetchTo: filepath.Join(base, "fetch-pitr"),
			walSize: func() (int, int64, error) {
				return dirSize(filepath.Join(pitrRepo, c.SystemIdentifier, "wal"), func(string) bool { return true })
			},
		}}
		for _, v := range []string{"gz", "zst"} {
			conf := confs[set+"/"+v]
			var extra []string
			if v == "zst" {
				extra = []string{"--compress-type=zst"}
			}
			repo := filepath.Join(base, "pgbr-"+v, "repo", "archive", "bench")
			tools = append(tools, &tool{
				name:  "pgBackRest " + v,
				short: "pgBR " + v,
				push: func(ctx context.Context, p string) *exec.Cmd {
					args := append([]string{"--config=" + conf, "--stanza=bench"}, extra...)
					return u.Command(ctx, data, "", pgbackrest, append(args, "archive-push", p)...)
				},
				fetch: func(ctx context.Context, name, dest string) *exec.Cmd {
					return u.Command(ctx, data, "", pgbackrest, "--config="+conf, "--stanza=bench", "archive-get", name, dest)
				},
				version: func(ctx context.Context) *exec.Cmd { return u.Command(ctx, data, "", pgbackrest, "version") },
				fetchTo: filepath.Join(base, "fetch-"+v),
				walSize: func() (int, int64, error) {
					return dirSize(repo, func(p string) bool { return !strings.HasPrefix(filepath.Base(p), "archive.info") })
				},
			})
		}
		out = append(out, tools)
	}
	return out, nil
}

// gnuTime is GNU time, used only to measure peak RSS: the kernel's rusage
// of a process started by this (large) Go process reports this process's
// RSS as the child's peak, because Go starts children with vfork
// (CLONE_VM) and exec records the shared address space's high-water mark.
// GNU time forks a copy of its own small address space instead.
const gnuTime = "/usr/bin/time"

// peakRSS runs cmd under GNU time and returns the command's peak RSS in bytes.
func peakRSS(cmd *exec.Cmd, want int, scratch string) (int64, error) {
	out := filepath.Join(scratch, "rss")
	_ = os.Remove(out)
	args := append([]string{gnuTime, "-f", "%M", "-o", out, cmd.Path}, cmd.Args[1:]...)
	cmd.Path, cmd.Args = gnuTime, args
	if _, _, err := runas.Measure(cmd, want); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return 0, err
	}
	// GNU time prints "Command exited with non-zero status N" first then.
	lines := strings.Fields(strings.TrimSpace(string(b)))
	if len(lines) == 0 {
		return 0, fmt.Errorf("empty output from %s", gnuTime)
	}
	var kb int64
	if _, err := fmt.Sscan(lines[len(lines)-1], &kb); err != nil {
		return 0, fmt.Errorf("%s output %q: %w", gnuTime, b, err)
	}
	return kb << 10, nil
}

// dirSize counts the regular files under dir that keep accepts, and their bytes.
func dirSize(dir string, keep func(string) bool) (int, int64, error) {
	var n int
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || !keep(p) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n++
		total += fi.Size()
		return nil
	})
	return n, total, err
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

// inProcess pushes and fetches the segments with archive.Archiver in this
// process (fs store behind the retry wrapper, as cmd/pitr composes it), so
// the report can separate pitr's per-process cost from its work.
func inProcess(ctx context.Context, c *corpus.Corpus, segs []string, dir string) (push, fetch []time.Duration, err error) {
	repoDir := filepath.Join(dir, "repo")
	out := filepath.Join(dir, "fetch")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, nil, err
	}
	st, err := storagefs.New(repoDir)
	if err != nil {
		return nil, nil, err
	}
	a := &archive.Archiver{
		Store:       retry.New(st, retry.Options{}),
		Codec:       codec.Options{Codec: codec.Default, Level: codec.DefaultLevel},
		ControlFile: filepath.Join(c.DataDir(), "global", "pg_control"),
		Log:         slog.New(slog.DiscardHandler),
	}
	for _, s := range segs {
		t0 := time.Now()
		if _, err := a.Push(ctx, c.Path(s)); err != nil {
			return nil, nil, err
		}
		push = append(push, time.Since(t0))
	}
	for _, s := range segs {
		dest := filepath.Join(out, "RECOVERYXLOG")
		t0 := time.Now()
		if _, err := a.Fetch(ctx, s, dest); err != nil {
			return nil, nil, err
		}
		fetch = append(fetch, time.Since(t0))
		if err := os.Remove(dest); err != nil {
			return nil, nil, err
		}
	}
	return push, fetch, nil
}

// writeSamples writes one CSV line per measured invocation.
func writeSamples(path string, tools []*tool, res []results, segs []string) error {
	var b strings.Builder
	b.WriteString("tool,op,segment,wall_ms,user_ms,sys_ms\n")
	for i, t := range tools {
		for _, op := range []struct {
			name string
			us   []runas.Usage
		}{{"push", res[i].push}, {"fetch", res[i].fetch}, {"version", res[i].version}, {"fetch-missing", res[i].missing}} {
			for j, u := range op.us {
				seg := ""
				if op.name == "push" || op.name == "fetch" {
					seg = segs[j]
				}
				fmt.Fprintf(&b, "%s,%s,%s,%.3f,%.3f,%.3f\n", t.name, op.name, seg, ms(u.Wall), ms(u.User), ms(u.Sys))
			}
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// stats summarises invocations.
type stats struct {
	n                 int
	median, p95, mean time.Duration
	totalWall         time.Duration
	cpuMean           time.Duration
	userMean, sysMean time.Duration
}

func summarize(us []runas.Usage) stats {
	walls := make([]time.Duration, len(us))
	var s stats
	for i, u := range us {
		walls[i] = u.Wall
		s.totalWall += u.Wall
		s.userMean += u.User
		s.sysMean += u.Sys
	}
	s.n = len(us)
	if s.n == 0 {
		return s
	}
	s.median, s.p95 = percentile(walls, 50), percentile(walls, 95)
	s.mean = s.totalWall / time.Duration(s.n)
	s.userMean /= time.Duration(s.n)
	s.sysMean /= time.Duration(s.n)
	s.cpuMean = s.userMean + s.sysMean
	return s
}

// percentile is the nearest-rank percentile.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	r := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(r, 0), len(s)-1)]
}

type report struct {
	corpus          *corpus.Corpus
	segs            int
	segBytes        int64
	tools           []*tool
	res             []results
	inPush, inFetch []time.Duration
	pitrRev         string
	pgbrVersion     string
	load            *benchkit.Load
}

func jiffies(n int64) time.Duration { return time.Duration(n) * 10 * time.Millisecond }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// row prints a metric for the three tools plus pitr's advantage over each
// pgBackRest variant (>1 means pitr is better): other/pitr when lower is
// better, pitr/other when higher is better.
func row(w io.Writer, label, format string, v []float64, higherBetter bool) {
	fmt.Fprintf(w, "  %-34s", label)
	for _, x := range v {
		fmt.Fprintf(w, " %11s", fmt.Sprintf(format, x))
	}
	for _, other := range v[1:] {
		adv := math.NaN()
		switch {
		case higherBetter && other > 0:
			adv = v[0] / other
		case !higherBetter && v[0] > 0:
			adv = other / v[0]
		}
		if math.IsNaN(adv) {
			fmt.Fprintf(w, " %11s", "-")
		} else {
			fmt.Fprintf(w, " %10.2f×", adv)
		}
	}
	fmt.Fprintln(w)
}

func (r *report) print(w io.Writer) bool {
	c := r.corpus
	fmt.Fprintln(w)
	fmt.Fprintln(w, "pitr vs pgBackRest: one process per WAL segment, local repositories, fsync on")
	fmt.Fprintf(w, "corpus:  %s\n", c.Describe())
	fmt.Fprintf(w, "run:     %d segments (%.0f MiB) per tool, interleaved; fetched bytes verified equal\n", r.segs, float64(r.segBytes)/(1<<20))
	fmt.Fprintf(w, "pitr:    %s, zstd level %d (default), file:// repository\n", r.pitrRev, codec.DefaultLevel)
	fmt.Fprintf(w, "pgBR:    %s, archive-push sync (default); gz = default compress-type (level 6), zst = --compress-type=zst (level 3)\n", r.pgbrVersion)
	host, _ := os.Hostname()
	fmt.Fprintf(w, "machine: %s, %d CPUs, %s %s/%s, %s; runs as user %q\n", host, runtime.NumCPU(), kernel(), runtime.GOOS, runtime.GOARCH, runtime.Version(), userName())
	fmt.Fprintf(w, "load:    %s\n", r.load)
	fmt.Fprintln(w)

	fmt.Fprintf(w, "  %-34s %11s %11s %11s %11s %11s\n", "", "pitr", r.tools[1].short, r.tools[2].short, "pitr vs gz", "pitr vs zst")
	pushS := make([]stats, len(r.tools))
	fetchS := make([]stats, len(r.tools))
	verS := make([]stats, len(r.tools))
	missS := make([]stats, len(r.tools))
	for i := range r.tools {
		pushS[i], fetchS[i] = summarize(r.res[i].push), summarize(r.res[i].fetch)
		verS[i], missS[i] = summarize(r.res[i].version), summarize(r.res[i].missing)
	}
	each := func(s []stats, f func(stats) float64) []float64 {
		out := make([]float64, len(s))
		for i := range s {
			out[i] = f(s[i])
		}
		return out
	}
	mbps := func(s stats) float64 {
		if s.totalWall <= 0 {
			return 0
		}
		return float64(int64(s.n)*c.SegmentSize) / 1e6 / s.totalWall.Seconds()
	}
	section := func(title string, s []stats, rss func(results) int64) {
		fmt.Fprintln(w, title)
		row(w, "wall per segment, median (ms)", "%.1f", each(s, func(s stats) float64 { return ms(s.median) }), false)
		row(w, "wall per segment, p95 (ms)", "%.1f", each(s, func(s stats) float64 { return ms(s.p95) }), false)
		row(w, "wall per segment, mean (ms)", "%.1f", each(s, func(s stats) float64 { return ms(s.mean) }), false)
		row(w, "throughput, sequential (MB/s)", "%.0f", each(s, mbps), true)
		row(w, "CPU user+sys per segment, mean (ms)", "%.1f", each(s, func(s stats) float64 { return ms(s.cpuMean) }), false)
		row(w, "  of which sys (ms)", "%.1f", each(s, func(s stats) float64 { return ms(s.sysMean) }), false)
		if rss(r.res[0]) > 0 {
			v := make([]float64, len(r.res))
			for i := range r.res {
				v[i] = float64(rss(r.res[i])) / (1 << 20)
			}
			row(w, "peak RSS (MiB)", "%.1f", v, false)
		}
	}
	section("archive-push (archive_command)", pushS, func(r results) int64 { return r.pushRSS })
	ratios := make([]float64, len(r.tools))
	stored := make([]float64, len(r.tools))
	for i := range r.tools {
		ratios[i] = float64(r.segBytes) / float64(r.res[i].stored)
		stored[i] = float64(r.res[i].stored) / (1 << 20)
	}
	row(w, "repository bytes for WAL (MiB)", "%.1f", stored, false)
	row(w, "compression ratio (orig/stored)", "%.2f", ratios, true)
	section("wal-fetch / archive-get (restore_command)", fetchS, func(r results) int64 { return r.fetchRSS })
	fmt.Fprintln(w, "fixed cost per invocation (no WAL work)")
	row(w, "`version`, median (ms)", "%.1f", each(verS, func(s stats) float64 { return ms(s.median) }), false)
	row(w, "fetch of a missing .history (ms)", "%.1f", each(missS, func(s stats) float64 { return ms(s.median) }), false)
	row(w, "  CPU user+sys (ms)", "%.1f", each(missS, func(s stats) float64 { return ms(s.cpuMean) }), false)
	fmt.Fprintln(w, "  (ratios: >1.00× means pitr is better — faster, less CPU or memory, more MB/s, smaller repository)")

	fmt.Fprintln(w)
	ip, ipf := percentile(r.inPush, 50), percentile(r.inFetch, 50)
	fmt.Fprintln(w, "pitr per segment: process vs in-process (archive.Archiver, warm, same segments)")
	fmt.Fprintf(w, "  push:  process median %.1f ms, in-process median %.1f ms (p95 %.1f) → per-process overhead %.1f ms\n",
		ms(pushS[0].median), ms(ip), ms(percentile(r.inPush, 95)), ms(pushS[0].median-ip))
	fmt.Fprintf(w, "  fetch: process median %.1f ms, in-process median %.1f ms (p95 %.1f) → per-process overhead %.1f ms\n",
		ms(fetchS[0].median), ms(ipf), ms(percentile(r.inFetch, 95)), ms(fetchS[0].median-ipf))
	fmt.Fprintf(w, "  bare process start (`pitr version`): %.1f ms\n", ms(verS[0].median))

	speed := float64(pushS[1].median) / float64(pushS[0].median)
	speedMean := float64(pushS[1].mean) / float64(pushS[0].mean)
	met := speed >= 2 && speedMean >= 2 && ratios[0] > ratios[1]
	verdict := "MET"
	if !met {
		verdict = "MISSED"
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "target (issue 2): archive-push ≥ 2× faster than pgBackRest with default compression (gz), at a better ratio\n")
	fmt.Fprintf(w, "  speed: %.2f× by median, %.2f× by mean (= throughput), both must be ≥ 2; ratio: pitr %.2f vs gz %.2f → %s\n",
		speed, speedMean, ratios[0], ratios[1], verdict)
	return met
}

func kernel() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "linux"
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return "Linux " + b.String()
}

func userName() string {
	u, err := runas.Lookup()
	if err != nil {
		return "?"
	}
	return u.Name
}
