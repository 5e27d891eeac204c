package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/storage/retry"
)

// archivePushExit implements the archive_command contract: any failure is
// exit 1, never above 125 (which would make the archiver restart instead of
// retrying and counting the failure in pg_stat_archiver).
func archivePushExit(error, bool) int { return 1 }

// archivePushArgs parses archive-push's command line. The background
// archiver is started with the same arguments, so both parse them here.
func archivePushArgs(ctx context.Context, env *environment, name, usage string, args []string) (a *archive.Archiver, walPath string, ahead int, err error) {
	fs := newFlagSet(env, name, usage)
	load := configFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, "", 0, err
	}
	if len(pos) != 1 {
		return nil, "", 0, fmt.Errorf("%w: want exactly one WAL file path (%%p), got %d arguments", errUsage, len(pos))
	}
	cfg, err := load()
	if err != nil {
		return nil, "", 0, err
	}
	if ahead, err = parseArchiveAhead(cfg.ArchiveAhead); err != nil {
		return nil, "", 0, err
	}
	a, err = newArchiver(ctx, env, func() (Config, error) { return cfg, nil }, defaultRetries)
	return a, pos[0], ahead, err
}

func runArchivePush(ctx context.Context, env *environment, args []string) error {
	a, walPath, ahead, err := archivePushArgs(ctx, env, "archive-push", "archive-push [flags] WAL_PATH   (archive_command = 'pitr archive-push %p')", args)
	if err != nil {
		return err
	}
	if a.DataDir != "" {
		if removed, err := archive.RemoveStaleSpool(a.DataDir); err != nil {
			env.log.Warn("cannot remove a leftover wal-fetch prefetch spool", "err", err)
		} else if removed {
			env.log.Info("removed a leftover wal-fetch prefetch spool", "dir", "pg_wal/"+archive.PrefetchDir)
		}
	}
	res, err := a.PushBacklog(ctx, walPath, ahead, func(walDir string, lock *os.File) error {
		return startArchiveAhead(walDir, lock, args)
	})
	if err != nil {
		return err
	}
	if res.Started {
		env.log.Info("started the background archiver for the backlog", "parallel", ahead, "log", filepath.Join("pg_wal", archive.SpoolDir, archive.AheadLog))
	}
	// A file the background archiver stored is logged with the outcome it
	// recorded, plus ahead=true and how long this call waited for it.
	var extra []any
	if res.FromSpool {
		extra = []any{"ahead", true, "waited", res.Waited.Round(1e5)}
	}
	switch {
	case res.AlreadyArchived:
		env.log.Info("already archived, identical", append([]any{"file", res.Name, "size", res.Size, "duration", res.Duration.Round(1e5)}, extra...)...)
	default:
		env.log.Info("archived", append([]any{"file", res.Name, "size", res.Size, "stored", res.Stored,
			"ratio", ratio(res.Size, res.Stored), "duration", res.Duration.Round(1e5), "replaced_corrupt", res.Replaced}, extra...)...)
	}
	return nil
}

// startArchiveAhead starts `pitr archive-ahead` with archive-push's own
// arguments (so the same configuration), detached like the wal-fetch
// prefetcher: its own session and no stdio shared with the server, so
// PostgreSQL's system() returns as soon as archive-push exits. It inherits
// the locked lock file as descriptor 3 and holds the lock until it exits.
func startArchiveAhead(walDir string, lock *os.File, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(walDir, archive.SpoolDir, archive.AheadLog)
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > aheadLogMax {
		flags |= os.O_TRUNC
	}
	logf, err := os.OpenFile(logPath, flags, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	closeInheritedOnExec()
	cmd := exec.Command(exe, append([]string{"archive-ahead"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{lock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// aheadLogMax: the background archiver's log is appended to, and started
// afresh once it is larger than this.
const aheadLogMax = 1 << 20

// runArchiveAhead is the background archiver started by archive-push when
// it finds a backlog. It takes archive-push's arguments and drains every
// ready file of that pg_wal, archive_ahead at a time.
func runArchiveAhead(ctx context.Context, env *environment, args []string) error {
	a, walPath, ahead, err := archivePushArgs(ctx, env, "archive-ahead", "archive-ahead [archive-push's flags and arguments]", args)
	if err != nil {
		return err
	}
	lock := os.NewFile(3, "lock")
	defer lock.Close()
	if p := os.Getenv(prefetchRusageEnv); p != "" {
		defer appendRusage(p)
	}
	return a.ArchiveAhead(ctx, filepath.Dir(walPath), ahead, lock)
}

// defaultArchiveAhead: the background archiver's concurrent uploads, half
// the CPUs (2 to 8), like the wal-fetch prefetcher's downloads, so the
// database keeps the other half. Measured on 2 cores: 2 drained as fast as
// 4 (local and S3) with 80 MiB peak RSS instead of 130.
func defaultArchiveAhead() int { return min(max(2, runtime.NumCPU()/2), 8) }

func parseArchiveAhead(v string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return defaultArchiveAhead(), nil
	case "off", "0", "false":
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 64 {
		return 0, fmt.Errorf("archive_ahead %q is not off or a number from 0 to 64", v)
	}
	return n, nil
}

// newArchiver loads the configuration and opens the repository. The working
// directory of archive_command and restore_command is the data directory, so
// global/pg_control identifies the cluster when present.
func newArchiver(ctx context.Context, env *environment, load func() (Config, error), retries retry.Options) (*archive.Archiver, error) {
	cfg, err := load()
	if err != nil {
		return nil, err
	}
	if err := setupLogging(env, cfg); err != nil {
		return nil, err
	}
	opts, err := codecOptions(cfg)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg, env.log, retries)
	if err != nil {
		return nil, err
	}
	a := &archive.Archiver{Store: st, Codec: opts, Log: env.log}
	if _, err := os.Stat("global/pg_control"); err == nil {
		a.ControlFile = "global/pg_control"
		a.DataDir = "."
	}
	return a, nil
}

func ratio(orig, stored int64) string {
	if stored <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(orig)/float64(stored))
}
