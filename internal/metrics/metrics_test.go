package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/tunnelward/tunnelward/internal/apicall"
)

// The provider clients' observer hook takes m.APICall as it is.
var _ apicall.Observer = (*Metrics)(nil).APICall

// toFloat64 and collectAndCount do what client_golang's testutil does;
// testutil itself needs a module (kylelemons/godebug) go.mod does not carry,
// while its promlint subpackage does not.
func toFloat64(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1000)
	c.Collect(ch)
	close(ch)
	var got []prometheus.Metric
	for m := range ch {
		got = append(got, m)
	}
	if len(got) != 1 {
		t.Fatalf("collected %d metrics, want exactly 1", len(got))
	}
	var pb dto.Metric
	if err := got[0].Write(&pb); err != nil {
		t.Fatal(err)
	}
	switch {
	case pb.Gauge != nil:
		return pb.GetGauge().GetValue()
	case pb.Counter != nil:
		return pb.GetCounter().GetValue()
	case pb.Untyped != nil:
		return pb.GetUntyped().GetValue()
	}
	t.Fatalf("metric is neither gauge nor counter: %v", &pb)
	return 0
}

func collectAndCount(t *testing.T, c prometheus.Collector) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 1000)
	c.Collect(ch)
	close(ch)
	n := 0
	for range ch {
		n++
	}
	return n
}

func gather(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func TestCountersMove(t *testing.T) {
	m := New()
	m.IngestedEvent("org.created", "applied")
	m.IngestedEvent("org.created", "applied")
	m.IngestedEvent("org.deleted", "duplicate")
	m.DeadLetter("schema")
	m.QueueRetry()
	m.SetQueueDepth(7)
	m.Remediation("restart_cloudflared", "success")
	m.DriftFound("dns_record")
	m.DriftFound("dns_record")
	m.OrphanCollected("tunnel")

	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"ingested created/applied", toFloat64(t, m.eventsIngested.WithLabelValues("org.created", "applied")), 2},
		{"ingested deleted/duplicate", toFloat64(t, m.eventsIngested.WithLabelValues("org.deleted", "duplicate")), 1},
		{"dead letters", toFloat64(t, m.deadLetters.WithLabelValues("schema")), 1},
		{"retries", toFloat64(t, m.queueRetries), 1},
		{"depth", gauge(t, m, "tunnelward_workqueue_depth"), 7},
		{"remediations", toFloat64(t, m.remediations.WithLabelValues("restart_cloudflared", "success")), 1},
		{"drift", toFloat64(t, m.drift.WithLabelValues("dns_record")), 2},
		{"orphans", toFloat64(t, m.orphans.WithLabelValues("tunnel")), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func gauge(t *testing.T, m *Metrics, name string) float64 {
	t.Helper()
	mf, ok := gather(t, m)[name]
	if !ok {
		t.Fatalf("%s not exposed", name)
	}
	return mf.GetMetric()[0].GetGauge().GetValue()
}

func TestQueueFuncs(t *testing.T) {
	m := New()
	if _, ok := gather(t, m)["tunnelward_workqueue_delayed"]; ok {
		t.Fatal("delayed reported before a func is set")
	}
	ready, later := 3, 5
	m.SetQueueFuncs(func() int { return ready }, func() int { return later })
	if d, l := gauge(t, m, "tunnelward_workqueue_depth"), gauge(t, m, "tunnelward_workqueue_delayed"); d != 3 || l != 5 {
		t.Fatalf("depth %v delayed %v, want 3 5", d, l)
	}
	ready, later = 0, 1 // read at scrape time, no push needed
	if d, l := gauge(t, m, "tunnelward_workqueue_depth"), gauge(t, m, "tunnelward_workqueue_delayed"); d != 0 || l != 1 {
		t.Fatalf("depth %v delayed %v after the queue changed, want 0 1", d, l)
	}
}

func TestAPICall(t *testing.T) {
	m := New()
	var obs apicall.Observer = m.APICall
	obs("cloudflare", "tunnel.create", 200, 20*time.Millisecond, false)
	obs("cloudflare", "tunnel.create", 429, 5*time.Millisecond, true)
	obs("cloudflare", "tunnel.create", 503, time.Millisecond, false)
	obs("ec2", "RunInstances", 0, time.Second, false)

	// One naming for every provider: the service, then the provider's own
	// name for the operation (as the engine's log and the emulator name it).
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"cloudflare", "cf.tunnel.create", "2xx"}, 1},
		{[]string{"cloudflare", "cf.tunnel.create", "4xx"}, 1},
		{[]string{"cloudflare", "cf.tunnel.create", "5xx"}, 1},
		{[]string{"ec2", "ec2.RunInstances", "error"}, 1},
	} {
		if got := toFloat64(t, m.apiRequests.WithLabelValues(c.labels...)); got != c.want {
			t.Errorf("requests %v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := toFloat64(t, m.apiThrottles.WithLabelValues("cloudflare", "cf.tunnel.create")); got != 1 {
		t.Errorf("throttles = %v, want 1", got)
	}
	h := gather(t, m)["tunnelward_cloud_api_request_duration_seconds"]
	var count uint64
	var sum float64
	for _, mt := range h.GetMetric() {
		count += mt.GetHistogram().GetSampleCount()
		sum += mt.GetHistogram().GetSampleSum()
	}
	if count != 4 || sum < 1.02 || sum > 1.03 {
		t.Errorf("duration histogram: %d samples summing %v, want 4 summing 1.026", count, sum)
	}
}

func TestStatusClass(t *testing.T) {
	for in, want := range map[int]string{0: "error", -1: "error", 200: "2xx", 204: "2xx", 301: "3xx", 404: "4xx", 429: "4xx", 500: "5xx", 599: "5xx", 600: "error"} {
		if got := StatusClass(in); got != want {
			t.Errorf("StatusClass(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestReconcileHistogram(t *testing.T) {
	m := New()
	m.ObserveReconcile("converged", 300*time.Millisecond)
	m.ObserveReconcile("converged", 2*time.Second)
	m.ObserveReconcile("error", time.Second)
	if n := collectAndCount(t, m.reconcileSeconds); n != 2 {
		t.Errorf("reconcile series = %d, want 2 (converged, error)", n)
	}
	for _, mt := range gather(t, m)["tunnelward_reconcile_duration_seconds"].GetMetric() {
		if mt.GetLabel()[0].GetValue() == "converged" && mt.GetHistogram().GetSampleCount() != 2 {
			t.Errorf("converged samples = %d, want 2", mt.GetHistogram().GetSampleCount())
		}
	}
}

func TestLabelValuesAreBounded(t *testing.T) {
	m := New()
	// A caller that wrongly passes an unbounded value (here: one per org)
	// must not create a series per value.
	for i := range 500 {
		m.DeadLetter(fmt.Sprintf("org-%d failed", i))
	}
	if n := collectAndCount(t, m.deadLetters); n != maxLabelValues+1 {
		t.Fatalf("dead-letter series = %d, want %d (cap plus %q)", n, maxLabelValues+1, Other)
	}
	if got := toFloat64(t, m.deadLetters.WithLabelValues(Other)); got != 500-maxLabelValues {
		t.Fatalf("%q = %v, want %d", Other, got, 500-maxLabelValues)
	}
	// Values seen before the cap keep counting under their own name.
	m.DeadLetter("org-0 failed")
	if got := toFloat64(t, m.deadLetters.WithLabelValues("org-0 failed")); got != 2 {
		t.Fatalf("known value = %v, want 2", got)
	}
}

func TestOrgsByConditionKeepsSeries(t *testing.T) {
	m := New()
	m.SetOrgsByCondition(map[string]int{"ready": 3, "degraded": 1})
	m.SetOrgsByCondition(map[string]int{"ready": 4})
	if got := toFloat64(t, m.orgs.WithLabelValues("ready")); got != 4 {
		t.Errorf("ready = %v, want 4", got)
	}
	if n := collectAndCount(t, m.orgs); n != 2 {
		t.Errorf("series = %d, want 2: a condition that empties stays at 0", n)
	}
	if got := toFloat64(t, m.orgs.WithLabelValues("degraded")); got != 0 {
		t.Errorf("degraded = %v, want 0", got)
	}
}

func TestConsumerCollector(t *testing.T) {
	m := New()
	if _, ok := gather(t, m)["tunnelward_consumer_pending_messages"]; ok {
		t.Fatal("consumer gauges reported before a stats func is set")
	}
	calls := 0
	m.SetConsumerStatsFunc(func(ctx context.Context) (ConsumerStats, error) {
		calls++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("stats func called without a deadline")
		}
		return ConsumerStats{Pending: 12, AckPending: 3, Redelivered: 2}, nil
	})
	fams := gather(t, m)
	for name, want := range map[string]float64{
		"tunnelward_consumer_pending_messages":     12,
		"tunnelward_consumer_ack_pending_messages": 3,
		"tunnelward_consumer_redelivered_messages": 2,
		"tunnelward_consumer_info_up":              1,
	} {
		mf, ok := fams[name]
		if !ok {
			t.Fatalf("%s missing", name)
		}
		if got := mf.GetMetric()[0].GetGauge().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if calls != 1 {
		t.Errorf("one scrape made %d ConsumerInfo calls, want 1", calls)
	}
	m.SetConsumerStatsFunc(func(context.Context) (ConsumerStats, error) { return ConsumerStats{}, errors.New("nats: timeout") })
	fams = gather(t, m)
	if got := fams["tunnelward_consumer_info_up"].GetMetric()[0].GetGauge().GetValue(); got != 0 {
		t.Errorf("up = %v after an error, want 0", got)
	}
	if _, ok := fams["tunnelward_consumer_pending_messages"]; ok {
		t.Error("pending reported although the stats could not be read")
	}
	if got := fams["tunnelward_consumer_info_errors_total"].GetMetric()[0].GetCounter().GetValue(); got != 1 {
		t.Errorf("errors = %v, want 1", got)
	}
}

func TestSweep(t *testing.T) {
	m := New()
	m.sweepAge.start = time.Now().Add(-time.Hour) // as if the process started an hour ago
	age := func() float64 {
		return gather(t, m)["tunnelward_sweep_last_success_age_seconds"].GetMetric()[0].GetGauge().GetValue()
	}
	if a := age(); a < 3600 {
		t.Fatalf("age before any sweep = %v, want at least the process age 3600", a)
	}
	m.SweepDone(2*time.Second, errors.New("cloudflare: 429"))
	if got := toFloat64(t, m.sweepLastSuccess); got != 0 {
		t.Fatalf("a failed sweep moved the last-success timestamp to %v", got)
	}
	if !m.LastSweepSuccess().IsZero() {
		t.Fatal("LastSweepSuccess set by a failed sweep")
	}
	before := time.Now()
	m.SweepDone(3*time.Second, nil)
	ts := toFloat64(t, m.sweepLastSuccess)
	if ts < float64(before.Unix()) {
		t.Fatalf("last success %v is before the sweep ended (%v)", ts, before.Unix())
	}
	if a := age(); a >= 3600 {
		t.Fatalf("age after a successful sweep = %v, want it reset", a)
	}
	if m.LastSweepSuccess().Before(before) {
		t.Fatal("LastSweepSuccess not moved")
	}
	if got := toFloat64(t, m.sweeps.WithLabelValues("success")); got != 1 {
		t.Errorf("successful sweeps = %v", got)
	}
	if got := toFloat64(t, m.sweeps.WithLabelValues("error")); got != 1 {
		t.Errorf("failed sweeps = %v", got)
	}
	if n := collectAndCount(t, m.sweepSeconds); n != 1 {
		t.Errorf("sweep duration series = %d", n)
	}
}

func TestNamingAndLabels(t *testing.T) {
	m := exemplar() // every vector touched, so each family is exposed
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "tunnelward_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	want := []string{
		"tunnelward_events_ingested_total", "tunnelward_dead_letters_total",
		"tunnelward_consumer_pending_messages", "tunnelward_consumer_redelivered_messages",
		"tunnelward_reconcile_duration_seconds", "tunnelward_workqueue_depth", "tunnelward_workqueue_delayed", "tunnelward_workqueue_retries_total",
		"tunnelward_cloud_api_requests_total", "tunnelward_cloud_api_throttles_total",
		"tunnelward_cloud_api_request_duration_seconds", "tunnelward_orgs", "tunnelward_remediations_total",
		"tunnelward_drift_detected_total", "tunnelward_orphans_collected_total", "tunnelward_sweep_duration_seconds",
		"tunnelward_sweep_last_success_timestamp_seconds", "tunnelward_sweep_last_success_age_seconds",
		"tunnelward_tunnels", "tunnelward_org_time_to_ready_seconds", "tunnelward_org_not_ready_longest_seconds",
		"tunnelward_build_info", "tunnelward_pool_used", "tunnelward_pool_limit", "go_goroutines", "process_cpu_seconds_total",
	}
	fams := gather(t, m)
	for _, name := range want {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s not exposed", name)
		}
	}
	for name, mf := range fams {
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if n := strings.ToLower(l.GetName()); strings.Contains(n, "org") || n == "id" || n == "instance_id" || n == "tunnel_id" {
					t.Errorf("%s has a high-cardinality label %q", name, l.GetName())
				}
			}
		}
	}
}

func TestHandler(t *testing.T) {
	m := New()
	m.IngestedEvent("org.created", "applied")
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `tunnelward_events_ingested_total{result="applied",type="org.created"} 1`) {
		t.Fatalf("status %d, body lacks the counter:\n%.2000s", resp.StatusCode, body)
	}
}

func TestNilIsSafe(t *testing.T) {
	var m *Metrics
	m.IngestedEvent("a", "b")
	m.DeadLetter("x")
	m.ObserveReconcile("x", time.Second)
	m.SetQueueDepth(1)
	m.QueueRetry()
	m.APICall("p", "o", 200, 0, false)
	m.SetOrgsByCondition(map[string]int{"x": 1})
	m.Remediation("a", "b")
	m.DriftFound("x")
	m.OrphanCollected("x")
	m.SweepDone(0, nil)
	m.SetConsumerStatsFunc(nil)
	m.SetQueueFuncs(nil, nil)
	m.SetTunnelsByStatus(map[string]int{"down": 1})
	m.SetNotReadySince(time.Now())
	m.ObserveTimeToReady(time.Second)
	m.SetPool("default", "tunnels", 1, 2)
	if m.RecentAPICalls() != nil {
		t.Fatal("nil metrics has recent calls")
	}
	if !m.LastSweepSuccess().IsZero() {
		t.Fatal("nil metrics has a last sweep")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("nil handler answered %d", rec.Code)
	}
}
