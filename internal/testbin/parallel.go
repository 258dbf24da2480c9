package testbin

import (
	"flag"
	"strconv"
)

// WaitingParallel sets -test.parallel to n when the command line did not
// give it; call it from TestMain after flag.Parse. It is for packages whose
// tests mostly wait (emulated boots, daemons, child processes) rather than
// use a core: the default, GOMAXPROCS, would run two of them at a time on
// two cores and leave the cores idle.
func WaitingParallel(n int) {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}
