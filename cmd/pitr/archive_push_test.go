package main

import "testing"

func TestParseArchiveAhead(t *testing.T) {
	if n, err := parseArchiveAhead(""); err != nil || n < 2 || n > 8 {
		t.Fatalf("default: %d, %v; want half the CPUs, 2 to 8", n, err)
	}
	for v, want := range map[string]int{"off": 0, "0": 0, "false": 0, "3": 3, "64": 64} {
		if n, err := parseArchiveAhead(v); err != nil || n != want {
			t.Errorf("%q: %d, %v; want %d", v, n, err, want)
		}
	}
	for _, v := range []string{"65", "-1", "many"} {
		if _, err := parseArchiveAhead(v); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}
