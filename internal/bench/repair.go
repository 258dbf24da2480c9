package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// repairKind is one kind of out-of-band change, the listing that should
// find it, and the calls the repair itself must make in sequence (its
// critical path, from the emulator's latencies in this run; boot and
// connect scaled).
type repairKind struct {
	name    string
	act     string
	kind    string
	listing reconcile.Listing
	path    []string // latency ops, "boot" and "connect"
}

var repairKinds = []repairKind{
	{"DNS record deleted", "delete", "dns_record", reconcile.ListDNS, []string{"cf.dns.create"}},
	{"instance terminated", "terminate_instance", "", reconcile.ListInstances,
		[]string{"ec2.RunInstances", "boot", "connect", "cf.tunnel.list"}},
	{"cloudflared killed", "kill_connector", "", reconcile.ListTunnels,
		[]string{"ssm.SendCommand", "connect", "cf.tunnel.list"}},
	{"tunnel deleted", "delete", "tunnel", reconcile.ListTunnels,
		[]string{"cf.tunnel.create", "ssm.PutParameter", "ssm.SendCommand", "connect", "cf.tunnel.list"}},
	{"parameter deleted", "delete", "parameter", reconcile.ListParams, []string{"ssm.PutParameter"}},
}

// detectGoal is the goal for noticing a change: 30 s of real time.
const detectGoal = 30 * time.Second

// benchRepair is the time to repair an out-of-band change in a fleet of
// Ready orgs: the watches run on their budget-derived schedule, each kind
// of change is made to changesPerKind orgs at random instants spread over
// the longest watch interval (all kinds at once, so the repairs also show
// there is no storm), and for each change the bench records when the org
// stopped saying Ready (detection: until then its status lied) and when it
// was Ready again. Time is compressed by f (boot, connect, the watches'
// floors, every budget); figures are shown in real-time terms (x f).
// Before the changes, a quiet window measures what the watches alone spend
// of each provider's budget.
func benchRepair(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	sizes := pick(o, []int{60}, []int{1000}, []int{1000, 10000})
	perKind := pick(o, 4, 20, 20)
	var rows []Row
	for _, n := range sizes {
		r, err := repairAt(ctx, rep, n, perKind, pick(o, 100.0, timeScale, timeScale))
		if err != nil {
			return rows, fmt.Errorf("repair with %d orgs: %w", n, err)
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// transitions records every Ready transition the engine commits, with the
// wall time of the commit: the store the engine writes through.
type transitions struct {
	reconcile.Store
	mu sync.Mutex
	at map[string][]readyAt
}

type readyAt struct {
	ready bool
	at    time.Time
}

func (t *transitions) Update(orgID string, fn func(*state.Org) error) error {
	var before, after bool
	err := t.Store.Update(orgID, func(o *state.Org) error {
		before = reconcile.IsTrue(*o, state.CondReady)
		if err := fn(o); err != nil {
			return err
		}
		after = reconcile.IsTrue(*o, state.CondReady)
		return nil
	})
	if err == nil && before != after {
		now := time.Now()
		t.mu.Lock()
		t.at[orgID] = append(t.at[orgID], readyAt{after, now})
		t.mu.Unlock()
	}
	return err
}

// after returns the first transition of org to ready after t0.
func (t *transitions) after(org string, ready bool, t0 time.Time) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, x := range t.at[org] {
		if x.ready == ready && x.at.After(t0) {
			return x.at, true
		}
	}
	return time.Time{}, false
}

type change struct {
	kind int
	org  string
	at   time.Time
}

func repairAt(ctx context.Context, rep *Report, n, perKind int, f float64) ([]Row, error) {
	scaled := func(d time.Duration) time.Duration { return time.Duration(float64(d) / f) }
	real := func(d time.Duration) time.Duration { return time.Duration(float64(d) * f) }
	boot, connect := scaled(realBoot), scaled(realConnect)
	// Budgets x f, enforced by the emulator as Cloudflare and AWS do
	// (a 429 or a throttle would show in the row), and by the clients.
	window := scaled(5 * time.Minute)
	cfBudget, ec2, ssm := compressedBudgets(f)
	cfPerSec := float64(ratelimit.CloudflareLimit) / window.Seconds()
	ec2ReadPerSec := ratelimit.DefaultEC2().NonMutating.Rate * f
	ssmPerSec := ratelimit.DefaultSSM.Rate * f
	floors := map[reconcile.Listing]time.Duration{}
	for l, d := range reconcile.WatchFloors {
		floors[l] = scaled(d)
	}
	var tr *transitions
	w, err := newWorld(worldOpts{
		sim: func(c *cloudsim.Config) {
			c.BootDelay, c.ConnectDelay = boot, connect
			c.Limits = cloudsim.RateLimits{CFEnabled: true, CFBudget: ratelimit.CloudflareLimit, CFWindow: cloudsim.Duration(window),
				EC2Enabled: true, EC2Scale: f, SSMEnabled: true, SSMReadTPS: 40 * f}
		},
		engine: func(c *reconcile.Config) {
			c.Workers = 0 // the engine's default
			c.BootConnect = boot + connect
			c.PollInterval = scaled(10 * time.Second)
			c.HealthGrace = scaled(time.Minute)
			c.SweepInterval = scaled(5 * time.Minute) // the default ceiling
			c.Watch = reconcile.WatchConfig{BudgetShare: reconcile.DefaultWatchBudgetShare, Floors: floors,
				CFPerSecond: cfPerSec, EC2ReadPerSecond: ec2ReadPerSec, SSMPerSecond: ssmPerSec}
		},
		store: func(s reconcile.Store) reconcile.Store {
			tr = &transitions{Store: s, at: map[string][]readyAt{}}
			return tr
		},
		cfBudget: cfBudget, ec2: ec2, ssm: ssm,
	})
	if err != nil {
		return nil, err
	}
	defer w.close()
	// The APIs' latencies compressed too, so the whole world runs f times
	// faster and a figure times f is in real terms.
	rules := latencyRules()
	for i := range rules {
		rules[i].LatencyMin, rules[i].LatencyMax = cloudsim.Duration(scaled(time.Duration(rules[i].LatencyMin))), cloudsim.Duration(scaled(time.Duration(rules[i].LatencyMax)))
	}
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: rules}); err != nil {
		return nil, err
	}
	if err := preloadFleet(w, n, true); err != nil {
		return nil, err
	}
	tctx, stopTick := context.WithCancel(ctx)
	defer stopTick()
	go func() { // the world's clock: boots and connects happen on ticks
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-tctx.Done():
				return
			case <-t.C:
				w.sim.Tick()
			}
		}
	}()
	// The loaded connectors connect after the connect delay: start the
	// engine on a fleet whose tunnels are all healthy, as a running one's are.
	for {
		healthy := 0
		for _, t := range w.sim.State().Tunnels {
			if t["status"] == "healthy" {
				healthy++
			}
		}
		if healthy == n {
			break
		}
		// A look at the whole world costs ~n maps: not too often.
		if err := sleepCtx(ctx, connect+200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	w.start()
	// The schedule follows the pages each listing has: read it once the
	// sweep at start has listed everything (before that it is the floors').
	for w.eng.LastSweep().At.IsZero() {
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	sched := w.eng.WatchSchedule()
	longest := slices.Max(mapValues(sched))
	// Warm-up: the sweep at start and every watch once; then a quiet
	// window of two longest intervals measures the watches' own calls.
	if err := sleepCtx(ctx, longest+longest/2); err != nil {
		return nil, err
	}
	quiet := 2 * longest
	before := sumCalls(w.sim.Calls())
	if err := sleepCtx(ctx, quiet); err != nil {
		return nil, err
	}
	after := sumCalls(w.sim.Calls())
	share := func(calls int, perSec float64) float64 { return float64(calls) / (perSec * quiet.Seconds()) }
	cfShare := share(after.cf-before.cf, cfPerSec)
	ec2Share := share(after.ec2-before.ec2, ec2ReadPerSec)
	ssmShare := share(after.ssm-before.ssm, ssmPerSec)

	// The changes: perKind distinct orgs per kind, each at a random
	// instant within the longest interval (a fixed seed: the same orgs
	// and offsets every run).
	rnd := rand.New(rand.NewPCG(1, uint64(n)))
	pickOrgs := rnd.Perm(n)[:perKind*len(repairKinds)]
	var changes []change
	for i, idx := range pickOrgs {
		changes = append(changes, change{kind: i / perKind, org: fmt.Sprintf("org-%06d", idx)})
	}
	// Spread over at least the longest interval, and at about one change
	// per 5 s of real time: repairs then run at the rate a fleet sees
	// drift, not as a storm that the Cloudflare budget (3.8 calls/s for
	// everything) would queue; the storm is TestWatchNoRepairStorm's.
	spread := max(longest, time.Duration(len(changes))*scaled(5*time.Second))
	offsets := make([]time.Duration, len(changes))
	for i := range offsets {
		offsets[i] = time.Duration(rnd.Int64N(int64(spread)))
	}
	order := make([]int, len(changes))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return offsets[order[a]] < offsets[order[b]] })
	start := time.Now()
	beforeChanges := sumCalls(w.sim.Calls())
	for _, i := range order {
		if err := sleepCtx(ctx, time.Until(start.Add(offsets[i]))); err != nil {
			return nil, err
		}
		k := repairKinds[changes[i].kind]
		changes[i].at = time.Now()
		if _, err := w.sim.ApplyWorld(cloudsim.WorldAction{Action: k.act, Kind: k.kind, Org: changes[i].org}); err != nil {
			return nil, fmt.Errorf("%s on %s: %w", k.name, changes[i].org, err)
		}
	}
	// Wait until every changed org was Ready again after its change.
	deadline := start.Add(spread + 5*longest + 30*time.Second)
	for {
		done := 0
		for _, c := range changes {
			if down, ok := tr.after(c.org, false, c.at); ok {
				if _, ok := tr.after(c.org, true, down); ok {
					done++
				}
			}
		}
		if done == len(changes) {
			break
		}
		if time.Now().After(deadline) {
			detected, repaired := make([]int, len(repairKinds)), make([]int, len(repairKinds))
			var stuck []string
			for _, c := range changes {
				if down, ok := tr.after(c.org, false, c.at); ok {
					detected[c.kind]++
					if _, ok := tr.after(c.org, true, down); ok {
						repaired[c.kind]++
						continue
					}
				}
				if len(stuck) < 3 {
					o, _, _ := w.store.Get(c.org)
					cond, _ := reconcile.Condition(o, state.CondReady)
					stuck = append(stuck, fmt.Sprintf("%s (%s): Ready %v %s %q", c.org, repairKinds[c.kind].name, cond.Status, cond.Reason, cond.Message))
				}
			}
			var per []string
			for i, k := range repairKinds {
				per = append(per, fmt.Sprintf("%s %d/%d detected, %d repaired", k.name, detected[i], perKind, repaired[i]))
			}
			return nil, fmt.Errorf("%d of %d changed orgs repaired within %s (%s); e.g. %s", done, len(changes),
				time.Since(start).Round(time.Second), strings.Join(per, "; "), strings.Join(stuck, "; "))
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	during := sumCalls(w.sim.Calls())
	stopTick()
	w.stop()
	rep.sawRate(float64(during.cf+during.ec2+during.ssm-beforeChanges.cf-beforeChanges.ec2-beforeChanges.ssm)/time.Since(start).Seconds(), "repair")
	// Structural invariants (no duplicate, no orphan, no dangling record,
	// no token outside SSM) over the whole fleet, each org present.
	all := make([]string, n)
	for i := range all {
		all[i] = fmt.Sprintf("org-%06d", i)
	}
	leftovers := ""
	if v := w.sim.CheckInvariants(all); len(v) > 0 {
		leftovers = fmt.Sprintf("%d violations, first %s %s: %s", len(v), v[0].Kind, v[0].Org, v[0].Detail)
	}

	var rows []Row
	throttled := during.throttled
	for ki, k := range repairKinds {
		var detect, repair []time.Duration
		for _, c := range changes {
			if c.kind != ki {
				continue
			}
			down, _ := tr.after(c.org, false, c.at)
			up, _ := tr.after(c.org, true, down)
			detect = append(detect, real(down.Sub(c.at)))
			repair = append(repair, real(up.Sub(c.at)))
		}
		slices.Sort(detect)
		slices.Sort(repair)
		cp, cpText := repairPath(k.path)
		d50, d99 := percentile(detect, 50), percentile(detect, 99)
		r50, r99 := percentile(repair, 50), percentile(repair, 99)
		okRow := d99 <= detectGoal && r99 <= detectGoal+cp && throttled == 0 && leftovers == ""
		rows = append(rows, Row{
			Figure:   fmt.Sprintf("8 repair at %s orgs: %s (%d)", thousands(float64(n)), k.name, len(repair)),
			Measured: fmt.Sprintf("Ready again p50 %s p99 %s; Ready while gone p50 %s p99 %s", secs(r50), secs(r99), secs(d50), secs(d99)),
			Bound:    fmt.Sprintf("%s watch every %s; repair path %s", k.listing, secs(real(sched[k.listing])), secs(cp)),
			Goal:     fmt.Sprintf("detect <= %s, repair <= %s", secs(detectGoal), secs(detectGoal+cp)),
			Met:      met(okRow),
			Note: fmt.Sprintf("%d changes at random instants over %s, the five kinds mixed, among %s Ready orgs; times in real terms (the run was compressed %gx, budgets and latencies included); repair path = %s; \"Ready while gone\" is how long /v1/orgs said Ready after the change (detection)",
				len(repair), secs(real(spread)), thousands(float64(n)), f, cpText),
		})
	}
	var iv []string
	for _, l := range reconcile.Listings {
		iv = append(iv, fmt.Sprintf("%s %s", l, secs(real(sched[l]))))
	}
	shareOK := cfShare <= 0.05 && ec2Share <= 0.05 && ssmShare <= 0.05
	rows = append(rows, Row{
		Figure:   fmt.Sprintf("8 watch budget at %s orgs", thousands(float64(n))),
		Measured: fmt.Sprintf("CF %.1f%%, EC2 reads %.1f%%, SSM %.1f%%; %d throttled", 100*cfShare, 100*ec2Share, 100*ssmShare, throttled),
		Bound:    "intervals " + strings.Join(iv, ", "),
		Goal:     "<= 5% of each, zero 429, no orphan",
		Met:      met(shareOK && throttled == 0 && leftovers == ""),
		Note: fmt.Sprintf("calls of the watches alone over a quiet window of %s (real terms) before the changes, over each provider's budget (Cloudflare 1200 per 5 min, EC2 reads %.0f/s, SSM %.0f/s); throttled = 429s and throttles over the whole run, the emulator enforcing the budgets; invariants after the repairs: %s",
			secs(real(quiet)), ec2ReadPerSec/f, ssmPerSec/f, dash(leftovers)),
	})
	return rows, nil
}

// repairPath sums a repair's critical path in real terms: the emulator's
// latencies of this run (before compression), boot and connect.
func repairPath(ops []string) (time.Duration, string) {
	var total time.Duration
	var parts []string
	for _, op := range ops {
		d := happyLatency[op]
		switch op {
		case "boot":
			d = realBoot
		case "connect":
			d = realConnect
		}
		total += d
		parts = append(parts, fmt.Sprintf("%s %s", op, secs(d)))
	}
	return total, strings.Join(parts, " + ")
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted) + 99) / 100
	return sorted[max(0, min(len(sorted), i)-1)]
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
