package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestMain lets this test binary be the scale figure's child process.
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(RunChild())
	}
	os.Exit(m.Run())
}

// TestTinyTableShape runs every figure at its smallest size (the figures
// mean nothing at that size; no timing is asserted) and checks that each
// one produced rows without errors and that the table has the promised
// shape: a header, one numbered row per figure line, notes, and the final
// "N of M goals met" line agreeing with the rows.
func TestTinyTableShape(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every figure (about 15 s)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rep := Run(context.Background(), Options{Tiny: true, Exe: exe})
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
		if !regexp.MustCompile(`^\d+\s+\d `).MatchString(lines[1+i]) {
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
