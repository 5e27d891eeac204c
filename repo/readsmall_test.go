package repo

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/fs"
)

func TestReadSmall(t *testing.T) {
	ctx := context.Background()
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSmall(ctx, st, "absent.json", 10); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("absent object: %v, want ErrNotExist", err)
	}
	if err := st.Put(ctx, "ten.json", bytes.NewReader([]byte("0123456789"))); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadSmall(ctx, st, "ten.json", 10); err != nil || string(b) != "0123456789" {
		t.Fatalf("object of exactly the limit: %q, %v", b, err)
	}
	// One byte over is refused, not cut short into something that may parse.
	if b, err := ReadSmall(ctx, st, "ten.json", 9); err == nil {
		t.Fatalf("object over the limit read as %q", b)
	}
}
