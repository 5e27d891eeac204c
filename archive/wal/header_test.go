package wal

import (
	"encoding/binary"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// synthHeader lays out XLogLongPageHeaderData by explicit offsets so that the
// parser is checked against the C layout, not against itself.
func synthHeader(magic, info uint16, tli uint32, pageaddr uint64, sysid uint64, segSize, blcksz uint32) []byte {
	b := make([]byte, 8192)
	ne := binary.NativeEndian
	ne.PutUint16(b[0:], magic)
	ne.PutUint16(b[2:], info)
	ne.PutUint32(b[4:], tli)
	ne.PutUint64(b[8:], pageaddr)
	ne.PutUint32(b[16:], 0xDEAD) // xlp_rem_len: must not leak into any field
	ne.PutUint32(b[20:], 0xBEEF) // alignment padding
	ne.PutUint64(b[24:], sysid)
	ne.PutUint32(b[32:], segSize)
	ne.PutUint32(b[36:], blcksz)
	return b
}

func TestParseLongPageHeader(t *testing.T) {
	b := synthHeader(0xD110, 0x0007, 2, 0x5_07000000, 7321891234567890123, 16<<20, 8192)
	h, err := ParseLongPageHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	want := LongPageHeader{Magic: 0xD110, Info: 7, TLI: 2, PageAddr: 0x5_07000000, SystemID: 7321891234567890123, SegmentSize: 16 << 20, BlockSize: 8192}
	if h != want {
		t.Fatalf("got %+v\nwant %+v", h, want)
	}
	if h2, err := ParseLongPageHeader(b[:LongPageHeaderSize]); err != nil || h2 != want {
		t.Fatalf("exactly %d bytes: %+v, %v", LongPageHeaderSize, h2, err)
	}
}

func TestParseLongPageHeaderRejects(t *testing.T) {
	good := func() []byte { return synthHeader(0xD110, 0x0002, 1, 0x1000000, 42, 16<<20, 8192) }
	tests := []struct {
		name    string
		b       []byte
		errPart string
	}{
		{"short", good()[:LongPageHeaderSize-1], "39"},
		{"empty", nil, "got 0"},
		{"short page header flag", synthHeader(0xD110, 0x0001, 1, 0x1000000, 42, 16<<20, 8192), "XLP_LONG_HEADER"},
		{"zeroed", make([]byte, 64), "XLP_LONG_HEADER"},
		{"seg size not power of two", synthHeader(0xD110, 0x0002, 1, 0x1000000, 42, 3<<20, 8192), strconv.Itoa(3 << 20)},
		{"seg size too big", synthHeader(0xD110, 0x0002, 1, 0, 42, 1<<31, 8192), strconv.Itoa(1 << 31)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseLongPageHeader(tt.b)
			if err == nil {
				t.Fatalf("got %+v, want error", h)
			}
			if !strings.Contains(err.Error(), tt.errPart) {
				t.Fatalf("error %q does not mention %q", err, tt.errPart)
			}
		})
	}
}

func TestMagicMajorVersion(t *testing.T) {
	for magic, major := range map[uint16]int{0xD106: 13, 0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17, 0xD118: 18} {
		if got, ok := MagicMajorVersion(magic); !ok || got != major {
			t.Errorf("MagicMajorVersion(%#x) = %d, %v; want %d", magic, got, ok, major)
		}
	}
	if _, ok := MagicMajorVersion(0xD101); ok {
		t.Error("0xD101 should be unknown")
	}
}

func TestCheckSegment(t *testing.T) {
	s := mustSize(t, 16<<20)
	seg := Segment{TLI: 2, No: 0x107} // 000000020000000100000007
	hdr := func(tli uint32, pageaddr uint64, segSize uint32) LongPageHeader {
		h, err := ParseLongPageHeader(synthHeader(0xD110, 0x0002, tli, pageaddr, 42, segSize, 8192))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	tests := []struct {
		name    string
		h       LongPageHeader
		errPart []string // empty: must pass
	}{
		{"match", hdr(2, 0x1_07000000, 16<<20), nil},
		{"parent timeline copy", hdr(1, 0x1_07000000, 16<<20), nil},
		{"newer timeline", hdr(3, 0x1_07000000, 16<<20), []string{"timeline 3"}},
		{"renamed segment number", hdr(2, 0x1_06000000, 16<<20), []string{"1/6000000", "1/7000000"}},
		{"recycled segment", hdr(2, 0x0_05000000, 16<<20), []string{"0/5000000"}},
		{"other segment size", hdr(2, 0x1_07000000, 64<<20), []string{"67108864", "16777216"}},
		{"everything wrong", hdr(9, 0, 1<<20), []string{"timeline 9", "page address", "segment size"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.CheckSegment(seg, tt.h)
			if len(tt.errPart) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("want error")
			}
			msg := err.Error()
			if !strings.Contains(msg, "000000020000000100000007") {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, p := range tt.errPart {
				if !strings.Contains(msg, p) {
					t.Errorf("error %q does not mention %q", msg, p)
				}
			}
		})
	}
}

func TestCheckSegmentInHistory(t *testing.T) {
	s := mustSize(t, 16<<20)
	// TL3 from TL2 at 0/9A3B1C8 (mid segment 9), TL2 from TL1 at 0/5000000 (segment boundary).
	entries := []HistoryEntry{{TLI: 1, SwitchPoint: 0x5000000}, {TLI: 2, SwitchPoint: 0x9A3B1C8}}
	spans := Ancestry(3, entries)
	spans2 := Ancestry(2, entries[:1])
	hdr := func(tli uint32, no SegNo) LongPageHeader {
		return LongPageHeader{Magic: 0xD110, Info: 2, TLI: TimelineID(tli), PageAddr: s.StartLSN(no), SegmentSize: uint32(s), BlockSize: 8192}
	}
	tests := []struct {
		name    string
		seg     Segment
		h       LongPageHeader
		spans   []TimelineSpan
		wantErr bool
	}{
		{"switch segment carries parent timeline", Segment{3, 9}, hdr(2, 9), spans, false},
		{"after switch", Segment{3, 10}, hdr(3, 10), spans, false},
		{"after switch with parent header", Segment{3, 10}, hdr(2, 10), spans, true},
		{"switch segment with own timeline", Segment{3, 9}, hdr(3, 9), spans, true},
		{"before timeline began", Segment{3, 8}, hdr(2, 8), spans, true},
		{"wrong ancestry", Segment{2, 6}, hdr(2, 6), spans, true},
		{"no ancestry", Segment{3, 10}, hdr(3, 10), nil, true},
		{"boundary switch starts fresh", Segment{2, 5}, hdr(2, 5), spans2, false},
		{"boundary switch parent header", Segment{2, 5}, hdr(1, 5), spans2, true},
		{"timeline 1", Segment{1, 3}, hdr(1, 3), Ancestry(1, nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.CheckSegmentInHistory(tt.seg, tt.h, tt.spans)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), s.FileName(tt.seg)) {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
}

func TestReadControlSystemIDErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	zero := filepath.Join(dir, "zero")
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(short, []byte{1, 2, 3}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(zero, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8192)
	binary.NativeEndian.PutUint64(b, 7321891234567890123)
	if err := os.WriteFile(good, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if id, err := ReadControlSystemID(good); err != nil || id != 7321891234567890123 {
		t.Fatalf("good: %d, %v", id, err)
	}
	for _, p := range []string{short, zero, filepath.Join(dir, "missing")} {
		if _, err := ReadControlSystemID(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("ReadControlSystemID(%s): error %v does not name the file", p, err)
		}
	}
}

// controlData runs pg_controldata and returns its "name: value" lines.
func controlData(t *testing.T, bin, data string) map[string]string {
	t.Helper()
	cmd := exec.Command(bin, "-D", data)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	for _, k := range []string{"Database system identifier", "Bytes per WAL segment", "Latest checkpoint's REDO WAL file"} {
		if m[k] == "" {
			t.Fatalf("pg_controldata output lacks %q:\n%s", k, out)
		}
	}
	return m
}

// findInitdb prefers PATH, then the newest Debian-style install. Symlinks
// are resolved so that pg_controldata can be found next to it.
func findInitdb() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return real
		}
		return p
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	major := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return n
	}
	sort.Slice(matches, func(i, j int) bool { return major(matches[i]) > major(matches[j]) })
	if len(matches) > 0 {
		return matches[0]
	}
	return ""
}

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// TestRealSegment checks the header layout against WAL written by a real
// initdb, the only test here that can catch a wrong offset that the
// synthesized headers would share with the parser.
func TestRealSegment(t *testing.T) {
	initdb := findInitdb()
	if initdb == "" {
		skipOrFail(t, "initdb not found in PATH or /usr/lib/postgresql/*/bin")
	}
	base, err := os.MkdirTemp("", "pitr-wal-initdb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	// The postgres user must be able to reach the data directory.
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(base, "data")
	args := []string{"-D", data, "--wal-segsize=1", "-A", "trust", "-N", "--no-locale", "-U", "postgres"}
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			skipOrFail(t, "running as root and no postgres user to run initdb as: %v", err)
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			skipOrFail(t, "running as root and runuser not found: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Mkdir(data, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(data, uid, gid); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(runuser, append([]string{"-u", "postgres", "--", initdb}, args...)...)
	} else {
		cmd = exec.Command(initdb, args...)
	}
	cmd.Dir = base
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}

	// pg_controldata is an independent reader of pg_control, so comparing
	// with it checks ReadControlSystemID rather than assuming it. It also
	// names the live segment: with 1 MiB segments initdb's own checkpoints
	// have already recycled 000000010000000000000001 and its successors.
	ctl := controlData(t, filepath.Join(filepath.Dir(initdb), "pg_controldata"), data)
	sysid, err := ReadControlSystemID(filepath.Join(data, "global", "pg_control"))
	if err != nil {
		t.Fatal(err)
	}
	if want := ctl["Database system identifier"]; strconv.FormatUint(sysid, 10) != want {
		t.Fatalf("ReadControlSystemID = %d, pg_controldata says %s", sysid, want)
	}
	if got := ctl["Bytes per WAL segment"]; got != "1048576" {
		t.Fatalf("pg_controldata segment size %q, want 1048576", got)
	}
	name := ctl["Latest checkpoint's REDO WAL file"]

	s := mustSize(t, 1<<20)
	if k, err := Classify(name); err != nil || k != KindSegment {
		t.Fatalf("Classify(%q) = %v, %v", name, k, err)
	}
	seg, err := s.ParseFileName(name)
	if err != nil {
		t.Fatal(err)
	}
	live, err := os.ReadFile(filepath.Join(data, "pg_wal", name))
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1<<20 {
		t.Fatalf("%s is %d bytes, want 1 MiB", name, len(live))
	}
	h, err := ParseLongPageHeader(live)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if h.SystemID != sysid {
		t.Errorf("%s: header system ID %d != pg_control system ID %d", name, h.SystemID, sysid)
	}
	if h.SegmentSize != 1<<20 || h.TLI != 1 || h.BlockSize != 8192 {
		t.Errorf("%s: header %+v: want 1 MiB segments, timeline 1, 8 kB blocks", name, h)
	}
	if err := s.CheckSegment(seg, h); err != nil {
		t.Errorf("CheckSegment on the live segment: %v", err)
	}
	if err := s.CheckSegmentInHistory(seg, h, Ancestry(1, nil)); err != nil {
		t.Errorf("CheckSegmentInHistory on the live segment: %v", err)
	}
	// The same bytes under other names must be refused.
	for _, other := range []Segment{s.Next(seg), {TLI: 1, No: seg.No - 1}} {
		if err := s.CheckSegment(other, h); err == nil {
			t.Errorf("CheckSegment accepted the header of %s under the name %s", name, s.FileName(other))
		}
	}
	if err := mustSize(t, 16<<20).CheckSegment(Segment{TLI: 1, No: seg.No}, h); err == nil {
		t.Error("CheckSegment accepted a 1 MiB segment as 16 MiB")
	}
	// Every other file in pg_wal is either written WAL or a recycled segment
	// still carrying its old page address; CheckSegment must tell them apart.
	files, err := filepath.Glob(filepath.Join(data, "pg_wal", "0*"))
	if err != nil {
		t.Fatal(err)
	}
	var written, recycledN int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		hf, err := ParseLongPageHeader(b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		sf, err := s.ParseFileName(filepath.Base(f))
		if err != nil {
			t.Fatal(err)
		}
		recycled := hf.PageAddr != s.StartLSN(sf.No)
		if recycled {
			recycledN++
		} else {
			written++
		}
		if err := s.CheckSegment(sf, hf); (err != nil) != recycled {
			t.Errorf("%s (page address %s): recycled=%v but CheckSegment returned %v", filepath.Base(f), hf.PageAddr, recycled, err)
		}
		if hf.SystemID != sysid {
			t.Errorf("%s: system ID %d, want %d", filepath.Base(f), hf.SystemID, sysid)
		}
	}
	t.Logf("live segment %s; pg_wal holds %d written and %d recycled segments", name, written, recycledN)

	out, err := exec.Command(initdb, "--version").Output()
	if err != nil {
		t.Fatalf("initdb --version: %v", err)
	}
	m := regexp.MustCompile(`\(PostgreSQL\) (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("cannot read major version from %q", out)
	}
	major, _ := strconv.Atoi(string(m[1]))
	got, ok := MagicMajorVersion(h.Magic)
	switch {
	case major >= 13 && major <= 18 && (!ok || got != major):
		t.Errorf("PostgreSQL %d wrote magic %#04x, MagicMajorVersion says %d, %v", major, h.Magic, got, ok)
	case major > 18 && ok:
		t.Errorf("PostgreSQL %d wrote magic %#04x, which MagicMajorVersion attributes to %d", major, h.Magic, got)
	}
}
