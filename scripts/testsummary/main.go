// Command testsummary reads `go test -json` output on stdin and prints a
// quiet report: the full output of failed tests and failed packages, one line
// per package (ok / FAIL / no test files), the skipped tests with their
// reasons, and a closing line "tests: N passed, N failed, N skipped".
// Lines that are not JSON (build errors, go command messages) are copied
// through. It exits 1 when anything failed.
//
//	go test -json ./... 2>&1 | go run ./scripts/testsummary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string
	FailedBuild string
}

type skip struct{ name, reason string }

func main() {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()

	var (
		testOut                    = map[string][]string{} // pkg\x00test → output lines
		pkgOut                     = map[string][]string{}
		skips                      []skip
		passed, failed, skipped    int
		pkgOK, pkgFail, pkgNoTests int
		anyFailure                 bool
	)
	key := func(e event) string { return e.Package + "\x00" + e.Test }

	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		var e event
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil || e.Action == "" {
			fmt.Fprintln(out, line)
			out.Flush()
			continue
		}
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "build-fail":
			anyFailure = true
		case "output":
			if e.Test == "" {
				pkgOut[e.Package] = append(pkgOut[e.Package], e.Output)
			} else {
				testOut[key(e)] = append(testOut[key(e)], e.Output)
			}
		case "pass", "fail", "skip":
			if e.Test != "" {
				k := key(e)
				switch e.Action {
				case "pass":
					passed++
				case "fail":
					failed++
					anyFailure = true
					fmt.Fprint(out, strings.Join(testOut[k], ""))
				case "skip":
					skipped++
					skips = append(skips, skip{e.Package + " " + e.Test, skipReason(testOut[k])})
				}
				delete(testOut, k)
				break
			}
			// Package finished.
			switch e.Action {
			case "pass":
				pkgOK++
				for _, l := range pkgOut[e.Package] {
					if strings.HasPrefix(l, "ok") {
						fmt.Fprint(out, l)
					}
				}
			case "skip":
				pkgNoTests++
				fmt.Fprintf(out, "?   \t%s\t[no test files]\n", e.Package)
			case "fail":
				pkgFail++
				anyFailure = true
				// Tests that never finished (panic, timeout) first.
				var unfinished []string
				for k := range testOut {
					if strings.HasPrefix(k, e.Package+"\x00") {
						unfinished = append(unfinished, k)
					}
				}
				sort.Strings(unfinished)
				for _, k := range unfinished {
					fmt.Fprint(out, strings.Join(testOut[k], ""))
					delete(testOut, k)
				}
				fmt.Fprint(out, strings.Join(pkgOut[e.Package], ""))
				if e.FailedBuild != "" && len(pkgOut[e.Package]) == 0 {
					fmt.Fprintf(out, "FAIL\t%s [build failed]\n", e.Package)
				}
			}
			delete(pkgOut, e.Package)
			out.Flush()
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "testsummary: reading input: %v\n", err)
		anyFailure = true
	}

	if len(skips) > 0 {
		fmt.Fprintf(out, "\nskipped tests (%d):\n", len(skips))
		for i, s := range skips {
			if i == 50 {
				fmt.Fprintf(out, "  ... and %d more\n", len(skips)-50)
				break
			}
			fmt.Fprintf(out, "  %s: %s\n", s.name, s.reason)
		}
	}
	fmt.Fprintf(out, "\npackages: %d ok, %d failed, %d without tests\n", pkgOK, pkgFail, pkgNoTests)
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	out.Flush()
	if anyFailure {
		os.Exit(1)
	}
}

// skipReason picks the t.Skip message out of a skipped test's output.
func skipReason(lines []string) string {
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		if len(t) > 200 {
			t = t[:200] + "..."
		}
		return t
	}
	return "(no reason given)"
}
