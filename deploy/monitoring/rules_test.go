package monitoring

import (
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"go.yaml.in/yaml/v4"
)

const rulesPath = "deploy/prometheus/alerts.yaml"

// loadRules parses the rule file as Prometheus does at load (unknown
// fields refused, every expression and template checked).
func loadRules(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	rgs, errs := rulefmt.ParseFile(repoFile(t, rulesPath), false, model.UTF8Validation, promParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return rgs
}

// The rule file is what Prometheus loads, every rule says how bad and what
// to do, links a runbook section that exists, and names only metrics the
// reconciler exports.
func TestAlertRules(t *testing.T) {
	rgs := loadRules(t)
	names := exported(t)
	runbook := anchors(t, repoFile(t, "docs/operations.md"))
	seen := map[string]bool{}
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s has a recording rule (%s); this file holds alerts only", g.Name, r.Record)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s is defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "page" && s != "ticket" {
				t.Errorf("%s: severity %q, want page or ticket", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s has no %s", r.Alert, a)
				}
			}
			u, err := url.Parse(r.Annotations["runbook_url"])
			if err != nil || u.Path != "docs/operations.md" || u.Fragment != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook_url %q, want docs/operations.md#%s", r.Alert, r.Annotations["runbook_url"], strings.ToLower(r.Alert))
			} else if !runbook[u.Fragment] {
				t.Errorf("%s: docs/operations.md has no section %q (a heading \"### %s\")", r.Alert, u.Fragment, r.Alert)
			}
			used, err := metricNames(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
			}
			for _, n := range used {
				if !names[n] && !synthetic[n] {
					t.Errorf("%s uses %s, which the reconciler does not export", r.Alert, n)
				}
			}
		}
	}
	// The list; a rule may be renamed, but then this list with it.
	for _, want := range []string{
		"TunnelwardOrgsNotReady", "TunnelwardTunnelsDown", "TunnelwardCloudflareBudgetHigh",
		"TunnelwardCloudflareThrottled", "TunnelwardAWSThrottled", "TunnelwardConsumerLagGrowing",
		"TunnelwardRedeliveries", "TunnelwardDeadLetters", "TunnelwardSweepStale",
	} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// A misspelt metric is caught, not waved through.
func TestMetricNamesCatchesRenames(t *testing.T) {
	names := exported(t)
	used, err := metricNames(`sum(rate(tunnelward_reconcile_duration_seconds_count[5m])) / sum(tunnelward_orgs_ready)`)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(used, []string{"tunnelward_reconcile_duration_seconds_count", "tunnelward_orgs_ready"}) {
		t.Fatalf("names %v", used)
	}
	if !names[used[0]] || names[used[1]] {
		t.Fatalf("%s should be exported and %s not", used[0], used[1])
	}
	if _, err := metricNames(`{job="tunnelward"}`); err == nil {
		t.Fatal("a selector without a metric name passed")
	}
}

// Prometheus in compose loads the rule file from its contract path, and
// TunnelwardDown's job is the scrape job there.
func TestPrometheusLoadsRules(t *testing.T) {
	b, err := os.ReadFile(repoFile(t, "deploy/prometheus/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &pc); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pc.RuleFiles, "/etc/prometheus/alerts.yaml") {
		t.Errorf("prometheus.yml rule_files %v do not load alerts.yaml", pc.RuleFiles)
	}
	if len(pc.ScrapeConfigs) != 1 || pc.ScrapeConfigs[0].JobName != "tunnelward" {
		t.Fatalf("scrape configs %+v, want one job tunnelward", pc.ScrapeConfigs)
	}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if strings.Contains(r.Expr, "job=") && !strings.Contains(r.Expr, `job="`+pc.ScrapeConfigs[0].JobName+`"`) {
				t.Errorf("%s selects a job other than %s: %s", r.Alert, pc.ScrapeConfigs[0].JobName, r.Expr)
			}
		}
	}
}
