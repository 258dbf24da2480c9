package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/testbin"
)

// TestMain lets this test binary be the scale figure's child process.
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(RunChild())
	}
	os.Exit(m.Run())
}

// tinyGroups split the figures for TestTinyTableShape into runs that share
// nothing: headroom compares with the rates economy, sweep, convergence and
// budget drove, so it runs after them, as in a whole run.
var tinyGroups = [][]string{{"ingest"}, {"economy", "sweep", "convergence", "budget", "headroom"}, {"scale"}, {"repair"}, {"fleet"}, {"pools"}, {"flows"}}

// TestTinyTableShape runs every figure at its smallest size (the figures
// mean nothing at that size; no timing is asserted) and checks that each
// one produced rows without errors and that the table has the promised
// shape: a header, one numbered row per figure line, notes, and the final
// "N of M goals met" line agreeing with the rows. The groups of figures
// run at once and their rows are put back in table order.
func TestTinyTableShape(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every figure (about 15 s)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The real reconciler process of the scale figure: the binary the
	// other packages' tests share, relinked only when its sources changed.
	rec := testbin.Path(t, "reconciler", "./cmd/reconciler")
	reps := make([]*Report, len(tinyGroups))
	t.Run("figures", func(t *testing.T) {
		for i, g := range tinyGroups {
			t.Run(strings.Join(g, "+"), func(t *testing.T) {
				t.Parallel()
				reps[i] = Run(context.Background(), Options{Tiny: true, Exe: exe, Reconciler: rec, Only: g})
			})
		}
	})
	rep := &Report{}
	for _, r := range reps {
		rep.Rows = append(rep.Rows, r.Rows...)
	}
	sort.SliceStable(rep.Rows, func(i, j int) bool { return figureIndex(t, rep.Rows[i]) < figureIndex(t, rep.Rows[j]) })
	grouped := map[string]bool{}
	for _, g := range tinyGroups {
		for _, f := range g {
			grouped[f] = true
		}
	}
	for _, f := range Figures {
		if !grouped[f] {
			t.Errorf("figure %s is in no group of tinyGroups", f)
		}
	}
	seen := map[string]bool{}
	for _, r := range rep.Rows {
		if r.Measured == "error" {
			t.Errorf("figure %s failed: %s", r.Figure, r.Note)
		}
		if r.Measured == "" || r.Figure == "" {
			t.Errorf("row without figure or measurement: %+v", r)
		}
		if r.Met != nil && (r.Goal == "" || r.Bound == "") {
			t.Errorf("row %q has a verdict but no goal or bound: %+v", r.Figure, r)
		}
		seen[strings.Fields(r.Figure)[0]] = true
	}
	for _, n := range []string{"1", "2", "3", "4", "5", "6", "7", "8"} {
		if !seen[n] {
			t.Errorf("no row for figure %s", n)
		}
	}
	var buf bytes.Buffer
	rep.Print(&buf)
	out := buf.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "#") || !strings.Contains(lines[0], "bound (same run)") || !strings.Contains(lines[0], "goal") {
		t.Errorf("header line is %q", lines[0])
	}
	for i := range rep.Rows {
		if !regexp.MustCompile(`^\d+\s+\d+ `).MatchString(lines[1+i]) {
			t.Errorf("table line %d is %q", i+1, lines[1+i])
		}
	}
	last := lines[len(lines)-1]
	m := regexp.MustCompile(`^(\d+) of (\d+) goals met$`).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last line is %q, want \"N of M goals met\"\n%s", last, out)
	}
	metN, total := rep.Counts()
	if want := fmt.Sprintf("%d of %d goals met", metN, total); last != want {
		t.Errorf("last line %q, counts say %q", last, want)
	}
	if total < 10 {
		t.Errorf("%d goals in the table, want every figure's (at least 10)\n%s", total, out)
	}
}

// figureIndex is the position in Figures of the figure a row belongs to:
// rows start with the figure's number, error rows with its name.
func figureIndex(t *testing.T, r Row) int {
	first := strings.Fields(r.Figure + " ?")[0]
	if n, err := strconv.Atoi(first); err == nil {
		return n - 1
	}
	if i := slices.Index(Figures, first); i >= 0 {
		return i
	}
	t.Fatalf("row %q names no figure", r.Figure)
	return 0
}
