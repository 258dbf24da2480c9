package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/reconcile"
)

// benchPools creates orgs over 1, 2 and 4 Cloudflare pools, each on its
// own API token and so its own budget (issue 15): the same number of orgs
// per pool, all created at once, time to every org Ready. The Cloudflare
// budget binds (EC2 and SSM are left free here, so that the figure is the
// pools'); K budgets should create K times as fast.
func benchPools(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	perPool := pick(o, 8, 200, 500)
	f := pick(o, 20.0, 5.0, 5.0)
	type run struct {
		k        int
		took     time.Duration
		cf, c429 int
	}
	var runs []run
	for _, k := range pick(o, []int{1, 2}, []int{1, 2, 4}, []int{1, 2, 4}) {
		took, calls, err := poolsRun(ctx, k, perPool, f)
		if err != nil {
			return nil, fmt.Errorf("%d pools: %w", k, err)
		}
		runs = append(runs, run{k, took, calls.cf, calls.cf429})
	}
	perMin := func(r run) float64 { return float64(r.k*perPool) / (r.took.Seconds() * f) * 60 }
	one := perMin(runs[0])
	window := time.Duration(float64(5*time.Minute) / f)
	var rows []Row
	for _, r := range runs {
		rate := perMin(r)
		callsPerOrg := float64(r.cf) / float64(r.k*perPool)
		ideal := float64(r.k) * float64(ratelimit.DefaultCloudflare.Requests) / 5 / callsPerOrg
		rows = append(rows, Row{
			Figure:   fmt.Sprintf("11 pools: orgs Ready per minute over %d pool(s) on %d budget(s)", r.k, r.k),
			Measured: fmt.Sprintf("%.0f/min (%d orgs in %s, %s at the real budget), %d x 429", rate, r.k*perPool, secs(r.took), time.Duration(float64(r.took)*f).Round(time.Second), r.c429),
			Bound:    fmt.Sprintf("budget-bound ideal %.0f/min (%d x %d per 5 min / %.2f CF calls per org); one pool measured %.0f/min", ideal, r.k, ratelimit.DefaultCloudflare.Requests, callsPerOrg, one),
			Goal:     fmt.Sprintf(">= %.2f x one pool's rate, zero 429", 0.95*float64(r.k)),
			Met:      met(rate >= 0.95*float64(r.k)*one && r.c429 == 0),
			Note: fmt.Sprintf("%d orgs per pool created at once; time compressed %gx (each budget per %s); EC2 and SSM budgets free; boot 30 s and connect 5 s real; %d workers",
				perPool, f, secs(window), fleetWorkers),
		})
	}
	return rows, nil
}

// poolsRun creates perPool orgs in each of k pools (placed by least-used,
// so evenly) and waits for every one to be Ready.
func poolsRun(ctx context.Context, k, perPool int, f float64) (time.Duration, providerCalls, error) {
	window := time.Duration(float64(5*time.Minute) / f)
	scaled := func(d time.Duration) time.Duration { return time.Duration(float64(d) / f) }
	budget, _, _ := compressedBudgets(f)
	w, err := newWorld(worldOpts{
		pools: k,
		sim: func(c *cloudsim.Config) {
			c.BootDelay, c.ConnectDelay = scaled(30*time.Second), scaled(5*time.Second)
			c.DNSBatchLimit = 3500
			c.Limits = cloudsim.RateLimits{CFEnabled: true, CFBudget: ratelimit.CloudflareLimit, CFWindow: cloudsim.Duration(window)}
		},
		engine: func(c *reconcile.Config) {
			c.Workers = fleetWorkers
			c.BootConnect = scaled(35 * time.Second)
			c.PollInterval = scaled(10 * time.Second)
			c.Watch.CFPerSecond = float64(ratelimit.CloudflareLimit) / window.Seconds()
			c.DNSBatchMax = 3500
			c.DNSBatchWindow = scaled(reconcile.DefaultDNSBatchWindow)
			c.Placement = reconcile.PlaceLeastUsed
		},
		cfBudget: budget,
	})
	if err != nil {
		return 0, providerCalls{}, err
	}
	defer w.close()
	w.start()
	orgs := make([]string, k*perPool)
	for i := range orgs {
		orgs[i] = fmt.Sprintf("pooled-%05d", i)
	}
	if err := applyBursts(w, orgs, created); err != nil {
		return 0, providerCalls{}, err
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 40*window+time.Minute)
	defer cancel()
	if _, err := w.waitOrgs(wctx, orgs, 20*time.Millisecond, ready); err != nil {
		return 0, providerCalls{}, fmt.Errorf("create: %w", err)
	}
	took := time.Since(start)
	calls := sumCalls(w.sim.Calls())
	w.stop()
	byPool := map[string]int{}
	for _, u := range w.eng.Pools() {
		byPool[u.Pool] = u.Tunnels
	}
	for pool, n := range byPool {
		if n != perPool {
			return 0, providerCalls{}, fmt.Errorf("pool %s holds %d orgs, want %d (placement did not spread them)", pool, n, perPool)
		}
	}
	if v := w.sim.CheckInvariants(orgs); len(v) > 0 {
		return 0, providerCalls{}, fmt.Errorf("the emulator reports %d invariant violations, first: %+v", len(v), v[0])
	}
	return took, calls, nil
}
