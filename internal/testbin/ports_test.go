package testbin

import "testing"

// Ports come from below the ephemeral range, distinct within the binary.
func TestFreePortBelowEphemeralRange(t *testing.T) {
	lo, hi := belowEphemeral()
	if hi == lo {
		t.Skip("no room below this machine's ephemeral range")
	}
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
