package wal

import "testing"

// FuzzParseBackupLabel: backup_label and .backup files come from the
// repository (and from a data directory someone else controls); whatever
// they hold, parsing returns an error or a label whose required locations
// are set and whose segment names, if given, are valid WAL names.
func FuzzParseBackupLabel(f *testing.F) {
	f.Add([]byte(backupHistory))
	for _, s := range []string{
		"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-04-08 14:13:05 UTC\nLABEL: pitr 20260408T141305Z\nSTART TIMELINE: 1\n",
		"START WAL LOCATION: 0/2000028 (file ../../../../etc/passwd)\nCHECKPOINT LOCATION: 0/2000060\n",
		"START WAL LOCATION: 0/2000028\n", "LABEL\n", ": x\n", "START TIME: 2026-13-45 99:99:99 XYZ\n",
		"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\r\nCHECKPOINT LOCATION: 0/2000060\r\nSTART TIMELINE: 4294967296\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		bl, err := ParseBackupLabel(data)
		if err != nil {
			return
		}
		if bl.StartLSN == 0 && bl.CheckpointLSN == 0 {
			t.Fatalf("label without locations accepted: %+v", bl)
		}
		for _, name := range []string{bl.StartSegment, bl.StopSegment} {
			if name == "" {
				continue
			}
			if kind, err := Classify(name); err != nil || kind != KindSegment {
				t.Fatalf("label segment name %q accepted: %v", name, err)
			}
		}
	})
}
