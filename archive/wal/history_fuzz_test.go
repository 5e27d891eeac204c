package wal

import "testing"

// FuzzParseHistory: a .history file from the repository either fails to
// parse or yields ancestors in strictly increasing timeline order with
// non-decreasing switch points, which Ancestry and TimelineAt rely on.
func FuzzParseHistory(f *testing.F) {
	for _, s := range []string{
		"1\t0/3000000\tno recovery target specified\n",
		"1\t0/3000000\tno recovery target specified\n\n2\t0/5000120\tbefore 2026-04-08 14:13:00+00\n",
		"# comment\n1 0/3000000\n",
		"2\t0/3000000\n1\t0/4000000\n",
		"1\t0/0\n", "0\t0/1\n", "1\n", "4294967296\t0/1\n", "1\t0/3000000\treason\r\n",
	} {
		f.Add([]byte(s), uint32(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, tli uint32) {
		entries, err := ParseHistory(data)
		if err != nil {
			return
		}
		for i, e := range entries {
			if e.TLI == 0 || e.SwitchPoint == 0 {
				t.Fatalf("entry %d: %+v", i, e)
			}
			if i > 0 && (e.TLI <= entries[i-1].TLI || e.SwitchPoint < entries[i-1].SwitchPoint) {
				t.Fatalf("entries out of order: %+v", entries)
			}
		}
		if tli == 0 {
			return
		}
		own, err := ParseHistoryFile(TimelineID(tli), data)
		if err != nil {
			return
		}
		spans := Ancestry(TimelineID(tli), own)
		if len(spans) != len(own)+1 {
			t.Fatalf("Ancestry of %d entries has %d spans", len(own), len(spans))
		}
		for _, e := range own {
			TimelineAt(spans, e.SwitchPoint)
		}
	})
}
