package basebackup

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"testing"
)

func TestParseIncludes(t *testing.T) {
	conf := `# a comment include 'no.conf'
shared_buffers = 128MB
include 'a.conf'   # trailing comment
include = '/etc/b''s.conf'
INCLUDE_IF_EXISTS 'c.conf'
include_dir conf.d
data_directory = '/var/lib/x#not a comment'
`
	got := parseIncludes([]byte(conf), false)
	want := []include{{"include", "a.conf"}, {"include", "/etc/b's.conf"}, {"include_if_exists", "c.conf"}, {"include_dir", "conf.d"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("postgresql.conf includes %v, want %v", got, want)
	}
	hba := "local all all trust\ninclude \"extra hba.conf\"\ninclude_dir hba.d\n"
	got = parseIncludes([]byte(hba), true)
	want = []include{{"include", "extra hba.conf"}, {"include_dir", "hba.d"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pg_hba.conf includes %v, want %v", got, want)
	}
}

type fakeFiles map[string]string

func (f fakeFiles) read(_ context.Context, p string) ([]byte, error) {
	s, ok := f[p]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", p, os.ErrNotExist)
	}
	return []byte(s), nil
}

func (f fakeFiles) list(_ context.Context, dir string) ([]string, error) {
	var out []string
	for p := range f {
		if len(p) > len(dir)+1 && p[:len(dir)+1] == dir+"/" {
			out = append(out, p[len(dir)+1:])
		}
	}
	return out, nil
}

// Includes are followed relative to the including file, include_dir takes
// *.conf files in name order, a missing include_if_exists is no error, a
// missing include is recorded as not captured, and a cycle ends.
func TestCollectConfigFiles(t *testing.T) {
	files := fakeFiles{
		"/etc/pg/postgresql.conf":     "include 'extra.conf'\ninclude_dir 'conf.d'\ninclude_if_exists 'gone.conf'\ninclude 'missing.conf'\n",
		"/etc/pg/extra.conf":          "include 'postgresql.conf'\n",
		"/etc/pg/conf.d/20-b.conf":    "x = 1\n",
		"/etc/pg/conf.d/10-a.conf":    "y = 2\n",
		"/etc/pg/conf.d/.hidden.conf": "z = 3\n",
		"/etc/pg/conf.d/notes.txt":    "",
		"/etc/pg/pg_hba.conf":         "local all all peer\n",
		"/data/pg_ident.conf":         "",
	}
	got := collectConfigFiles(context.Background(), files, map[string]string{
		"config_file": "/etc/pg/postgresql.conf", "hba_file": "/etc/pg/pg_hba.conf", "ident_file": "/data/pg_ident.conf"})
	var paths []string
	for _, f := range got {
		s := f.Path + ":" + f.Kind
		if f.Error != "" {
			s += ":error"
		}
		paths = append(paths, s)
	}
	want := []string{"/etc/pg/postgresql.conf:config_file", "/etc/pg/extra.conf:include", "/etc/pg/conf.d/10-a.conf:include",
		"/etc/pg/conf.d/20-b.conf:include", "/etc/pg/missing.conf:include:error", "/etc/pg/pg_hba.conf:hba_file", "/data/pg_ident.conf:ident_file"}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("collected %v\nwant %v", paths, want)
	}
	if !inDir("/data/pg_ident.conf", "/data") || inDir("/data2/x", "/data") || inDir("/etc/x", "/data") {
		t.Fatal("inDir")
	}
}
