package pitr

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/storage"
)

// RestoreOptions say where and how to lay out the restored cluster.
type RestoreOptions struct {
	PGData string
	// Force allows a non-empty PGData: its contents are removed first. A
	// data directory in use by a running server is refused even then.
	Force bool
	// TablespaceMap relocates tablespaces by OID; unmapped ones go next to
	// the data directory (<pgdata>_tablespaces/<oid>).
	TablespaceMap map[uint32]string
	// RestoreCommand is written as restore_command.
	RestoreCommand string
	Now            func() time.Time
}

// Execute lays out the data directory for plan: the base backup, the
// recovery settings and recovery.signal. It does not start PostgreSQL.
func Execute(ctx context.Context, st storage.Store, plan Plan, opts RestoreOptions, log *slog.Logger) error {
	if opts.RestoreCommand == "" {
		return errors.New("restore: no restore_command")
	}
	pgdata, err := filepath.Abs(opts.PGData)
	if err != nil {
		return err
	}
	if err := checkLateTablespaces(plan.LateTablespaces, log); err != nil {
		return err
	}
	if err := prepareDataDir(pgdata, opts.Force, log); err != nil {
		return err
	}
	tsMap := map[uint32]string{}
	for _, ts := range plan.Backup.Tablespaces {
		dir, ok := opts.TablespaceMap[ts.OID]
		if !ok {
			dir = filepath.Join(pgdata+"_tablespaces", strconv.FormatUint(uint64(ts.OID), 10))
		}
		tsMap[ts.OID] = dir
	}
	for oid := range opts.TablespaceMap {
		if _, ok := tsMap[oid]; !ok {
			return fmt.Errorf("restore: --tablespace-map names OID %d, which backup %s does not have", oid, plan.Backup.Name)
		}
	}
	log.Info("restoring base backup", "backup", plan.Backup.Name, "pgdata", pgdata, "bytes", plan.Backup.StoredSize)
	if err := basebackup.Extract(ctx, st, plan.Backup, pgdata, tsMap); err != nil {
		return fmt.Errorf("restore backup %s: %w", plan.Backup.Name, err)
	}
	if err := writeRecoveryConfig(pgdata, plan, opts, log); err != nil {
		return err
	}
	return nil
}

// checkLateTablespaces refuses a restore whose replay would recreate a
// tablespace in a directory that exists and holds files on this host: on
// the source's own host that is the live cluster's tablespace, which the
// restored server would then write into. PostgreSQL replays CREATE
// TABLESPACE with the absolute path from WAL; no mapping can redirect it.
func checkLateTablespaces(late []archive.Tablespace, log *slog.Logger) error {
	for _, ts := range late {
		entries, err := os.ReadDir(ts.Location)
		switch {
		case errors.Is(err, os.ErrNotExist):
			log.Warn("replay will create a tablespace that was created after the backup, at its original path", "oid", ts.OID, "location", ts.Location)
		case err != nil:
			return fmt.Errorf("restore: tablespace %d at %s was created after the backup and replay would recreate it there; cannot check that directory: %w", ts.OID, ts.Location, err)
		case len(entries) > 0:
			return fmt.Errorf("restore: tablespace %d at %s was created after the backup, and replay would recreate it at that absolute path, which exists and is not empty on this host (the source cluster's tablespace?); restore on another host, from a backup taken after the tablespace was created, or to a target before its creation", ts.OID, ts.Location)
		default:
			log.Warn("replay will recreate a tablespace created after the backup in an existing empty directory", "oid", ts.OID, "location", ts.Location)
		}
	}
	return nil
}

// prepareDataDir makes sure pgdata exists, is empty (or is emptied with
// force), belongs to no running server and has PostgreSQL's permissions.
func prepareDataDir(pgdata string, force bool, log *slog.Logger) error {
	entries, err := os.ReadDir(pgdata)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(pgdata, 0o700)
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	}
	if len(entries) == 0 {
		return os.Chmod(pgdata, 0o700)
	}
	if pid, ok := runningPostmaster(pgdata); ok {
		return fmt.Errorf("restore: %s is the data directory of a running server (postmaster.pid: PID %d); stop it first", pgdata, pid)
	}
	if !force {
		return fmt.Errorf("restore: %s is not empty; restore into an empty directory, or pass --force to delete its contents", pgdata)
	}
	log.Warn("--force: deleting the contents of the data directory", "pgdata", pgdata, "entries", len(entries))
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(pgdata, e.Name())); err != nil {
			return fmt.Errorf("restore: empty %s: %w", pgdata, err)
		}
	}
	return os.Chmod(pgdata, 0o700)
}

// recoveryParams are the settings pitr owns in postgresql.auto.conf: stale
// values from the source server or an earlier restore would otherwise win
// or conflict ("multiple recovery targets specified").
var recoveryParams = map[string]bool{
	"restore_command": true, "recovery_target": true, "recovery_target_time": true,
	"recovery_target_lsn": true, "recovery_target_xid": true, "recovery_target_name": true,
	"recovery_target_inclusive": true, "recovery_target_timeline": true, "recovery_target_action": true,
	"recovery_end_command": true, "archive_cleanup_command": true,
}

func writeRecoveryConfig(pgdata string, plan Plan, opts RestoreOptions, log *slog.Logger) error {
	// Files that would change how the server starts: recovery.conf is a
	// FATAL since PostgreSQL 12, standby.signal would make it a standby that
	// never finishes recovery.
	for _, name := range []string{"recovery.conf", "standby.signal", "postmaster.pid", "postmaster.opts"} {
		p := filepath.Join(pgdata, name)
		if _, err := os.Stat(p); err == nil {
			log.Warn("removing file from the restored data directory", "file", name)
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	autoConf := filepath.Join(pgdata, "postgresql.auto.conf")
	old, err := os.ReadFile(autoConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(old))
	for sc.Scan() {
		line := sc.Text()
		name, _, _ := strings.Cut(strings.TrimSpace(line), "=")
		if recoveryParams[strings.ToLower(strings.TrimSpace(name))] {
			fmt.Fprintf(&out, "# disabled by pitr restore: %s\n", line)
			continue
		}
		out.WriteString(line + "\n")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	fmt.Fprintf(&out, "\n# pitr restore %s: backup %s, target %s\n", now().UTC().Format(time.RFC3339), plan.Backup.Name, describeTarget(plan.Target))
	fmt.Fprintf(&out, "restore_command = %s\n", quoteConf(opts.RestoreCommand))
	for _, s := range plan.Settings {
		fmt.Fprintf(&out, "%s = %s\n", s.Name, quoteConf(s.Value))
	}
	if err := writeFileSync(autoConf, out.Bytes(), 0o600); err != nil {
		return err
	}
	return writeFileSync(filepath.Join(pgdata, "recovery.signal"), nil, 0o600)
}

func writeFileSync(p string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
