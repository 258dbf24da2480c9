package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// binDir holds the binaries the process-level tests run, built once per
// test process (binary). It is world-readable: TestDataDirNotWritableNamesFlagAndFix
// runs the reconciler as another user.
var (
	binDir  string
	binMu   sync.Mutex
	binDone = map[string]error{}
)

// waitingParallel is how many parallel tests run at once when -parallel is
// not given. Most of this package's tests wait on a daemon, a child process
// or a browser rather than use a core, so the default (GOMAXPROCS) would
// leave the cores idle.
const waitingParallel = 6

func TestMain(m *testing.M) {
	flag.Parse()
	setParallel(waitingParallel)
	dir, err := os.MkdirTemp("", "tw-reconciler-bin-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// setParallel raises -test.parallel to n unless it was given.
func setParallel(n int) {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}

// binary builds a main package (of this module or a dependency) once per
// test process and returns the executable's path.
func binary(t *testing.T, name, pkg string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	out := filepath.Join(binDir, name)
	err, done := binDone[name]
	if !done {
		if b, berr := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); berr != nil {
			err = fmt.Errorf("build %s: %v\n%s", pkg, berr, b)
		}
		binDone[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func reconcilerBinary(t *testing.T) string {
	return binary(t, "reconciler", "github.com/tunnelward/tunnelward/cmd/reconciler")
}

func publisherBinary(t *testing.T) string {
	return binary(t, "publisher", "github.com/tunnelward/tunnelward/cmd/publisher")
}
