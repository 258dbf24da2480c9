package cluster

import (
	"flag"
	"os"
	"testing"

	"github.com/tunnelward/tunnelward/internal/testbin"
)

// The cluster tests mostly wait on NATS (leader elections, lease expiry).
func TestMain(m *testing.M) {
	flag.Parse()
	testbin.WaitingParallel(6)
	os.Exit(m.Run())
}
