// Package bench measures tunnelward's performance figures (PERFORMANCE.md,
// issue 7) against the real parts: the ingest loop on an embedded
// nats-server, the reconcile engine with the real cloudflare-go and
// aws-sdk-go-v2 clients against the in-repo emulator, bbolt on disk. Each
// figure is printed beside a bound measured in the same run and its goal;
// cmd/bench is the thin main.
package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Options select what runs and how big.
type Options struct {
	// Quick shrinks every figure so the whole run fits in about two
	// minutes on two shared cores; the table says where a figure was
	// shrunk.
	Quick bool
	// Tiny shrinks further, for the smoke test of the table's shape: the
	// figures mean nothing.
	Tiny bool
	// Only runs the named figures ("ingest", "economy", "sweep",
	// "convergence", "budget", "scale", "headroom", "repair", "fleet", "pools", "flows"); empty runs all.
	Only []string
	// Progress receives one line per figure as it starts and ends (nil: none).
	Progress io.Writer
	// Exe is the binary to run as the child process of the scale figure
	// (it must call RunChild when TUNNELWARD_BENCH_CHILD is set).
	Exe string
	// Reconciler is a built cmd/reconciler for the scale figure's real
	// process row; empty: the figure builds one with go build (a link of
	// several seconds). Tests pass the one internal/testbin keeps.
	Reconciler string
}

// Row is one line of the table. A row without a goal (Met == nil) is
// shown for information and not counted.
type Row struct {
	Figure   string
	Measured string
	Bound    string // what bounds it, measured in the same run
	Goal     string
	Met      *bool
	Note     string // how it was measured, shrunk, or why it failed
}

func met(b bool) *bool { return &b }

// Figures in table order.
var Figures = []string{"ingest", "economy", "sweep", "convergence", "budget", "scale", "headroom", "repair", "fleet", "pools", "flows"}

// Report is a run's table plus what later figures need from earlier ones.
type Report struct {
	Rows []Row
	// peakRate is the highest request rate (req/s) any figure drove the
	// emulator at; headroom compares with it.
	peakRate     float64
	peakRateFrom string
}

func (r *Report) sawRate(rate float64, from string) {
	if rate > r.peakRate {
		r.peakRate, r.peakRateFrom = rate, from
	}
}

// Run measures the selected figures in order. A figure that fails is a row
// marked not met with the error, and the run goes on.
func Run(ctx context.Context, o Options) *Report {
	rep := &Report{}
	want := map[string]bool{}
	for _, f := range o.Only {
		want[strings.TrimSpace(f)] = true
	}
	for _, f := range Figures {
		if len(want) > 0 && !want[f] {
			continue
		}
		start := time.Now()
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "bench: %s ...\n", f)
		}
		var rows []Row
		var err error
		switch f {
		case "ingest":
			rows, err = benchIngest(ctx, o)
		case "economy":
			rows, err = benchEconomy(ctx, o, rep)
		case "sweep":
			rows, err = benchSweep(ctx, o, rep)
		case "convergence":
			rows, err = benchConvergence(ctx, o, rep)
		case "repair":
			rows, err = benchRepair(ctx, o, rep)
		case "budget":
			rows, err = benchBudget(ctx, o, rep)
		case "fleet":
			rows, err = benchFleet(ctx, o, rep)
		case "pools":
			rows, err = benchPools(ctx, o, rep)
		case "flows":
			rows, err = benchFlows(ctx, o, rep)
		case "scale":
			rows, err = benchScale(ctx, o)
		case "headroom":
			rows, err = benchHeadroom(ctx, o, rep)
		}
		if err != nil {
			rows = append(rows, Row{Figure: f, Measured: "error", Met: met(false), Note: err.Error()})
		}
		rep.Rows = append(rep.Rows, rows...)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "bench: %s done in %s\n", f, time.Since(start).Round(100*time.Millisecond))
		}
	}
	return rep
}

// Counts returns how many goals were met and how many rows had a goal.
func (r *Report) Counts() (metN, total int) {
	for _, row := range r.Rows {
		if row.Met == nil {
			continue
		}
		total++
		if *row.Met {
			metN++
		}
	}
	return metN, total
}

// Print writes the one table, then the notes, then "N of M goals met".
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tfigure\tmeasured\tbound (same run)\tgoal\tmet")
	for i, row := range r.Rows {
		m := "-"
		if row.Met != nil {
			m = "no"
			if *row.Met {
				m = "yes"
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, row.Figure, row.Measured, dash(row.Bound), dash(row.Goal), m)
	}
	_ = tw.Flush()
	notes := false
	for i, row := range r.Rows {
		if row.Note == "" {
			continue
		}
		if !notes {
			fmt.Fprintln(w, "\nnotes:")
			notes = true
		}
		fmt.Fprintf(w, "  %d. %s\n", i+1, row.Note)
	}
	n, m := r.Counts()
	fmt.Fprintf(w, "\n%d of %d goals met\n", n, m)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// pick chooses a size by mode.
func pick[T any](o Options, tiny, quick, full T) T {
	switch {
	case o.Tiny:
		return tiny
	case o.Quick:
		return quick
	}
	return full
}

func secs(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func mb(b uint64) string { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }

// thousands formats n with thin separators for readability.
func thousands(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[0] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Known reports whether f names a figure.
func Known(f string) bool {
	for _, k := range Figures {
		if k == strings.TrimSpace(f) {
			return true
		}
	}
	return false
}
