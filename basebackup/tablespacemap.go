package basebackup

import (
	"fmt"
	"strconv"
	"strings"
)

// TablespaceMapEntry is one line of a tablespace_map file.
type TablespaceMapEntry struct {
	OID  uint32
	Path string
}

// ParseTablespaceMap parses tablespace_map as the server's
// read_tablespace_map does: one "<oid> <path>" per line, where a backslash
// makes the next character (a backslash, or a newline or carriage return
// inside the path) literal and an unescaped "\r" before the newline is
// tolerated.
func ParseTablespaceMap(data []byte) ([]TablespaceMapEntry, error) {
	var out []TablespaceMapEntry
	var line strings.Builder
	escaped := false
	lineNo := 1
	flush := func() error {
		s := line.String()
		line.Reset()
		if s == "" {
			return nil
		}
		oidText, p, ok := strings.Cut(s, " ")
		if !ok || p == "" {
			return fmt.Errorf("tablespace_map line %d %q: want \"OID PATH\"", lineNo, s)
		}
		oid, err := strconv.ParseUint(oidText, 10, 32)
		if err != nil || oid == 0 {
			return fmt.Errorf("tablespace_map line %d: %q is not a tablespace OID", lineNo, oidText)
		}
		for _, e := range out {
			if e.OID == uint32(oid) {
				return fmt.Errorf("tablespace_map line %d: tablespace %d listed twice", lineNo, oid)
			}
		}
		out = append(out, TablespaceMapEntry{OID: uint32(oid), Path: p})
		return nil
	}
	for _, c := range data {
		switch {
		case escaped:
			line.WriteByte(c)
			escaped = false
		case c == '\\':
			escaped = true
		case c == '\r':
		case c == '\n':
			if err := flush(); err != nil {
				return nil, err
			}
			lineNo++
		default:
			line.WriteByte(c)
		}
	}
	if escaped {
		return nil, fmt.Errorf("tablespace_map line %d: ends with a lone backslash", lineNo)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// FormatTablespaceMap writes entries the way the server writes
// tablespace_map, escaping backslashes and line breaks in paths.
func FormatTablespaceMap(entries []TablespaceMapEntry) []byte {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "%d ", e.OID)
		for i := 0; i < len(e.Path); i++ {
			c := e.Path[i]
			if c == '\\' || c == '\n' || c == '\r' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}
