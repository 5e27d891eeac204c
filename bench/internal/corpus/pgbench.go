package corpus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/bench/internal/runas"
)

// A pgbench cluster is a stopped PostgreSQL 15 data directory initialised by
// `pgbench -i -s SCALE`, cached so that backupbench does not spend a minute
// or two loading data on every run. It is never started in place: each run
// copies it (CopyPGBenchCluster) and works on the copy, so every run starts
// from the same bytes.
//
// Layout of its directory (default <cache>/pgbench-s<scale>):
//
//	pgbench.json    written last; without it the directory is regenerated
//	pgdata/         the data directory, shut down cleanly
//	server.log      the log of the initialisation
const pgbenchManifestName = "pgbench.json"

const pgbenchManifestVersion = 1

// PGBenchManifest describes a cached pgbench cluster.
type PGBenchManifest struct {
	Version          int       `json:"version"`
	Scale            int       `json:"pgbench_scale"`
	PostgreSQL       string    `json:"postgresql"`
	SystemIdentifier string    `json:"system_identifier"`
	DatabaseBytes    int64     `json:"database_bytes"` // pg_database_size of the postgres database
	DataDirBytes     int64     `json:"data_dir_bytes"` // the whole data directory on disk
	GeneratedAt      time.Time `json:"generated_at"`
	GenerateSeconds  float64   `json:"generate_seconds"`
}

// PGBenchCluster is a loaded cached cluster.
type PGBenchCluster struct {
	Dir string
	PGBenchManifest
}

// DataDir is the cached (stopped) data directory; copy it before use.
func (p *PGBenchCluster) DataDir() string { return filepath.Join(p.Dir, "pgdata") }

// PGBenchDir is the cache directory of the pgbench cluster of a scale, below
// the corpus cache directory.
func PGBenchDir(cacheDir string, scale int) string {
	return filepath.Join(cacheDir, fmt.Sprintf("pgbench-s%d", scale))
}

// LoadPGBench returns the cached cluster in dir.
func LoadPGBench(dir string) (*PGBenchCluster, error) {
	b, err := os.ReadFile(filepath.Join(dir, pgbenchManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no pgbench cluster in %s", ErrMissing, dir)
	}
	if err != nil {
		return nil, err
	}
	p := &PGBenchCluster{Dir: dir}
	if err := json.Unmarshal(b, &p.PGBenchManifest); err != nil || p.Version != pgbenchManifestVersion {
		return nil, fmt.Errorf("%w: pgbench cluster in %s: bad or old manifest", ErrMissing, dir)
	}
	ctl := filepath.Join(p.DataDir(), "global", "pg_control")
	id, err := wal.ReadControlSystemID(ctl)
	if err != nil {
		return nil, fmt.Errorf("%w: pgbench cluster in %s: %v", ErrMissing, dir, err)
	}
	if strconv.FormatUint(id, 10) != p.SystemIdentifier {
		return nil, fmt.Errorf("%w: pgbench cluster in %s: pg_control names system %d, manifest %s", ErrMissing, dir, id, p.SystemIdentifier)
	}
	return p, nil
}

// EnsurePGBench loads the cached cluster of this scale in dir, or creates it
// (initdb, pgbench -i -s scale, clean shutdown) when missing or unreadable.
func EnsurePGBench(ctx context.Context, dir string, u runas.User, scale int, logf func(string, ...any)) (p *PGBenchCluster, generated bool, err error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	p, err = LoadPGBench(dir)
	if err == nil && p.Scale == scale {
		return p, false, nil
	}
	if err != nil && !errors.Is(err, ErrMissing) {
		return nil, false, err
	}
	if err := generatePGBench(ctx, dir, u, scale, logf); err != nil {
		return nil, false, fmt.Errorf("generate pgbench cluster in %s: %w", dir, err)
	}
	p, err = LoadPGBench(dir)
	return p, true, err
}

// loadSettings are used only while loading: nothing here is measured, and
// the copy gets the benchmark's own settings.
var loadSettings = [][2]string{
	{"wal_level", "minimal"},
	{"max_wal_senders", "0"},
	{"archive_mode", "off"},
	{"fsync", "off"}, // a clean shutdown (and a sync) follows
	{"synchronous_commit", "off"},
	{"max_wal_size", "4GB"},
	{"checkpoint_timeout", "30min"},
	{"logging_collector", "off"},
}

func generatePGBench(ctx context.Context, dir string, u runas.User, scale int, logf func(string, ...any)) error {
	start := time.Now()
	binDir, err := BinDir()
	if err != nil {
		return err
	}
	for _, p := range []string{pgbenchManifestName, "pgdata", "server.log"} {
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
	c := &Cluster{User: u, BinDir: binDir, DataDir: filepath.Join(dir, "pgdata"), LogPath: filepath.Join(dir, "server.log"), SockDir: dir}
	logf("initdb %s", c.DataDir)
	if _, err := c.cmd(ctx, "initdb", "-D", c.DataDir, "-A", "trust", "-U", "postgres", "-N", "-E", "UTF8", "--locale=C"); err != nil {
		return err
	}
	if err := c.writeConf(loadSettings); err != nil {
		return err
	}
	cl, err := StartCluster(ctx, u, binDir, c.DataDir, c.LogPath)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Stop(context.Background()) }()
	logf("pgbench -i -s %d (once; cached in %s)", scale, dir)
	if _, err := cl.cmd(ctx, "pgbench", "-i", "-s", strconv.Itoa(scale), "-q"); err != nil {
		return err
	}
	if _, err := cl.Query(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	var m PGBenchManifest
	if m.PostgreSQL, err = cl.Query(ctx, "SHOW server_version"); err != nil {
		return err
	}
	if m.SystemIdentifier, err = cl.Query(ctx, "SELECT system_identifier FROM pg_control_system()"); err != nil {
		return err
	}
	size, err := cl.Query(ctx, "SELECT pg_database_size('postgres')")
	if err != nil {
		return err
	}
	if m.DatabaseBytes, err = strconv.ParseInt(size, 10, 64); err != nil {
		return err
	}
	if err := cl.Stop(ctx); err != nil {
		return err
	}
	if _, err := runas.Run(exec.CommandContext(ctx, "sync")); err != nil {
		return err
	}
	if m.DataDirBytes, err = DirBytes(c.DataDir); err != nil {
		return err
	}
	m.Version, m.Scale = pgbenchManifestVersion, scale
	m.GeneratedAt = time.Now().UTC().Truncate(time.Second)
	m.GenerateSeconds = math.Round(time.Since(start).Seconds())
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+pgbenchManifestName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, pgbenchManifestName))
}

// CopyDataDir copies a stopped data directory to dst (which must not exist),
// preserving owners and modes, and makes dst's parents traversable for the
// cluster user.
func CopyDataDir(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("copy data directory: %s exists", dst)
	}
	if err := makeParentsTraversable(dst); err != nil {
		return err
	}
	_, err := runas.Run(exec.CommandContext(ctx, "cp", "-a", "--", src, dst))
	return err
}

// DirBytes is the total size of the regular files under dir.
func DirBytes(dir string) (int64, error) {
	var total int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			total += fi.Size()
		}
		return nil
	})
	return total, err
}

// WriteConf replaces the benchmark's settings file of the (stopped or
// about to be reloaded) cluster with these settings; postgresql.conf
// includes it.
func (c *Cluster) WriteConf(settings [][2]string) error { return c.writeConf(settings) }

// NewCluster describes a stopped cluster (for WriteConf) without starting it.
func NewCluster(u runas.User, binDir, dataDir, logPath string) *Cluster {
	return &Cluster{User: u, BinDir: binDir, DataDir: dataDir, LogPath: logPath, SockDir: filepath.Dir(dataDir)}
}

// Cmd runs a PostgreSQL program of the cluster's bin directory as the
// cluster user, connected to the running server through PG* variables.
func (c *Cluster) Cmd(ctx context.Context, name string, args ...string) (string, error) {
	return c.cmd(ctx, name, args...)
}

// PostmasterPID is the server's PID from postmaster.pid.
func (c *Cluster) PostmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}
