package basebackup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pitr-dev/pitr/archive/wal"
	"github.com/pitr-dev/pitr/internal/lazyre"
	"github.com/pitr-dev/pitr/repo"
)

// Why pitr speaks the replication protocol itself for clusters with
// tablespaces: pg_basebackup writes only one archive to stdout ("can only
// write single tablespace to stdout"), and writing its per-tablespace tar
// files to a directory would need local disk the size of the database. The
// PostgreSQL 15+ BASE_BACKUP protocol (TARGET 'client') sends every archive
// and then the manifest in one COPY stream, each CopyData message tagged:
// 'n' new archive (name, tablespace path), 'd' data, 'p' progress, 'm'
// manifest follows. pitr routes each archive into its own repository object.

// archiveSink receives the archives of one backup as they stream.
type archiveSink interface {
	// archive consumes one tar archive from r to EOF. name is the
	// server's archive name ("base.tar", "<oid>.tar").
	archive(name string, oid uint32, r io.Reader) error
}

// protocolResult is what the server reports besides the archives.
type protocolResult struct {
	startLSN, endLSN wal.LSN
	startTLI, endTLI wal.TimelineID
	manifest         []byte
}

var tablespaceArchiveRE = lazyre.New(`^([1-9][0-9]{0,9})\.tar$`)

// baseBackupCommand builds the BASE_BACKUP command (PostgreSQL 15+ syntax).
func baseBackupCommand(o *Options, label, alg string, maxRateKB int) string {
	checkpoint := "spread"
	if o.FastCheckpoint {
		checkpoint = "fast"
	}
	parts := []string{
		"LABEL " + quoteLiteral(label),
		"CHECKPOINT " + quoteLiteral(checkpoint),
		// The server waits for the last WAL segment to be archived, as
		// pg_basebackup -X none makes it do.
		"WAIT true",
		"TABLESPACE_MAP",
		"MANIFEST 'yes'",
		"MANIFEST_CHECKSUMS " + quoteLiteral(alg),
		"TARGET 'client'",
	}
	if maxRateKB > 0 {
		parts = append(parts, "MAX_RATE "+strconv.Itoa(maxRateKB))
	}
	return "BASE_BACKUP (" + strings.Join(parts, ", ") + ")"
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// runProtocolBackup takes a base backup over a replication connection and
// hands every archive to sink as it streams.
func runProtocolBackup(ctx context.Context, dsn, command string, log *slog.Logger, sink archiveSink) (protocolResult, error) {
	var res protocolResult
	cfg, err := replicationConfig(dsn)
	if err != nil {
		return res, err
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		log.Info("server", "severity", n.Severity, "message", n.Message)
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return res, fmt.Errorf("replication connection: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	conn.Frontend().SendQuery(&pgproto3.Query{String: command})
	if err := conn.Frontend().Flush(); err != nil {
		return res, fmt.Errorf("send BASE_BACKUP: %w", err)
	}
	p := &protocolReader{ctx: ctx, conn: conn}

	// 1: the start position; 2: the tablespace list; then the COPY stream.
	row, err := p.singleRow("backup start position")
	if err != nil {
		return res, err
	}
	if res.startLSN, res.startTLI, err = parsePosition(row); err != nil {
		return res, fmt.Errorf("backup start position: %w", err)
	}
	if err := p.skipResultSet("tablespace list"); err != nil {
		return res, err
	}
	if err := p.expectCopyOut(); err != nil {
		return res, err
	}

	var cur *archiveStream
	finish := func() error {
		if cur == nil {
			return nil
		}
		err := cur.close()
		cur = nil
		return err
	}
	defer func() {
		if cur != nil {
			cur.abort(errors.New("backup stream ended early"))
		}
	}()
	inManifest := false
	var manifest bytes.Buffer
copyLoop:
	for {
		msg, err := p.receive()
		if err != nil {
			return res, err
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				return res, fmt.Errorf("BASE_BACKUP: empty CopyData message")
			}
			switch msg.Data[0] {
			case 'n':
				if inManifest {
					return res, fmt.Errorf("BASE_BACKUP: new archive after the manifest")
				}
				if err := finish(); err != nil {
					return res, err
				}
				name, _, err := parseNewArchive(msg.Data[1:])
				if err != nil {
					return res, err
				}
				var oid uint32
				if name != repo.BackupBaseTarName {
					m := tablespaceArchiveRE().FindStringSubmatch(name)
					if m == nil {
						return res, fmt.Errorf("BASE_BACKUP: unexpected archive %q (pitr asks for uncompressed tar)", name)
					}
					n, _ := strconv.ParseUint(m[1], 10, 32)
					oid = uint32(n)
				}
				cur = startArchiveStream(sink, name, oid)
			case 'd':
				if inManifest {
					if manifest.Len()+len(msg.Data)-1 > MaxManifestSize {
						return res, fmt.Errorf("backup_manifest is larger than %d bytes", MaxManifestSize)
					}
					manifest.Write(msg.Data[1:])
					continue
				}
				if cur == nil {
					return res, fmt.Errorf("BASE_BACKUP: archive data before any archive started")
				}
				if err := cur.write(msg.Data[1:]); err != nil {
					return res, err
				}
			case 'p':
				// Progress: bytes the server has sent so far; pitr counts its own.
			case 'm':
				if err := finish(); err != nil {
					return res, err
				}
				inManifest = true
			default:
				return res, fmt.Errorf("BASE_BACKUP: unknown CopyData message type %q", msg.Data[0])
			}
		case *pgproto3.CopyDone:
			if err := finish(); err != nil {
				return res, err
			}
			break copyLoop
		default:
			return res, fmt.Errorf("BASE_BACKUP: unexpected %T during the COPY stream", msg)
		}
	}
	row, err = p.singleRow("backup end position")
	if err != nil {
		return res, err
	}
	if res.endLSN, res.endTLI, err = parsePosition(row); err != nil {
		return res, fmt.Errorf("backup end position: %w", err)
	}
	if err := p.expectDone(); err != nil {
		return res, err
	}
	if !inManifest {
		return res, fmt.Errorf("BASE_BACKUP: the server sent no backup_manifest")
	}
	res.manifest = manifest.Bytes()
	return res, nil
}

// parseNewArchive decodes the 'n' message: two NUL-terminated strings.
func parseNewArchive(b []byte) (name, path string, err error) {
	n, rest, ok := bytes.Cut(b, []byte{0})
	if !ok {
		return "", "", fmt.Errorf("BASE_BACKUP: malformed new-archive message")
	}
	p, _, ok := bytes.Cut(rest, []byte{0})
	if !ok {
		return "", "", fmt.Errorf("BASE_BACKUP: malformed new-archive message")
	}
	return string(n), string(p), nil
}

func parsePosition(row [][]byte) (wal.LSN, wal.TimelineID, error) {
	if len(row) != 2 || row[0] == nil || row[1] == nil {
		return 0, 0, fmt.Errorf("want 2 columns (recptr, tli)")
	}
	lsn, err := wal.ParseLSN(string(row[0]))
	if err != nil {
		return 0, 0, err
	}
	tli, err := strconv.ParseUint(string(row[1]), 10, 32)
	if err != nil || tli == 0 {
		return 0, 0, fmt.Errorf("timeline %q is not valid", row[1])
	}
	return lsn, wal.TimelineID(tli), nil
}

// protocolReader reads the walsender's replies. Notices go to the
// connection's OnNotice and are skipped here; an ErrorResponse anywhere ends
// the backup with the server's message.
type protocolReader struct {
	ctx  context.Context
	conn *pgconn.PgConn
}

func (p *protocolReader) receive() (pgproto3.BackendMessage, error) {
	for {
		msg, err := p.conn.ReceiveMessage(p.ctx)
		if err != nil {
			if cause := context.Cause(p.ctx); cause != nil {
				return nil, cause
			}
			return nil, fmt.Errorf("BASE_BACKUP: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
			continue
		case *pgproto3.ErrorResponse:
			return nil, fmt.Errorf("BASE_BACKUP: %w", pgconn.ErrorResponseToPgError(msg))
		}
		return msg, nil
	}
}

// singleRow reads a result set of one row and returns its text values.
func (p *protocolReader) singleRow(what string) ([][]byte, error) {
	var row [][]byte
	for {
		msg, err := p.receive()
		if err != nil {
			return nil, err
		}
		switch msg := msg.(type) {
		case *pgproto3.RowDescription:
		case *pgproto3.DataRow:
			if row != nil {
				return nil, fmt.Errorf("BASE_BACKUP: %s: more than one row", what)
			}
			for _, v := range msg.Values {
				if v == nil {
					row = append(row, nil)
				} else {
					row = append(row, bytes.Clone(v))
				}
			}
		case *pgproto3.CommandComplete:
			if row == nil {
				return nil, fmt.Errorf("BASE_BACKUP: %s: no row", what)
			}
			return row, nil
		default:
			return nil, fmt.Errorf("BASE_BACKUP: %s: unexpected %T", what, msg)
		}
	}
}

func (p *protocolReader) skipResultSet(what string) error {
	for {
		msg, err := p.receive()
		if err != nil {
			return err
		}
		switch msg := msg.(type) {
		case *pgproto3.RowDescription, *pgproto3.DataRow:
		case *pgproto3.CommandComplete:
			return nil
		default:
			return fmt.Errorf("BASE_BACKUP: %s: unexpected %T", what, msg)
		}
	}
}

func (p *protocolReader) expectCopyOut() error {
	msg, err := p.receive()
	if err != nil {
		return err
	}
	if _, ok := msg.(*pgproto3.CopyOutResponse); !ok {
		return fmt.Errorf("BASE_BACKUP: expected the COPY stream, got %T", msg)
	}
	return nil
}

// expectDone reads the end of the BASE_BACKUP command.
func (p *protocolReader) expectDone() error {
	for {
		msg, err := p.receive()
		if err != nil {
			return err
		}
		switch msg.(type) {
		case *pgproto3.CommandComplete:
		case *pgproto3.ReadyForQuery:
			return nil
		default:
			return fmt.Errorf("BASE_BACKUP: unexpected %T after the backup", msg)
		}
	}
}

// archiveStream feeds one archive's CopyData payloads to the sink, which
// reads them from a pipe in its own goroutine.
type archiveStream struct {
	name string
	pw   *io.PipeWriter
	done chan struct{}
	err  error // the sink's result, set before done is closed
}

func startArchiveStream(sink archiveSink, name string, oid uint32) *archiveStream {
	pr, pw := io.Pipe()
	a := &archiveStream{name: name, pw: pw, done: make(chan struct{})}
	go func() {
		a.err = sink.archive(name, oid, pr)
		// Whatever the sink did not read fails the writer instead of blocking it.
		pr.CloseWithError(fmt.Errorf("archive %s was not read to its end", name))
		close(a.done)
	}()
	return a
}

// write passes one chunk on; it returns the sink's error if the sink failed.
func (a *archiveStream) write(b []byte) error {
	if _, err := a.pw.Write(b); err != nil {
		<-a.done
		if a.err != nil {
			return a.err
		}
		return fmt.Errorf("archive %s: %w", a.name, err)
	}
	return nil
}

// close ends the archive and waits for the sink to finish with it.
func (a *archiveStream) close() error {
	a.pw.Close()
	<-a.done
	return a.err
}

func (a *archiveStream) abort(err error) {
	a.pw.CloseWithError(err)
	<-a.done
}

// maxRateKB converts pg_basebackup's -r syntax (kB/s, or with a k or M
// suffix) to the kB/s BASE_BACKUP takes, within the server's limits.
func maxRateKB(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	mult := 1
	num := s
	switch {
	case strings.HasSuffix(s, "M"):
		mult, num = 1024, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "k"):
		num = strings.TrimSuffix(s, "k")
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("max rate %q: want kilobytes per second, optionally with a k or M suffix (like pg_basebackup -r)", s)
	}
	n *= mult
	if n < 32 || n > 1024*1024 {
		return 0, fmt.Errorf("max rate %q: must be between 32 kB/s and 1024 MB/s", s)
	}
	return n, nil
}
