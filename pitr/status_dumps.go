package pitr

import (
	"fmt"
	"sort"
	"time"

	"github.com/pitr-dev/pitr/basebackup"
	"github.com/pitr-dev/pitr/dump"
)

// DumpStatus is the newest logical dump of one database.
type DumpStatus struct {
	Database   string    `json:"database"`
	Newest     string    `json:"newest"` // the run's name
	StopTime   time.Time `json:"stop_time"`
	StoredSize int64     `json:"stored_size"`
}

// AddDumps records the newest dump of each database.
func (s *Status) AddDumps(runs []dump.Run) {
	for db, r := range dump.Newest(runs) {
		d, _ := r.Database(db)
		s.Dumps = append(s.Dumps, DumpStatus{Database: db, Newest: r.Name, StopTime: d.StopTime, StoredSize: d.StoredSize})
	}
	sort.Slice(s.Dumps, func(i, j int) bool { return s.Dumps[i].Database < s.Dumps[j].Database })
}

// AddConfigWarnings warns about configuration files the newest backup
// could not capture: a restore from it would bring back the data without
// them.
func (s *Status) AddConfigWarnings(backups []basebackup.Backup) {
	var newest *basebackup.Backup
	for i := range backups {
		if newest == nil || backups[i].StopTime.After(newest.StopTime) {
			newest = &backups[i]
		}
	}
	if newest == nil {
		return
	}
	for _, f := range newest.ConfigFiles {
		if f.Error != "" {
			path := f.Path
			if path == "" {
				path = "(unknown location)"
			}
			s.Warnings = append(s.Warnings, fmt.Sprintf("backup %s did not capture the server's %s %s: %s", newest.Name, f.Kind, path, f.Error))
		}
	}
}
