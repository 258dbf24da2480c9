// Package metrics is tunnelward's Prometheus instrumentation: every metric
// on one registry of its own (never the global default, so tests and
// embedded uses cannot collide), named tunnelward_* after the Prometheus
// conventions (base units, _total counters), with bounded labels only. No
// label ever carries an org id: per-org detail belongs in logs and in
// /v1/orgs, not in time series.
//
// All methods are safe on a nil *Metrics, so a component built without
// metrics needs no special case.
package metrics

import (
	"context"
	"net/http"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "tunnelward"

// maxLabelValues caps the distinct values one label of one metric may take;
// past it new values are counted as "other". A caller that passes an
// unbounded string (an error text, an id) cannot explode the series count.
const maxLabelValues = 64

// Other is the label value that stands for values past the cap.
const Other = "other"

// ConsumerStats is what the consumer collector reports at each scrape.
type ConsumerStats struct {
	Pending     uint64 // messages in the stream not yet delivered to the consumer
	AckPending  uint64 // delivered, not yet acked
	Redelivered uint64 // delivered more than once, not yet acked
}

// ConsumerStatsFunc reads the JetStream consumer's state (ConsumerInfo).
type ConsumerStatsFunc func(ctx context.Context) (ConsumerStats, error)

// Metrics holds every tunnelward metric.
type Metrics struct {
	reg *prometheus.Registry

	eventsIngested   *prometheus.CounterVec
	deadLetters      *prometheus.CounterVec
	reconcileSeconds *prometheus.HistogramVec
	queue            *queueCollector
	queueRetries     prometheus.Counter
	apiRequests      *prometheus.CounterVec
	apiSeconds       *prometheus.HistogramVec
	apiThrottles     *prometheus.CounterVec
	orgs             *prometheus.GaugeVec
	remediations     *prometheus.CounterVec
	drift            *prometheus.CounterVec
	orphans          *prometheus.CounterVec
	sweeps           *prometheus.CounterVec
	sweepSeconds     prometheus.Histogram
	sweepLastSuccess prometheus.Gauge
	tunnels          *prometheus.GaugeVec
	poolUsed         *prometheus.GaugeVec
	poolLimit        *prometheus.GaugeVec
	rotations        *prometheus.CounterVec
	pastMaxAge       prometheus.Gauge
	watchInterval    *prometheus.GaugeVec
	listings         *prometheus.CounterVec
	timeToReady      prometheus.Histogram
	cluster          clusterMetrics // cluster.go

	consumer *consumerCollector
	sweepAge *sweepAgeCollector
	notReady *notReadyCollector
	recent   *recentCalls

	mu         sync.Mutex
	labelSeen  map[string]map[string]struct{} // metric/label -> values seen
	conditions map[string]struct{}            // org conditions ever set
	statuses   map[string]struct{}            // tunnel statuses ever set
}

// New builds the metrics on a fresh registry, with the Go runtime and
// process collectors beside them.
func New() *Metrics {
	m := &Metrics{
		reg:        prometheus.NewRegistry(),
		labelSeen:  map[string]map[string]struct{}{},
		conditions: map[string]struct{}{},
		statuses:   map[string]struct{}{},
		recent:     newRecentCalls(time.Now),
	}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }

	m.eventsIngested = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "events_ingested_total",
		Help: "Events read from ORG_EVENTS, by event type and result (applied, stale, ignored_unknown, ignored_deleted, deferred, invalid).",
	}, []string{"type", "result"})
	m.deadLetters = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "dead_letters_total",
		Help: "Events moved to ORG_EVENTS_DLQ, by reason code.",
	}, []string{"reason"})
	m.reconcileSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "reconcile_duration_seconds",
		Help:    "Time one reconcile of one org took, by result (ok, requeue, error, terminal).",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"result"})
	m.queue = &queueCollector{
		depth: prometheus.NewDesc(namespace+"_workqueue_depth",
			"Orgs ready to be reconciled and waiting for a worker.", nil, nil),
		delayed: prometheus.NewDesc(namespace+"_workqueue_delayed",
			"Orgs waiting out a backoff or a requeue delay before they are ready.", nil, nil),
	}
	m.queueRetries = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "workqueue_retries_total",
		Help: "Orgs put back on the work queue with backoff after a failed reconcile.",
	})
	m.apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "cloud_api_requests_total",
		Help: "HTTP attempts to cloud APIs, by provider, operation and status class (2xx, 3xx, 4xx, 5xx, error).",
	}, []string{"provider", "operation", "status_class"})
	m.apiSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "cloud_api_request_duration_seconds",
		Help:    "Duration of HTTP attempts to cloud APIs, by provider and operation.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"provider", "operation"})
	m.apiThrottles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "cloud_api_throttles_total",
		Help: "Cloud API attempts answered with throttling (429, RequestLimitExceeded), by provider and operation.",
	}, []string{"provider", "operation"})
	m.orgs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "orgs",
		Help: "Orgs in desired state, by condition.",
	}, []string{"condition"})
	m.watchInterval = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "watch_interval_seconds",
		Help: "Effective interval of each listing's watch (tunnels, dns_records, instances, parameters), from its share of the provider's budget.",
	}, []string{"listing"})
	m.listings = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "listings_total",
		Help: "Listings run (each may take several pages), by listing and by whom: watch, sweep, early (a readiness or tombstone listing that took the watch's run), early_extra (one that added a listing).",
	}, []string{"listing", "by"})
	m.remediations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "remediations_total",
		Help: "Health remediations, by action (restart_cloudflared, replace_instance) and outcome.",
	}, []string{"action", "outcome"})
	m.drift = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "drift_detected_total",
		Help: "Differences found between desired and observed state, by resource (tunnel, tunnel_config, dns_record, parameter, instance).",
	}, []string{"resource"})
	m.orphans = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "orphans_collected_total",
		Help: "Owned resources of no known org deleted by the sweep, by resource.",
	}, []string{"resource"})
	m.sweeps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "sweeps_total",
		Help: "Periodic sweeps, by result (success, error).",
	}, []string{"result"})
	m.sweepSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "sweep_duration_seconds",
		Help:    "Time one sweep over every org took.",
		Buckets: []float64{0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1200},
	})
	m.sweepLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "sweep_last_success_timestamp_seconds",
		Help: "Unix time the last successful sweep finished (0 before the first).",
	})
	m.tunnels = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "tunnels",
		Help: "Tunnels of present orgs by the status the last sweep listed (healthy, degraded, down, inactive; missing when the org has none).",
	}, []string{"status"})
	m.poolUsed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "pool_used",
		Help: "Orgs placed in each Cloudflare pool, by resource: tunnels (counted over the pool's account) and dns_records (its zone).",
	}, []string{"pool", "resource"})
	m.poolLimit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "pool_limit",
		Help: "Each Cloudflare pool's limit by resource (tunnels in its account, dns_records in its zone); 0 means unlimited.",
	}, []string{"pool", "resource"})
	m.rotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "token_rotations_total",
		Help: "Tunnel token rotations finished, by trigger: requested (org.token_rotation_requested) or max_age (--token-max-age).",
	}, []string{"trigger"})
	m.pastMaxAge = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "tokens_past_max_age",
		Help: "Orgs whose tunnel token is older than --token-max-age, at the last inventory pass (0 when the policy is off).",
	})
	m.timeToReady = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "org_time_to_ready_seconds",
		Help:    "Time from an org's Provisioning condition turning true (its first reconcile pass requested the resources) to Ready.",
		Buckets: []float64{1, 2.5, 5, 10, 30, 60, 120, 180, 300, 600, 1200, 1800, 3600},
	})
	m.notReady = &notReadyCollector{desc: prometheus.NewDesc(namespace+"_org_not_ready_longest_seconds",
		"Seconds the present org that has been not Ready the longest has been so, as of the last sweep's listing (0 when every present org was Ready).",
		nil, nil)}
	m.cluster = newClusterMetrics()
	m.consumer = newConsumerCollector()
	m.sweepAge = &sweepAgeCollector{start: time.Now(), desc: prometheus.NewDesc(
		namespace+"_sweep_last_success_age_seconds",
		"Seconds since the last successful sweep finished, or since the process started if none has yet.",
		nil, nil)}

	for _, c := range []prometheus.Collector{
		m.eventsIngested, m.deadLetters, m.reconcileSeconds, m.queue, m.queueRetries,
		m.apiRequests, m.apiSeconds, m.apiThrottles, m.orgs, m.remediations, m.drift, m.orphans,
		m.sweeps, m.sweepSeconds, m.sweepLastSuccess, m.consumer, m.sweepAge,
		m.tunnels, m.poolUsed, m.poolLimit, m.rotations, m.pastMaxAge, m.timeToReady, m.notReady, m.watchInterval, m.listings,
		m.cluster.owned, m.cluster.renewals, m.cluster.takeovers,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1; labels name the build.",
	}, []string{"version", "goversion"})
	version, goversion := "unknown", "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		version, goversion = info.Main.Version, info.GoVersion
	}
	bi.WithLabelValues(version, goversion).Set(1)
	f(bi)
	return m
}

// Registry is the registry every metric is on, for tests and for adding
// collectors that belong beside them.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:          m.reg, // counts its own scrape errors
		EnableOpenMetrics: true,
		Timeout:           10 * time.Second,
	})
}

// bound returns v, or Other once the metric's label has seen maxLabelValues
// distinct values.
func (m *Metrics) bound(key, v string) string {
	if v == "" {
		v = "unknown"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := m.labelSeen[key]
	if seen == nil {
		seen = map[string]struct{}{}
		m.labelSeen[key] = seen
	}
	if _, ok := seen[v]; ok {
		return v
	}
	if len(seen) >= maxLabelValues {
		return Other
	}
	seen[v] = struct{}{}
	return v
}

// IngestedEvent counts one event read from the stream.
func (m *Metrics) IngestedEvent(typ, result string) {
	if m == nil {
		return
	}
	m.eventsIngested.WithLabelValues(m.bound("ingest/type", typ), m.bound("ingest/result", result)).Inc()
}

// DeadLetter counts one event moved to the dead-letter stream. reason is the
// validation code (events.Code*), never free text.
func (m *Metrics) DeadLetter(reason string) {
	if m == nil {
		return
	}
	m.deadLetters.WithLabelValues(m.bound("dlq/reason", reason)).Inc()
}

// ObserveReconcile records one reconcile of one org.
func (m *Metrics) ObserveReconcile(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.reconcileSeconds.WithLabelValues(m.bound("reconcile/result", result)).Observe(d.Seconds())
}

// SetQueueDepth sets the number of orgs ready in the work queue, for a
// caller that pushes the value; SetQueueFuncs makes it pulled instead.
func (m *Metrics) SetQueueDepth(n int) {
	if m == nil {
		return
	}
	m.queue.depthVal.Store(int64(n))
}

// SetQueueFuncs makes the queue gauges read at scrape time: depth is the
// number of ready keys and delayed the number scheduled for later
// (workqueue.Queue's Len and Waiting). Either may be nil.
func (m *Metrics) SetQueueFuncs(depth, delayed func() int) {
	if m == nil {
		return
	}
	m.queue.depthFn.Store(&depth)
	m.queue.delayedFn.Store(&delayed)
}

// QueueRetry counts one org requeued with backoff.
func (m *Metrics) QueueRetry() {
	if m == nil {
		return
	}
	m.queueRetries.Inc()
}

// APICall records one HTTP attempt to a cloud API; status is 0 when no
// response came back. Its signature is apicall.Observer's, so
// apicall.Config{Observe: m.APICall} wires it.
func (m *Metrics) APICall(provider, op string, status int, dur time.Duration, throttled bool) {
	if m == nil {
		return
	}
	provider, op = m.bound("api/provider", provider), m.bound("api/op", Operation(provider, op))
	m.apiRequests.WithLabelValues(provider, op, StatusClass(status)).Inc()
	m.apiSeconds.WithLabelValues(provider, op).Observe(dur.Seconds())
	if throttled {
		m.apiThrottles.WithLabelValues(provider, op).Inc()
	}
	m.recent.add(provider, status, throttled)
}

// Operation is the operation label of one provider call, named as the
// engine's audit log ("cloud mutation" op=...) and the emulator's call
// counts (/_sim/calls) name it: the service, then the provider's own name
// for the operation: cf.tunnel.create, cf.dns.list, ec2.RunInstances,
// ssm.PutParameter, sts.GetCallerIdentity. One operation has one name in
// the log, the metric and the emulator.
func Operation(provider, op string) string {
	service := provider
	if provider == "cloudflare" {
		service = "cf"
	}
	if service == "" || strings.HasPrefix(op, service+".") {
		return op
	}
	return service + "." + op
}

// StatusClass is the status_class label of an HTTP status: "2xx" ...
// "5xx", or "error" when no response came back.
func StatusClass(status int) string {
	if status < 100 || status > 599 {
		return "error"
	}
	return strconv.Itoa(status/100) + "xx"
}

// SetOrgsByCondition sets the orgs gauge from a full count per condition.
// A condition counted before and absent now is set to 0 rather than
// removed, so a series never disappears between scrapes.
func (m *Metrics) SetOrgsByCondition(counts map[string]int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	for c := range counts {
		m.conditions[c] = struct{}{}
	}
	all := make([]string, 0, len(m.conditions))
	for c := range m.conditions {
		all = append(all, c)
	}
	m.mu.Unlock()
	for _, c := range all {
		m.orgs.WithLabelValues(m.bound("orgs/condition", c)).Set(float64(counts[c]))
	}
}

// Remediation counts one health remediation.
func (m *Metrics) Remediation(action, outcome string) {
	if m == nil {
		return
	}
	m.remediations.WithLabelValues(m.bound("remediation/action", action), m.bound("remediation/outcome", outcome)).Inc()
}

// DriftFound counts one difference between desired and observed state.
func (m *Metrics) DriftFound(resource string) {
	if m == nil {
		return
	}
	m.drift.WithLabelValues(m.bound("drift/resource", resource)).Inc()
}

// OrphanCollected counts one orphan deleted by the sweep.
func (m *Metrics) OrphanCollected(resource string) {
	if m == nil {
		return
	}
	m.orphans.WithLabelValues(m.bound("orphans/resource", resource)).Inc()
}

// SweepDone records one finished sweep. Only a successful one moves the
// last-success timestamp and age.
func (m *Metrics) SweepDone(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.sweepSeconds.Observe(d.Seconds())
	if err != nil {
		m.sweeps.WithLabelValues("error").Inc()
		return
	}
	m.sweeps.WithLabelValues("success").Inc()
	now := time.Now()
	m.sweepLastSuccess.Set(float64(now.UnixNano()) / 1e9)
	m.sweepAge.last.Store(now.UnixNano())
}

// LastSweepSuccess is when the last sweep succeeded (zero before the first),
// for a readiness check that wants to call a stale sweep unready.
func (m *Metrics) LastSweepSuccess() time.Time {
	if m == nil {
		return time.Time{}
	}
	if n := m.sweepAge.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// SetConsumerStatsFunc installs the function the consumer gauges are read
// from at each scrape (nil removes it). The scrape gives it a deadline.
func (m *Metrics) SetConsumerStatsFunc(f ConsumerStatsFunc) {
	if m == nil {
		return
	}
	m.consumer.fn.Store(&f)
}

// sweepAgeCollector computes the age at scrape time, so it keeps growing
// when sweeps stop, which is exactly when someone needs to see it.
type sweepAgeCollector struct {
	start time.Time
	last  atomic.Int64 // unix nanos of the last success, 0 for none
	desc  *prometheus.Desc
}

func (c *sweepAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *sweepAgeCollector) Collect(ch chan<- prometheus.Metric) {
	from := c.start
	if n := c.last.Load(); n != 0 {
		from = time.Unix(0, n)
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, time.Since(from).Seconds())
}

// consumerCollector asks the consumer for its state once per scrape, so the
// three gauges agree with each other and cost one ConsumerInfo call.
type consumerCollector struct {
	fn                                   atomic.Pointer[ConsumerStatsFunc]
	pending, ackPending, redelivered, up *prometheus.Desc
	errors                               prometheus.Counter
}

func newConsumerCollector() *consumerCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, nil, nil)
	}
	return &consumerCollector{
		pending:     d("consumer_pending_messages", "Messages in ORG_EVENTS not yet delivered to the reconciler consumer."),
		ackPending:  d("consumer_ack_pending_messages", "Messages delivered to the reconciler consumer and not yet acked."),
		redelivered: d("consumer_redelivered_messages", "Messages delivered more than once and not yet acked."),
		up:          d("consumer_info_up", "1 when the last scrape could read the consumer's state, 0 when it could not."),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "consumer_info_errors_total",
			Help: "Scrapes that could not read the consumer's state.",
		}),
	}
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.redelivered
	ch <- c.up
	c.errors.Describe(ch)
}

func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	defer c.errors.Collect(ch)
	p := c.fn.Load()
	if p == nil || *p == nil {
		return // nothing bound yet: report nothing rather than a false zero
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := (*p)(ctx)
	if err != nil {
		c.errors.Inc()
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(st.AckPending))
	ch <- prometheus.MustNewConstMetric(c.redelivered, prometheus.GaugeValue, float64(st.Redelivered))
}

// queueCollector reports the work queue's gauges, from functions read at
// scrape time when set (no polling loop needed) or from the last pushed value.
type queueCollector struct {
	depth, delayed     *prometheus.Desc
	depthVal           atomic.Int64
	depthFn, delayedFn atomic.Pointer[func() int]
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.delayed
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	depth := float64(c.depthVal.Load())
	if f := c.depthFn.Load(); f != nil && *f != nil {
		depth = float64((*f)())
	}
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, depth)
	if f := c.delayedFn.Load(); f != nil && *f != nil {
		ch <- prometheus.MustNewConstMetric(c.delayed, prometheus.GaugeValue, float64((*f)()))
	}
}

// Family is one metric family the package exports.
type Family struct {
	Name      string
	Histogram bool
}

// Families lists every family the package exports, sorted by name: a fresh
// set of metrics with each labelled vector touched once, so that docs and
// dashboards (docs/operations.md, deploy/prometheus) can be checked against
// the code. Nothing is registered globally.
func Families() ([]Family, error) {
	mfs, err := exemplar().Registry().Gather()
	if err != nil {
		return nil, err
	}
	out := make([]Family, 0, len(mfs))
	for _, mf := range mfs {
		out = append(out, Family{Name: mf.GetName(), Histogram: mf.GetType() == dto.MetricType_HISTOGRAM})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// exemplar is a fresh set of metrics with each labelled vector touched once,
// so that every family is gathered.
func exemplar() *Metrics {
	m := New()
	m.IngestedEvent("org.created", "applied")
	m.DeadLetter("schema")
	m.ObserveReconcile("converged", time.Second)
	m.APICall("aws", "ec2.RunInstances", 200, time.Millisecond, true)
	m.SetOrgsByCondition(map[string]int{"ready": 1})
	m.Remediation("restart_cloudflared", "success")
	m.DriftFound("instance")
	m.OrphanCollected("tunnel")
	m.SweepDone(time.Second, nil)
	m.SetTunnelsByStatus(map[string]int{"healthy": 1})
	m.SetWatchInterval("tunnels", 15*time.Second)
	m.Listing("tunnels", "watch")
	m.SetConsumerStatsFunc(func(context.Context) (ConsumerStats, error) { return ConsumerStats{}, nil })
	m.SetQueueFuncs(func() int { return 0 }, func() int { return 0 })
	m.LeaseRenewal("ok")
	m.LeaseTakeover("free")
	m.SetPool("default", "tunnels", 0, 1000)
	m.TokenRotated("requested")
	return m
}
