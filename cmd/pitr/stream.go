package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/pitr"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/stream"
)

func runStream(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "stream", "stream [flags]   (continuous WAL streaming from --dsn into the repository; runs in the foreground)")
	load := configFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: stream takes no arguments (got %q)", errUsage, pos[0])
	}
	cfg, st, err := openRepository(ctx, env, load)
	if err != nil {
		return err
	}
	s, err := newStreamer(env, cfg, st)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// newStreamer checks the stream settings; shared by pitr stream and the agent.
func newStreamer(env *environment, cfg Config, st storage.Store) (*stream.Streamer, error) {
	interval := stream.DefaultInterval
	if cfg.StreamInterval != "" {
		d, err := time.ParseDuration(cfg.StreamInterval)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("stream_interval %q: want a positive duration such as 10s", cfg.StreamInterval)
		}
		interval = d
	}
	copts, err := codecOptions(cfg)
	if err != nil {
		return nil, err
	}
	return stream.New(stream.Options{
		DSN: cfg.DSN, Slot: cfg.StreamSlot, Interval: interval,
		Store: st, Codec: copts, Log: env.log,
	})
}

// partialFlag is wal-fetch's --partial SEGMENT, which pitr restore adds to
// restore_command when its plan ends with pitr stream's .partial.
func partialFlag(fs *flag.FlagSet) *string {
	return fs.String("partial", "", "serve this segment, if it is not archived complete, from its .partial (set by pitr restore when the plan ends with pitr stream's segment in progress)")
}

// fetchPartial serves segment name from name.partial: the whole segment
// size, zeros after what was streamed, which replay reads as the end of WAL,
// so recovery ends at the last complete record the streamer stored.
func fetchPartial(ctx context.Context, env *environment, a *archive.Archiver, name, dest string) (archive.FetchResult, error) {
	res, err := a.Fetch(ctx, name+".partial", dest)
	if err == nil {
		env.log.Info("served the segment from pitr stream's .partial", "file", name)
	}
	return res, err
}

// streamStatus adds pitr stream's progress and slot to pitr status.
func streamStatus(ctx context.Context, cfg Config, st storage.Store, id repo.SystemID, s *pitr.Status, server bool) error {
	state, err := stream.ReadState(ctx, st, id)
	if err != nil {
		return err
	}
	slot := cfg.StreamSlot
	if slot == "" {
		slot = stream.DefaultSlot
	}
	ss := pitr.StreamStatusOf(state, slot, s.CheckedAt)
	if server {
		pitr.QueryStreamSlot(ctx, cfg.DSN, ss)
	}
	if ss.Recorded || ss.SlotExists {
		s.Stream = ss
	}
	return nil
}
