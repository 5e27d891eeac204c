package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pitr-dev/pitr/internal/pgtest"
)

func TestParseFetchAhead(t *testing.T) {
	for in, want := range map[string]int{"": defaultFetchAhead, "off": 0, "OFF": 0, "0": 0, "false": 0, "3": 3, " 12 ": 12, "256": 256} {
		if got, err := parseFetchAhead(in); err != nil || got != want {
			t.Errorf("parseFetchAhead(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "257", "eight", "8x"} {
		if _, err := parseFetchAhead(in); err == nil || !strings.Contains(err.Error(), "fetch_ahead") {
			t.Errorf("parseFetchAhead(%q): %v, want an error naming fetch_ahead", in, err)
		}
	}
}

// A bad fetch_ahead is a configuration error: wal-fetch exits 255 (stop
// recovery), never 1 (which PostgreSQL would read as the end of WAL).
func TestWalFetchBadFetchAheadAbortsRecovery(t *testing.T) {
	code, _, stderr := runPitr(t, "wal-fetch", "--repo", "file://"+t.TempDir(), "--fetch-ahead", "lots", "000000010000000000000001", "x")
	if code != exitAbortRecovery || !strings.Contains(stderr, "fetch_ahead") {
		t.Fatalf("exit %d, stderr %q; want %d naming fetch_ahead", code, stderr, exitAbortRecovery)
	}
}

// The prefetcher is pitr's own business, not a command people run.
func TestWalPrefetchIsHidden(t *testing.T) {
	_, stdout, _ := runPitr(t, "help")
	if strings.Contains(stdout, "wal-prefetch") || !strings.Contains(stdout, "wal-fetch") {
		t.Fatalf("help lists wal-prefetch or lacks wal-fetch:\n%s", stdout)
	}
}

// lowerOwnPriority reaches every thread, and the threads the runtime starts
// afterwards inherit the nice value. Run in a child process, so that this
// test binary keeps its own priority.
func TestLowerOwnPriorityCoversLaterThreads(t *testing.T) {
	if os.Getenv("PITR_TEST_PRIORITY_CHILD") == "1" {
		lowerOwnPriority(7)
		// Goroutines locked to their threads while they wait make the
		// runtime start new threads for everything else.
		release := make(chan struct{})
		var started sync.WaitGroup
		for range 4 {
			started.Add(1)
			go func() {
				runtime.LockOSThread()
				started.Done()
				<-release
			}()
		}
		started.Wait()
		printThreadNices(t, release)
		return
	}
	if n := childThreadsAtNice7(t, "TestLowerOwnPriorityCoversLaterThreads", "1"); n < 5 {
		t.Fatalf("child had %d threads, want the four locked ones and more", n)
	}
}

// printThreadNices is the child's side of childThreadsAtNice7: it prints
// every thread's nice value, then lets the held threads go.
func printThreadNices(t *testing.T, release chan struct{}) {
	t.Helper()
	nices, err := pgtest.ThreadNices(os.Getpid())
	close(release)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("nices %v\n", nices)
}

// childThreadsAtNice7 runs test in a child process with
// PITR_TEST_PRIORITY_CHILD=mode, requires nice 7 on every thread it
// reports, and returns how many it had.
func childThreadsAtNice7(t *testing.T, test, mode string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v")
	cmd.Env = append(os.Environ(), "PITR_TEST_PRIORITY_CHILD="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, line, ok := strings.Cut(string(out), "nices [")
	if !ok {
		t.Fatalf("child printed no nice values:\n%s", out)
	}
	line, _, _ = strings.Cut(line, "]")
	fields := strings.Fields(line)
	for _, f := range fields {
		if f != "7" {
			t.Fatalf("thread nice values %q: want 7 for every thread", line)
		}
	}
	return len(fields)
}

// Threads that the runtime starts while lowerOwnPriority runs, from
// threads it has not reached yet, get the value too.
func TestLowerOwnPriorityWhileThreadsStart(t *testing.T) {
	if os.Getenv("PITR_TEST_PRIORITY_CHILD") == "2" {
		release, stop, spawned := make(chan struct{}), make(chan struct{}), make(chan struct{})
		go func() {
			defer close(spawned)
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A goroutine holding its thread makes the runtime start
				// another one for everything else.
				go func() {
					runtime.LockOSThread()
					<-release
				}()
				time.Sleep(20 * time.Microsecond)
			}
		}()
		time.Sleep(time.Millisecond)
		lowerOwnPriority(7)
		close(stop)
		<-spawned
		time.Sleep(10 * time.Millisecond)
		printThreadNices(t, release)
		return
	}
	childThreadsAtNice7(t, "TestLowerOwnPriorityWhileThreadsStart", "2")
}

// The default fetch_ahead keeps fewer large segments ahead (a byte budget);
// a number someone set is a number of segments, whatever their size.
func TestWalFetchSpoolAheadBytes(t *testing.T) {
	isolate(t)
	url, _ := newRepoURL(t)
	for _, d := range []string{"global", "pg_wal"} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range map[string][]byte{"global/pg_control": {7, 0, 0, 0, 0, 0, 0, 0}, "recovery.signal": nil} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		flags      []string
		ahead      int
		aheadBytes int64
	}{
		{nil, defaultFetchAhead, defaultFetchAheadBytes},
		{[]string{"--fetch-ahead", "8"}, 8, 0},
		{[]string{"--fetch-ahead", "20"}, 20, 0},
	} {
		env := &environment{stdout: io.Discard, stderr: io.Discard, logLevel: new(slog.LevelVar), log: slog.New(slog.DiscardHandler)}
		args := append(append([]string{"--repo", url}, c.flags...), "000000010000000000000001", "pg_wal/RECOVERYXLOG")
		_, _, _, sp, err := walFetchArgs(context.Background(), env, "wal-fetch", "", args)
		if err != nil || sp == nil {
			t.Fatalf("%v: spool %v, %v", c.flags, sp, err)
		}
		if sp.Ahead != c.ahead || sp.AheadBytes != c.aheadBytes {
			t.Errorf("%v: ahead %d within %d bytes, want %d within %d", c.flags, sp.Ahead, sp.AheadBytes, c.ahead, c.aheadBytes)
		}
	}
}
