package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/pitr-dev/pitr/archive"
)

// Exit statuses of wal-fetch, per the restore_command contract.
const (
	// exitNotFound tells PostgreSQL the file is not in the archive: normal at
	// the end of WAL and for probes of future .history files.
	exitNotFound = 1
	// exitAbortRecovery is above 125, which makes PostgreSQL stop recovery
	// with a FATAL error. Used for everything that is not a definite "not
	// archived" (corrupt object, unreachable repository, bad configuration),
	// so that recovery never ends early at the wrong point.
	exitAbortRecovery = 255
	// exitTerminated is 128+SIGTERM, which PostgreSQL treats like the command
	// being killed by SIGTERM during shutdown.
	exitTerminated = 128 + 15
)

func walFetchExit(err error, signalled bool) int {
	switch {
	case signalled:
		return exitTerminated
	case errors.Is(err, archive.ErrNotArchived):
		return exitNotFound
	}
	return exitAbortRecovery
}

func runWALFetch(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "wal-fetch", "wal-fetch [flags] WAL_NAME DEST_PATH   (restore_command = 'pitr wal-fetch %f %p')")
	load := configFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: want a WAL file name (%%f) and a destination path (%%p), got %d arguments", errUsage, len(pos))
	}
	a, err := newArchiver(ctx, env, load, fetchRetries)
	if err != nil {
		return err
	}
	res, err := a.Fetch(ctx, pos[0], pos[1])
	if errors.Is(err, archive.ErrNotArchived) {
		// Expected at the end of WAL and for .history probes: not an error
		// worth alarming anyone in the server log.
		env.log.Info("not in the archive", "file", pos[0])
		return reportedError{err}
	}
	if err != nil {
		return err
	}
	env.log.Info("fetched", "file", res.Name, "size", res.Size, "codec", res.Codec.String(), "duration", res.Duration.Round(1e5))
	return nil
}
