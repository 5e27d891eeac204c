package repo

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/pitr-dev/pitr/storage"
)

// markerStore serves one marker object from memory: fuzzing through a file
// system would measure the disk, not the parser.
type markerStore struct{ data []byte }

func (m markerStore) Put(context.Context, string, io.Reader) error { return nil }
func (m markerStore) Open(_ context.Context, key string, _ int64) (io.ReadCloser, error) {
	if key != MarkerKey {
		return nil, storage.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(m.data)), nil
}
func (m markerStore) Stat(context.Context, string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, storage.ErrNotExist
}
func (m markerStore) List(context.Context, string) ([]storage.ObjectInfo, error) { return nil, nil }
func (m markerStore) Delete(context.Context, string) error                       { return nil }

// FuzzReadMarker: the marker is plain JSON at the top of the bucket. What
// ReadMarker accepts is a marker of this format and version with a system
// identifier, whose WAL keys stay inside that system's subtree; a huge
// object is refused rather than read whole.
func FuzzReadMarker(f *testing.F) {
	f.Add([]byte(`{"format":"pitr-repository","version":1,"system_identifier":"7301234567890123456","created_at":"2026-04-08T14:13:01Z"}`))
	f.Add([]byte(`{"format":"pitr-repository","version":2,"system_identifier":"7"}`))
	f.Add([]byte(`{"format":"pitr-repository","version":1,"system_identifier":"0"}`))
	f.Add([]byte(`{"format":"pitr-repository","version":1,"system_identifier":"../../x"}`))
	f.Add([]byte(`{"format":"pitr-repository","version":1,"system_identifier":7}`))
	f.Add([]byte(`{"format":"pitr-repository","version":1,"system_identifier":"7","encryption":{"scheme":"age"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ReadMarker(context.Background(), markerStore{data})
		if err != nil {
			return
		}
		if m.Format != formatName || m.Version != FormatVersion || m.SystemIdentifier == 0 {
			t.Fatalf("marker accepted: %+v", m)
		}
		k, err := WALKey(m.SystemIdentifier, "000000010000000000000001")
		if err != nil || !strings.HasPrefix(k, m.SystemIdentifier.String()+"/wal/") || strings.Contains(k, "..") {
			t.Fatalf("WAL key %q for system %q: %v", k, m.SystemIdentifier, err)
		}
	})
}

// Contract: a marker object far larger than any marker is refused instead of
// being read into memory.
func TestReadMarkerRefusesHugeObject(t *testing.T) {
	good := `{"format":"pitr-repository","version":1,"system_identifier":"7","created_at":"2026-04-08T14:13:01Z","pad":"`
	huge := []byte(good + strings.Repeat("x", 1<<20) + `"}`)
	if _, err := ReadMarker(context.Background(), markerStore{huge}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("1 MiB marker: %v", err)
	}
}
