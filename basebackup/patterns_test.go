package basebackup

import (
	"regexp"
	"testing"
)

// Patterns compile on first use (internal/lazyre); this compiles them all,
// so a bad one fails here and not in the one command that needs it.
func TestPatternsCompile(t *testing.T) {
	for _, re := range []func() *regexp.Regexp{tablespaceArchiveRE, clientVersionRE} {
		re()
	}
}
