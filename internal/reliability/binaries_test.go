package reliability

import (
	"flag"
	"os"
	"testing"

	"github.com/tunnelward/tunnelward/internal/testbin"
)

// waitingParallel is how many parallel tests (and crash kills) run at once
// in the default run when -parallel is not given: each is a world of child
// processes that mostly waits on them, so the default (GOMAXPROCS) would
// leave the cores idle. The heavy run keeps the default.
const waitingParallel = 8

func TestMain(m *testing.M) {
	flag.Parse()
	if !Heavy() {
		testbin.WaitingParallel(waitingParallel)
	}
	os.Exit(m.Run())
}

// binary returns a main package of this module (or a module dependency)
// built once for every test package and run (internal/testbin).
func binary(t testing.TB, name, pkg string) string {
	t.Helper()
	return testbin.Path(t, name, pkg)
}

// reconcilerBinary builds cmd/reconciler.
func reconcilerBinary(t testing.TB) string {
	t.Helper()
	return binary(t, "reconciler", "./cmd/reconciler")
}
