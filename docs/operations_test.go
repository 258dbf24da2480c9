package docs

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/metrics"
)

var update = flag.Bool("update", false, "rewrite the generated parts of docs/operations.md")

const (
	refBegin = "<!-- BEGIN config reference"
	refEnd   = "<!-- END config reference -->"
)

func readOps(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("operations.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOperationsReference keeps the configuration table equal to what the
// config package generates.
func TestOperationsReference(t *testing.T) {
	doc := readOps(t)
	i := strings.Index(doc, refBegin)
	j := strings.Index(doc, refEnd)
	if i < 0 || j < i {
		t.Fatalf("operations.md lacks the %q ... %q markers", refBegin, refEnd)
	}
	start := i + strings.Index(doc[i:], "\n") + 1
	want := config.MarkdownReference()
	if doc[start:j] == want {
		return
	}
	if *update {
		if err := os.WriteFile("operations.md", []byte(doc[:start]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("operations.md reference regenerated")
		return
	}
	t.Errorf("the configuration reference in docs/operations.md is out of date; run: go test ./docs -run TestOperationsReference -update\nwant:\n%s", want)
}

func TestOperationsMentionsEverySetting(t *testing.T) {
	doc := readOps(t)
	for _, f := range config.FlagNames() {
		if !strings.Contains(doc, "`--"+f+" ") && !strings.Contains(doc, "`--"+f+"`") {
			t.Errorf("operations.md does not document --%s", f)
		}
	}
	for _, e := range config.EnvVars() {
		if !strings.Contains(doc, e) {
			t.Errorf("operations.md does not mention %s", e)
		}
	}
	// The token permissions the Cloudflare token needs.
	for _, want := range []string{"| Account | Cloudflare Tunnel | Edit |", "| Zone | DNS | Edit |"} {
		if !strings.Contains(doc, want) {
			t.Errorf("operations.md lacks the token permission row %q", want)
		}
	}
}

// TestOperationsMetrics keeps the metrics table equal to what the metrics
// package exports.
func TestOperationsMetrics(t *testing.T) {
	fams, err := metrics.Families()
	if err != nil {
		t.Fatal(err)
	}
	var exported []string
	for _, f := range fams {
		if strings.HasPrefix(f.Name, "tunnelward_") {
			exported = append(exported, f.Name)
		}
	}
	sort.Strings(exported)
	var documented []string
	re := regexp.MustCompile("(?m)^\\| `(tunnelward_[a-z_]+)` \\|")
	for _, mt := range re.FindAllStringSubmatch(readOps(t), -1) {
		documented = append(documented, mt[1])
	}
	sort.Strings(documented)
	if !slices.Equal(exported, documented) {
		t.Errorf("metrics table and exported metrics differ:\nexported:   %v\ndocumented: %v", exported, documented)
	}
}

func TestOperationsPathsExist(t *testing.T) {
	re := regexp.MustCompile("`((?:deploy|docs|internal)/[A-Za-z0-9_./-]*[A-Za-z0-9_])`")
	for _, mt := range re.FindAllStringSubmatch(readOps(t), -1) {
		if _, err := os.Stat(filepath.Join("..", mt[1])); err != nil {
			t.Errorf("operations.md names %s, which does not exist", mt[1])
		}
	}
}
