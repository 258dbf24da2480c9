package monitoring

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// memStore holds scraped samples in memory and serves them to Prometheus's
// PromQL engine as a storage.Queryable. It stands in for the TSDB: the
// module's test storage would compile the whole TSDB (and its write-ahead
// log) into this package for a few hundred samples.
type memStore struct {
	series map[string]*memSeries
}

type memSeries struct {
	lset    labels.Labels
	samples []chunks.Sample
}

// fSample is one float sample.
type fSample struct {
	t int64
	f float64
}

func (s fSample) T() int64                      { return s.t }
func (s fSample) ST() int64                     { return 0 }
func (s fSample) F() float64                    { return s.f }
func (s fSample) H() *histogram.Histogram       { return nil }
func (s fSample) FH() *histogram.FloatHistogram { return nil }
func (s fSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fSample) Copy() chunks.Sample           { return s }

func newMemStore() *memStore { return &memStore{series: map[string]*memSeries{}} }

func (m *memStore) add(ts time.Time, lset labels.Labels, v float64) {
	k := lset.String()
	s := m.series[k]
	if s == nil {
		s = &memSeries{lset: lset}
		m.series[k] = s
	}
	s.samples = append(s.samples, fSample{t: ts.UnixMilli(), f: v})
}

// Querier answers every Select from the samples held; the engine seeks
// within each series itself.
func (m *memStore) Querier(_, _ int64) (storage.Querier, error) {
	return &storage.MockQuerier{SelectMockFunction: func(sortSeries bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
		var out []storage.Series
		for _, s := range m.series {
			ok := true
			for _, mt := range ms {
				if !mt.Matches(s.lset.Get(mt.Name)) {
					ok = false
					break
				}
			}
			if ok {
				out = append(out, storage.NewListSeries(s.lset, append([]chunks.Sample(nil), s.samples...)))
			}
		}
		sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
		return &listSet{series: out, i: -1}
	}}, nil
}

type listSet struct {
	series []storage.Series
	i      int
}

func (l *listSet) Next() bool                        { l.i++; return l.i < len(l.series) }
func (l *listSet) At() storage.Series                { return l.series[l.i] }
func (l *listSet) Err() error                        { return nil }
func (l *listSet) Warnings() annotations.Annotations { return nil }

// scrape reads url's Prometheus text exposition and stores it at ts as a
// Prometheus server would: the target's job and instance labels on every
// series, histograms as _bucket/_sum/_count, and up.
func (m *memStore) scrape(ctx context.Context, url, job, instance string, ts time.Time) error {
	up := func(v float64) {
		m.add(ts, labels.FromStrings(labels.MetricName, "up", "job", job, "instance", instance), v)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		up(0)
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		up(0)
		return fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		up(0)
		return fmt.Errorf("scrape %s: %w", url, err)
	}
	up(1)
	for name, mf := range fams {
		for _, mt := range mf.GetMetric() {
			base := map[string]string{"job": job, "instance": instance}
			for _, l := range mt.GetLabel() {
				base[l.GetName()] = l.GetValue()
			}
			put := func(n string, v float64, extra ...string) {
				lb := labels.NewBuilder(labels.FromMap(base))
				lb.Set(labels.MetricName, n)
				for i := 0; i+1 < len(extra); i += 2 {
					lb.Set(extra[i], extra[i+1])
				}
				m.add(ts, lb.Labels(), v)
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				put(name, mt.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				put(name, mt.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				put(name, mt.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := mt.GetHistogram()
				for _, b := range h.GetBucket() {
					put(name+"_bucket", float64(b.GetCumulativeCount()), "le", formatLe(b.GetUpperBound()))
				}
				put(name+"_bucket", float64(h.GetSampleCount()), "le", "+Inf")
				put(name+"_sum", h.GetSampleSum())
				put(name+"_count", float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				s := mt.GetSummary()
				for _, q := range s.GetQuantile() {
					put(name, q.GetValue(), "quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64))
				}
				put(name+"_sum", s.GetSampleSum())
				put(name+"_count", float64(s.GetSampleCount()))
			}
		}
	}
	return nil
}

func formatLe(f float64) string {
	if math.IsInf(f, +1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// alertEval evaluates one alerting rule the way Prometheus's rule manager
// does: the expression with the PromQL engine at each evaluation time, and
// an alert per result series that is pending until it has been active for
// the rule's `for`, then firing, and resolved when its series drops out.
// (Prometheus's rules package would bring its notifier, service discovery
// and their cloud SDKs into the module graph for these few lines.)
type alertEval struct {
	name   string
	expr   string
	hold   time.Duration
	engine *promql.Engine
	active map[string]time.Time // result series -> when it became active
}

type alertState string

const (
	inactive alertState = "inactive"
	pending  alertState = "pending"
	firing   alertState = "firing"
)

func newAlertEval(name, expr string, hold time.Duration) *alertEval {
	return &alertEval{name: name, expr: expr, hold: hold, active: map[string]time.Time{},
		engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: 10 * time.Second,
			LookbackDelta: 5 * time.Minute, Parser: promParser})}
}

// eval returns the rule's state at ts (the worst of its alerts) and the
// expression's result.
func (a *alertEval) eval(ctx context.Context, q storage.Queryable, ts time.Time) (alertState, promql.Vector, error) {
	qry, err := a.engine.NewInstantQuery(ctx, q, nil, a.expr, ts)
	if err != nil {
		return inactive, nil, err
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return inactive, nil, res.Err
	}
	vec, err := res.Vector()
	if err != nil {
		return inactive, nil, err
	}
	now := map[string]bool{}
	state := inactive
	for _, s := range vec {
		k := s.Metric.String()
		now[k] = true
		since, ok := a.active[k]
		if !ok {
			since = ts
			a.active[k] = ts
		}
		if ts.Sub(since) >= a.hold {
			state = firing
		} else if state == inactive {
			state = pending
		}
	}
	for k := range a.active {
		if !now[k] {
			delete(a.active, k) // resolved
		}
	}
	return state, vec, nil
}
