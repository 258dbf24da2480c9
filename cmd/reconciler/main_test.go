package main

import (
	"flag"
	"os"
	"testing"

	"github.com/tunnelward/tunnelward/internal/testbin"
)

// waitingParallel is how many parallel tests run at once when -parallel is
// not given. Most of this package's tests wait on a daemon, a child process
// or a browser rather than use a core, so the default (GOMAXPROCS) would
// leave the cores idle.
const waitingParallel = 6

func TestMain(m *testing.M) {
	flag.Parse()
	testbin.WaitingParallel(waitingParallel)
	os.Exit(m.Run())
}

// binary returns a main package's binary, built once for every test
// package and run (internal/testbin).
func binary(t *testing.T, name, pkg string) string {
	t.Helper()
	return testbin.Path(t, name, pkg)
}

func reconcilerBinary(t *testing.T) string {
	return binary(t, "reconciler", "./cmd/reconciler")
}

func publisherBinary(t *testing.T) string {
	return binary(t, "publisher", "./cmd/publisher")
}
