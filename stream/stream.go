// Package stream is pitr's physical replication client: it receives WAL from
// the server as it is written and keeps the repository seconds behind, so a
// crash loses seconds of commits instead of up to a whole segment.
//
// The segment in progress is held in memory (one segment, zero-filled past
// what was received; above MemorySegmentLimit in a temporary file instead,
// so memory stays bounded whatever the segment size) and uploaded as
// <segment>.partial every Interval; the finished segment goes under its
// normal name with archive-push's rules. The server is told (flush position)
// only about WAL that is durably in the repository, so the replication slot
// keeps everything pitr has not stored.
package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pitr-dev/pitr/archive"
	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/internal/lazyre"
	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// DefaultSlot and DefaultInterval are the stream_slot and stream_interval
// defaults.
const (
	DefaultSlot     = "pitr"
	DefaultInterval = 10 * time.Second
)

// Options configure a Streamer.
type Options struct {
	DSN      string // libpq connection string; replication=true is added
	Slot     string
	Interval time.Duration // how often the segment in progress is uploaded
	Store    storage.Store // the repository root
	Codec    codec.Options
	Log      *slog.Logger
	// MaxBackoff caps the wait between reconnection attempts (default 30s).
	MaxBackoff time.Duration
	// TempDir holds the segment in progress when it is larger than
	// MemorySegmentLimit (default os.TempDir()).
	TempDir string
}

// State is what the streamer records in the repository (repo.StreamStateKey)
// after every upload, for pitr status and for resuming.
type State struct {
	Slot     string          `json:"slot"`
	Timeline wal.TimelineID  `json:"timeline"`
	Durable  wal.LSN         `json:"durable_lsn"` // WAL before this is in the repository
	Segment  string          `json:"segment"`     // the segment in progress
	Received wal.LSN         `json:"received_lsn"`
	Server   wal.LSN         `json:"server_lsn"` // the server's WAL end, last reported
	Upload   time.Time       `json:"last_upload"`
	Host     string          `json:"host"`
	PID      int             `json:"pid"`
	Stopped  bool            `json:"stopped,omitempty"` // clean shutdown
	Segsize  wal.SegmentSize `json:"segment_size"`
}

// ReadState returns the streamer's last recorded state, or nil if it never ran.
func ReadState(ctx context.Context, st storage.Store, id repo.SystemID) (*State, error) {
	rc, err := st.Open(ctx, repo.StreamStateKey(id), 0)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stream state: %w", err)
	}
	defer rc.Close()
	var s State
	if err := json.NewDecoder(rc).Decode(&s); err != nil {
		return nil, fmt.Errorf("read stream state %s: %w", repo.StreamStateKey(id), err)
	}
	return &s, nil
}

// ErrPermanent marks failures that reconnecting cannot fix (wrong system,
// bad slot name): Run returns them instead of retrying.
var ErrPermanent = errors.New("streaming cannot continue")

var slotName = lazyre.New(`^[a-z0-9_]{1,63}$`)

// Streamer streams one server's WAL into one repository.
type Streamer struct {
	opts Options
	log  *slog.Logger
	arch *archive.Archiver

	id      repo.SystemID
	segSize wal.SegmentSize

	// The segment in progress: buf holds it from its start, received bytes
	// of it have arrived, uploaded of them are in the repository (.partial).
	// Segments larger than memLimit are buffered in a file.
	tli      wal.TimelineID
	seg      wal.SegNo
	buf      *segBuf
	memLimit int64
	received int
	uploaded int
	durable  wal.LSN // everything before it is in the repository
	server   wal.LSN
	dirty    bool // received more than the last partial upload
	lastUp   time.Time
	// The write position last reported to the server, and when.
	reported   wal.LSN
	lastStatus time.Time
}

// New checks opts and returns a Streamer; nothing is contacted yet.
func New(opts Options) (*Streamer, error) {
	if opts.Slot == "" {
		opts.Slot = DefaultSlot
	}
	if !slotName().MatchString(opts.Slot) {
		return nil, fmt.Errorf("stream_slot %q: a replication slot name is 1 to 63 lower-case letters, digits and underscores", opts.Slot)
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Streamer{opts: opts, log: log, memLimit: MemorySegmentLimit,
		arch: &archive.Archiver{Store: opts.Store, Codec: opts.Codec, Log: log}}, nil
}

// Run streams until ctx is cancelled, reconnecting with backoff when the
// server goes away. On cancellation it uploads what it has received (the
// final .partial) and returns nil.
func (s *Streamer) Run(ctx context.Context) error {
	// After the final upload, which the returns below make first.
	defer s.releaseBuf()
	backoff := time.Second
	for {
		began := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return s.shutdown()
		}
		if errors.Is(err, ErrPermanent) {
			s.flushOnError()
			return err
		}
		s.flushOnError()
		if time.Since(began) > time.Minute {
			backoff = time.Second
		}
		s.log.Warn("streaming interrupted; reconnecting", "err", err, "in", backoff.String())
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return s.shutdown()
		case <-t.C:
		}
		backoff = min(backoff*2, s.opts.MaxBackoff)
	}
}

// shutdown uploads the segment in progress with a context of its own (the
// caller's is cancelled) and records a clean stop.
func (s *Streamer) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.uploadPartial(ctx); err != nil {
		return fmt.Errorf("stream: final upload: %w", err)
	}
	if s.id != 0 {
		if err := s.writeState(ctx, true); err != nil {
			return err
		}
	}
	s.log.Info("streaming stopped", "durable_lsn", s.durable.String())
	return nil
}

// flushOnError keeps what was received before a broken connection.
func (s *Streamer) flushOnError() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.uploadPartial(ctx); err != nil {
		s.log.Warn("could not upload the segment in progress", "err", err)
	}
}

func (s *Streamer) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("%w: dsn: %v", ErrPermanent, err)
	}
	cfg.RuntimeParams["replication"] = "true"
	cfg.RuntimeParams["application_name"] = "pitr stream"
	return pgconn.ConnectConfig(ctx, cfg)
}

// session is one connection: identify, make sure of the slot, pick the start
// and stream, following timeline switches, until an error or ctx ends.
func (s *Streamer) session(ctx context.Context) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())

	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	var id repo.SystemID
	if err := id.UnmarshalJSON([]byte(`"` + sys.SystemID + `"`)); err != nil {
		return err
	}
	if s.id != 0 && s.id != id {
		return fmt.Errorf("%w: the server is now database system %s, streaming began on %s", ErrPermanent, id, s.id)
	}
	if _, err := repo.Init(ctx, s.opts.Store, id, time.Now()); err != nil {
		var foreign *repo.ForeignSystemError
		if errors.As(err, &foreign) {
			return fmt.Errorf("%w: %v", ErrPermanent, err)
		}
		return err
	}
	s.id = id
	if s.segSize == 0 {
		if s.segSize, err = showSegmentSize(ctx, conn); err != nil {
			return err
		}
	}
	serverTLI := wal.TimelineID(sys.Timeline)
	s.server = wal.LSN(sys.XLogPos)

	slot, err := s.ensureSlot(ctx, conn)
	if err != nil {
		return err
	}
	if s.buf == nil {
		if err := s.chooseStart(ctx, slot, serverTLI); err != nil {
			return err
		}
	}
	if s.tli > serverTLI {
		return fmt.Errorf("the server is on timeline %d but streaming reached timeline %d; is this an old primary that was not rebuilt?", serverTLI, s.tli)
	}
	for tli := s.tli; tli <= serverTLI; tli++ {
		if err := s.storeHistory(ctx, conn, tli); err != nil {
			return err
		}
	}

	for {
		// Always from the start of the segment: the repository then never
		// depends on a buffer reloaded from somewhere, and the slot keeps
		// the whole segment its restart_lsn is in.
		if err := s.resetSegment(s.tli, s.seg); err != nil {
			return err
		}
		start := s.segSize.StartLSN(s.seg)
		s.log.Info("streaming", "timeline", s.tli, "from", start.String(), "slot", s.opts.Slot)
		err := pglogrepl.StartReplication(ctx, conn, s.opts.Slot, pglogrepl.LSN(start),
			pglogrepl.StartReplicationOptions{Timeline: int32(s.tli), Mode: pglogrepl.PhysicalReplication})
		if err != nil {
			return fmt.Errorf("START_REPLICATION at %s on timeline %d: %w", start, s.tli, err)
		}
		next, nextStart, err := s.receive(ctx, conn)
		if err != nil {
			return err
		}
		// The timeline we streamed ended at a promotion: its last segment
		// stays a .partial, as PostgreSQL archives it, and the new timeline
		// starts with its own copy of the segment holding the switch point.
		if err := s.uploadPartial(ctx); err != nil {
			return err
		}
		if err := s.storeHistory(ctx, conn, next); err != nil {
			return err
		}
		s.log.Info("timeline switch", "from", s.tli, "to", next, "at", nextStart.String())
		s.tli, s.seg = next, s.segSize.SegmentOf(nextStart)
		s.releaseBuf()
	}
}

func showSegmentSize(ctx context.Context, conn *pgconn.PgConn) (wal.SegmentSize, error) {
	res, err := conn.Exec(ctx, "SHOW wal_segment_size").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("SHOW wal_segment_size: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return 0, errors.New("SHOW wal_segment_size: unexpected result")
	}
	return parseSegmentSize(string(res[0].Rows[0][0]))
}

// parseSegmentSize reads SHOW wal_segment_size ("16MB", "1GB").
func parseSegmentSize(v string) (wal.SegmentSize, error) {
	var n uint64
	var unit string
	if _, err := fmt.Sscanf(v, "%d%s", &n, &unit); err != nil {
		return 0, fmt.Errorf("wal_segment_size %q: %w", v, err)
	}
	switch strings.ToUpper(unit) {
	case "MB":
		n <<= 20
	case "GB":
		n <<= 30
	default:
		return 0, fmt.Errorf("wal_segment_size %q: unknown unit", v)
	}
	return wal.NewSegmentSize(n)
}

// slotInfo is READ_REPLICATION_SLOT's answer.
type slotInfo struct {
	restart wal.LSN
	tli     wal.TimelineID
}

// ensureSlot creates the physical slot if it does not exist. RESERVE_WAL
// makes the server keep WAL from now on, before the first START_REPLICATION.
func (s *Streamer) ensureSlot(ctx context.Context, conn *pgconn.PgConn) (slotInfo, error) {
	info, exists, err := readSlot(ctx, conn, s.opts.Slot)
	if err != nil {
		return info, err
	}
	if exists {
		return info, nil
	}
	_, err = conn.Exec(ctx, "CREATE_REPLICATION_SLOT "+s.opts.Slot+" PHYSICAL RESERVE_WAL").ReadAll()
	if err != nil {
		return info, fmt.Errorf("create replication slot %s: %w", s.opts.Slot, err)
	}
	s.log.Info("created physical replication slot", "slot", s.opts.Slot)
	info, exists, err = readSlot(ctx, conn, s.opts.Slot)
	if err == nil && !exists {
		err = fmt.Errorf("replication slot %s vanished right after it was created", s.opts.Slot)
	}
	return info, err
}

func readSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (slotInfo, bool, error) {
	var info slotInfo
	res, err := conn.Exec(ctx, "READ_REPLICATION_SLOT "+slot).ReadAll()
	if err != nil {
		return info, false, fmt.Errorf("READ_REPLICATION_SLOT %s (PostgreSQL 15 or later): %w", slot, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 3 {
		return info, false, fmt.Errorf("READ_REPLICATION_SLOT %s: unexpected result", slot)
	}
	row := res[0].Rows[0]
	if row[0] == nil {
		return info, false, nil
	}
	if string(row[0]) != "physical" {
		return info, false, fmt.Errorf("%w: replication slot %s is a %s slot, not physical; choose another stream_slot", ErrPermanent, slot, row[0])
	}
	if row[1] != nil {
		if info.restart, err = wal.ParseLSN(string(row[1])); err != nil {
			return info, false, err
		}
	}
	if row[2] != nil {
		var t uint32
		if _, err := fmt.Sscan(string(row[2]), &t); err != nil {
			return info, false, err
		}
		info.tli = wal.TimelineID(t)
	}
	return info, true, nil
}

// chooseStart picks where a fresh process resumes: the segment the last
// run was in (its .partial is re-streamed from the start), else where the
// slot's retained WAL begins.
func (s *Streamer) chooseStart(ctx context.Context, slot slotInfo, serverTLI wal.TimelineID) error {
	st, err := ReadState(ctx, s.opts.Store, s.id)
	if err != nil {
		return err
	}
	switch {
	case st != nil && st.Durable != 0 && st.Timeline != 0:
		s.tli, s.seg, s.durable = st.Timeline, s.segSize.SegmentOf(st.Durable), st.Durable
		if slot.restart != 0 && s.segSize.SegmentOf(slot.restart) > s.seg {
			s.log.Warn("the slot no longer holds the WAL after the repository's end: there will be a gap (was the slot dropped and recreated?)",
				"slot", s.opts.Slot, "repository_end", st.Durable.String(), "slot_restart_lsn", slot.restart.String())
			s.seg = s.segSize.SegmentOf(slot.restart)
			if slot.tli != 0 {
				s.tli = slot.tli
			}
		}
	case slot.restart != 0:
		s.tli, s.seg = slot.tli, s.segSize.SegmentOf(slot.restart)
		if s.tli == 0 {
			s.tli = serverTLI
		}
		s.durable = s.segSize.StartLSN(s.seg)
	default:
		s.tli, s.seg = serverTLI, s.segSize.SegmentOf(s.server)
		s.durable = s.segSize.StartLSN(s.seg)
	}
	return nil
}

// storeHistory stores tli's history file if it is not in the repository,
// never overwriting a different one.
func (s *Streamer) storeHistory(ctx context.Context, conn *pgconn.PgConn, tli wal.TimelineID) error {
	if tli <= 1 {
		return nil
	}
	name := wal.HistoryFileName(tli)
	key, _ := repo.WALKey(s.id, name)
	if _, err := s.opts.Store.Stat(ctx, key); err == nil {
		return nil
	}
	h, err := pglogrepl.TimelineHistory(ctx, conn, int32(tli))
	if err != nil {
		return fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	if _, err := wal.ParseHistoryFile(tli, h.Content); err != nil {
		return fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	if _, err := s.arch.PushBytes(ctx, s.id, name, h.Content); err != nil {
		return err
	}
	s.log.Info("stored timeline history", "file", name)
	return nil
}

func (s *Streamer) resetSegment(tli wal.TimelineID, seg wal.SegNo) error {
	if s.buf == nil || s.tli != tli || s.seg != seg {
		s.uploaded = 0
	}
	if s.buf == nil {
		b, err := newSegBuf(int64(s.segSize), s.memLimit, s.opts.TempDir)
		if err != nil {
			return err
		}
		s.buf = b
	} else if err := s.buf.reset(s.opts.TempDir); err != nil {
		s.buf = nil
		return err
	}
	s.tli, s.seg, s.received, s.dirty = tli, seg, 0, false
	return nil
}

// releaseBuf drops the segment buffer and removes its file, if any. With no
// buffer, the next session resumes from the recorded state.
func (s *Streamer) releaseBuf() {
	if s.buf == nil {
		return
	}
	if err := s.buf.close(); err != nil {
		s.log.Warn("could not remove the segment buffer file", "err", err)
	}
	s.buf = nil
}

// receive handles the copy stream until the server ends the timeline (it
// returns the next timeline and where it starts) or an error.
func (s *Streamer) receive(ctx context.Context, conn *pgconn.PgConn) (wal.TimelineID, wal.LSN, error) {
	nextUpload := time.Now().Add(s.opts.Interval)
	if err := s.sendStatus(ctx, conn, false); err != nil {
		return 0, 0, err
	}
	for {
		// The write position goes to the server within a second (it shows
		// in pg_stat_replication); the flush position only moves with
		// uploads.
		statusDue := s.lastStatus.Add(statusInterval)
		if s.writePos() != s.reported && !time.Now().Before(statusDue) {
			if err := s.sendStatus(ctx, conn, false); err != nil {
				return 0, 0, err
			}
		}
		if !time.Now().Before(nextUpload) {
			if err := s.uploadPartial(ctx); err != nil {
				// The slot keeps the WAL; keep receiving and try again at
				// the next interval (an S3 outage must not stop streaming).
				s.log.Warn("upload of the segment in progress failed; retrying at the next interval", "err", err)
			}
			if err := s.sendStatus(ctx, conn, false); err != nil {
				return 0, 0, err
			}
			nextUpload = time.Now().Add(s.opts.Interval)
		}
		deadline := nextUpload
		if due := s.lastStatus.Add(statusInterval); s.writePos() != s.reported && due.Before(deadline) {
			deadline = due
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				continue
			}
			return 0, 0, fmt.Errorf("receive: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				k, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return 0, 0, err
				}
				s.server = max(s.server, wal.LSN(k.ServerWALEnd))
				if k.ReplyRequested {
					if err := s.sendStatus(ctx, conn, false); err != nil {
						return 0, 0, err
					}
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return 0, 0, err
				}
				s.server = max(s.server, wal.LSN(x.ServerWALEnd))
				completed, err := s.write(ctx, wal.LSN(x.WALStart), x.WALData, func() error { return s.sendStatus(ctx, conn, false) })
				if err != nil {
					return 0, 0, err
				}
				if completed {
					if err := s.sendStatus(ctx, conn, false); err != nil {
						return 0, 0, err
					}
				}
			}
		case *pgproto3.CopyDone:
			res, err := pglogrepl.SendStandbyCopyDone(ctx, conn)
			if err != nil {
				return 0, 0, fmt.Errorf("end of timeline %d: %w", s.tli, err)
			}
			if res == nil || wal.TimelineID(res.Timeline) <= s.tli {
				return 0, 0, fmt.Errorf("the server ended streaming of timeline %d without naming the next timeline", s.tli)
			}
			return wal.TimelineID(res.Timeline), wal.LSN(res.LSN), nil
		case *pgproto3.ErrorResponse:
			return 0, 0, pgconn.ErrorResponseToPgError(msg)
		}
	}
}

// write copies WAL at lsn into the segment buffer, storing segments as they
// fill up; completed says at least one was, so the server should hear. ping,
// if set, keeps the connection alive while a segment upload is retried.
func (s *Streamer) write(ctx context.Context, lsn wal.LSN, data []byte, ping func() error) (completed bool, err error) {
	for len(data) > 0 {
		segStart := s.segSize.StartLSN(s.seg)
		if lsn != segStart+wal.LSN(s.received) {
			return completed, fmt.Errorf("the server sent WAL at %s, expected %s", lsn, segStart+wal.LSN(s.received))
		}
		n := min(len(data), int(s.buf.size)-s.received)
		if err := s.buf.writeAt(data[:n], int64(s.received)); err != nil {
			return completed, err
		}
		s.received += n
		s.dirty = true
		data, lsn = data[n:], lsn+wal.LSN(n)
		if int64(s.received) == s.buf.size {
			if err := s.completeSegment(ctx, ping); err != nil {
				return completed, err
			}
			completed = true
			s.seg++
			s.uploaded = 0
			s.received, s.dirty = 0, false
			if err := s.buf.reset(s.opts.TempDir); err != nil {
				// The next session resumes after the stored segment.
				s.buf = nil
				return completed, err
			}
		}
	}
	return completed, nil
}

// completeSegment stores the full segment (archive-push's rules), then
// removes its .partial, which only the full object may replace.
//
// Until it is stored nothing more is received: the buffer stays at one segment,
// and the slot keeps the WAL on the server meanwhile (which is what the slot
// is for). The connection is kept alive with status updates that report the
// unchanged durable position, so the server neither times us out nor lets
// the slot advance.
func (s *Streamer) completeSegment(ctx context.Context, ping func() error) error {
	name := s.segSize.FileName(wal.Segment{TLI: s.tli, No: s.seg})
	res, err := s.arch.PushReaderAt(ctx, s.id, name, s.buf.readerAt(), s.buf.size)
	for err != nil {
		if errors.Is(err, archive.ErrConflict) {
			// Another cluster, or a corrupted copy, under this name:
			// retrying cannot help and overwriting would destroy evidence.
			return fmt.Errorf("%w: %w", ErrPermanent, err)
		}
		if ctx.Err() != nil {
			return err
		}
		s.log.Warn("segment upload failed; retrying (the slot keeps the WAL on the server)", "file", name, "err", err)
		if ping != nil {
			if err := ping(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.opts.Interval):
		}
		res, err = s.arch.PushReaderAt(ctx, s.id, name, s.buf.readerAt(), s.buf.size)
	}
	s.log.Info("segment stored", "file", name, "already_archived", res.AlreadyArchived)
	partial, _ := repo.WALKey(s.id, name+".partial")
	if err := s.opts.Store.Delete(ctx, partial); err != nil && !errors.Is(err, storage.ErrNotExist) {
		s.log.Warn("could not delete the finished segment's .partial", "key", partial, "err", err)
	}
	s.durable = max(s.durable, s.segSize.StartLSN(s.seg+1))
	s.lastUp = time.Now()
	return s.writeState(ctx, false)
}

// uploadPartial stores the segment in progress as <segment>.partial (the
// whole segment size, zeros past the received end, which replay reads as
// the end of WAL), replacing the previous one.
func (s *Streamer) uploadPartial(ctx context.Context) error {
	if s.buf == nil || !s.dirty || s.received <= s.uploaded {
		return nil
	}
	name := s.segSize.FileName(wal.Segment{TLI: s.tli, No: s.seg})
	if err := archive.CheckSegmentReaderAt(name, s.buf.readerAt(), s.buf.size); err != nil {
		return fmt.Errorf("segment in progress %s: %w", name, err)
	}
	key, _ := repo.WALKey(s.id, name+".partial")
	opts := s.opts.Codec
	received := s.received
	if _, err := codec.Put(ctx, s.opts.Store, key, io.NewSectionReader(s.buf.readerAt(), 0, s.buf.size), s.buf.size, opts); err != nil {
		return fmt.Errorf("upload %s.partial: %w", name, err)
	}
	s.uploaded, s.dirty = received, s.received > received
	s.durable = max(s.durable, s.segSize.StartLSN(s.seg)+wal.LSN(received))
	s.lastUp = time.Now()
	s.log.Debug("partial stored", "file", name+".partial", "durable_lsn", s.durable.String())
	return s.writeState(ctx, false)
}

// statusInterval is how often, at most, a new write position is reported.
const statusInterval = time.Second

func (s *Streamer) writePos() wal.LSN {
	return max(s.segSize.StartLSN(s.seg)+wal.LSN(s.received), s.durable)
}

func (s *Streamer) sendStatus(ctx context.Context, conn *pgconn.PgConn, reply bool) error {
	if s.durable == 0 {
		return nil // pglogrepl would report the write position as flushed
	}
	write := s.writePos()
	s.reported, s.lastStatus = write, time.Now()
	err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(write),
		WALFlushPosition: pglogrepl.LSN(s.durable),
		WALApplyPosition: pglogrepl.LSN(s.durable),
		ReplyRequested:   reply,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}

func (s *Streamer) writeState(ctx context.Context, stopped bool) error {
	host, _ := os.Hostname()
	st := State{
		Slot: s.opts.Slot, Timeline: s.tli, Durable: s.durable,
		Segment:  s.segSize.FileName(wal.Segment{TLI: s.tli, No: s.seg}),
		Received: s.segSize.StartLSN(s.seg) + wal.LSN(s.received), Server: s.server,
		Upload: s.lastUp.UTC(), Host: host, PID: os.Getpid(), Stopped: stopped, Segsize: s.segSize,
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := s.opts.Store.Put(ctx, repo.StreamStateKey(s.id), bytes.NewReader(append(b, '\n'))); err != nil {
		return fmt.Errorf("write stream state: %w", err)
	}
	return nil
}
