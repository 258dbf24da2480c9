package metrics

import "github.com/prometheus/client_golang/prometheus"

// Pool resources (the resource label of the pool gauges).
const (
	PoolTunnels    = "tunnels"
	PoolDNSRecords = "dns_records"
)

// poolMetrics are the Cloudflare pools' (placement).
type poolMetrics struct {
	used  *prometheus.GaugeVec
	limit *prometheus.GaugeVec
}

func newPoolMetrics() poolMetrics {
	return poolMetrics{
		used: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "pool_used",
			Help: "What a Cloudflare pool holds, by pool and resource (tunnels: in its account, shared by the pools of one account; dns_records: in its zone), as placement counts it.",
		}, []string{"pool", "resource"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "pool_limit",
			Help: "The limit placement keeps a Cloudflare pool under, by pool and resource (tunnels, dns_records); 0 when it keeps none.",
		}, []string{"pool", "resource"}),
	}
}

// SetPool sets what one pool uses of one resource (PoolTunnels or
// PoolDNSRecords) and its limit (0: none kept).
func (m *Metrics) SetPool(pool, resource string, used, limit int) {
	if m == nil {
		return
	}
	pool, resource = m.bound("pool/pool", pool), m.bound("pool/resource", resource)
	m.pools.used.WithLabelValues(pool, resource).Set(float64(used))
	m.pools.limit.WithLabelValues(pool, resource).Set(float64(limit))
}
