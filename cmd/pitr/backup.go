package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/internal/units"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// backupCodecConcurrency: a backup or dump is one long stream, unlike
// archive-push, so zstd compresses it in 4 MiB frames on two workers while
// the next chunk is read from the server (with libzstd; see
// storage/codec/frames.go).
const backupCodecConcurrency = 2

func runBackup(ctx context.Context, env *environment, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "list":
			return runBackupList(ctx, env, args[1:])
		case "show":
			return runBackupShow(ctx, env, args[1:])
		}
	}
	fs := newFlagSet(env, "backup", "backup [flags]   (take a base backup; also: backup list, backup show NAME)")
	load := configFlags(fs)
	label := fs.String("label", "", "backup label recorded by PostgreSQL (default \"pitr backup <name>\")")
	fast := fs.Bool("fast", false, "start with an immediate checkpoint instead of a spread one (config: backup_fast_checkpoint)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: unexpected argument %q (subcommands come first: pitr backup list, pitr backup show NAME)", errUsage, pos[0])
	}
	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	if *fast {
		cfg.BackupFastCheckpoint = true
	}
	b, err := takeBackup(ctx, env, cfg, st, *label)
	if err != nil {
		return err
	}
	// The name on stdout, for scripts; everything else went to the log.
	fmt.Fprintln(env.stdout, b.Name)
	return nil
}

// backupMemoryLimit is the Go runtime's soft memory limit during a backup.
// The stream's buffers (S3 multipart parts, zstd windows) are a steady ~50
// MiB of live heap; without a limit the collector lets the heap grow to
// twice that before collecting. The limit keeps the process well under 100
// MB next to the database it backs up, for a few percent of CPU.
const backupMemoryLimit = 64 << 20

// takeBackup takes one base backup with the configured settings and logs
// its summary; `pitr backup` and `pitr agent` both run it.
func takeBackup(ctx context.Context, env *environment, cfg Config, st storage.Store, label string) (basebackup.Backup, error) {
	opts, err := backupOptions(cfg, st)
	if err != nil {
		return basebackup.Backup{}, err
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(backupMemoryLimit)
	}
	opts.Label = label
	opts.Log = env.log
	start := time.Now()
	b, err := basebackup.Take(ctx, opts)
	if err != nil {
		return b, err
	}
	env.log.Info("backup complete", "backup", b.Name, "start_lsn", b.StartLSN, "stop_lsn", b.StopLSN,
		"timeline", b.StopTimeline, "size", b.Size, "stored", b.StoredSize, "ratio", ratio(b.Size, b.StoredSize),
		"duration", time.Since(start).Round(time.Millisecond))
	return b, nil
}

// backupOptions maps the configuration onto basebackup.Options.
func backupOptions(cfg Config, st storage.Store) (basebackup.Options, error) {
	copts, err := codecOptions(cfg)
	if err != nil {
		return basebackup.Options{}, err
	}
	copts.Concurrency = backupCodecConcurrency
	opts := basebackup.Options{
		Store:          st,
		Codec:          copts,
		DSN:            cfg.DSN,
		PGBin:          cfg.PGBin,
		FastCheckpoint: cfg.BackupFastCheckpoint,
		MaxRate:        cfg.BackupMaxRate,
		PitrVersion:    version,
	}
	if cfg.BackupWALTimeout != "" {
		d, err := time.ParseDuration(cfg.BackupWALTimeout)
		if err != nil || d <= 0 {
			return opts, fmt.Errorf("backup_wal_timeout %q is not a positive duration (e.g. 5m)", cfg.BackupWALTimeout)
		}
		opts.WALTimeout = d
	}
	return opts, nil
}

// openBackupCatalog opens the repository and returns its database system.
func openBackupCatalog(ctx context.Context, env *environment, load func() (Config, error)) (storage.Store, repo.SystemID, error) {
	_, st, err := openRepository(ctx, env, load)
	if err != nil {
		return nil, 0, err
	}
	m, err := repo.ReadMarker(ctx, st)
	if err != nil {
		return nil, 0, err
	}
	return st, m.SystemIdentifier, nil
}

func runBackupList(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "backup list", "backup list [--json]")
	load := configFlags(fs)
	asJSON := fs.Bool("json", false, "print the backups as a JSON array (stable schema, see DESIGN.md)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: backup list takes no arguments", errUsage)
	}
	st, id, err := openBackupCatalog(ctx, env, load)
	if err != nil {
		return err
	}
	backups, err := basebackup.List(ctx, st, id)
	if err != nil {
		return err
	}
	if *asJSON {
		if backups == nil {
			backups = []basebackup.Backup{}
		}
		return writeJSON(env.stdout, backups)
	}
	writeBackupTable(env.stdout, backups)
	// Running or interrupted backups are not backups; say they exist so
	// nobody wonders where the space went.
	if inc, err := basebackup.ListIncomplete(ctx, st, id); err == nil && len(inc) > 0 {
		var names []string
		for _, i := range inc {
			names = append(names, i.Name)
		}
		fmt.Fprintf(env.stderr, "not listed: %d incomplete backup(s), running or interrupted: %s\n", len(inc), strings.Join(names, ", "))
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

const tableTime = "2006-01-02 15:04:05"

func writeBackupTable(w io.Writer, backups []basebackup.Backup) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTART (UTC)\tSTOP (UTC)\tSTART LSN\tSTOP LSN\tTL\tSIZE\tSTORED\tRATIO\tPG")
	for _, b := range backups {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			b.Name, b.StartTime.UTC().Format(tableTime), b.StopTime.UTC().Format(tableTime),
			b.StartLSN, b.StopLSN, timelines(b), units.Bytes(b.Size), units.Bytes(b.StoredSize),
			ratio(b.Size, b.StoredSize), units.PGVersion(b.PGVersionNum))
	}
	tw.Flush()
}

func timelines(b basebackup.Backup) string {
	if b.StartTimeline == b.StopTimeline {
		return fmt.Sprint(b.StartTimeline)
	}
	return fmt.Sprintf("%d-%d", b.StartTimeline, b.StopTimeline)
}

func runBackupShow(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "backup show", "backup show NAME [--json]")
	load := configFlags(fs)
	asJSON := fs.Bool("json", false, "print the backup's metadata as JSON (stable schema, see DESIGN.md)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want exactly one backup name (see pitr backup list)", errUsage)
	}
	st, id, err := openBackupCatalog(ctx, env, load)
	if err != nil {
		return err
	}
	b, err := basebackup.Read(ctx, st, id, pos[0])
	if errors.Is(err, basebackup.ErrNoBackup) {
		return fmt.Errorf("backup %s does not exist (or never completed); see pitr backup list", pos[0])
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(env.stdout, b)
	}
	return writeBackupDetails(env.stdout, b)
}

func writeBackupDetails(w io.Writer, b basebackup.Backup) error {
	seg, err := b.SegmentSize()
	if err != nil {
		return err
	}
	first := seg.FileName(wal.Segment{TLI: b.StartTimeline, No: seg.SegmentOf(b.StartLSN)})
	last := seg.FileName(wal.Segment{TLI: b.StopTimeline, No: seg.SegmentOfEnd(b.StopLSN)})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	row("name", b.Name)
	row("label", b.Label)
	row("system identifier", b.SystemIdentifier)
	row("PostgreSQL", fmt.Sprintf("%s (server_version_num %d)", units.PGVersion(b.PGVersionNum), b.PGVersionNum))
	row("taken from", fmt.Sprintf("%s, with %s", orDash(b.BackupFrom), orDash(b.Method)))
	row("start", fmt.Sprintf("%s  LSN %s  timeline %d  (checkpoint %s)", b.StartTime.UTC().Format(time.RFC3339Nano), b.StartLSN, b.StartTimeline, b.CheckpointLSN))
	row("stop", fmt.Sprintf("%s  LSN %s  timeline %d", b.StopTime.UTC().Format(time.RFC3339Nano), b.StopLSN, b.StopTimeline))
	row("duration", b.StopTime.Sub(b.StartTime).Round(time.Millisecond))
	row("WAL needed", fmt.Sprintf("%s .. %s to be consistent; recovering to a later point needs the WAL after it too", first, last))
	row("WAL segment size", seg)
	row("data checksums", b.DataChecksums)
	row("size", fmt.Sprintf("%s (%d bytes), stored %s (%d bytes, %s), ratio %s",
		units.Bytes(b.Size), b.Size, units.Bytes(b.StoredSize), b.StoredSize, b.Codec, ratio(b.Size, b.StoredSize)))
	for _, p := range b.Parts {
		sum := p.Checksum
		if sum == "" {
			sum = "sha256:" + p.SHA256
		}
		row("part "+p.Name, fmt.Sprintf("%s, stored %s, %s", units.Bytes(p.Size), units.Bytes(p.StoredSize), sum))
	}
	for _, ts := range b.Tablespaces {
		row(fmt.Sprintf("tablespace %d", ts.OID), fmt.Sprintf("%s at %s (%s)", orDash(ts.Name), ts.Location, ts.Part))
	}
	for _, f := range b.ConfigFiles {
		switch {
		case f.Error != "":
			row("config "+f.Kind, fmt.Sprintf("%s NOT CAPTURED: %s", orDash(f.Path), f.Error))
		case f.InDataDirectory:
			row("config "+f.Kind, f.Path+" (in the data directory, restored with it)")
		default:
			row("config "+f.Kind, fmt.Sprintf("%s (%s, %s)", f.Path, f.Object, units.Bytes(f.Size)))
		}
	}
	row("pitr version", b.PitrVersion)
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
