package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/daemon"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/workqueue"
)

// world is one emulated cloud on loopback, tunnelward's real provider
// clients pointed at it, a bbolt file and a reconcile engine: the same
// wiring as the reconciler's sandbox mode, with every knob a figure needs.
type world struct {
	sim   *cloudsim.Sim
	srv   *httptest.Server
	cf    *cloudflare.Client
	aw    *aws.Client
	store *state.Store
	eng   *reconcile.Engine
	dir   string
	seq   atomic.Uint64

	// requests counts every request the emulator answered (all providers),
	// for the emulator-headroom comparison.
	requests atomic.Int64
	firstCF  atomic.Int64 // unix nanos of the first Cloudflare request, 0 before

	cancel context.CancelFunc
	done   chan struct{}
}

type worldOpts struct {
	sim      func(*cloudsim.Config)
	engine   func(*reconcile.Config)
	cfBudget ratelimit.WindowBudget
	ec2      ratelimit.EC2Buckets
	ssm      ratelimit.Bucket
	cfPage   int // 0: the client's default (what the reconciler runs with)
	policy   apicall.Policy
	// store, when set, wraps the bbolt store the engine writes through
	// (a figure watching the engine's status writes).
	store func(reconcile.Store) reconcile.Store
	// pools is how many Cloudflare pools the engine serves, each on its own
	// emulated identity (account, zone, token) and so its own budget; 0
	// or 1: one. Every pool is unlimited (the figures measure the engine,
	// not placement limits).
	pools int
}

// generous limits for figures that do not measure rate limiting: the
// limiters exist but never bind.
var (
	freeCF  = ratelimit.WindowBudget{Requests: 1e9, Window: time.Second, Burst: 1e6}
	freeEC2 = ratelimit.EC2Buckets{Mutating: ratelimit.Bucket{Burst: 1e6, Rate: 1e9}, NonMutating: ratelimit.Bucket{Burst: 1e6, Rate: 1e9}}
	freeSSM = ratelimit.Bucket{Burst: 1e6, Rate: 1e9}
)

func newWorld(o worldOpts) (*world, error) {
	dir, err := os.MkdirTemp("", "tunnelward-bench-")
	if err != nil {
		return nil, err
	}
	scfg := cloudsim.DefaultConfig()
	scfg.Limits = cloudsim.RateLimits{}
	scfg.BootDelay, scfg.ConnectDelay, scfg.ShutdownDelay = 150*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
	scfg.RetryInterval = 100 * time.Millisecond
	// The figures load fleets past one Cloudflare account's and zone's
	// limits (10,000 and 100,000 orgs): the emulator keeps none of its
	// own, or a re-created tunnel in the repair figure at 10,000 orgs is
	// refused as over the account's 1,000.
	scfg.DNSQuota, scfg.TunnelQuota = 1_000_000, 1_000_000
	if o.sim != nil {
		o.sim(&scfg)
	}
	poolArgs, err := writePools(dir, &scfg, o.pools)
	if err != nil {
		return nil, err
	}
	w := &world{sim: cloudsim.New(scfg), dir: dir}
	h := w.sim.Handler()
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/_sim/") {
			w.requests.Add(1)
			if strings.HasPrefix(r.URL.Path, "/client/v4/") {
				w.firstCF.CompareAndSwap(0, time.Now().UnixNano())
			}
		}
		h.ServeHTTP(rw, r)
	}))
	// Many workers and the sweep's parallel listings share one loopback
	// server: keep enough idle connections that none is re-dialled.
	tr := w.srv.Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
	hc := &http.Client{Transport: tr, Timeout: time.Minute}

	pol := o.policy
	if pol.BaseDelay == 0 {
		pol = apicall.Policy{MaxAttempts: 6, BaseDelay: 20 * time.Millisecond, MaxDelay: time.Second,
			MaxRetryAfter: time.Minute, CallTimeout: 30 * time.Second}
	}
	if o.cfBudget.Requests == 0 {
		o.cfBudget = freeCF
	}
	if o.ec2.Mutating.Rate == 0 {
		o.ec2 = freeEC2
	}
	if o.ssm.Rate == 0 {
		o.ssm = freeSSM
	}
	if w.store, err = state.Open(filepath.Join(dir, "state.db"), state.Options{}); err != nil {
		w.close()
		return nil, err
	}
	// The daemon's own wiring (internal/daemon) from a sandbox
	// configuration, as `reconciler --cloud URL` builds it; only the knobs a
	// figure needs differ.
	c, err := config.Parse(append([]string{"--data-dir", dir, "--cloud", w.srv.URL}, poolArgs...), func(string) string { return "" })
	if err != nil {
		w.close()
		return nil, fmt.Errorf("bench configuration: %w", err)
	}
	knobs := daemon.Knobs{HTTPClient: hc, Policy: pol, CFBudget: o.cfBudget, CFPageSize: o.cfPage,
		EC2Buckets: o.ec2, SSMBucket: o.ssm, Engine: func(ecfg *reconcile.Config) {
			ecfg.Workers, ecfg.BootConnect, ecfg.PollInterval = 4, scfg.BootDelay+scfg.ConnectDelay, 50*time.Millisecond
			ecfg.SweepInterval, ecfg.ReconcileTimeout = -1, time.Minute
			ecfg.Logger = slog.New(slog.DiscardHandler)
			if o.engine != nil {
				o.engine(ecfg)
			}
		}}
	ecfg, clouds, err := daemon.EngineConfig(context.Background(), c, w.srv.URL, slog.New(slog.DiscardHandler), nil, knobs)
	if err != nil {
		w.close()
		return nil, err
	}
	// Clients of their own for the figures that call the APIs directly.
	cfc, awc := daemon.ProviderConfigs(c, w.srv.URL, nil, nil, knobs)
	if w.cf, err = cloudflare.New(cfc); err != nil {
		w.close()
		return nil, err
	}
	if w.aw, err = aws.New(context.Background(), awc); err != nil {
		w.close()
		return nil, err
	}
	q := workqueue.New(workqueue.Config{BaseDelay: 20 * time.Millisecond, MaxDelay: time.Second})
	var es reconcile.Store = w.store
	if o.store != nil {
		es = o.store(es)
	}
	w.eng, err = reconcile.New(ecfg, clouds, es, q)
	if err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

// start runs the engine's workers until stop.
func (w *world) start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go func() {
		defer close(w.done)
		_ = w.eng.Run(ctx)
	}()
}

func (w *world) stop() {
	if w.cancel == nil {
		return
	}
	w.cancel()
	<-w.done
	w.cancel = nil
}

func (w *world) close() {
	w.stop()
	if w.store != nil {
		_ = w.store.Close()
	}
	if w.srv != nil {
		w.srv.Close()
	}
	_ = os.RemoveAll(w.dir)
}

// apply commits facts the way ingest does (one transaction, sequence
// numbers in order) and hands the changed orgs to the engine.
func (w *world) apply(facts ...state.Fact) error {
	now := time.Now()
	for i := range facts {
		facts[i].Seq = w.seq.Add(1)
		facts[i].EventID = fmt.Sprintf("bench-%d", facts[i].Seq)
		facts[i].Time = now
	}
	out, err := w.store.Apply(facts)
	if err != nil {
		return err
	}
	for _, oc := range out {
		if oc.Changed() {
			w.eng.OnApplied(oc.OrgID)
		}
	}
	return nil
}

func created(org string) state.Fact {
	return state.Fact{Type: state.FactCreated, OrgID: org, Slug: org}
}

func deleted(org string) state.Fact { return state.Fact{Type: state.FactDeleted, OrgID: org} }

// waitOrgs polls bbolt until cond holds for every org, ticking the
// emulator's world meanwhile. It returns when each org first satisfied cond.
func (w *world) waitOrgs(ctx context.Context, orgs []string, every time.Duration, cond func(state.Org) bool) (map[string]time.Time, error) {
	at := make(map[string]time.Time, len(orgs))
	for {
		w.sim.Tick()
		for _, id := range orgs {
			if _, ok := at[id]; ok {
				continue
			}
			o, ok, err := w.store.Get(id)
			if err != nil {
				return at, err
			}
			if ok && cond(o) {
				at[id] = time.Now()
			}
		}
		if len(at) == len(orgs) {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return at, fmt.Errorf("%d of %d orgs reached the state: %w", len(at), len(orgs), ctx.Err())
		case <-time.After(every):
		}
	}
}

func ready(o state.Org) bool { return reconcile.IsTrue(o, state.CondReady) }

func deleteDone(o state.Org) bool { return o.Observed.DeleteDone }

// callsByProvider sums emulator call counts per provider, keeping the
// per-operation detail and the throttled answers.
type providerCalls struct {
	cf, ec2, ssm int
	cf429        int
	throttled    int // any provider's throttling answer
	ops          map[string]int
}

func sumCalls(calls map[string]map[int]int) providerCalls {
	pc := providerCalls{ops: map[string]int{}}
	for op, st := range calls {
		for status, n := range st {
			pc.ops[op] += n
			switch {
			case strings.HasPrefix(op, "cf."):
				pc.cf += n
				if status == http.StatusTooManyRequests {
					pc.cf429 += n
					pc.throttled += n
				}
			case strings.HasPrefix(op, "ec2."):
				pc.ec2 += n
				if status == http.StatusServiceUnavailable {
					pc.throttled += n
				}
			case strings.HasPrefix(op, "ssm."):
				pc.ssm += n
			}
		}
	}
	return pc
}

func (pc providerCalls) detail() string {
	var parts []string
	for op, n := range pc.ops {
		parts = append(parts, fmt.Sprintf("%s=%d", op, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// writePools gives the emulator one identity per pool (its first and
// second are the sandbox's; more are added) and writes the pools file and
// token files the configuration names: k unlimited pools, each on its own
// token and so its own budget. It returns the configuration arguments.
func writePools(dir string, scfg *cloudsim.Config, k int) ([]string, error) {
	args := []string{"--cloudflare-max-dns-records", "0", "--cloudflare-max-tunnels", "0",
		"--cloudflare-pools-file", filepath.Join(dir, "pools.yaml")}
	var b strings.Builder
	b.WriteString("pools:")
	if k <= 1 {
		b.WriteString(" []\n")
	} else {
		b.WriteString("\n")
	}
	for i := 1; i < k; i++ {
		if i > len(scfg.CFExtra) {
			scfg.CFExtra = append(scfg.CFExtra, cloudsim.CFIdentity{Token: fmt.Sprintf("bench-token-%d", i),
				AccountID: fmt.Sprintf("%032x", 0xb0000+i), ZoneID: fmt.Sprintf("%032x", 0xc0000+i),
				ZoneName: fmt.Sprintf("pool%d.tunnelward.test", i+1)})
		}
		id := scfg.CFExtra[i-1]
		tok := filepath.Join(dir, fmt.Sprintf("pool%d.token", i+1))
		if err := os.WriteFile(tok, []byte(id.Token), 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "  - name: pool%d\n    account_id: %s\n    zone_id: %s\n    zone_name: %s\n    api_token_file: %s\n    max_tunnels: 0\n    max_dns_records: 0\n",
			i+1, id.AccountID, id.ZoneID, id.ZoneName, tok)
	}
	if err := os.WriteFile(filepath.Join(dir, "pools.yaml"), []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	return args, nil
}
