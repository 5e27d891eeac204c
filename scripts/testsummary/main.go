// Command testsummary reads `go test -json` output on stdin and prints a
// quiet report: the full output of failed tests and failed packages, one line
// per package (ok / FAIL / no test files), the skipped tests with their
// reasons, and a closing line "tests: N passed, N failed, N skipped".
// Lines that are not JSON (build errors, go command messages) are copied
// through. At the end it prints timings: the slowest tests of the run, and a
// per-test table of the integration package (each scenario with its
// subtests, which run in parallel: a parent's own time is not theirs). It
// exits 1 when anything failed.
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
	Elapsed     float64 // seconds, on pass/fail/skip
}

// timing is one finished test.
type timing struct {
	pkg, test, result string
	seconds           float64
}

// timedPackage is the package whose every test gets a line in the timing
// table: the integration suite, where each test is a PITR scenario.
const timedPackage = "github.com/pitr-dev/pitr/integration"

// slowestShown is how many of the slowest tests (of any package) are listed.
const slowestShown = 15

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
		timings                    []timing
		pkgElapsed                 = map[string]float64{}
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
				timings = append(timings, timing{pkg: e.Package, test: e.Test, result: e.Action, seconds: e.Elapsed})
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
			pkgElapsed[e.Package] = e.Elapsed
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
	printTimings(out, timings, pkgElapsed)
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

// printTimings prints the slowest tests of the run and the per-test table of
// timedPackage.
func printTimings(out *bufio.Writer, timings []timing, pkgElapsed map[string]float64) {
	if len(timings) == 0 {
		return
	}
	short := func(pkg string) string { return strings.TrimPrefix(pkg, "github.com/pitr-dev/pitr/") }
	// A parent of parallel subtests reports only its own (tiny) time; the
	// leaves are what took the time.
	parent := map[string]bool{}
	for _, t := range timings {
		if i := strings.LastIndex(t.test, "/"); i > 0 {
			parent[t.pkg+"\x00"+t.test[:i]] = true
		}
	}
	var leaves []timing
	for _, t := range timings {
		if !parent[t.pkg+"\x00"+t.test] {
			leaves = append(leaves, t)
		}
	}
	sort.SliceStable(leaves, func(i, j int) bool { return leaves[i].seconds > leaves[j].seconds })
	fmt.Fprintf(out, "\nslowest tests:\n")
	for i, t := range leaves {
		if i == slowestShown {
			break
		}
		fmt.Fprintf(out, "  %7.1fs  %-4s  %s %s\n", t.seconds, t.result, short(t.pkg), t.test)
	}

	// The integration table: one line per top-level test (its own time, or
	// for a parent the sum and maximum of its subtests), subtests indented.
	type row struct {
		timing
		subs     []timing
		sum, max float64
	}
	rows := map[string]*row{}
	var order []string
	for _, t := range timings {
		if t.pkg != timedPackage {
			continue
		}
		top, _, isSub := strings.Cut(t.test, "/")
		r, ok := rows[top]
		if !ok {
			r = &row{}
			rows[top] = r
			order = append(order, top)
		}
		if isSub {
			if !parent[t.pkg+"\x00"+t.test] {
				r.subs = append(r.subs, t)
				r.sum += t.seconds
				r.max = max(r.max, t.seconds)
			}
			continue
		}
		r.timing = t
	}
	if len(order) == 0 {
		return
	}
	cost := func(r *row) float64 {
		if len(r.subs) > 0 {
			return r.sum
		}
		return r.seconds
	}
	sort.SliceStable(order, func(i, j int) bool { return cost(rows[order[i]]) > cost(rows[order[j]]) })
	total := 0.0
	fmt.Fprintf(out, "\nintegration scenarios (%s; test time, most expensive first):\n", short(timedPackage))
	for _, name := range order {
		r := rows[name]
		total += cost(r)
		if len(r.subs) == 0 {
			fmt.Fprintf(out, "  %7.1fs  %-4s  %s\n", r.seconds, r.result, name)
			continue
		}
		fmt.Fprintf(out, "  %7.1fs  %-4s  %s (%d subtests in parallel, longest %.1fs)\n", r.sum, r.result, name, len(r.subs), r.max)
		sort.SliceStable(r.subs, func(i, j int) bool { return r.subs[i].seconds > r.subs[j].seconds })
		for _, s := range r.subs {
			fmt.Fprintf(out, "  %7.1fs  %-4s      %s\n", s.seconds, s.result, strings.TrimPrefix(s.test, name+"/"))
		}
	}
	fmt.Fprintf(out, "  %7.1fs  total test time; package wall time %.1fs\n", total, pkgElapsed[timedPackage])
}
