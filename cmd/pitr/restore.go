package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
)

// repeatedFlag collects a flag given several times (--tablespace-map).
type repeatedFlag []string

func (r *repeatedFlag) String() string     { return strings.Join(*r, ",") }
func (r *repeatedFlag) Set(v string) error { *r = append(*r, v); return nil }

func runRestore(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "restore", "restore --pgdata DIR (--target TIME|immediate|latest | --target-lsn LSN | --target-xid XID | --target-name NAME) [flags]")
	load := configFlags(fs)
	target := fs.String("target", "", `recovery target: a time "YYYY-MM-DD HH:MM[:SS] [zone]", "immediate" (end of the backup) or "latest" (end of the archive)`)
	targetLSN := fs.String("target-lsn", "", "stop at this WAL location (e.g. 0/3000060)")
	targetXID := fs.String("target-xid", "", "stop at the commit of this transaction id")
	targetName := fs.String("target-name", "", "stop at the first restore point of this name (pg_create_restore_point)")
	timeline := fs.String("target-timeline", "latest", "timeline to follow: latest (the newest the backup can reach), current (the backup's) or a number")
	action := fs.String("target-action", "promote", "what the server does at the target: promote, pause or shutdown")
	exclusive := fs.Bool("exclusive", false, "stop just before the target instead of just after it (time, LSN and xid targets)")
	tz := fs.String("tz", "", "time zone for a --target time without one (default: $TZ, else this machine's zone)")
	pgdata := fs.String("pgdata", "", "data directory to restore into (must be empty or absent)")
	backupName := fs.String("backup", "", "restore this backup instead of choosing one")
	force := fs.Bool("force", false, "delete the contents of a non-empty --pgdata first, and overwrite existing files in --config-dir")
	configDir := fs.String("config-dir", "", "where the backup's captured configuration files (postgresql.conf, pg_hba.conf, ... from outside the data directory) are restored, each below its original path (default <pgdata>_config)")
	dryRun := fs.Bool("dry-run", false, "print the plan and exit without touching the disk")
	skipCheck := fs.Bool("skip-target-check", false, "do not scan the archived WAL (pg_waldump) for a commit after a time target")
	start := fs.Bool("start", false, "start the restored server, wait until recovery reaches the target, and report where it stopped")
	port := fs.Int("port", 0, "port for --start (default: a free port)")
	timeout := fs.Duration("start-timeout", 0, "give up waiting for recovery after this long (default: no limit)")
	var tsMap repeatedFlag
	fs.Var(&tsMap, "tablespace-map", "OID=DIR: restore tablespace OID into DIR (repeatable; default <pgdata>_tablespaces/<oid>)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: unexpected arguments %q (did you quote the --target time?)", errUsage, pos)
	}
	if *pgdata == "" && !*dryRun {
		return fmt.Errorf("%w: --pgdata is required", errUsage)
	}
	if *start && !*dryRun && geteuid() == 0 {
		// Before anything is written: the restore would be laid out,
		// and the prefetcher started, for a server that cannot start.
		return errors.New("--start: PostgreSQL does not run as root; run pitr restore as the database's OS user (e.g. sudo -u postgres)")
	}

	zone := time.Local
	if *tz != "" {
		if zone, err = time.LoadLocation(*tz); err != nil {
			return fmt.Errorf("%w: --tz %q: unknown time zone", errUsage, *tz)
		}
	}
	t, err := parseTarget(*target, *targetLSN, *targetXID, *targetName, zone)
	if err != nil {
		return err
	}
	if t.Timeline, err = pitr.ParseTimeline(*timeline); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if t.Action, err = pitr.ParseAction(*action); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	t.Exclusive = *exclusive
	mapping, err := parseTablespaceMap(tsMap)
	if err != nil {
		return err
	}

	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	marker, err := repo.ReadMarker(ctx, st)
	if err != nil {
		return err
	}
	in, err := pitr.LoadInputs(ctx, st, marker.SystemIdentifier)
	if err != nil {
		return err
	}
	in.Target, in.Backup = t, *backupName
	plan, err := pitr.MakePlan(in)
	if err != nil {
		return err
	}
	restoreCmd, note, err := restoreCommandFor(cfg)
	if err != nil {
		return err
	}
	if note != "" {
		plan.Notes = append(plan.Notes, note)
	}
	restoreCmd = withPartial(restoreCmd, plan)
	plan.Describe(env.stdout)
	fmt.Fprintf(env.stdout, "    restore_command = '%s'\n", restoreCmd)
	if !*skipCheck {
		if err := checkCommitAfterTarget(ctx, env, cfg, st, plan); err != nil {
			return err
		}
	}
	if *dryRun {
		fmt.Fprintln(env.stdout, "dry run: nothing was written")
		return nil
	}
	if *configDir == "" {
		abs, _ := filepath.Abs(*pgdata)
		*configDir = abs + "_config"
	}
	if err := basebackup.CheckConfigRestore(plan.Backup, *configDir, *force); err != nil {
		return err
	}
	err = pitr.Execute(ctx, st, plan, pitr.RestoreOptions{
		PGData: *pgdata, Force: *force, TablespaceMap: mapping, RestoreCommand: restoreCmd,
	}, env.log)
	if err != nil {
		return err
	}
	seedPrefetch(env, cfg, plan, *pgdata)
	if err := restoreConfigFiles(ctx, env, st, plan.Backup, *configDir, *force); err != nil {
		return err
	}
	abs, _ := filepath.Abs(*pgdata)
	if !*start {
		fmt.Fprintf(env.stdout, "restored backup %s into %s with recovery.signal; start the server (pg_ctl -D %s start) and it replays to the target\n",
			plan.Backup.Name, abs, abs)
		return nil
	}
	return startRestored(ctx, env, cfg, plan, abs, *port, *timeout)
}

// seedPrefetch tells wal-fetch's prefetcher which segment recovery reads
// first (archive.SeedPrefetch), unless fetch_ahead is off. A failure only
// costs the head start, so it is logged, not returned.
func seedPrefetch(env *environment, cfg Config, plan pitr.Plan, pgdata string) {
	if ahead, err := parseFetchAhead(cfg.FetchAhead); err != nil || ahead == 0 || len(plan.WAL) == 0 {
		return
	}
	if err := archive.SeedPrefetch(pgdata, plan.Backup.SystemIdentifier, plan.WAL[0].Name, plan.Backup.WALSegmentSize); err != nil {
		env.log.Warn("cannot tell the prefetcher where recovery starts", "err", err)
	}
}

// geteuid is os.Geteuid; tests replace it to be root without being root.
var geteuid = os.Geteuid

// startRestored starts the restored server and reports where recovery
// stopped, or the server's reason for failing.
func startRestored(ctx context.Context, env *environment, cfg Config, plan pitr.Plan, pgdata string, port int, timeout time.Duration) error {
	bin, err := pitr.FindPGBin(cfg.PGBin, plan.Backup.PGVersionNum)
	if err != nil {
		return err
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			return err
		}
	}
	logFile := filepath.Join(pgdata, "pitr-restore.log")
	fmt.Fprintf(env.stdout, "starting PostgreSQL on port %d (log: %s)\n", port, logFile)
	out, err := pitr.StartAndWait(ctx, pitr.StartOptions{PGBin: bin, PGData: pgdata, Port: port, LogFile: logFile, Action: plan.Target.Action, Timeout: timeout, FastPromote: true})
	if err != nil {
		return err
	}
	if out.StopLine != "" {
		fmt.Fprintf(env.stdout, "%s\n", out.StopLine)
	} else {
		fmt.Fprintf(env.stdout, "replayed the archive to its end\n")
	}
	if out.LastTransaction != "" {
		fmt.Fprintf(env.stdout, "last replayed transaction committed at %s; redo done at %s\n", out.LastTransaction, out.RedoDone)
	}
	how := ""
	if out.PromotedAtPause {
		how = " (pitr promoted it where recovery paused at the target: no end-of-recovery checkpoint to wait for)"
	}
	fmt.Fprintf(env.stdout, "server %s%s, port %d\n", out.State, how, port)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// checkCommitAfterTarget scans the archive's WAL after a time target for a
// commit, with the backup's pg_waldump. Only a completed scan that found
// none refuses the restore; when the scan cannot run, the restore goes on
// with a warning (PostgreSQL still reports the problem, after replay).
func checkCommitAfterTarget(ctx context.Context, env *environment, cfg Config, st storage.Store, plan pitr.Plan) error {
	if plan.Target.Kind != pitr.TargetTime || len(plan.Tail) == 0 {
		return nil
	}
	bin, err := pitr.FindPGBin(cfg.PGBin, plan.Backup.PGVersionNum)
	if err != nil {
		env.log.Warn("cannot check that a commit after the target is archived", "err", err)
		return nil
	}
	dir, err := os.MkdirTemp("", "pitr-scan-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	a := &archive.Archiver{Store: st, Log: env.log}
	err = plan.CheckCommitAfterTarget(ctx, pitr.CommitScanner{
		Waldump: filepath.Join(bin, "pg_waldump"),
		Dir:     dir,
		Fetch: func(ctx context.Context, name, dest string) error {
			_, err := a.Fetch(ctx, name, dest)
			return err
		},
	})
	var none *pitr.ErrNoCommitAfterTarget
	switch {
	case errors.As(err, &none):
		return err
	case err != nil:
		env.log.Warn("cannot check that a commit after the target is archived", "err", err)
	default:
		fmt.Fprintln(env.stdout, "  checked:   a transaction committed after the target is in the archive")
	}
	return nil
}

// withPartial adds --partial to restore_command when the plan ends with pitr
// stream's .partial: wal-fetch serves that one segment from it, and no other
// .partial, so a server's own .partial of an abandoned timeline is never
// replayed by accident.
func withPartial(cmd string, plan pitr.Plan) string {
	if plan.Partial == "" {
		return cmd
	}
	return strings.Replace(cmd, " wal-fetch ", " wal-fetch --partial "+strings.TrimSuffix(plan.Partial, ".partial")+" ", 1)
}

// parseTarget turns the mutually exclusive target flags into a pitr.Target.
func parseTarget(target, lsn, xid, name string, zone *time.Location) (pitr.Target, error) {
	given := 0
	for _, v := range []string{target, lsn, xid, name} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return pitr.Target{}, fmt.Errorf("%w: give exactly one of --target TIME|immediate|latest, --target-lsn, --target-xid, --target-name", errUsage)
	}
	switch {
	case lsn != "":
		l, err := wal.ParseLSN(lsn)
		if err != nil {
			return pitr.Target{}, fmt.Errorf("%w: --target-lsn: %v", errUsage, err)
		}
		return pitr.Target{Kind: pitr.TargetLSN, LSN: l}, nil
	case xid != "":
		x, err := strconv.ParseUint(xid, 10, 64)
		if err != nil || x < 3 {
			return pitr.Target{}, fmt.Errorf("%w: --target-xid %q is not a transaction id", errUsage, xid)
		}
		return pitr.Target{Kind: pitr.TargetXID, XID: x}, nil
	case name != "":
		if len(name) >= 64 {
			return pitr.Target{}, fmt.Errorf("%w: --target-name is longer than a restore point name can be (63 bytes)", errUsage)
		}
		return pitr.Target{Kind: pitr.TargetName, Name: name}, nil
	}
	switch strings.ToLower(target) {
	case "immediate":
		return pitr.Target{Kind: pitr.TargetImmediate}, nil
	case "latest":
		return pitr.Target{Kind: pitr.TargetLatest}, nil
	}
	at, zoneDesc, err := pitr.ParseTargetTime(target, zone)
	if err != nil {
		return pitr.Target{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	return pitr.Target{Kind: pitr.TargetTime, Time: at, Zone: zoneDesc}, nil
}

func parseTablespaceMap(pairs []string) (map[uint32]string, error) {
	out := map[uint32]string{}
	for _, p := range pairs {
		oidText, dir, ok := strings.Cut(p, "=")
		oid, err := strconv.ParseUint(oidText, 10, 32)
		if !ok || err != nil || !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("%w: --tablespace-map %q is not OID=/absolute/dir", errUsage, p)
		}
		out[uint32(oid)] = filepath.Clean(dir)
	}
	return out, nil
}

// restoreCommandFor builds the restore_command the restored server runs: this
// binary, with every non-secret repository setting in effect spelled out so
// the server finds the repository without the restoring user's environment.
// Secrets stay out of it (it is visible in pg_settings); they must come from a
// config file, the server's environment or its OS user's AWS configuration.
func restoreCommandFor(cfg Config) (cmd, note string, err error) {
	self, err := os.Executable()
	if err != nil {
		return "", "", fmt.Errorf("find the pitr binary for restore_command: %w", err)
	}
	parts := []string{self, "wal-fetch"}
	if cfg.File != "" {
		parts = append(parts, "--config", cfg.File)
	}
	parts = append(parts, "--repo", cfg.Repo)
	if cfg.S3Endpoint != "" {
		parts = append(parts, "--s3-endpoint", cfg.S3Endpoint)
	}
	if cfg.S3Region != "" {
		parts = append(parts, "--s3-region", cfg.S3Region)
	}
	if cfg.S3ForcePathStyle {
		parts = append(parts, "--s3-force-path-style=true")
	}
	for _, p := range parts {
		if strings.ContainsAny(p, " '\"\\$`") {
			return "", "", errors.New("restore_command: the pitr path and repository settings must not contain spaces or quotes: " + p)
		}
	}
	if strings.HasPrefix(cfg.Repo, "s3://") && cfg.File == "" {
		note = "the restored server needs S3 credentials for restore_command: AWS_* variables in its environment, ~/.aws of its OS user, or a config file (--config)"
	}
	return strings.Join(append(parts, "%f", "%p"), " "), note, nil
}

// restoreConfigFiles puts the backup's captured configuration files below
// dir and says where each went, and which restored settings still name
// paths of the source host.
func restoreConfigFiles(ctx context.Context, env *environment, st storage.Store, b basebackup.Backup, dir string, force bool) error {
	restored, notes, err := basebackup.RestoreConfig(ctx, st, b, dir, force)
	for _, r := range restored {
		fmt.Fprintf(env.stdout, "restored configuration file %s (%s) to %s\n", r.Original, r.Kind, r.Restored)
	}
	for _, n := range notes {
		fmt.Fprintf(env.stdout, "note: %s\n", n)
	}
	if err != nil {
		return err
	}
	switch {
	case len(b.ConfigFiles) == 0:
		fmt.Fprintf(env.stdout, "backup %s has no captured configuration files (taken before pitr captured them)\n", b.Name)
	case len(restored) == 0 && len(notes) == 0:
		fmt.Fprintln(env.stdout, "the server's configuration files were all inside the data directory and are restored with it")
	}
	return nil
}
