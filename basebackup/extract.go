package basebackup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/pitr-dev/pitr/repo"
	"github.com/pitr-dev/pitr/storage"
	"github.com/pitr-dev/pitr/storage/codec"
)

// Extract lays backup b out as a data directory at pgdata, downloading and
// verifying every part as it goes. pgdata and every tablespace target must
// be absent or empty. tablespaceMap moves tablespaces (OID → new absolute
// location); tablespaces it does not name go back to their original
// location. The tablespace_map file is rewritten to the final locations and
// pg_tblspc/<oid> links are created to match, so the server (which applies
// tablespace_map at its first start) and pg_verifybackup see the same tree.
//
// Safety: tar members must be relative paths inside their target (no
// absolute paths, no ".." and no links of any kind: PostgreSQL's tar format
// never contains them, since tablespaces travel in tablespace_map); modes
// come from the tar, without setuid/setgid/sticky bits; the data directory
// is 0700 as PostgreSQL requires. Every part is checked against its
// checksum; a corrupt part fails the extraction with codec.ErrCorrupt. On
// any failure everything Extract created is removed again, so a half
// restored directory is never mistaken for a data directory.
//
// Extract does not write recovery settings: that is the caller's job.
func Extract(ctx context.Context, st storage.Store, b Backup, pgdata string, tablespaceMap map[uint32]string) (err error) {
	if err := b.Validate(); err != nil {
		return err
	}
	dirs, err := planExtract(b, pgdata, tablespaceMap)
	if err != nil {
		return fmt.Errorf("restore backup %s: %w", b.Name, err)
	}
	var created []createdDir
	defer func() {
		if err != nil {
			for i := len(created) - 1; i >= 0; i-- {
				created[i].undo()
			}
		}
	}()
	for _, d := range dirs {
		c, err := prepareDir(d.path)
		if err != nil {
			return fmt.Errorf("restore backup %s: %w", b.Name, err)
		}
		created = append(created, c)
	}
	parts := map[string]Part{}
	for _, p := range b.Parts {
		parts[p.Name] = p
	}
	for _, d := range dirs {
		if _, ok := parts[d.part]; !ok {
			return fmt.Errorf("restore backup %s: its metadata lists no part %s", b.Name, d.part)
		}
	}
	if err := extractParts(ctx, st, b, parts, dirs); err != nil {
		return fmt.Errorf("restore backup %s: %w", b.Name, err)
	}
	if err := finishDataDir(ctx, st, b, parts, dirs); err != nil {
		return fmt.Errorf("restore backup %s: %w", b.Name, err)
	}
	for _, d := range dirs {
		if err := syncTree(d.path); err != nil {
			return fmt.Errorf("restore backup %s: %w", b.Name, err)
		}
	}
	return nil
}

// extractDir is one target directory and the part extracted into it.
type extractDir struct {
	path string
	part string
	oid  uint32 // 0 for the data directory
}

// planExtract resolves and checks the target directories: the data
// directory first, then one per tablespace.
func planExtract(b Backup, pgdata string, tablespaceMap map[uint32]string) ([]extractDir, error) {
	if pgdata == "" {
		return nil, fmt.Errorf("no data directory given")
	}
	root, err := filepath.Abs(pgdata)
	if err != nil {
		return nil, err
	}
	dirs := []extractDir{{path: root, part: repo.BackupBaseTarName}}
	known := map[uint32]bool{}
	for _, ts := range b.Tablespaces {
		known[ts.OID] = true
		target := ts.Location
		if m, ok := tablespaceMap[ts.OID]; ok {
			target = m
		}
		if !filepath.IsAbs(target) {
			return nil, fmt.Errorf("tablespace %d (%s): location %q is not an absolute path", ts.OID, ts.Name, target)
		}
		target = filepath.Clean(target)
		if within(root, target) || within(target, root) {
			return nil, fmt.Errorf("tablespace %d (%s): location %s overlaps the data directory %s", ts.OID, ts.Name, target, root)
		}
		for _, d := range dirs[1:] {
			if within(d.path, target) || within(target, d.path) {
				return nil, fmt.Errorf("tablespaces %d and %d would both go to %s", d.oid, ts.OID, target)
			}
		}
		part := ts.Part
		if part == "" {
			part = repo.BackupTablespaceTarName(ts.OID)
		}
		dirs = append(dirs, extractDir{path: target, part: part, oid: ts.OID})
	}
	for oid := range tablespaceMap {
		if !known[oid] {
			return nil, fmt.Errorf("tablespace %d is not in backup %s (it has %s)", oid, b.Name, tablespaceList(b))
		}
	}
	return dirs, nil
}

func tablespaceList(b Backup) string {
	if len(b.Tablespaces) == 0 {
		return "no tablespaces"
	}
	var s []string
	for _, ts := range b.Tablespaces {
		s = append(s, fmt.Sprintf("%d (%s)", ts.OID, ts.Name))
	}
	return "tablespaces " + strings.Join(s, ", ")
}

// within reports whether p is dir or below it.
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

// createdDir remembers what prepareDir made, to undo it on failure.
type createdDir struct {
	path    string
	existed bool
}

func (c createdDir) undo() {
	if !c.existed {
		_ = os.RemoveAll(c.path)
		return
	}
	entries, _ := os.ReadDir(c.path)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(c.path, e.Name()))
	}
}

// prepareDir creates dir (0700) or accepts an existing empty one, which is
// then set to 0700: PostgreSQL refuses a data directory group or others can
// write, and a tablespace holds the same data.
func prepareDir(dir string) (createdDir, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case err == nil:
		if len(entries) > 0 {
			return createdDir{}, fmt.Errorf("%s is not empty", dir)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return createdDir{}, err
		}
		return createdDir{path: dir, existed: true}, nil
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return createdDir{}, err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return createdDir{}, err
		}
		return createdDir{path: dir}, nil
	default:
		return createdDir{}, err
	}
}

// extractParts extracts every tar part into its directory, up to
// partsAtOnce parts at a time, and returns once every file written is
// synced. The first failure cancels the other parts; the caller then
// removes what was written, after everything here has stopped.
func extractParts(ctx context.Context, st storage.Store, b Backup, parts map[string]Part, dirs []extractDir) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := &firstError{cancel: cancel}
	sy := startSyncer(fail)
	slots := make(chan struct{}, partsAtOnce)
	var wg sync.WaitGroup
	for _, d := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			if err := ctx.Err(); err != nil {
				fail.set(err)
				return
			}
			if err := extractPart(ctx, st, b, parts[d.part], d.path, sy); err != nil {
				fail.set(err)
			}
		}()
	}
	wg.Wait()
	sy.wait()
	return fail.get()
}

// extractPart downloads one tar part into dir through the pipeline of
// extract_pipeline.go, handing every file written to sy. The object is
// read to its end even after the tar's end-of-archive marker, because the
// codec checks size and SHA-256 only at EOF; the result is also compared
// with what the backup's metadata recorded for the part.
func extractPart(ctx context.Context, st storage.Store, b Backup, p Part, dir string, sy *syncer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	raw, err := st.Open(ctx, b.Key(p.Name), 0)
	if err != nil {
		return fmt.Errorf("part %s: %w", p.Name, err)
	}
	fetched := startReadAhead(ctx, raw, pipeChunk, partBuffers)
	obj, err := codec.NewReaderOptions(fetched, codec.ReadOptions{Concurrency: decodeConcurrency})
	if err != nil {
		cancel()
		fetched.wait()
		raw.Close()
		return fmt.Errorf("part %s: open %s: %w", p.Name, b.Key(p.Name), err)
	}
	decoded := startReadAhead(ctx, obj, pipeChunk, partBuffers)
	// Stop every stage before releasing what it reads from: the decoder
	// and the storage reader are not safe to close under a running Read.
	defer func() {
		cancel()
		decoded.wait()
		fetched.wait()
		obj.Close()
		raw.Close()
	}()
	if err := extractTar(ctx, decoded, dir, sy); err != nil {
		if errors.Is(err, codec.ErrCorrupt) {
			return fmt.Errorf("part %s is corrupt: %w", p.Name, err)
		}
		return fmt.Errorf("part %s: %w", p.Name, err)
	}
	if _, err := io.Copy(io.Discard, decoded); err != nil {
		if errors.Is(err, codec.ErrCorrupt) {
			return fmt.Errorf("part %s is corrupt: %w", p.Name, err)
		}
		return fmt.Errorf("part %s: %w", p.Name, err)
	}
	// The decode goroutine has returned after its io.EOF, so Info is final.
	decoded.wait()
	info := obj.Info()
	if info.Size != p.Size || !info.Matches(p.SHA256, p.Checksum) {
		return fmt.Errorf("%w: part %s holds %s, the backup recorded %d bytes %.16s%.25s (object replaced?)",
			codec.ErrCorrupt, p.Name, info, p.Size, p.SHA256, p.Checksum)
	}
	return nil
}

// extractTar writes the members of one tar stream below dir; sy syncs
// and closes the files.
func extractTar(ctx context.Context, r io.Reader, dir string, sy *syncer) error {
	tr := tar.NewReader(r)
	buf := make([]byte, pipeChunk)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			// The stream was a valid tar when it was stored (pitr read it
			// as it went by), so a tar error now means damaged bytes; a
			// codec error is already ErrCorrupt.
			if errors.Is(err, codec.ErrCorrupt) {
				return err
			}
			return fmt.Errorf("%w: not a valid tar stream: %v", codec.ErrCorrupt, err)
		}
		if err := extractMember(tr, hdr, dir, sy, buf); err != nil {
			return err
		}
	}
}

// memberPath maps a tar member name to a path below dir, refusing anything
// that could land outside it.
func memberPath(dir, name string) (string, error) {
	clean := strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
	if clean == "" || clean == "." {
		return dir, nil
	}
	if !filepath.IsLocal(clean) {
		return "", fmt.Errorf("tar member %q: not a relative path inside the target directory", name)
	}
	for _, elem := range strings.Split(clean, "/") {
		if elem == ".." || elem == "" {
			return "", fmt.Errorf("tar member %q: not a relative path inside the target directory", name)
		}
	}
	return filepath.Join(dir, filepath.FromSlash(clean)), nil
}

func extractMember(tr *tar.Reader, hdr *tar.Header, dir string, sy *syncer, buf []byte) error {
	p, err := memberPath(dir, hdr.Name)
	if err != nil {
		return err
	}
	// Only permission bits: a backup never needs setuid, setgid or sticky.
	// The owner keeps read and write so the restore (and PostgreSQL) can
	// use what it created.
	perm := os.FileMode(hdr.Mode).Perm() | 0o600
	switch hdr.Typeflag {
	case tar.TypeDir:
		if p == dir {
			return nil
		}
		if err := os.Mkdir(p, perm|0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			return fmt.Errorf("tar member %q: %s exists and is not a directory", hdr.Name, p)
		}
		return nil
	case tar.TypeReg, tar.TypeRegA:
		if p == dir {
			return fmt.Errorf("tar member %q: a file where the target directory is", hdr.Name)
		}
		if err := ensureParent(dir, p); err != nil {
			return fmt.Errorf("tar member %q: %w", hdr.Name, err)
		}
		// O_EXCL: a member never replaces what an earlier one created, and
		// never follows a link.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return err
		}
		// Hiding f's ReadFrom makes the copy use buf: one write per
		// chunk, not per 32 KiB.
		n, err := io.CopyBuffer(struct{ io.Writer }{f}, tr, buf)
		if err == nil && n != hdr.Size {
			err = fmt.Errorf("tar member %q: %d bytes, header says %d", hdr.Name, n, hdr.Size)
		}
		if err == nil {
			// fsync (and the close, whose error counts too) happens on
			// the syncer's workers while the next members are written.
			sy.add(f)
			return nil
		}
		f.Close()
		switch {
		case errors.Is(err, codec.ErrCorrupt):
			return err
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("%w: tar member %q is truncated", codec.ErrCorrupt, hdr.Name)
		}
		return fmt.Errorf("write %s: %w", p, err)
	case tar.TypeSymlink, tar.TypeLink:
		return fmt.Errorf("tar member %q: a link (to %q); PostgreSQL base backups contain none, refusing it", hdr.Name, hdr.Linkname)
	default:
		return fmt.Errorf("tar member %q: unsupported type %q", hdr.Name, hdr.Typeflag)
	}
}

// ensureParent creates the missing directories between dir and p's parent
// (tar streams normally list directories first) and checks that none of
// them is a link.
func ensureParent(dir, p string) error {
	parent := filepath.Dir(p)
	rel, err := filepath.Rel(dir, parent)
	if err != nil {
		return err
	}
	cur := dir
	if rel == "." {
		return nil
	}
	for _, elem := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, elem)
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(cur, 0o700); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", cur)
		}
	}
	return nil
}

// finishDataDir rewrites tablespace_map to the final locations, links
// pg_tblspc/<oid> to them, and puts backup_manifest in the data directory
// (where pg_basebackup's plain format puts it) when the base archive did not
// carry it.
func finishDataDir(ctx context.Context, st storage.Store, b Backup, parts map[string]Part, dirs []extractDir) error {
	root := dirs[0].path
	targets := map[uint32]string{}
	for _, d := range dirs[1:] {
		targets[d.oid] = d.path
	}
	mapPath := filepath.Join(root, tablespaceMapFile)
	data, err := os.ReadFile(mapPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if len(targets) > 0 {
			return fmt.Errorf("the backup has tablespaces but no tablespace_map")
		}
	case err != nil:
		return err
	default:
		entries, err := ParseTablespaceMap(data)
		if err != nil {
			return err
		}
		if len(entries) != len(targets) {
			return fmt.Errorf("tablespace_map lists %d tablespaces, the backup's metadata %d", len(entries), len(targets))
		}
		for i, e := range entries {
			t, ok := targets[e.OID]
			if !ok {
				return fmt.Errorf("tablespace_map lists tablespace %d, which the backup's metadata does not", e.OID)
			}
			entries[i].Path = t
			link := filepath.Join(root, "pg_tblspc", fmt.Sprint(e.OID))
			if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
				return err
			}
			if err := os.Symlink(t, link); err != nil {
				return fmt.Errorf("link tablespace %d: %w", e.OID, err)
			}
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].OID < entries[j].OID })
		if err := writeFileSync(mapPath, FormatTablespaceMap(entries)); err != nil {
			return err
		}
	}

	mp, ok := parts[repo.BackupManifestName]
	if !ok {
		return nil
	}
	dest := filepath.Join(root, manifestFile)
	if _, err := os.Lstat(dest); err == nil {
		return nil
	}
	obj, err := codec.Open(ctx, st, b.Key(mp.Name))
	if err != nil {
		return fmt.Errorf("part %s: %w", mp.Name, err)
	}
	defer obj.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(obj, MaxManifestSize+1)); err != nil {
		return fmt.Errorf("part %s: %w", mp.Name, err)
	}
	if buf.Len() > MaxManifestSize {
		return fmt.Errorf("part %s is larger than %d bytes", mp.Name, MaxManifestSize)
	}
	return writeFileSync(dest, buf.Bytes())
}

// writeFileSync replaces path with data through a synced temporary file.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".pitr-tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncTree fsyncs every directory below root (the syncer synced the files
// before), so names survive a crash before the server first starts.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", p, err)
		}
		return nil
	})
}
