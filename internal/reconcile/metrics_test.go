package reconcile

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The engine's figures reach tunnelward's Prometheus metrics.
func TestMetricsMove(t *testing.T) {
	m := metrics.New()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.Metrics = m }})
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
		`tunnelward_orgs{condition="Ready"} 1`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Fatalf("/metrics lacks %s", line)
		}
	}
	if !strings.Contains(string(body), `tunnelward_reconcile_duration_seconds_count{result="ok"}`) {
		t.Fatal("no reconcile durations observed")
	}
}
