package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SetTunnelsByStatus sets the tunnels gauge from a full count per tunnel
// status, as the sweep listed them. Like SetOrgsByCondition, a status
// counted before and absent now is set to 0, so its series stays.
func (m *Metrics) SetTunnelsByStatus(counts map[string]int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	for s := range counts {
		m.statuses[s] = struct{}{}
	}
	all := make([]string, 0, len(m.statuses))
	for s := range m.statuses {
		all = append(all, s)
	}
	m.mu.Unlock()
	for _, s := range all {
		m.tunnels.WithLabelValues(m.bound("tunnels/status", s)).Set(float64(counts[s]))
	}
}

// SetNotReadySince records, at a sweep, since when the present org that
// has been not Ready the longest has been so; the zero time means every
// present org was Ready. The gauge is computed at scrape time from it, so
// it keeps growing between sweeps, like the sweep age.
func (m *Metrics) SetNotReadySince(since time.Time) {
	if m == nil {
		return
	}
	var n int64
	if !since.IsZero() {
		n = since.UnixNano()
	}
	m.notReady.since.Store(n)
}

// ObserveTimeToReady records how long an org took from Provisioning to Ready.
func (m *Metrics) ObserveTimeToReady(d time.Duration) {
	if m == nil {
		return
	}
	m.timeToReady.Observe(max(d, 0).Seconds())
}

// notReadyCollector reports the age of the oldest not-Ready org.
type notReadyCollector struct {
	since atomic.Int64 // unix nanos, 0 for none
	desc  *prometheus.Desc
}

func (c *notReadyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *notReadyCollector) Collect(ch chan<- prometheus.Metric) {
	age := 0.0
	if n := c.since.Load(); n != 0 {
		age = max(time.Since(time.Unix(0, n)).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, age)
}

// SetWatchInterval records the effective interval of one listing's watch.
func (m *Metrics) SetWatchInterval(listing string, d time.Duration) {
	if m == nil {
		return
	}
	m.watchInterval.WithLabelValues(m.bound("watch/listing", listing)).Set(d.Seconds())
}

// Listing counts one listing run, by whom (watch, sweep, early,
// early_extra).
func (m *Metrics) Listing(listing, by string) {
	if m == nil {
		return
	}
	m.listings.WithLabelValues(m.bound("watch/listing", listing), m.bound("listings/by", by)).Inc()
}

// SetPool sets a Cloudflare pool's use of one resource ("tunnels",
// "dns_records") and its limit (0: unlimited). Pool names come from the
// configuration, so the label set is bounded.
func (m *Metrics) SetPool(pool, resource string, used, limit int) {
	if m == nil {
		return
	}
	m.poolUsed.WithLabelValues(pool, resource).Set(float64(used))
	m.poolLimit.WithLabelValues(pool, resource).Set(float64(limit))
}

// TokenRotated counts one finished token rotation.
func (m *Metrics) TokenRotated(trigger string) {
	if m == nil {
		return
	}
	m.rotations.WithLabelValues(trigger).Inc()
}

// SetTokensPastMaxAge sets how many orgs' tokens are older than the max age.
func (m *Metrics) SetTokensPastMaxAge(n int) {
	if m == nil {
		return
	}
	m.pastMaxAge.Set(float64(n))
}
