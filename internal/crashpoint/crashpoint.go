// Package crashpoint kills the process at named points, so tests can prove
// that every step is crash-safe. Points are compiled into production builds;
// they are armed only by the environment variable TUNNELWARD_CRASH_AT, read
// once at start:
//
//	TUNNELWARD_CRASH_AT=ingest.ack.before        die at the first hit
//	TUNNELWARD_CRASH_AT=state.update.after:3     die at the third hit
//	TUNNELWARD_CRASH_AT=cloud.before.*:2         glob: the 2nd hit of any matching point
//
// An armed point sends SIGKILL to its own process: no deferred function, no
// bbolt close, no flush runs, as in a power cut or an OOM kill (os.Exit would
// still run nothing deferred but lets the runtime flush; SIGKILL does not).
// Before dying it appends the point's name to the file named by
// TUNNELWARD_CRASH_LOG, if set, so a harness knows the kill was the
// crash point and not something else. A disarmed Hit costs one atomic load.
//
// TUNNELWARD_CRASH_TRACE=FILE (without TUNNELWARD_CRASH_AT) kills nothing and
// appends every point hit to FILE: a harness runs a scenario once traced to
// learn which points it passes, then kills at each in turn.
package crashpoint

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Env is the variable that arms a crash point; LogEnv names the file hits are
// recorded in before the kill.
const (
	Env      = "TUNNELWARD_CRASH_AT"
	LogEnv   = "TUNNELWARD_CRASH_LOG"
	TraceEnv = "TUNNELWARD_CRASH_TRACE"
)

type plan struct {
	pattern string // path.Match glob over point names
	nth     int64  // die at this matching hit (1-based)
	hits    atomic.Int64
	logFile string
	trace   *os.File // trace mode: record every hit, kill nothing
}

// armed is nil unless TUNNELWARD_CRASH_AT is set: the whole cost of a
// disarmed Hit is loading it.
var armed atomic.Pointer[plan]

// kill is replaced by tests.
var kill = func() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is asynchronous: never run past the point
}

var mu sync.Mutex // serialises the dying hit's log write

func init() {
	if spec := os.Getenv(Env); spec != "" {
		if err := Arm(spec, os.Getenv(LogEnv)); err != nil {
			// A mistyped spec would silently test nothing: refuse to run.
			fmt.Fprintf(os.Stderr, "%s: %v\n", Env, err)
			os.Exit(2)
		}
	} else if file := os.Getenv(TraceEnv); file != "" {
		if err := Trace(file); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", TraceEnv, err)
			os.Exit(2)
		}
	}
}

// Trace records every point hit to file (appending), killing nothing.
func Trace(file string) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("crash point trace: %w", err)
	}
	armed.Store(&plan{trace: f})
	return nil
}

// Arm arms the point(s) matching spec ("name" or "name:nth"; name may be a
// path.Match glob). logFile, if not empty, receives the name of the point
// that fired. Arm("") disarms.
func Arm(spec, logFile string) error {
	if spec == "" {
		armed.Store(nil)
		return nil
	}
	p := &plan{pattern: spec, nth: 1, logFile: logFile}
	if i := strings.LastIndexByte(spec, ':'); i >= 0 {
		n, err := strconv.ParseInt(spec[i+1:], 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("crash point spec %q: the count after ':' must be a positive integer", spec)
		}
		p.pattern, p.nth = spec[:i], n
	}
	if p.pattern == "" {
		return fmt.Errorf("crash point spec %q: empty point name", spec)
	}
	if _, err := path.Match(p.pattern, ""); err != nil {
		return fmt.Errorf("crash point spec %q: bad glob: %w", spec, err)
	}
	armed.Store(p)
	return nil
}

// Hit marks a crash point. Disarmed (the production case) it returns at once.
func Hit(name string) {
	p := armed.Load()
	if p == nil {
		return
	}
	hit(p, name)
}

func hit(p *plan, name string) {
	if p.trace != nil {
		mu.Lock()
		_, _ = fmt.Fprintln(p.trace, name) // unbuffered: survives a kill
		mu.Unlock()
		return
	}
	if ok, _ := path.Match(p.pattern, name); !ok {
		return
	}
	if p.hits.Add(1) != p.nth {
		return
	}
	mu.Lock()
	if p.logFile != "" {
		if f, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
			_, _ = fmt.Fprintf(f, "%s\n", name)
			_ = f.Sync()
			_ = f.Close()
		}
	}
	kill()
	mu.Unlock()
}
