package main

import (
	"os"
	"runtime/debug"
)

// defaultMemoryLimit is the Go runtime's soft memory limit when GOMEMLIMIT
// is not set. The reconciler's live heap is small (tens of MB at 100,000
// orgs: the sweep's inventory and the state package's bounded record
// cache), but the GC otherwise lets garbage grow to twice the live heap
// after each cycle, and the sweep's listings (thousands of decoded records
// per page) make a lot of it. With the limit the GC collects harder as the
// heap nears it instead. It is soft: a larger live heap is never refused,
// only collected more often. bbolt's file pages are not heap and do not
// count. GOMEMLIMIT (e.g. GOMEMLIMIT=512MiB, or off) overrides it.
const defaultMemoryLimit = 128 << 20

// setMemoryLimit applies defaultMemoryLimit unless GOMEMLIMIT is set.
func setMemoryLimit() {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}
