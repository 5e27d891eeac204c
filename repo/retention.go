package repo

import (
	"path"
	"strconv"
	"strings"

	"github.com/pitr-dev/pitr/archive/wal"
)

// Retained reports whether the object under key is history that is written
// once and never changed: archived WAL (not .partial), the objects of base
// backups and logical dumps (not their heartbeats), and the marker. Those
// are what S3 Object Lock retention protects. Everything else is rewritten
// or deleted as part of normal operation (heartbeats, the prune lock, the
// streamer's .partial and state, tablespace records, drill reports): a
// retention on them would make a server without versioning refuse the
// rewrite and stop backups, prunes and streaming.
func Retained(key string) bool {
	if key == MarkerKey {
		return true
	}
	sys, rest, ok := strings.Cut(key, "/")
	if id, err := strconv.ParseUint(sys, 10, 64); !ok || err != nil || id == 0 {
		return false
	}
	area, rest, _ := strings.Cut(rest, "/")
	switch area {
	case "wal":
		kind, err := wal.Classify(path.Base(rest))
		return err == nil && kind != wal.KindPartial
	case "basebackups", "dumps":
		name, obj, ok := strings.Cut(rest, "/")
		return ok && name != "" && obj != "" && obj != BackupInProgressName && obj != DumpInProgressName
	}
	return false
}
