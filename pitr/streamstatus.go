package pitr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/internal/units"
	"github.com/pitr-dev/pitr/stream"
)

// StreamStatus is pitr stream's progress (from its state object) and, when
// the server is reachable, its replication slot.
type StreamStatus struct {
	Slot       string     `json:"slot"`
	Recorded   bool       `json:"recorded"` // the repository has a stream state
	Timeline   uint32     `json:"timeline,omitempty"`
	DurableLSN string     `json:"durable_lsn,omitempty"`
	LastUpload *time.Time `json:"last_upload,omitempty"`
	// SinceUpload is how long ago the last upload was, in seconds.
	SinceUpload float64 `json:"seconds_since_upload,omitempty"`
	Stopped     bool    `json:"stopped"` // the last run shut down cleanly

	// From the server (SlotExists false when it could not be asked).
	SlotExists bool   `json:"slot_exists"`
	SlotActive bool   `json:"slot_active"`
	RestartLSN string `json:"restart_lsn,omitempty"`
	// RetainedBytes is the WAL the slot keeps on the server's disk; LagBytes
	// the WAL the server has written that the repository does not hold.
	RetainedBytes int64  `json:"retained_bytes"`
	LagBytes      int64  `json:"lag_bytes"`
	WALStatus     string `json:"wal_status,omitempty"`
	Error         string `json:"error,omitempty"`
}

// StreamStatusOf turns the streamer's recorded state into a StreamStatus.
// st may be nil (the streamer never ran against this repository).
func StreamStatusOf(st *stream.State, slot string, now time.Time) *StreamStatus {
	s := &StreamStatus{Slot: slot}
	if st == nil {
		return s
	}
	s.Recorded = true
	if st.Slot != "" {
		s.Slot = st.Slot
	}
	s.Timeline, s.DurableLSN, s.Stopped = uint32(st.Timeline), st.Durable.String(), st.Stopped
	if !st.Upload.IsZero() {
		t := st.Upload
		s.LastUpload = &t
		s.SinceUpload = now.Sub(t).Round(time.Second).Seconds()
	}
	return s
}

// QueryStreamSlot adds what the server says about the slot.
func QueryStreamSlot(ctx context.Context, dsn string, s *StreamStatus) {
	conn, err := ConnectServer(ctx, dsn, "pitr status")
	if err != nil {
		s.Error = err.Error()
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var restart, walStatus *string
	var retained *int64
	err = conn.QueryRow(ctx, `SELECT active, restart_lsn::text, wal_status,
		pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::int8
		FROM pg_replication_slots WHERE slot_name = $1`, s.Slot).Scan(&s.SlotActive, &restart, &walStatus, &retained)
	if errors.Is(err, pgx.ErrNoRows) {
		return
	}
	if err != nil {
		s.Error = err.Error()
		return
	}
	s.SlotExists = true
	if restart != nil {
		s.RestartLSN = *restart
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	if retained != nil {
		s.RetainedBytes = *retained
	}
	if s.DurableLSN != "" {
		var lag *int64
		err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, $1::pg_lsn)::int8`,
			s.DurableLSN).Scan(&lag)
		if err == nil && lag != nil && *lag > 0 {
			s.LagBytes = *lag
		}
	}
}

// streamProblems are the alarms about streaming: a slot nobody reads (it
// keeps WAL on the server until its disk is full) and WAL that has waited
// longer than maxLag for an upload.
func (s *StreamStatus) problems(maxLag time.Duration) []string {
	var out []string
	if s.SlotExists && !s.SlotActive {
		out = append(out, fmt.Sprintf("pitr stream is not running, but its replication slot %s holds %s of WAL on the server: a stuck slot fills the server's disk until PostgreSQL stops. Restart pitr stream, or drop the slot to stop streaming: SELECT pg_drop_replication_slot('%s')",
			s.Slot, units.Bytes(s.RetainedBytes), s.Slot))
	}
	if s.WALStatus == "lost" {
		out = append(out, fmt.Sprintf("replication slot %s has lost WAL the repository never received (max_slot_wal_keep_size): the stream has a gap; take a new base backup", s.Slot))
	}
	if maxLag > 0 && s.LagBytes > 0 && s.LastUpload != nil && time.Duration(s.SinceUpload)*time.Second > maxLag {
		out = append(out, fmt.Sprintf("streaming is behind: %s of WAL not in the repository and the last upload was %s ago (max %s)",
			units.Bytes(s.LagBytes), age2(time.Duration(s.SinceUpload)*time.Second), age2(maxLag)))
	}
	return out
}

func (s *StreamStatus) describe(w io.Writer) {
	if !s.Recorded && !s.SlotExists {
		return
	}
	line := "  stream:     "
	if s.Recorded {
		line += fmt.Sprintf("timeline %d, durable up to %s", s.Timeline, s.DurableLSN)
		if s.LastUpload != nil {
			line += fmt.Sprintf(", last upload %s ago", age2(time.Duration(s.SinceUpload)*time.Second))
		}
		if s.Stopped {
			line += " (stopped cleanly)"
		}
	} else {
		line += "never recorded progress in this repository"
	}
	fmt.Fprintln(w, line)
	switch {
	case s.Error != "":
		fmt.Fprintf(w, "  slot:       %s: cannot ask the server: %s\n", s.Slot, s.Error)
	case s.SlotExists:
		state := "active"
		if !s.SlotActive {
			state = "INACTIVE"
		}
		fmt.Fprintf(w, "  slot:       %s %s, restart_lsn %s, retains %s on the server; stream lag %s\n",
			s.Slot, state, s.RestartLSN, units.Bytes(s.RetainedBytes), units.Bytes(s.LagBytes))
	}
}
