package reliability

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

var (
	binDir  string
	binMu   sync.Mutex
	binDone = map[string]error{}
)

// waitingParallel is how many parallel tests (and crash kills) run at once
// in the default run when -parallel is not given: each is a world of child
// processes that mostly waits on them, so the default (GOMAXPROCS) would
// leave the cores idle. The heavy run keeps the default.
const waitingParallel = 8

func TestMain(m *testing.M) {
	flag.Parse()
	if !Heavy() {
		given := false
		flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
		if !given {
			_ = flag.Set("test.parallel", strconv.Itoa(waitingParallel))
		}
	}
	dir, err := os.MkdirTemp("", "tw-reliability-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// binary builds a main package of this module (or a module dependency) once
// per test process and returns the executable's path.
func binary(t testing.TB, name, pkg string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	out := filepath.Join(binDir, name)
	err, done := binDone[name]
	if !done {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = repoRoot(t)
		b, berr := cmd.CombinedOutput()
		if berr != nil {
			err = &buildError{pkg: pkg, out: string(b), err: berr}
		}
		binDone[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type buildError struct {
	pkg, out string
	err      error
}

func (e *buildError) Error() string { return "go build " + e.pkg + ": " + e.err.Error() + "\n" + e.out }

// reconcilerBinary builds cmd/reconciler.
func reconcilerBinary(t testing.TB) string {
	t.Helper()
	return binary(t, "reconciler", "./cmd/reconciler")
}
