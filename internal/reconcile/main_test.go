package reconcile

import (
	"flag"
	"os"
	"testing"

	"github.com/tunnelward/tunnelward/internal/testbin"
)

// The emulator-level tests mostly wait (emulated boots, connect delays,
// poll intervals): the package uses about a third of two cores.
func TestMain(m *testing.M) {
	flag.Parse()
	testbin.WaitingParallel(6)
	os.Exit(m.Run())
}
