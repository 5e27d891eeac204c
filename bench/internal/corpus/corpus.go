// Package corpus makes, caches and loads the benchmark's WAL corpus: real
// segments (16 MiB unless asked otherwise) written by PostgreSQL 15 under
// pgbench, copied out by an archive_command, plus the (stopped) data
// directory of the cluster that wrote them, whose system identifier matches
// the WAL (pgBackRest's stanza and pitr's pg_control cross-check need it).
// A corpus of another segment size lives in a subdirectory (SizedDir).
//
// Layout of the cache directory (default bench/.cache, or $PITR_BENCH_CACHE):
//
//	manifest.json   written last; without it the directory is regenerated
//	wal/<name>      the segments, exactly as archive_command received them
//	pgdata/         the cluster's data directory (archive_mode off after generation)
//	server.log      its server log
package corpus

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/bench/internal/runas"
)

// SegmentSize is the default WAL segment size of a corpus (initdb's
// default). Options.SegmentSize makes others, up to PostgreSQL's largest,
// 1 GiB, for the bounded-memory figures.
const SegmentSize = 16 << 20

// SizedDir is where the cache keeps a corpus of segments of another size
// than the default, beside the default corpus in cacheDir.
func SizedDir(cacheDir string, segmentSize int64) string {
	if segmentSize == SegmentSize {
		return cacheDir
	}
	return filepath.Join(cacheDir, fmt.Sprintf("wal-%dMiB", segmentSize>>20))
}

const (
	manifestName    = "manifest.json"
	manifestVersion = 1
	envCacheDir     = "PITR_BENCH_CACHE"
)

// Manifest describes a generated corpus.
type Manifest struct {
	Version          int       `json:"version"`
	SystemIdentifier string    `json:"system_identifier"`
	PostgreSQL       string    `json:"postgresql"`
	SegmentSize      int64     `json:"segment_size"`
	Segments         []string  `json:"segments"`
	InitSegments     int       `json:"init_segments"` // written by pgbench -i (bulk load) before the -T runs
	Scale            int       `json:"pgbench_scale"`
	Clients          int       `json:"pgbench_clients"`
	Threads          int       `json:"pgbench_threads"`
	RunSeconds       float64   `json:"pgbench_run_seconds"`
	TPS              float64   `json:"pgbench_tps"`
	Settings         []string  `json:"settings"`
	FPIPercent       float64   `json:"fpi_percent"`       // share of WAL record bytes that are full-page images (pg_waldump --stats); -1 unknown
	ZeroPagePercent  float64   `json:"zero_page_percent"` // share of 8 KiB WAL pages that are all zero bytes
	GeneratedAt      time.Time `json:"generated_at"`
	GenerateSeconds  float64   `json:"generate_seconds"`
}

// Corpus is a loaded, complete corpus.
type Corpus struct {
	Dir string
	Manifest
}

// WALDir is the directory holding the segments.
func (c *Corpus) WALDir() string { return filepath.Join(c.Dir, "wal") }

// DataDir is the data directory of the cluster that wrote the segments.
func (c *Corpus) DataDir() string { return filepath.Join(c.Dir, "pgdata") }

// LogPath is that cluster's server log.
func (c *Corpus) LogPath() string { return filepath.Join(c.Dir, "server.log") }

// Path returns the file of segment name.
func (c *Corpus) Path(name string) string { return filepath.Join(c.WALDir(), name) }

// Bytes is the total size of the segments.
func (c *Corpus) Bytes() int64 { return int64(len(c.Segments)) * c.SegmentSize }

// DefaultDir is $PITR_BENCH_CACHE, else bench/.cache in the module that
// contains the working directory (found by walking up to pitr's go.mod).
func DefaultDir() (string, error) {
	if d := os.Getenv(envCacheDir); d != "" {
		return filepath.Abs(d)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/pitr-dev/pitr\n")) {
			return filepath.Join(d, "bench", ".cache"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("cannot find pitr's go.mod above %s; set %s", wd, envCacheDir)
		}
	}
}

// ErrMissing means there is no complete corpus in the directory.
var ErrMissing = errors.New("no WAL corpus")

// Load returns the corpus in dir after checking that every segment listed in
// the manifest is present with the right size.
func Load(dir string) (*Corpus, error) { return load(dir, SegmentSize) }

func load(dir string, segmentSize int64) (*Corpus, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrMissing, dir)
	}
	if err != nil {
		return nil, err
	}
	c := &Corpus{Dir: dir}
	if err := json.Unmarshal(b, &c.Manifest); err != nil {
		return nil, fmt.Errorf("%w in %s: bad manifest: %v", ErrMissing, dir, err)
	}
	if c.Version != manifestVersion || c.SegmentSize != segmentSize || len(c.Segments) == 0 {
		return nil, fmt.Errorf("%w in %s: manifest version %d, segment size %d, %d segments",
			ErrMissing, dir, c.Version, c.SegmentSize, len(c.Segments))
	}
	for _, name := range c.Segments {
		fi, err := os.Stat(c.Path(name))
		if err != nil || fi.Size() != c.SegmentSize {
			return nil, fmt.Errorf("%w in %s: segment %s missing or truncated", ErrMissing, dir, name)
		}
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "global", "pg_control")); err != nil {
		return nil, fmt.Errorf("%w in %s: data directory: %v", ErrMissing, dir, err)
	}
	return c, nil
}

// Options control generation.
type Options struct {
	MinSegments int   // at least this many segments (default 128)
	SegmentSize int64 // initdb --wal-segsize, in bytes (default 16 MiB)
	Scale       int   // pgbench -i scale (default 20: ~300 MB, more than shared_buffers)
	Clients     int   // pgbench -c (default 4)
	Threads     int   // pgbench -j (default 2)
	Logf        func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if o.MinSegments <= 0 {
		o.MinSegments = 128
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = SegmentSize
	}
	if o.Scale <= 0 {
		o.Scale = 20
	}
	if o.Clients <= 0 {
		o.Clients = 4
	}
	if o.Threads <= 0 {
		o.Threads = 2
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// Ensure loads the corpus in dir, or generates it there when it is missing,
// incomplete or smaller than opts.MinSegments. generated reports which.
func Ensure(ctx context.Context, dir string, u runas.User, opts Options) (c *Corpus, generated bool, err error) {
	opts = opts.withDefaults()
	c, err = load(dir, opts.SegmentSize)
	if err == nil && len(c.Segments) >= opts.MinSegments {
		return c, false, nil
	}
	if err == nil {
		opts.Logf("cached corpus in %s has %d segments, fewer than %d: regenerating", dir, len(c.Segments), opts.MinSegments)
	} else if !errors.Is(err, ErrMissing) {
		return nil, false, err
	}
	if err := generate(ctx, dir, u, opts); err != nil {
		return nil, false, fmt.Errorf("generate WAL corpus in %s: %w", dir, err)
	}
	c, err = load(dir, opts.SegmentSize)
	return c, true, err
}

// settings are the server settings used while generating, besides archiving.
// checkpoint_timeout is short so that the segments carry full-page images
// after every checkpoint, as a busy production server's WAL does, rather
// than only the small records of a server that never checkpoints;
// synchronous_commit=off lets pgbench produce ~2 GB of WAL in about two
// minutes on a small machine (it changes when commits are flushed, not what
// the WAL records are).
var settings = [][2]string{
	{"checkpoint_timeout", "30s"},
	{"synchronous_commit", "off"},
	{"logging_collector", "off"},
	{"wal_level", "replica"},
}

func generate(ctx context.Context, dir string, u runas.User, opts Options) error {
	start := time.Now()
	binDir, err := BinDir()
	if err != nil {
		return err
	}
	// Start from scratch, removing only what this package creates.
	for _, p := range []string{manifestName, "wal", "pgdata", "server.log"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			return err
		}
	}
	if err := u.MkdirShared(dir); err != nil {
		return err
	}
	if err := makeParentsTraversable(dir); err != nil {
		return err
	}
	walDir := filepath.Join(dir, "wal")
	if err := u.MkdirShared(walDir); err != nil {
		return err
	}
	c := &Cluster{User: u, BinDir: binDir, DataDir: filepath.Join(dir, "pgdata"), LogPath: filepath.Join(dir, "server.log"), SockDir: dir}
	opts.Logf("initdb %s", c.DataDir)
	if _, err := c.cmd(ctx, "initdb", "-D", c.DataDir, "-A", "trust", "-U", "postgres", "-N", "-E", "UTF8", "--locale=C",
		"--wal-segsize="+strconv.FormatInt(opts.SegmentSize>>20, 10)); err != nil {
		return err
	}
	archive := fmt.Sprintf("test ! -f %[1]s/%%f && cp %%p %[1]s/.%%f.tmp && mv %[1]s/.%%f.tmp %[1]s/%%f", walDir)
	conf := append([][2]string{{"archive_mode", "on"}, {"archive_command", archive}}, settings...)
	if err := c.writeConf(conf); err != nil {
		return err
	}
	cl, err := StartCluster(ctx, u, binDir, c.DataDir, c.LogPath)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Stop(context.Background()) }()

	segno := func() (uint64, error) {
		name, err := cl.Query(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())")
		if err != nil {
			return 0, err
		}
		return segmentNumber(name, opts.SegmentSize)
	}
	first, err := segno()
	if err != nil {
		return err
	}
	opts.Logf("pgbench -i -s %d", opts.Scale)
	if _, err := cl.cmd(ctx, "pgbench", "-i", "-s", strconv.Itoa(opts.Scale), "-q"); err != nil {
		return err
	}
	if _, err := cl.Query(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	afterInit, err := segno()
	if err != nil {
		return err
	}

	// pgbench -T in chunks until enough WAL exists; each chunk's length is
	// estimated from the WAL rate of the previous one.
	var runSeconds, txns float64
	chunk := 15
	tpsRe := regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	for {
		cur, err := segno()
		if err != nil {
			return err
		}
		done := int(cur - first)
		if done >= opts.MinSegments {
			break
		}
		if runSeconds > 900 {
			return fmt.Errorf("only %d segments after %.0f s of pgbench", done, runSeconds)
		}
		opts.Logf("pgbench -T %d -c %d -j %d (%d/%d segments)", chunk, opts.Clients, opts.Threads, done, opts.MinSegments)
		t0 := time.Now()
		out, err := cl.cmd(ctx, "pgbench", "-T", strconv.Itoa(chunk), "-c", strconv.Itoa(opts.Clients), "-j", strconv.Itoa(opts.Threads))
		if err != nil {
			return err
		}
		secs := time.Since(t0).Seconds()
		runSeconds += secs
		if m := tpsRe.FindStringSubmatch(out); m != nil {
			tps, _ := strconv.ParseFloat(m[1], 64)
			txns += tps * float64(chunk)
		}
		after, err := segno()
		if err != nil {
			return err
		}
		rate := float64(after-cur) / secs // segments per second
		left := float64(opts.MinSegments - int(after-first))
		chunk = 15
		if rate > 0 {
			chunk = int(math.Ceil(left/rate)) + 2
		}
		chunk = min(max(chunk, 3), 60)
	}
	last, err := cl.Query(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err != nil {
		return err
	}
	opts.Logf("waiting for the archiver (last segment %s)", last)
	if err := cl.waitArchived(ctx, last, 5*time.Minute); err != nil {
		return err
	}
	pgVersion, err := cl.Query(ctx, "SHOW server_version")
	if err != nil {
		return err
	}
	if err := cl.Stop(ctx); err != nil {
		return err
	}
	// From now on the data directory only serves as pgBackRest's pg1-path
	// and pitr's working directory: no more archiving, and no need to keep
	// pgbench's tables or a gigabyte of recycled WAL in the cache.
	// PostgreSQL wants min_wal_size and max_wal_size of at least two segments.
	mb := func(n int64) string { return strconv.FormatInt(max(n, 2*opts.SegmentSize)>>20, 10) + "MB" }
	if err := c.writeConf(append([][2]string{{"archive_mode", "off"}, {"min_wal_size", mb(32 << 20)}, {"max_wal_size", mb(64 << 20)}}, settings...)); err != nil {
		return err
	}
	if cl, err = StartCluster(ctx, u, binDir, c.DataDir, c.LogPath); err != nil {
		return err
	}
	// Each checkpoint lowers the server's estimate of the WAL it needs by a
	// tenth; dozens of them let it remove the recycled segments.
	// With large segments min_wal_size keeps two of them whatever happens,
	// and every switch would start another: two rounds are enough.
	rounds := 60
	if opts.SegmentSize > SegmentSize {
		rounds = 2
	}
	shrink := []string{"DROP TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"}
	for i := 0; i < rounds; i++ {
		shrink = append(shrink, "SELECT pg_switch_wal()", "CHECKPOINT")
	}
	if err := cl.Exec(ctx, shrink...); err != nil {
		return err
	}
	if err := cl.Stop(ctx); err != nil {
		return err
	}

	m := Manifest{
		Version:      manifestVersion,
		PostgreSQL:   pgVersion,
		SegmentSize:  opts.SegmentSize,
		InitSegments: int(afterInit - first),
		Scale:        opts.Scale,
		Clients:      opts.Clients,
		Threads:      opts.Threads,
		RunSeconds:   math.Round(runSeconds*10) / 10,
		GeneratedAt:  time.Now().UTC().Truncate(time.Second),
	}
	if runSeconds > 0 {
		m.TPS = math.Round(txns / runSeconds)
	}
	for _, kv := range settings {
		m.Settings = append(m.Settings, kv[0]+"="+kv[1])
	}
	if m.Segments, err = listSegments(walDir); err != nil {
		return err
	}
	if len(m.Segments) < opts.MinSegments {
		return fmt.Errorf("only %d segments archived, want %d", len(m.Segments), opts.MinSegments)
	}
	sysID, err := checkSegments(walDir, m.Segments, opts.SegmentSize, filepath.Join(c.DataDir, "global", "pg_control"))
	if err != nil {
		return err
	}
	m.SystemIdentifier = strconv.FormatUint(sysID, 10)
	if m.ZeroPagePercent, err = zeroPagePercent(walDir, m.Segments); err != nil {
		return err
	}
	m.FPIPercent = fpiPercent(ctx, c, walDir, m.Segments)
	m.GenerateSeconds = math.Round(time.Since(start).Seconds())

	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+manifestName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, manifestName))
}

// segmentNumber parses a segment's file name into its segment number.
func segmentNumber(name string, segmentSize int64) (uint64, error) {
	if len(name) != 24 {
		return 0, fmt.Errorf("not a WAL segment name: %q", name)
	}
	log, err1 := strconv.ParseUint(name[8:16], 16, 32)
	seg, err2 := strconv.ParseUint(name[16:24], 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("not a WAL segment name: %q", name)
	}
	return log*(0x100000000/uint64(segmentSize)) + seg, nil
}

var segmentName = regexp.MustCompile(`^[0-9A-F]{24}$`)

func listSegments(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && segmentName.MatchString(e.Name()) {
			names = append(names, e.Name())
			// Readable by anyone: the in-process benchmarks may run as
			// another user than the one that archived them.
			if err := os.Chmod(filepath.Join(dir, e.Name()), 0o644); err != nil {
				return nil, err
			}
		}
	}
	sort.Strings(names)
	return names, nil
}

// checkSegments verifies every segment's size and long page header and that
// they all name the data directory's system; it returns that system id.
func checkSegments(dir string, names []string, segmentSize int64, pgControl string) (uint64, error) {
	ctl, err := wal.ReadControlSystemID(pgControl)
	if err != nil {
		return 0, err
	}
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return 0, err
		}
		fi, err := f.Stat()
		buf := make([]byte, wal.LongPageHeaderSize)
		if err == nil {
			_, err = io.ReadFull(f, buf)
		}
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		if fi.Size() != segmentSize {
			return 0, fmt.Errorf("%s: %d bytes, want %d", name, fi.Size(), segmentSize)
		}
		h, err := wal.ParseLongPageHeader(buf)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		if h.SystemID != ctl {
			return 0, fmt.Errorf("%s: system identifier %d, data directory has %d", name, h.SystemID, ctl)
		}
	}
	return ctl, nil
}

func zeroPagePercent(dir string, names []string) (float64, error) {
	const page = 8192
	var zero, total int64
	buf := make([]byte, 1<<20)
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return 0, err
		}
		r := bufio.NewReaderSize(f, 1<<20)
		for {
			n, err := io.ReadFull(r, buf)
			for off := 0; off+page <= n; off += page {
				total++
				if isZero(buf[off : off+page]) {
					zero++
				}
			}
			if err != nil {
				break
			}
		}
		f.Close()
	}
	if total == 0 {
		return 0, nil
	}
	return math.Round(1000*float64(zero)/float64(total)) / 10, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// fpiPercent asks pg_waldump --stats for the share of full-page images in
// the WAL bytes; -1 when it cannot tell.
func fpiPercent(ctx context.Context, c *Cluster, dir string, names []string) float64 {
	out, _ := c.cmd(ctx, "pg_waldump", "--stats", "-p", dir, names[0], names[len(names)-1])
	m := regexp.MustCompile(`(?m)^Total\s+\d+\s+\d+ \[[0-9.]+%\]\s+\d+ \[([0-9.]+)%\]`).FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// makeParentsTraversable adds the search bit for everyone to dir's ancestors
// that lack it, so the cluster user can reach dir (as pgtest does).
func makeParentsTraversable(dir string) error {
	if !runas.IsRoot() {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o111 != 0o111 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o111); err != nil {
				return err
			}
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
}

// Describe is a one-line description of the corpus for reports.
func (c *Corpus) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d × %d MiB WAL segments (%.2f GiB) from PostgreSQL %s, system %s: pgbench -i -s %d (%d segments) then -T %.0fs -c %d -j %d (%.0f tps); %s",
		len(c.Segments), c.SegmentSize>>20, float64(c.Bytes())/(1<<30), c.PostgreSQL, c.SystemIdentifier,
		c.Scale, c.InitSegments, c.RunSeconds, c.Clients, c.Threads, c.TPS, strings.Join(c.Settings, ", "))
	if c.FPIPercent >= 0 {
		fmt.Fprintf(&b, "; %.1f%% of WAL bytes are full-page images", c.FPIPercent)
	}
	fmt.Fprintf(&b, "; %.1f%% all-zero 8 KiB pages", c.ZeroPagePercent)
	return b.String()
}
