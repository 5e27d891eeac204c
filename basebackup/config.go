package basebackup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// ConfigFile is one of the server's configuration files as a base backup
// captured it (backup.json "config_files"). On Debian and Ubuntu
// postgresql.conf, pg_hba.conf and pg_ident.conf live in /etc, outside the
// data directory, so the base backup alone does not restore them.
type ConfigFile struct {
	Path string `json:"path"` // absolute, on the server's host
	// Kind is config_file, hba_file or ident_file (the server settings), or
	// include (named by an include, include_if_exists or include_dir).
	Kind string `json:"kind"`
	// InDataDirectory files travel in base.tar; they have no object.
	InDataDirectory bool   `json:"in_data_directory,omitempty"`
	Object          string `json:"object,omitempty"` // "config/<n>-<name>"
	Size            int64  `json:"size,omitempty"`
	SHA256          string `json:"sha256,omitempty"`   // see Part
	Checksum        string `json:"checksum,omitempty"` // see Part
	// Error says why the file could not be captured (the backup goes on:
	// the data matters more than the configuration, and the warning is in
	// the backup's output and in backup show).
	Error string `json:"error,omitempty"`
}

// maxConfigFile bounds one captured file; configuration files are small.
const maxConfigFile = 16 << 20

// maxIncludeDepth is PostgreSQL's own limit on nested includes.
const maxIncludeDepth = 10

// configSource reads files and lists directories the way the server sees
// them (pg_read_binary_file, pg_ls_dir: superuser or pg_read_server_files)
// and falls back to this host's file system: the server's view is the one
// that counts when pitr backup runs on another host, the local one works
// for a backup role without those rights when pitr runs on the server.
type configSource struct {
	conn *pgx.Conn
}

func (s configSource) read(ctx context.Context, path string) ([]byte, error) {
	var data []byte
	serr := s.conn.QueryRow(ctx, `SELECT pg_read_binary_file($1)`, path).Scan(&data)
	if serr == nil {
		if len(data) > maxConfigFile {
			return nil, fmt.Errorf("larger than %d bytes", maxConfigFile)
		}
		return data, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the server did not let pitr read it (%v), and neither does this host: %w", firstLine(serr.Error()), err)
	}
	defer f.Close()
	data, err = io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigFile {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigFile)
	}
	return data, nil
}

func (s configSource) list(ctx context.Context, dir string) ([]string, error) {
	rows, err := s.conn.Query(ctx, `SELECT pg_ls_dir($1)`, dir)
	if err == nil {
		names, cerr := pgx.CollectRows(rows, pgx.RowTo[string])
		if cerr == nil {
			return names, nil
		}
		err = cerr
	}
	entries, lerr := os.ReadDir(dir)
	if lerr != nil {
		return nil, fmt.Errorf("the server did not let pitr list it (%v), and neither does this host: %w", firstLine(err.Error()), lerr)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// captureConfig finds the server's configuration files (config_file,
// hba_file, ident_file and every file they include) and stores those
// outside the data directory as objects of the backup. Problems are
// warnings, recorded per file: the backup itself does not depend on them.
func (r *run) captureConfig(ctx context.Context) []ConfigFile {
	conn, err := connect(ctx, r.o.DSN)
	if err != nil {
		r.log.Warn("could not capture the server's configuration files", "err", err)
		return []ConfigFile{{Kind: "config_file", Error: err.Error()}}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var dataDir, configFile, hbaFile, identFile string
	err = conn.QueryRow(ctx, `SELECT current_setting('data_directory'), current_setting('config_file'),
		current_setting('hba_file'), current_setting('ident_file')`).Scan(&dataDir, &configFile, &hbaFile, &identFile)
	if err != nil {
		msg := fmt.Sprintf("cannot read the server's file locations (%v); grant pg_read_all_settings to the backup role", err)
		r.log.Warn("the server's configuration files are NOT captured with this backup: " + msg)
		return []ConfigFile{{Kind: "config_file", Error: msg}}
	}
	settings := map[string]string{"config_file": configFile, "hba_file": hbaFile, "ident_file": identFile}
	files := collectConfigFiles(ctx, configSource{conn: conn}, settings)
	n := 0
	for i := range files {
		f := &files[i]
		if f.Error != "" {
			continue
		}
		f.InDataDirectory = inDir(f.Path, dataDir)
		if f.InDataDirectory {
			continue
		}
		n++
		f.Object = repo.BackupConfigName(n, filepath.Base(f.Path))
		data := f.content
		stored, err := codec.Put(ctx, r.o.Store, r.key(f.Object), bytes.NewReader(data), int64(len(data)), r.o.Codec)
		if err != nil {
			f.Error = fmt.Sprintf("store: %v", err)
			f.Object = ""
			continue
		}
		f.Size = stored.Size
		f.SHA256, f.Checksum = stored.Record()
	}
	out := make([]ConfigFile, 0, len(files))
	for _, f := range files {
		if f.Error != "" {
			r.log.Warn("a configuration file of the server is NOT captured with this backup; keep a copy yourself",
				"file", f.Path, "kind", f.Kind, "reason", f.Error)
		} else if !f.InDataDirectory {
			r.log.Info("captured configuration file", "file", f.Path, "kind", f.Kind, "object", f.Object)
		}
		out = append(out, f.ConfigFile)
	}
	return out
}

func inDir(path, dir string) bool {
	if dir == "" {
		return false
	}
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// capturedFile is a ConfigFile with its content, while capturing.
type capturedFile struct {
	ConfigFile
	content []byte
}

// fileSource is what collectConfigFiles reads from (tests fake it).
type fileSource interface {
	read(ctx context.Context, path string) ([]byte, error)
	list(ctx context.Context, dir string) ([]string, error)
}

// collectConfigFiles reads the three settings' files and, recursively,
// every file their include directives name, in the order PostgreSQL reads
// them. Each file appears once.
func collectConfigFiles(ctx context.Context, src fileSource, settings map[string]string) []capturedFile {
	var out []capturedFile
	seen := map[string]bool{}
	var visit func(path, kind string, hba, optional bool, depth int)
	visit = func(path, kind string, hba, optional bool, depth int) {
		path = filepath.Clean(path)
		if path == "" || seen[path] {
			return
		}
		seen[path] = true
		data, err := src.read(ctx, path)
		if err != nil {
			if optional && errors.Is(err, os.ErrNotExist) {
				return
			}
			if optional && strings.Contains(err.Error(), "No such file") {
				return
			}
			out = append(out, capturedFile{ConfigFile: ConfigFile{Path: path, Kind: kind, Error: err.Error()}})
			return
		}
		out = append(out, capturedFile{ConfigFile: ConfigFile{Path: path, Kind: kind}, content: data})
		if depth >= maxIncludeDepth {
			return
		}
		for _, inc := range parseIncludes(data, hba) {
			target := inc.path
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(path), target)
			}
			switch inc.directive {
			case "include":
				visit(target, "include", hba, false, depth+1)
			case "include_if_exists":
				visit(target, "include", hba, true, depth+1)
			case "include_dir":
				names, err := src.list(ctx, target)
				if err != nil {
					out = append(out, capturedFile{ConfigFile: ConfigFile{Path: filepath.Clean(target), Kind: "include", Error: err.Error()}})
					continue
				}
				sort.Strings(names)
				for _, n := range names {
					// PostgreSQL reads the *.conf files of the directory, in
					// name order, skipping hidden ones.
					if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".conf") {
						continue
					}
					visit(filepath.Join(target, n), "include", hba, false, depth+1)
				}
			}
		}
	}
	for _, kind := range []string{"config_file", "hba_file", "ident_file"} {
		if p := settings[kind]; p != "" {
			visit(p, kind, kind != "config_file", false, 0)
		}
	}
	return out
}

type include struct {
	directive, path string
}

// parseIncludes finds include, include_if_exists and include_dir
// directives. In postgresql.conf they are parameter lines (`include
// 'file'`, `include = 'file'`, single quotes with ” or \' escapes, #
// comments); in pg_hba.conf and pg_ident.conf (PostgreSQL 16+) they are
// lines starting with the keyword, the path optionally double-quoted.
func parseIncludes(data []byte, hba bool) []include {
	var out []include
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(stripComment(line))
		if line == "" {
			continue
		}
		word, rest := splitWord(line)
		word = strings.ToLower(word)
		if word != "include" && word != "include_if_exists" && word != "include_dir" {
			continue
		}
		rest = strings.TrimSpace(rest)
		var path string
		if hba {
			path = strings.Trim(strings.TrimSpace(rest), `"`)
		} else {
			rest = strings.TrimSpace(strings.TrimPrefix(rest, "="))
			path = unquoteConf(rest)
		}
		if path != "" {
			out = append(out, include{directive: word, path: path})
		}
	}
	return out
}

func splitWord(s string) (string, string) {
	i := strings.IndexAny(s, " \t=")
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

// stripComment removes a # comment that is not inside single quotes.
func stripComment(line string) string {
	in := false
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\'':
			in = !in
		case '#':
			if !in {
				return line[:i]
			}
		}
	}
	return line
}

// unquoteConf reads a postgresql.conf value: 'quoted' (” and \' are
// quotes) or a bare word.
func unquoteConf(v string) string {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "'") {
		if i := strings.IndexAny(v, " \t"); i >= 0 {
			v = v[:i]
		}
		return v
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && i+1 < len(v):
			i++
			b.WriteByte(v[i])
		case c == '\'' && i+1 < len(v) && v[i+1] == '\'':
			i++
			b.WriteByte('\'')
		case c == '\'':
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// RestoredConfig is one configuration file put back by RestoreConfig.
type RestoredConfig struct {
	Original string // where it was on the source host
	Restored string
	Kind     string
}

// ConfigDestination is where RestoreConfig puts a captured file: its
// original absolute path below dir, so relative include directives still
// resolve between the restored files.
func ConfigDestination(dir, original string) string {
	return filepath.Join(dir, filepath.Clean("/"+original))
}

// CheckConfigRestore fails if a file RestoreConfig would write exists
// (unless force): pitr restore checks this before touching anything.
func CheckConfigRestore(b Backup, dir string, force bool) error {
	if force {
		return nil
	}
	for _, f := range b.ConfigFiles {
		if f.Object == "" {
			continue
		}
		dst := ConfigDestination(dir, f.Path)
		if _, err := os.Lstat(dst); err == nil {
			return fmt.Errorf("restore: %s exists; the backup's copy of %s would overwrite it (pass --force, or --config-dir elsewhere)", dst, f.Path)
		}
	}
	return nil
}

// RestoreConfig writes the backup's captured configuration files below
// dir (see ConfigDestination), each checked against its SHA-256, and
// returns what it wrote and notes for the operator: settings in the
// restored files that point at the source host's paths (data_directory,
// hba_file, ident_file, ...). Existing files are never overwritten unless
// force.
func RestoreConfig(ctx context.Context, st storage.Store, b Backup, dir string, force bool) ([]RestoredConfig, []string, error) {
	if err := CheckConfigRestore(b, dir, force); err != nil {
		return nil, nil, err
	}
	var out []RestoredConfig
	var notes []string
	for _, f := range b.ConfigFiles {
		switch {
		case f.Error != "":
			notes = append(notes, fmt.Sprintf("%s (%s) was not captured by the backup: %s", orUnknown(f.Path), f.Kind, f.Error))
			continue
		case f.Object == "":
			continue
		}
		dst := ConfigDestination(dir, f.Path)
		data, err := readConfigObject(ctx, st, b, f)
		if err != nil {
			return out, notes, err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return out, notes, fmt.Errorf("restore configuration: %w", err)
		}
		flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if force {
			flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		}
		if err := writeSynced(dst, data, flags); err != nil {
			return out, notes, fmt.Errorf("restore configuration %s: %w", dst, err)
		}
		out = append(out, RestoredConfig{Original: f.Path, Restored: dst, Kind: f.Kind})
		if f.Kind == "config_file" || f.Kind == "include" && strings.HasSuffix(f.Path, ".conf") {
			notes = append(notes, pathSettings(data, f.Path, dir)...)
		}
	}
	return out, notes, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "(location unknown)"
	}
	return s
}

func readConfigObject(ctx context.Context, st storage.Store, b Backup, f ConfigFile) ([]byte, error) {
	obj, err := codec.Open(ctx, st, b.Key(f.Object))
	if err != nil {
		return nil, fmt.Errorf("restore configuration %s: %w", f.Path, err)
	}
	defer obj.Close()
	obj.SetLimit(maxConfigFile)
	data, err := io.ReadAll(obj)
	if err != nil {
		return nil, fmt.Errorf("restore configuration %s: %w", f.Path, err)
	}
	info := obj.Info()
	if !info.Matches(f.SHA256, f.Checksum) {
		return nil, fmt.Errorf("restore configuration %s: %w: content differs from backup.json", f.Path, codec.ErrCorrupt)
	}
	return data, nil
}

func writeSynced(p string, data []byte, flags int) error {
	f, err := os.OpenFile(p, flags, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pathSettings reports settings of a restored postgresql.conf (or included
// file) that name paths on the source host, so the operator knows to change
// them before starting a server with the restored file.
func pathSettings(data []byte, original, dir string) []string {
	var notes []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(stripComment(line))
		name, rest := splitWord(line)
		name = strings.ToLower(name)
		switch name {
		case "data_directory", "hba_file", "ident_file", "external_pid_file":
		default:
			continue
		}
		v := unquoteConf(strings.TrimPrefix(strings.TrimSpace(rest), "="))
		if v == "" {
			continue
		}
		note := fmt.Sprintf("%s sets %s = '%s' (a path on the source host)", original, name, v)
		switch name {
		case "data_directory":
			note += "; point it at the restored data directory before starting a server with this file"
		case "hba_file", "ident_file":
			note += fmt.Sprintf("; the backup's copy is restored at %s", ConfigDestination(dir, v))
		}
		notes = append(notes, note)
	}
	return notes
}
