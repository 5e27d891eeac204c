// Command pitr archives PostgreSQL WAL and base backups to a repository and
// restores them to a point in time.
//
// This package is the only place with flags, environment, config files,
// logger setup, signal handling and os.Exit; everything below takes typed
// parameters and returns errors.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/pitr-dev/pitr/storage/codec"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
	// exitCode maps a failure of this command to a process exit status; nil
	// means the default (1, or 2 for usage errors).
	exitCode func(err error, signalled bool) int
	// oneShot marks commands PostgreSQL starts once per WAL file. They run
	// for tens of milliseconds and allocate a few tens of MB, so garbage
	// collection is pure overhead there (measured: ~30 ms per segment);
	// a memory limit still bounds them.
	oneShot bool
	// hidden commands are started by pitr itself, not by people.
	hidden bool
}

func commands() []command {
	return []command{
		{name: "archive-push", summary: "archive one WAL file (archive_command = 'pitr archive-push %p')", run: runArchivePush, exitCode: archivePushExit, oneShot: true},
		{name: "wal-fetch", summary: "restore one WAL file (restore_command = 'pitr wal-fetch %f %p')", run: runWALFetch, exitCode: walFetchExit, oneShot: true},
		{name: "wal-prefetch", summary: "background prefetcher started by wal-fetch", run: runWALPrefetch, hidden: true},
		{name: "archive-ahead", summary: "background archiver started by archive-push for a backlog", run: runArchiveAhead, hidden: true},
		{name: "backup", summary: "take a base backup (backup list, backup show NAME)", run: runBackup},
		{name: "dump", summary: "logical dumps: pg_dump -Fc of each database plus globals (dump list, dump restore NAME --db TARGET)", run: runDump},
		{name: "prune", summary: "delete old backups and the WAL no kept backup needs", run: runPrune},
		{name: "agent", summary: "run scheduled backups and pruning in the foreground", run: runAgent},
		{name: "restore", summary: "restore to a point in time (--target TIME --pgdata DIR)", run: runRestore},
		{name: "drill", summary: "prove the backups restore: restore into a scratch directory, start, check, report", run: runDrill},
		{name: "stream", summary: "stream WAL continuously from the server (replication slot) so a crash loses seconds, not a segment", run: runStream},
		{name: "status", summary: "archive lag, WAL gaps, backups, recovery window, last drill; non-zero past thresholds", run: runStatus},
		{name: "check", summary: "check the archiving setup end to end; names each wrong setting and its fix", run: runCheck},
		{name: "key", summary: "encryption keys: key generate FILE (new private key, prints the public key), key public FILE", run: runKey},
		{name: "version", summary: "print the version", run: runVersion},
	}
}

// environment carries process-level things into commands, so tests can run
// a command in-process with their own streams.
type environment struct {
	stdout, stderr io.Writer
	logLevel       *slog.LevelVar
	log            *slog.Logger
}

// oneShotMemoryLimit is where the collector runs after all in a one-shot
// command: far above what a 16 MiB segment needs, and what bounds a 1 GiB one.
const oneShotMemoryLimit = 256 << 20

// errUsage marks a command-line mistake: exit 2 with the usage text.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	level := new(slog.LevelVar)
	env := &environment{stdout: stdout, stderr: stderr, logLevel: level,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}

	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 && args[1] == "config" {
			fmt.Fprint(stdout, configDoc())
			return 0
		}
		usage(stdout)
		return 0
	}
	if args[0] == "--version" {
		args[0] = "version"
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == args[0] {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "pitr: unknown command %q (try pitr help)\n", args[0])
		return 2
	}

	if cmd.oneShot && os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(oneShotMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, env, args[1:])
	if err == nil {
		return 0
	}
	signalled := ctx.Err() != nil
	code := 1
	switch {
	case errors.Is(err, flag.ErrHelp):
		code = 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "pitr %s: %s\n", cmd.name, strings.TrimPrefix(err.Error(), "usage: "))
		code = 2
	case errors.As(err, new(reportedError)):
	default:
		env.log.Error(cmd.name+" failed", "err", err)
	}
	// Commands called by PostgreSQL have exit statuses fixed by its
	// contracts, even for a usage mistake in the configured command line.
	if cmd.exitCode != nil {
		code = cmd.exitCode(err, signalled)
	}
	return code
}

// reportedError wraps an error the command has already logged as it wanted.
type reportedError struct{ error }

func (e reportedError) Unwrap() error { return e.error }

func usage(w io.Writer) {
	fmt.Fprintln(w, "pitr: PostgreSQL WAL archiving and point-in-time recovery")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'pitr COMMAND -h' for a command's flags and 'pitr help config' for the configuration schema.")
}

// newFlagSet returns a flag set whose errors come back to run() instead of
// exiting, and that prints its usage to the command's stderr.
func newFlagSet(env *environment, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: pitr %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseInterspersed parses flags that may appear before, between or after
// positional arguments (pitr wal-fetch %f %p --repo ...), and returns the
// positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// setupLogging applies the configured level and format to env.log.
func setupLogging(env *environment, cfg Config) error {
	switch strings.ToLower(cfg.LogLevel) {
	case "", "info":
		env.logLevel.Set(slog.LevelInfo)
	case "debug":
		env.logLevel.Set(slog.LevelDebug)
	case "warn", "warning":
		env.logLevel.Set(slog.LevelWarn)
	case "error":
		env.logLevel.Set(slog.LevelError)
	default:
		return fmt.Errorf("log_level %q is not debug, info, warn or error", cfg.LogLevel)
	}
	switch strings.ToLower(cfg.LogFormat) {
	case "", "text":
	case "json":
		env.log = slog.New(slog.NewJSONHandler(env.stderr, &slog.HandlerOptions{Level: env.logLevel}))
	default:
		return fmt.Errorf("log_format %q is not text or json", cfg.LogFormat)
	}
	return nil
}

func runVersion(_ context.Context, env *environment, args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("%w: pitr version takes no arguments", errUsage)
	}
	fmt.Fprintf(env.stdout, "pitr %s\n", version)
	fmt.Fprintf(env.stdout, "zstd encoder: %s\n", codec.Encoder)
	return nil
}
