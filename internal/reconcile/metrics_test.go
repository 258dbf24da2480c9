package reconcile

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The engine's figures reach tunnelward's Prometheus metrics.
func TestMetricsMove(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.Metrics, c.HealthGrace = m, restartGrace }})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.worldAction(cloudsim.WorldAction{Action: "kill_connector", Org: "acme"})
	h.apply(healthFailed("acme"))
	// The restart is resolved in one reconcile and Ready recorded at its
	// end: wait for both before the sweep counts orgs by condition.
	h.waitFor("restart ok and Ready", 10*time.Second, func() bool {
		o := h.org("acme")
		rs := remediations(o, ActRestart)
		return len(rs) == 1 && rs[0].Outcome == OutcomeOK && IsTrue(o, state.CondReady)
	})
	h.worldAction(cloudsim.WorldAction{Action: "delete", Kind: "dns_record", Org: "acme"})
	if _, err := h.eng.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range []string{
		`tunnelward_remediations_total{action="restart_cloudflared",outcome="ok"} 1`,
		`tunnelward_remediations_total{action="restart_cloudflared",outcome="started"} 1`,
		`tunnelward_drift_detected_total{resource="dns"} 1`,
		// The sweep saw the record gone: the org is no longer counted Ready.
		`tunnelward_orgs{condition="Ready"} 0`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Fatalf("/metrics lacks %s", line)
		}
	}
	if !strings.Contains(string(body), `tunnelward_reconcile_duration_seconds_count{result="ok"}`) {
		t.Fatal("no reconcile durations observed")
	}
}

// The sweep counts tunnels by status and finds the org that has been not
// Ready the longest; the first Ready of a build records its time to Ready.
func TestFleetMetrics(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.Metrics = m }})
	h.start()
	h.apply(created("acme", "acme"), createdIn("nowhere", "nowhere", "sa-east-1"))
	h.waitReady("acme")
	h.waitFor("nowhere Failed", 10*time.Second, func() bool { return IsTrue(h.org("nowhere"), state.CondFailed) })
	if _, err := h.eng.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	body := scrape()
	for _, line := range []string{
		`tunnelward_tunnels{status="healthy"} 1`,
		`tunnelward_org_time_to_ready_seconds_count 1`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Fatalf("/metrics lacks %s", line)
		}
	}
	// nowhere is not Ready since its Ready condition's transition.
	c, _ := Condition(h.org("nowhere"), state.CondReady)
	if got := gaugeValue(t, body, "tunnelward_org_not_ready_longest_seconds"); got < time.Since(c.LastTransitionTime).Seconds()-1 || got <= 0 {
		t.Fatalf("not ready longest = %v, nowhere not Ready since %v", got, c.LastTransitionTime)
	}

	// A killed connector the sweep lists as down; once nowhere is gone and
	// the tunnel repaired, nothing is not Ready.
	h.worldAction(cloudsim.WorldAction{Action: "break_connector", Org: "acme"})
	h.waitFor("tunnel down", 10*time.Second, func() bool {
		var st struct {
			Tunnels []struct {
				Name, Status string
			} `json:"tunnels"`
		}
		_ = json.Unmarshal(h.simGet("/_sim/state"), &st)
		return len(st.Tunnels) == 1 && st.Tunnels[0].Status == "down"
	})
	if _, err := h.eng.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if body := scrape(); !strings.Contains(body, `tunnelward_tunnels{status="down"} 1`+"\n") ||
		!strings.Contains(body, `tunnelward_tunnels{status="healthy"} 0`+"\n") {
		t.Fatalf("after the break:\n%s", grepLines(body, "tunnelward_tunnels"))
	}
	h.apply(deleted("nowhere"))
	h.waitReady("acme") // replaced instance
	h.waitDeleted("nowhere")
	if _, err := h.eng.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	body = scrape()
	if got := gaugeValue(t, body, "tunnelward_org_not_ready_longest_seconds"); got != 0 {
		t.Fatalf("not ready longest = %v with every org Ready", got)
	}
	if !strings.Contains(body, `tunnelward_tunnels{status="healthy"} 1`+"\n") {
		t.Fatalf("after the repair:\n%s", grepLines(body, "tunnelward_tunnels"))
	}
}

func grepLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func gaugeValue(t *testing.T, body, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}
