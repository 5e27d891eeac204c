package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
)

// errCheckFailed is returned after check has printed its findings.
var errCheckFailed = errors.New("check failed")

func runCheck(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "check", "check [--probe-timeout 1m] [--no-probe] [flags]")
	load := configFlags(fs)
	probeTimeout := fs.Duration("probe-timeout", time.Minute, "how long the end-to-end probe waits for the switched WAL segment to reach the repository")
	noProbe := fs.Bool("no-probe", false, "skip the end-to-end probe (it forces a WAL segment switch on the server)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: check takes no arguments (got %q)", errUsage, pos[0])
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	if err := setupLogging(env, cfg); err != nil {
		return err
	}
	var results []pitr.CheckResult
	add := func(r pitr.CheckResult) {
		results = append(results, r)
		fmt.Fprintf(env.stdout, "%-4s %-16s %s\n", r.Result, r.Name, r.Detail)
	}
	addf := func(name, result, format string, a ...any) {
		add(pitr.CheckResult{Name: name, Result: result, Detail: fmt.Sprintf(format, a...)})
	}

	// The repository: reachable, writable, and whose.
	st, err := openStore(ctx, cfg, env.log, defaultRetries)
	repoOK := false
	var repoSkew time.Duration
	if err != nil {
		addf("repository", pitr.CheckFail, "%v. Fix: set repo (--repo, PITR_REPO or the config file) to a reachable file:// or s3:// location", err)
	} else {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		skew, perr := pitr.ProbeRepository(pctx, st, time.Now)
		cancel()
		if perr != nil {
			addf("repository", pitr.CheckFail, "%s is not usable: %v. Fix: check the URL, credentials and permissions (pitr needs to write, read and delete objects)", cfg.Repo, perr)
		} else {
			repoOK, repoSkew = true, skew
			addf("repository", pitr.CheckPass, "%s: wrote, read back and deleted a probe object", cfg.Repo)
		}
	}

	conn, err := pitr.ConnectServer(ctx, cfg.DSN, "pitr check")
	if err != nil {
		addf("server", pitr.CheckFail, "cannot connect: %v. Fix: set dsn (--dsn, PITR_DSN) or the PG* environment to reach the server as a superuser", err)
		return finishCheck(env.stdout, results)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	s, err := pitr.ReadServerSettings(ctx, conn)
	if err != nil {
		addf("server", pitr.CheckFail, "%v", err)
		return finishCheck(env.stdout, results)
	}
	addf("server", pitr.CheckPass, "PostgreSQL %d.%d, system %s%s", s.VersionNum/10000, s.VersionNum%10000, s.SystemIdentifier, map[bool]string{true: ", in recovery", false: ""}[s.InRecovery])
	repoOf := func(file string) (string, error) {
		var c Config
		if _, err := loadConfigFile(&c, file); err != nil {
			return "", err
		}
		return c.Repo, nil
	}
	settingsOK := true
	for _, r := range pitr.CheckSettings(s, cfg.Repo, repoOf, DefaultConfigFile) {
		add(r)
		if r.Result == pitr.CheckFail && (r.Name == "archive_mode" || r.Name == "archive_command" || r.Name == "wal_level") {
			settingsOK = false
		}
	}
	add(pitr.CheckBaseBackupBinary(ctx, cfg.PGBin, s.VersionNum))
	serverSkew, err := pitr.ServerClockSkew(ctx, conn, time.Now)
	if err != nil {
		addf("clock", pitr.CheckFail, "read the server clock: %v", err)
	} else {
		add(pitr.CheckClock(serverSkew, repoSkew))
	}

	switch {
	case *noProbe:
		addf("probe", pitr.CheckSkip, "--no-probe")
	case s.InRecovery:
		addf("probe", pitr.CheckSkip, "the server is in recovery: pg_switch_wal() is not available; run pitr check against the primary")
	case !repoOK || !settingsOK:
		addf("probe", pitr.CheckSkip, "fix the failures above first")
	default:
		name, err := pitr.SwitchAndWait(ctx, conn, st, s.SystemIdentifier, *probeTimeout)
		if err != nil {
			addf("probe", pitr.CheckFail, "%v. Fix: see the server log for archive_command errors, and pg_stat_archiver", err)
		} else {
			addf("probe", pitr.CheckPass, "pg_switch_wal() completed %s and it reached the repository", name)
		}
	}
	if repoOK {
		m, err := repo.ReadMarker(ctx, st)
		switch {
		case errors.Is(err, repo.ErrNoRepository):
			addf("system", pitr.CheckSkip, "nothing archived into %s yet; the first archived segment creates the repository", cfg.Repo)
		case err != nil:
			addf("system", pitr.CheckFail, "%v", err)
		case m.SystemIdentifier != s.SystemIdentifier:
			addf("system", pitr.CheckFail, "the repository belongs to system %s, the server is %s. Fix: give this cluster its own repository (another path or prefix)", m.SystemIdentifier, s.SystemIdentifier)
		default:
			addf("system", pitr.CheckPass, "the repository belongs to this server's system %s", s.SystemIdentifier)
		}
	}
	return finishCheck(env.stdout, results)
}

func finishCheck(w io.Writer, results []pitr.CheckResult) error {
	failed := 0
	for _, r := range results {
		if r.Result == pitr.CheckFail {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(w, "check FAILED: %d problem(s)\n", failed)
		return reportedError{errCheckFailed}
	}
	fmt.Fprintln(w, "check PASSED")
	return nil
}
