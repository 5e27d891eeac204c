// Package lazyre compiles a regular expression on first use instead of at
// program start. pitr is one binary: archive-push and wal-fetch, started
// by PostgreSQL once per WAL file, would otherwise compile every pattern of
// every command before doing anything (about 0.25 ms per start).
package lazyre

import (
	"regexp"
	"sync"
)

// New returns a function that compiles expr once, on its first call, and
// panics then if expr is invalid, as regexp.MustCompile does (the tests of
// each package call every pattern, so a bad one fails there).
func New(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
