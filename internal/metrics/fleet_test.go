package metrics

import (
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestTunnelsByStatusKeepsSeries(t *testing.T) {
	m := New()
	m.SetTunnelsByStatus(map[string]int{"healthy": 3, "down": 1})
	m.SetTunnelsByStatus(map[string]int{"healthy": 4})
	if got := toFloat64(t, m.tunnels.WithLabelValues("down")); got != 0 {
		t.Errorf("down = %v after it went away, want 0 (the series stays)", got)
	}
	if got := toFloat64(t, m.tunnels.WithLabelValues("healthy")); got != 4 {
		t.Errorf("healthy = %v, want 4", got)
	}
}

func TestNotReadyLongest(t *testing.T) {
	m := New()
	if got := gauge(t, m, "tunnelward_org_not_ready_longest_seconds"); got != 0 {
		t.Fatalf("before any sweep: %v, want 0", got)
	}
	m.SetNotReadySince(time.Now().Add(-time.Hour))
	if got := gauge(t, m, "tunnelward_org_not_ready_longest_seconds"); got < 3600 || got > 3600+60 {
		t.Fatalf("an org not Ready for an hour: %v", got)
	}
	m.SetNotReadySince(time.Time{})
	if got := gauge(t, m, "tunnelward_org_not_ready_longest_seconds"); got != 0 {
		t.Fatalf("every org Ready: %v, want 0", got)
	}
}

func TestTimeToReady(t *testing.T) {
	m := New()
	m.ObserveTimeToReady(90 * time.Second)
	m.ObserveTimeToReady(-time.Second) // clock step: counted as 0, not dropped
	h := gather(t, m)["tunnelward_org_time_to_ready_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 90 {
		t.Fatalf("count %d sum %v, want 2 and 90", h.GetSampleCount(), h.GetSampleSum())
	}
}

// fakeClock is a settable clock for the recent-calls window.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestRecentAPICallsSlide(t *testing.T) {
	m := New()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	m.recent.now = clk.now
	m.APICall("cloudflare", "tunnels.New", 200, time.Millisecond, false)
	m.APICall("cloudflare", "tunnels.New", 429, time.Millisecond, true)
	m.APICall("ec2", "RunInstances", 0, time.Millisecond, false)
	clk.add(3 * time.Minute)
	m.APICall("cloudflare", "dns.List", 503, time.Millisecond, false)
	want := []Recent{{Provider: "cloudflare", Requests: 3, Throttled: 1, Failed: 1}, {Provider: "ec2", Requests: 1, Failed: 1}}
	if got := m.RecentAPICalls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("within the window: %+v, want %+v", got, want)
	}
	// The first three fall out of the 5-minute window; the fourth stays.
	clk.add(2*time.Minute + recentSlot)
	want = []Recent{{Provider: "cloudflare", Requests: 1, Failed: 1}, {Provider: "ec2"}}
	if got := m.RecentAPICalls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after 5m10s: %+v, want %+v", got, want)
	}
	// A whole idle window later, a reused slot does not carry old counts.
	clk.add(RecentWindow)
	m.APICall("cloudflare", "dns.List", 200, time.Millisecond, false)
	want = []Recent{{Provider: "cloudflare", Requests: 1}, {Provider: "ec2"}}
	if got := m.RecentAPICalls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after an idle window: %+v, want %+v", got, want)
	}
}

// SetPool sets both gauges of one pool's resource; other pools and
// resources keep theirs.
func TestSetPool(t *testing.T) {
	m := New()
	m.SetPool("sandbox", "tunnels", 120, 1000)
	m.SetPool("sandbox", "dns_records", 199, 200)
	m.SetPool("sandbox2", "dns_records", 3, 0)
	m.SetPool("sandbox", "tunnels", 121, 1000)
	for _, tc := range []struct {
		pool, resource string
		used, limit    float64
	}{
		{"sandbox", "tunnels", 121, 1000},
		{"sandbox", "dns_records", 199, 200},
		{"sandbox2", "dns_records", 3, 0},
	} {
		if got := toFloat64(t, m.poolUsed.WithLabelValues(tc.pool, tc.resource)); got != tc.used {
			t.Errorf("tunnelward_pool_used{pool=%q,resource=%q} = %v, want %v", tc.pool, tc.resource, got, tc.used)
		}
		if got := toFloat64(t, m.poolLimit.WithLabelValues(tc.pool, tc.resource)); got != tc.limit {
			t.Errorf("tunnelward_pool_limit{pool=%q,resource=%q} = %v, want %v", tc.pool, tc.resource, got, tc.limit)
		}
	}
	if n := collectAndCount(t, m.poolUsed); n != 3 {
		t.Errorf("%d pool_used series, want 3", n)
	}
}
