package metrics

import "github.com/prometheus/client_golang/prometheus"

// clusterMetrics are the partition leases' (internal/cluster).
type clusterMetrics struct {
	owned     prometheus.Gauge
	renewals  *prometheus.CounterVec
	takeovers *prometheus.CounterVec
}

func newClusterMetrics() clusterMetrics {
	return clusterMetrics{
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "cluster_partitions_owned",
			Help: "Partitions whose lease this replica holds (of 64; the embedded single replica holds all).",
		}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cluster_lease_renewals_total",
			Help: "Partition lease renewals, by result (ok; failed: no answer, retried; lost: expired or held by another replica).",
		}, []string{"result"}),
		takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cluster_lease_takeovers_total",
			Help: "Partition leases taken by this replica, by how (free: expired or given back; adopted: its own, left by its previous process; holder-gone: taken over before expiry from a replica whose connection is gone).",
		}, []string{"how"}),
	}
}

// SetPartitionsOwned sets the owned-partitions gauge.
func (m *Metrics) SetPartitionsOwned(n int) {
	if m == nil {
		return
	}
	m.cluster.owned.Set(float64(n))
}

// LeaseRenewal counts one lease renewal by result.
func (m *Metrics) LeaseRenewal(result string) {
	if m == nil {
		return
	}
	m.cluster.renewals.WithLabelValues(m.bound("cluster_renewals/result", result)).Inc()
}

// LeaseTakeover counts one partition lease taken.
func (m *Metrics) LeaseTakeover(how string) {
	if m == nil {
		return
	}
	m.cluster.takeovers.WithLabelValues(m.bound("cluster_takeovers/how", how)).Inc()
}
