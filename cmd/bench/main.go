// Command bench measures tunnelward's performance figures and prints one
// table: each figure beside its bound measured in the same run, its goal,
// and whether it is met, ending with "N of M goals met". See PERFORMANCE.md.
//
//	go run ./cmd/bench            # full mode (several minutes)
//	go run ./cmd/bench -quick     # under two minutes on two cores
//	go run ./cmd/bench -only sweep,budget
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/tunnelward/tunnelward/internal/bench"
)

func main() {
	if bench.IsChild() {
		os.Exit(bench.RunChild())
	}
	quick := flag.Bool("quick", false, "shrink every figure to finish in about two minutes on two cores")
	tiny := flag.Bool("tiny", false, "smallest sizes, to check the table's shape (figures meaningless)")
	only := flag.String("only", "", "comma-separated figures to run: "+strings.Join(bench.Figures, ","))
	quiet := flag.Bool("q", false, "no progress lines on stderr")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	o := bench.Options{Quick: *quick, Tiny: *tiny}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
		for _, f := range o.Only {
			if !bench.Known(f) {
				fmt.Fprintf(os.Stderr, "bench: -only: unknown figure %q (known: %s)\n", f, strings.Join(bench.Figures, ","))
				os.Exit(2)
			}
		}
	}
	if !*quiet {
		o.Progress = os.Stderr
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
	o.Exe = exe
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	rep := bench.Run(ctx, o)
	rep.Print(os.Stdout)
}
