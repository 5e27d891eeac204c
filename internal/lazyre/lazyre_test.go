package lazyre

import (
	"sync/atomic"
	"testing"
)

func TestCompilesOnceOnFirstUse(t *testing.T) {
	re := New(`^a(b+)$`)
	if m := re().FindStringSubmatch("abbb"); len(m) != 2 || m[1] != "bbb" {
		t.Fatalf("match = %q", m)
	}
	if re() != re() {
		t.Fatal("compiled more than once")
	}
}

func TestInvalidPatternPanicsOnFirstUse(t *testing.T) {
	var used atomic.Bool
	re := New(`(`) // no panic yet
	defer func() {
		if recover() == nil || !used.Load() {
			t.Fatal("an invalid pattern did not panic on first use")
		}
	}()
	used.Store(true)
	re()
}
