// Package reliability holds tunnelward's reliability and security campaign:
// hostile input, store faults, crash points, injected cloud faults, broker
// restarts and secret scans, run against the real binaries (reconciler,
// cloudsim, publisher, a standalone nats-server) as processes wherever the
// behaviour is about a process. The tests are the product here; this file
// only names the switches. RELIABILITY.md at the repository root has what
// each test proves, its figures, and the commands.
//
// The default `go test ./internal/reliability` runs a quick subset. Heavy
// runs are switched on by the environment:
//
//	TUNNELWARD_RELIABILITY=1   every crash point, random-instant kills,
//	                           hundreds of orgs under injected faults
//	TUNNELWARD_RELIABILITY_RUNS=N   random-instant kill runs (default 20;
//	                                10 of TestClusterRandomKills)
//	TUNNELWARD_RELIABILITY_ORGS=N   orgs in the fault storm (default 300)
package reliability

import (
	"os"
	"strconv"
)

// Heavy reports whether the flag-gated heavy runs are switched on.
func Heavy() bool { return os.Getenv("TUNNELWARD_RELIABILITY") == "1" }

// EnvInt reads a positive integer setting, or def.
func EnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
