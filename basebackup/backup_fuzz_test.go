package basebackup

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/archive/wal"
)

func validBackup() Backup {
	start := time.Date(2026, 4, 8, 14, 13, 1, 0, time.UTC)
	return Backup{
		Version: MetadataVersion, Name: "20260408T141301Z", SystemIdentifier: 7301234567890123456,
		PGVersionNum: 150018, WALSegmentSize: 16 << 20,
		StartLSN: 0x2000028, StopLSN: 0x2000100, CheckpointLSN: 0x2000060, StartTimeline: 1, StopTimeline: 1,
		StartTime: start, StopTime: start.Add(time.Minute), Codec: "zstd",
		Parts:       []Part{{Name: "base.tar", Size: 100, StoredSize: 40}, {Name: "backup_manifest", Size: 10, StoredSize: 10}},
		Tablespaces: []Tablespace{{OID: 16384, Name: "ts", Location: "/srv/ts", Part: "16384.tar"}},
	}
}

// Contract: metadata that would steer a restore outside the backup (part
// names as keys, tablespace locations as directories) is refused.
func TestValidateRefusesHostileMetadata(t *testing.T) {
	if b := validBackup(); b.Validate() != nil {
		t.Fatal(b.Validate())
	}
	for name, mutate := range map[string]func(*Backup){
		"part climbs out":         func(b *Backup) { b.Parts[0].Name = "../other/base.tar" },
		"part climbs out nested":  func(b *Backup) { b.Parts[0].Name = "config/../../x" },
		"absolute part":           func(b *Backup) { b.Parts[0].Name = "/base.tar" },
		"empty part":              func(b *Backup) { b.Parts[0].Name = "" },
		"part twice":              func(b *Backup) { b.Parts[1].Name = "base.tar" },
		"negative size":           func(b *Backup) { b.Parts[0].Size = -1 },
		"relative tablespace":     func(b *Backup) { b.Tablespaces[0].Location = "srv/ts" },
		"tablespace with ..":      func(b *Backup) { b.Tablespaces[0].Location = "/srv/../etc" },
		"tablespace part climbs":  func(b *Backup) { b.Tablespaces[0].Part = "../16384.tar" },
		"tablespace without OID":  func(b *Backup) { b.Tablespaces[0].OID = 0 },
		"name with slash":         func(b *Backup) { b.Name = "a/b" },
		"name that is a dot name": func(b *Backup) { b.Name = ".." },
	} {
		b := validBackup()
		b.Parts = append([]Part(nil), b.Parts...)
		b.Tablespaces = append([]Tablespace(nil), b.Tablespaces...)
		mutate(&b)
		if err := b.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzBackupMetadata: backup.json is plain JSON in the bucket, so anyone
// with write access there can craft it. What Validate accepts yields object
// keys inside the backup's own directory and clean absolute tablespace
// locations, and the WAL arithmetic on it does not panic.
func FuzzBackupMetadata(f *testing.F) {
	good, _ := json.Marshal(validBackup())
	f.Add(good)
	f.Add([]byte(strings.Replace(string(good), `"base.tar"`, `"../../x"`, 1)))
	f.Add([]byte(strings.Replace(string(good), `"/srv/ts"`, `"srv"`, 1)))
	f.Add([]byte(`{"metadata_version":1,"name":"x","system_identifier":"1","wal_segment_size":3}`))
	f.Add([]byte(`{"system_identifier":"-1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Backup
		if json.Unmarshal(data, &b) != nil || b.Validate() != nil {
			return
		}
		dir := b.Key("")
		for _, p := range b.Parts {
			k := b.Key(p.Name)
			if !strings.HasPrefix(k, dir) || strings.Contains("/"+k+"/", "/../") || strings.Contains(k, "//") || strings.HasSuffix(k, "/") {
				t.Fatalf("part %q gives key %q", p.Name, k)
			}
		}
		for _, ts := range b.Tablespaces {
			if !strings.HasPrefix(ts.Location, "/") || strings.Contains(ts.Location+"/", "/../") {
				t.Fatalf("tablespace location %q accepted", ts.Location)
			}
		}
		size, err := b.SegmentSize()
		if err != nil {
			t.Fatalf("valid metadata with segment size %d: %v", b.WALSegmentSize, err)
		}
		for tli := b.StartTimeline; tli <= b.StopTimeline && tli < b.StartTimeline+4; tli++ {
			_ = size.FileName(wal.Segment{TLI: tli, No: size.SegmentOf(b.StartLSN)})
		}
	})
}
