package conninfo

import (
	"slices"
	"strings"
	"testing"
)

func TestWithoutPassword(t *testing.T) {
	for _, c := range []struct{ dsn, clean, password string }{
		{"", "", ""},
		{"host=db user=app", "host=db user=app", ""},
		{"host=db password=s3cret user=app", "host=db user=app", "s3cret"},
		{"password=s3cret", "", "s3cret"},
		{"host=db password = 's3 cr\\'et\\\\' port=5433", "host=db port=5433", `s3 cr'et\`},
		{"host=db password=a\\ b", "host=db", "a b"},
		{"password=first host=db password=second", "host=db", "second"},
		{"host='my db' passwordx=keep", "host='my db' passwordx=keep", ""},
		{"postgres://app:s%40cret@db:5432/x?sslmode=require", "postgres://app@db:5432/x?sslmode=require", "s@cret"},
		{"postgresql://app@db/x?password=q&sslmode=disable", "postgresql://app@db/x?sslmode=disable", "q"},
		{"postgres://db/x", "postgres://db/x", ""},
	} {
		clean, password, err := WithoutPassword(c.dsn)
		if err != nil {
			t.Fatalf("%q: %v", c.dsn, err)
		}
		if clean != c.clean || password != c.password {
			t.Errorf("%q: got %q, %q; want %q, %q", c.dsn, clean, password, c.clean, c.password)
		}
	}
}

func TestInvalidNeverQuotesTheString(t *testing.T) {
	for _, dsn := range []string{"host=db password='s3cret", "host db password=s3cret", "=x password=s3cret", "postgres://app:s3cret@db:bad port/x"} {
		_, _, err := WithoutPassword(dsn)
		if err == nil {
			t.Fatalf("%q accepted", dsn)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error quotes the password: %v", err)
		}
	}
}

func TestHidePassword(t *testing.T) {
	args := []string{"-F", "tar", "-d", "host=db password=s3cret user=app", "-l", "password=label"}
	got, env, err := HidePassword(args)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"-F", "tar", "-d", "host=db user=app", "-l", "password=label"}
	if !slices.Equal(got, want) || !slices.Equal(env, []string{"PGPASSWORD=s3cret"}) {
		t.Fatalf("got %q env %q", got, env)
	}
	if args[3] != "host=db password=s3cret user=app" {
		t.Fatal("the caller's args were changed")
	}
	got, env, err = HidePassword([]string{"-d", "host=db"})
	if err != nil || env != nil || !slices.Equal(got, []string{"-d", "host=db"}) {
		t.Fatalf("no password: got %q env %q err %v", got, env, err)
	}
}
