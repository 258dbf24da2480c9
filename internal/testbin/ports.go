package testbin

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

var handedOut sync.Map // port -> true, for this test binary

// FreePort returns a loopback port nothing listens on, never the same one
// twice in one test binary: between a listener's Close and the child
// process's bind, the kernel can hand the port out again, and two worlds
// given one port would talk to each other's servers (one of them failing
// to bind, the other answering for both).
func FreePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, dup := handedOut.LoadOrStore(port, true); !dup {
			return port
		}
	}
}

// FreeAddr is FreePort as host:port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
