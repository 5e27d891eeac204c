package basebackup

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pitr-dev/pitr/repo"
)

// Contract: a crafted base.tar cannot write outside --pgdata, not even in
// two steps (a link, then a member through it), and a refused restore leaves
// nothing behind. Each case would write outside the target if its check
// were missing: the outside directory exists and is writable.
func TestExtractCraftedTarWritesNothingOutside(t *testing.T) {
	for name, files := range map[string]func(outside string) []tarFile{
		"absolute symlink, then a file through it": func(outside string) []tarFile {
			return []tarFile{{name: "base", typ: tar.TypeSymlink, linkname: outside}, {name: "base/evil", body: "x"}}
		},
		"relative symlink, then a file through it": func(outside string) []tarFile {
			return []tarFile{{name: "pg_wal", typ: tar.TypeSymlink, linkname: "../outside"}, {name: "pg_wal/evil", body: "x"}}
		},
		"hard link to a file outside": func(outside string) []tarFile {
			return []tarFile{{name: "evil", typ: tar.TypeLink, linkname: filepath.Join(outside, "victim")}}
		},
		"parent directory": func(string) []tarFile {
			return []tarFile{{name: "../outside/evil", body: "x"}}
		},
		"parent directory after a directory": func(string) []tarFile {
			return []tarFile{{name: "base/", typ: tar.TypeDir}, {name: "base/../../outside/evil", body: "x"}}
		},
		"absolute path": func(outside string) []tarFile {
			return []tarFile{{name: filepath.Join(outside, "evil"), body: "x"}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			st, _ := newTestStore(t)
			top := t.TempDir()
			outside := filepath.Join(top, "outside")
			if err := os.Mkdir(outside, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			pgdata := filepath.Join(top, "data")
			members := append([]tarFile{{name: "PG_VERSION", body: "15\n"}}, files(outside)...)
			b := storeBackup(t, st, map[string][]byte{repo.BackupBaseTarName: makeTar(t, members)}, []string{repo.BackupBaseTarName}, nil)
			if err := Extract(context.Background(), st, b, pgdata, nil); err == nil {
				t.Fatal("crafted tar accepted")
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 1 {
				t.Errorf("the outside directory holds %d entries, want only the victim", len(entries))
			}
			if got, _ := os.ReadFile(filepath.Join(outside, "victim")); string(got) != "precious" {
				t.Errorf("victim changed to %q", got)
			}
			if _, err := os.Lstat(pgdata); !os.IsNotExist(err) {
				t.Errorf("the refused restore left %s behind", pgdata)
			}
		})
	}
}
