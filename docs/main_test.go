package docs

import (
	"flag"
	"os"
	"testing"

	"github.com/tunnelward/tunnelward/internal/testbin"
)

// The guide and walkthrough tests mostly wait on the processes they run.
func TestMain(m *testing.M) {
	flag.Parse()
	testbin.WaitingParallel(6)
	os.Exit(m.Run())
}
