package monitoring

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tunnelward/tunnelward/internal/metrics"
)

// promParser is PromQL as Prometheus parses it by default.
var promParser = parser.NewParser(parser.Options{})

// synthetic are the series Prometheus writes itself at each scrape, which
// no exporter exposes.
var synthetic = map[string]bool{"up": true}

// exported is every series name the reconciler's registry exposes: a
// gather of internal/metrics with every vector touched, histograms with
// their _bucket, _sum and _count series.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	fams, err := metrics.Families()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		out[f.Name] = true
		if f.Histogram {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				out[f.Name+s] = true
			}
		}
	}
	if !out["tunnelward_reconcile_duration_seconds_bucket"] || !out["go_goroutines"] {
		t.Fatalf("the registry gathered no histogram buckets or runtime metrics: %v", keys(out))
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// metricNames parses expr and returns the metric names its selectors name.
// A selector without a name (a bare {job="x"}) is an error: it would match
// anything, so a rename could not break it.
func metricNames(expr string) ([]string, error) {
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			bad = &selectorError{vs.String()}
			return nil
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
		return nil
	})
	return names, bad
}

type selectorError struct{ sel string }

func (e *selectorError) Error() string { return "selector " + e.sel + " names no metric" }

// grafanaVars stands the dashboard's variables in for values PromQL
// parses: every multi-value variable is a regex matcher's ".*" (its "All"),
// the interval variables a duration.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"$job", ".*", "$instance", ".*", "$provider", ".*", "$operation", ".*",
)

// leftoverVar finds a Grafana variable grafanaVars does not know.
var leftoverVar = regexp.MustCompile(`\$\{?[A-Za-z_]+`)

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join("..", "..", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// anchors returns the GitHub anchors of a markdown file's headings.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		out[a] = true
	}
	return out
}
