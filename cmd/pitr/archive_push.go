package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/storage/retry"
)

// archivePushExit implements the archive_command contract: any failure is
// exit 1, never above 125 (which would make the archiver restart instead of
// retrying and counting the failure in pg_stat_archiver).
func archivePushExit(error, bool) int { return 1 }

func runArchivePush(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "archive-push", "archive-push [flags] WAL_PATH   (archive_command = 'pitr archive-push %p')")
	load := configFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want exactly one WAL file path (%%p), got %d arguments", errUsage, len(pos))
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	ahead, err := parseArchiveAhead(cfg.ArchiveAhead)
	if err != nil {
		return err
	}
	a, err := newArchiver(ctx, env, func() (Config, error) { return cfg, nil }, defaultRetries)
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
	res, err := a.PushBacklog(ctx, pos[0], ahead)
	if err != nil {
		return err
	}
	switch {
	case res.FromSpool:
		env.log.Info("archived earlier, ahead of this call", "file", res.Name, "size", res.Size, "duration", res.Duration.Round(1e5))
	case res.AlreadyArchived:
		env.log.Info("already archived, identical", "file", res.Name, "size", res.Size, "duration", res.Duration.Round(1e5))
	default:
		env.log.Info("archived", "file", res.Name, "size", res.Size, "stored", res.Stored,
			"ratio", ratio(res.Size, res.Stored), "duration", res.Duration.Round(1e5), "replaced_corrupt", res.Replaced)
	}
	if len(res.Ahead) > 0 || res.AheadErrs > 0 {
		env.log.Info("archived ahead", "files", len(res.Ahead), "failed", res.AheadErrs, "first", first(res.Ahead))
	}
	return nil
}

// defaultArchiveAhead: two extra uploads drain a backlog about three times
// as fast and leave cores for the database on a small server.
const defaultArchiveAhead = 2

func parseArchiveAhead(v string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return defaultArchiveAhead, nil
	case "off", "0", "false":
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 64 {
		return 0, fmt.Errorf("archive_ahead %q is not off or a number from 0 to 64", v)
	}
	return n, nil
}

func first(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
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
