package units

import "testing"

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 16 << 20: "16.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPGVersion(t *testing.T) {
	for n, want := range map[int]string{150018: "15.18", 170000: "17.0", 0: "unknown"} {
		if got := PGVersion(n); got != want {
			t.Errorf("PGVersion(%d) = %q, want %q", n, got, want)
		}
	}
}
