package testbin

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
)

var handedOut sync.Map // port -> true, for this test binary

// FreePort returns a loopback port nothing listens on, for a server a
// test starts later (a child process, or one restarted on the same port),
// never the same one twice in one test binary: two worlds given one port
// would talk to each other's servers.
//
// The port is drawn below the kernel's ephemeral range, not from a
// listener on port 0: between the check and the server's bind, the kernel
// hands ephemeral ports to every outgoing connection and every other
// listener on port 0 on the machine, and one of those taking the port made
// a server fail to start in CI. Only another FreePort can draw from the
// range below, and it checks the port is free too.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := belowEphemeral()
	for range 1000 {
		var port int
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken: draw again
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, dup := handedOut.LoadOrStore(port, true); !dup {
			return port
		}
	}
	t.Fatal("no free loopback port after 1000 tries")
	return 0
}

// belowEphemeral is the range [lo, hi) of ports under the kernel's
// ephemeral range, from 10000 up (lower ports are where fixed services
// live). hi == lo when there is no room: FreePort then falls back to port 0.
func belowEphemeral() (lo, hi int) {
	lo, hi = 10000, 32768 // Linux's default ephemeral range starts at 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var first, last int
		if _, err := fmt.Sscan(string(b), &first, &last); err == nil {
			hi = first
		}
	}
	if hi-lo < 1000 {
		return 0, 0
	}
	return lo, hi
}

// FreeAddr is FreePort as host:port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
