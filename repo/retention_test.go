package repo

import "testing"

func TestRetained(t *testing.T) {
	for key, want := range map[string]bool{
		MarkerKey: true,
		"7/wal/0000000100000000/000000010000000000000001":                 true,
		"7/wal/0000000100000000/000000010000000000000001.00000028.backup": true,
		"7/wal/00000002.history":                                          true,
		"7/wal/0000000100000000/000000010000000000000001.partial":         false,
		"7/basebackups/20260408T141301Z/base.tar":                         true,
		"7/basebackups/20260408T141301Z/backup.json":                      true,
		"7/basebackups/20260408T141301Z/config/1-postgresql.conf":         true,
		"7/basebackups/20260408T141301Z/in-progress.json":                 false,
		"7/dumps/20260408T141301Z/app.dump":                               true,
		"7/dumps/20260408T141301Z/in-progress.json":                       false,
		"locks/prune.json":                                                false,
		"7/stream/state.json":                                             false,
		"7/tablespaces/16384.json":                                        false,
		"7/drills/20260408T141301Z.json":                                  false,
		"x/wal/00000002.history":                                          false,
		"7/wal/not-a-wal-name":                                            false,
	} {
		if got := Retained(key); got != want {
			t.Errorf("Retained(%q) = %v, want %v", key, got, want)
		}
	}
}
