package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/state"
)

func TestWatchIntervals(t *testing.T) {
	floors := WatchFloors
	def := WatchConfig{}
	for _, tc := range []struct {
		name    string
		pages   map[Listing]int
		w       WatchConfig
		ceiling time.Duration
		want    map[Listing]time.Duration
	}{
		{name: "1,000 orgs: every listing at its floor", ceiling: 5 * time.Minute, w: def,
			// 1 tunnel page, 1 DNS page, 1 instance page, 20 SSM pages
			pages: map[Listing]int{ListTunnels: 1, ListDNS: 1, ListInstances: 1, ListParams: 20},
			want:  map[Listing]time.Duration{ListTunnels: 14 * time.Second, ListDNS: 20 * time.Second, ListInstances: 20 * time.Second, ListParams: 20 * time.Second}},
		{name: "10,000 orgs: tunnels and parameters slow down to keep 5%", ceiling: 5 * time.Minute, w: def,
			pages: map[Listing]int{ListTunnels: 10, ListDNS: 2, ListInstances: 10, ListParams: 200},
			// CF 1150/300 s × 5% × 2/3 = 0.1278/s less the sweep's 10 pages per 300 s: 10 pages -> 105.9 s;
			// DNS 1/3, less 2/300: 2 pages -> 35.0 s; SSM 36/s × 5% = 1.8/s less 200/300: 200 pages ->
			// 176.5 s; EC2 18/s × 5% less 10/300: 10 pages -> 11.5 s (floor 20 s)
			want: map[Listing]time.Duration{ListTunnels: 105882353 * time.Microsecond, ListDNS: 34951456 * time.Microsecond,
				ListInstances: 20 * time.Second, ListParams: 176470588 * time.Microsecond}},
		{name: "100,000 orgs: the sweep interval is the ceiling", ceiling: 5 * time.Minute, w: def,
			pages: map[Listing]int{ListTunnels: 100, ListDNS: 20, ListInstances: 100, ListParams: 2000},
			want:  map[Listing]time.Duration{ListTunnels: 5 * time.Minute, ListDNS: 5 * time.Minute, ListInstances: 176470588 * time.Microsecond, ListParams: 5 * time.Minute}},
		{name: "a short sweep interval caps the floors", ceiling: 10 * time.Second, w: def,
			pages: map[Listing]int{},
			want:  map[Listing]time.Duration{ListTunnels: 10 * time.Second, ListDNS: 10 * time.Second, ListInstances: 10 * time.Second, ListParams: 10 * time.Second}},
		{name: "a larger share looks more often", ceiling: 5 * time.Minute, w: WatchConfig{BudgetShare: 0.10},
			pages: map[Listing]int{ListTunnels: 10, ListDNS: 1, ListInstances: 1, ListParams: 1},
			want:  map[Listing]time.Duration{ListTunnels: 45 * time.Second, ListDNS: 20 * time.Second, ListInstances: 20 * time.Second, ListParams: 20 * time.Second}},
		{name: "a smaller budget (a shared account) looks less often", ceiling: 5 * time.Minute, w: WatchConfig{CFPerSecond: 1},
			pages: map[Listing]int{ListTunnels: 1, ListDNS: 1, ListInstances: 1, ListParams: 1},
			want:  map[Listing]time.Duration{ListTunnels: 33333334 * time.Microsecond, ListDNS: 75 * time.Second, ListInstances: 20 * time.Second, ListParams: 20 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := WatchIntervals(tc.pages, tc.w, floors, tc.ceiling)
			for _, l := range Listings {
				if d := got[l] - tc.want[l]; d < -time.Millisecond || d > time.Millisecond {
					t.Errorf("%s: %v, want %v", l, got[l], tc.want[l])
				}
			}
		})
	}
}

// The share is honoured: the watches' and the sweep's calls per 5 minutes
// of each provider stay within 5% of its budget at every org count where
// the sweep alone fits in it (past that, a listing's watch runs at the
// sweep interval: the sweep, which restarts it, is its only run).
func TestWatchIntervalsKeepTheShare(t *testing.T) {
	w := WatchConfig{}
	w.defaults()
	over := WatchIntervals(PagesFor(30000, w), w, WatchFloors, 5*time.Minute)
	if over[ListParams] != 5*time.Minute || over[ListTunnels] != 5*time.Minute {
		t.Errorf("30,000 orgs: %v, want the sweep interval for tunnels and parameters", over)
	}
	for _, orgs := range []int{1, 1000, 10000} {
		inv := Inventory{}
		for i := range orgs {
			inv.Tunnels = append(inv.Tunnels, Tunnel{})
			inv.Records = append(inv.Records, plan.Record{ID: fmt.Sprint(i)})
			inv.Instances = append(inv.Instances, Instance{})
			inv.Params = append(inv.Params, Param{})
		}
		pages := pagesOf(inv, w, nil)
		const sweep = 5 * time.Minute
		iv := WatchIntervals(pages, w, WatchFloors, sweep)
		// The watches' calls and the sweep's together.
		per := func(l Listing) float64 {
			return float64(pages[l])/iv[l].Seconds() + float64(pages[l])/sweep.Seconds()
		}
		for _, c := range []struct {
			name   string
			rate   float64
			budget float64
		}{
			{"cloudflare", per(ListTunnels) + per(ListDNS), w.CFPerSecond},
			{"ec2", per(ListInstances), w.EC2ReadPerSecond},
			{"ssm", per(ListParams), w.SSMPerSecond},
		} {
			if share := c.rate / c.budget; share > w.BudgetShare*1.0001 {
				t.Errorf("%d orgs: %s watches use %.2f%% of the budget", orgs, c.name, share*100)
			}
		}
	}
}

// Each kind of out-of-band change is seen by the listing that shows it,
// turns a Ready org Ready=false at once with a reason naming what was
// seen (before any repair: repairs are held back until the status is
// checked), and the normal pass repairs it without duplicate or orphan.
func TestWatchDetectsAndRepairsDrift(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		act     cloudsim.WorldAction
		listing Listing
		reason  string
		others  []Listing // listings that must not see anything wrong
	}{
		{"record deleted", cloudsim.WorldAction{Action: "delete", Kind: "dns_record", Org: "acme"}, ListDNS, ReasonDNSRecordMissing,
			[]Listing{ListTunnels, ListInstances, ListParams}},
		{"record altered", cloudsim.WorldAction{Action: "alter_dns", Org: "acme", Content: "elsewhere.example.net"}, ListDNS, ReasonDNSRecordChanged,
			[]Listing{ListTunnels, ListInstances, ListParams}},
		{"instance terminated", cloudsim.WorldAction{Action: "terminate_instance", Org: "acme"}, ListInstances, ReasonInstanceGone,
			[]Listing{ListDNS, ListParams}},
		{"cloudflared killed", cloudsim.WorldAction{Action: "kill_connector", Org: "acme"}, ListTunnels, ReasonTunnelDown,
			[]Listing{ListDNS, ListInstances, ListParams}},
		{"tunnel deleted", cloudsim.WorldAction{Action: "delete", Kind: "tunnel", Org: "acme"}, ListTunnels, ReasonTunnelGone,
			[]Listing{ListInstances, ListParams}},
		{"parameter deleted", cloudsim.WorldAction{Action: "delete", Kind: "parameter", Org: "acme"}, ListParams, ReasonParameterMissing,
			[]Listing{ListTunnels, ListDNS, ListInstances}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{})
			hold := newRepairHold()
			h.eng.gate = hold.wait
			h.start()
			h.apply(created("acme", "acme"))
			h.waitReady("acme")
			ctx := context.Background()
			// Every listing has looked at the healthy org: nothing to say.
			for _, l := range Listings {
				if _, err := h.eng.Watch(ctx, l); err != nil {
					t.Fatal(err)
				}
			}
			if o := h.org("acme"); !IsTrue(o, state.CondReady) {
				t.Fatalf("a healthy org turned not Ready: %+v", o.Conditions)
			}
			hold.close()
			h.worldAction(tc.act)
			for _, l := range tc.others {
				rep, err := h.eng.Watch(ctx, l)
				if err != nil || len(rep.Requeued) != 0 || !IsTrue(h.org("acme"), state.CondReady) {
					t.Fatalf("the %s listing saw something: %+v %v\n%+v", l, rep, err, h.org("acme").Conditions)
				}
			}
			h.waitFor("the "+string(tc.listing)+" listing sees it", 10*time.Second, func() bool {
				rep, err := h.eng.Watch(ctx, tc.listing)
				return err == nil && len(rep.Requeued) == 1
			})
			c, _ := Condition(h.org("acme"), state.CondReady)
			if c.Status || c.Reason != tc.reason {
				t.Fatalf("Ready after the %s listing: %+v, want false %s", tc.listing, c, tc.reason)
			}
			hold.open()
			h.waitFor("repaired", 15*time.Second, func() bool { return h.convergedErr("acme") == nil && IsTrue(h.org("acme"), state.CondReady) })
			h.requireOneEach("acme")
			h.requireClean("acme")
		})
	}
}

// Many orgs drift at once: the listings queue them all, the repairs go
// through the normal passes and the client's Cloudflare budget, and the
// emulator enforcing that budget never answers 429.
func TestWatchNoRepairStorm(t *testing.T) {
	// Not parallel: the client budget equals the emulator's: a loaded machine's delivery delays would spend it twice.
	budget, window := 80, 2*time.Second
	h := newHarness(t, harnessOpts{
		sim: func(c *cloudsim.Config) {
			c.Limits = cloudsim.RateLimits{CFEnabled: true, CFBudget: budget, CFWindow: cloudsim.Duration(window)}
		},
		cfBudget: &ratelimit.WindowBudget{Requests: budget, Window: window, Burst: 5},
	})
	var (
		mu       sync.Mutex
		seen     = map[string]string{}
		watching atomic.Bool
	)
	h.eng.gate = func(id string) {
		if !watching.Load() {
			return
		}
		o, _, _ := h.store.Get(id)
		if c, ok := Condition(o, state.CondReady); ok && !c.Status {
			mu.Lock()
			if _, dup := seen[id]; !dup {
				seen[id] = c.Reason
			}
			mu.Unlock()
		}
	}
	h.start()
	var orgs []string
	for i := range 8 {
		orgs = append(orgs, fmt.Sprintf("s%d", i))
		h.apply(created(orgs[i], orgs[i]))
	}
	h.waitReady(orgs...)
	ctx := context.Background()
	for i, o := range orgs {
		act := cloudsim.WorldAction{Action: "delete", Kind: "dns_record", Org: o}
		if i%2 == 1 {
			act = cloudsim.WorldAction{Action: "kill_connector", Org: o}
		}
		h.worldAction(act)
	}
	// Each repair starts with the org already not Ready, for the reason
	// its listing gave: the gate sees the status every repair begins with.
	watching.Store(true)
	h.waitFor("every drift seen", 20*time.Second, func() bool {
		for _, l := range []Listing{ListDNS, ListTunnels} {
			if _, err := h.eng.Watch(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == len(orgs)
	})
	mu.Lock()
	for i, o := range orgs {
		want := ReasonDNSRecordMissing
		if i%2 == 1 {
			want = ReasonTunnelDown
		}
		if seen[o] != want {
			t.Errorf("org %s: repair began with Ready=false %q, want %q", o, seen[o], want)
		}
	}
	mu.Unlock()
	h.waitFor("all repaired", 30*time.Second, func() bool {
		for _, o := range orgs {
			if !IsTrue(h.org(o), state.CondReady) {
				return false
			}
		}
		w := h.world()
		n := len(orgs)
		return len(w.tunnels) == n && len(w.records) == n && len(w.instances) == n && len(w.params) == n
	})
	// No duplicate, no orphan, every resource the org's recorded one.
	h.requireClean(orgs...)
	for op, st := range h.sim.Calls() {
		if strings.HasPrefix(op, "cf.") && st[429] > 0 {
			t.Fatalf("%s answered 429 %d times: the budget was exceeded", op, st[429])
		}
	}
}

// The orgs gauge is right at start, before any sweep.
func TestConditionsCountedAtStart(t *testing.T) {
	t.Parallel()
	m := &condRecorder{}
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.Metrics = m }})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.stop()
	e2, err := New(h.eng.cfg, h.eng.clouds, h.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.reset()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e2.Run(ctx) }()
	h.waitFor("orgs counted", 5*time.Second, func() bool { return m.last()[state.CondReady] == 1 })
	cancel()
	<-done
}

type condRecorder struct {
	noMetrics
	mu sync.Mutex
	by map[string]int
}

func (r *condRecorder) SetOrgsByCondition(c map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.by = c
}
func (r *condRecorder) last() map[string]int { r.mu.Lock(); defer r.mu.Unlock(); return r.by }
func (r *condRecorder) reset()               { r.mu.Lock(); defer r.mu.Unlock(); r.by = nil }

// repairHold holds reconciles back while closed.
type repairHold struct {
	mu     sync.Mutex
	closed bool
	ch     chan struct{}
}

func newRepairHold() *repairHold { return &repairHold{ch: make(chan struct{})} }

func (r *repairHold) close() { r.mu.Lock(); r.closed = true; r.mu.Unlock() }
func (r *repairHold) open() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.closed = false
		close(r.ch)
	}
}
func (r *repairHold) wait(string) {
	r.mu.Lock()
	closed, ch := r.closed, r.ch
	r.mu.Unlock()
	if closed {
		<-ch
	}
}

// A watch that comes due while a sweep is listing does not list beside
// it: it waits until the sweep's listing is in the view, which restarts
// its slot at the sweep's start (no listing of its own this slot); when
// the sweep's listing fails, the watch runs at once instead.
func TestWatchWaitsForTheSweepsListing(t *testing.T) {
	t.Parallel()
	fe := newFakeEngineWith(t, func(c *Config) { c.SweepInterval = time.Hour })
	hold := &listHold{entered: make(chan struct{}), release: make(chan error)}
	fe.cloud.paramsHold = hold
	iv := WatchFloors[ListTunnels]
	sweepAt := fe.now
	slot := watchSlot{start: sweepAt.Add(-iv), iv: iv} // due now
	fe.e.viewMu.Lock()
	fe.e.slots[ListTunnels] = slot
	fe.e.viewMu.Unlock()
	calls := func(op string) int {
		fe.cloud.mu.Lock()
		defer fe.cloud.mu.Unlock()
		return fe.cloud.calls[op]
	}
	sweep := func() <-chan error {
		done := make(chan error, 1)
		go func() { _, err := fe.e.Sweep(context.Background()); done <- err }()
		<-hold.entered // the sweep is listing
		return done
	}
	within := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second): // a failsafe, not a wait for correctness
			t.Fatalf("%s: not within 10 s", what)
		}
	}

	swept := sweep()
	_, run, wait := fe.e.watchTurn(ListTunnels, slot, slot.start.Add(iv))
	if run || wait == nil {
		t.Fatalf("watch due during the sweep's listing: run %v, wait %v; want no run and a wait", run, wait != nil)
	}
	hold.release <- nil
	within("the sweep's listing ends", wait)
	if err := <-swept; err != nil {
		t.Fatal(err)
	}
	fe.e.viewMu.Lock()
	cur, at := fe.e.slots[ListTunnels], fe.e.view.at[ListTunnels]
	fe.e.viewMu.Unlock()
	if !cur.start.Equal(sweepAt) || !at.Equal(sweepAt) {
		t.Fatalf("after the sweep: slot start %v, tunnels listed at %v; want both the sweep's start %v", cur.start, at, sweepAt)
	}
	// The caller looks again: the slot restarted, nothing to run.
	if _, run, wait := fe.e.watchTurn(ListTunnels, slot, slot.start.Add(iv)); run || wait != nil {
		t.Fatalf("after the sweep: run %v, wait %v; want neither", run, wait != nil)
	}
	if n := calls("tunnels.list"); n != 1 {
		t.Fatalf("tunnel listings %d, want the sweep's one", n)
	}

	// A sweep whose listing fails leaves the slot due: the watch runs.
	fe.now = fe.now.Add(2 * iv)
	slot = cur
	swept = sweep()
	_, run, wait = fe.e.watchTurn(ListTunnels, slot, slot.start.Add(iv))
	if run || wait == nil {
		t.Fatalf("watch due during the second sweep's listing: run %v, wait %v", run, wait != nil)
	}
	hold.release <- errors.New("SSM throttled")
	within("the failed listing ends", wait)
	if err := <-swept; err == nil {
		t.Fatal("the sweep's listing failed, the sweep did not")
	}
	now, run, wait := fe.e.watchTurn(ListTunnels, slot, slot.start.Add(iv))
	if !run || wait != nil || !now.Equal(fe.now) {
		t.Fatalf("after a failed sweep listing: run %v, wait %v at %v; want a run now", run, wait != nil, now)
	}
	if _, err := fe.e.watchAt(context.Background(), ListTunnels, now); err != nil {
		t.Fatal(err)
	}
	if n := calls("tunnels.list"); n != 3 {
		t.Fatalf("tunnel listings %d, want the two sweeps' and the watch's", n)
	}
}

// A listing that started before the org's last observation is no news
// about it: a Ready org is not turned not Ready by a page taken before its
// resources were made, and is by the next page, with the injected clock.
func TestStaleListingIsNoNews(t *testing.T) {
	t.Parallel()
	fe := newFakeEngine(t)
	fe.apply(state.Fact{Type: state.FactCreated, OrgID: "acme", Slug: "acme"})
	observed := fe.now
	if err := fe.store.Update("acme", func(o *state.Org) error {
		o.Observed.TunnelID, o.Observed.TunnelStatus, o.Observed.ObservedAt = "t-1", "healthy", observed
		setCondition(o, state.CondReady, true, "TunnelHealthy", "", observed)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Empty listings, taken a second before the org was observed.
	v := fe.e.remember(Inventory{}, observed.Add(-time.Second), Listings...)
	var rep SweepReport
	if _, err := fe.e.inventoryPass(v, observed, false, &rep); err != nil {
		t.Fatal(err)
	}
	o, _, _ := fe.store.Get("acme")
	if !IsTrue(o, state.CondReady) || len(rep.Requeued) != 0 {
		t.Fatalf("a stale listing turned the org not Ready: %+v %v", o.Conditions, rep.Requeued)
	}
	// The same empty listing, taken after: everything is gone.
	fe.now = observed.Add(time.Second)
	v = fe.e.remember(Inventory{}, fe.now, Listings...)
	if _, err := fe.e.inventoryPass(v, fe.now, false, &rep); err != nil {
		t.Fatal(err)
	}
	o, _, _ = fe.store.Get("acme")
	if c, _ := Condition(o, state.CondReady); c.Status || c.Reason != ReasonTunnelGone || len(rep.Requeued) != 1 {
		t.Fatalf("a fresh listing: Ready %+v, requeued %v", c, rep.Requeued)
	}
}

func TestWatchSlotTakes(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, tc := range []struct {
		name string
		slot watchSlot
		t    time.Time
		want bool
	}{
		{"tunnels (14 s): anywhere in the slot", watchSlot{start: t0, iv: 14 * time.Second}, at(0.5), true},
		{"tunnels: at the slot's end", watchSlot{start: t0, iv: 14 * time.Second}, at(13.9), true},
		{"after the slot: the watch's run is due", watchSlot{start: t0, iv: 14 * time.Second}, at(14), false},
		{"before the slot", watchSlot{start: t0, iv: 14 * time.Second}, at(-1), false},
		{"taken already", watchSlot{start: t0, iv: 14 * time.Second, taken: true}, at(3), false},
		{"no watch runs", watchSlot{}, at(3), false},
		// 20 s: skipping leaves 40 - t until the next run; at most 28 s.
		{"dns (20 s): early in the slot would leave 39 s", watchSlot{start: t0, iv: 20 * time.Second}, at(1), false},
		{"dns: from 12 s on", watchSlot{start: t0, iv: 20 * time.Second}, at(12), true},
		// Past watchMaxGap the interval itself bounds the gap: only a
		// listing at the slot's end could take it.
		{"78 s (10,000 orgs): never inside the slot", watchSlot{start: t0, iv: 78 * time.Second}, at(77), false},
	} {
		if got := tc.slot.takes(tc.t); got != tc.want {
			t.Errorf("%s: takes = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// listingCounter counts tunnelward_listings_total as the engine reports it.
type listingCounter struct {
	noMetrics
	mu sync.Mutex
	n  map[string]int // "listing/by"
}

func (c *listingCounter) Listing(l, by string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[l+"/"+by]++
}

func (c *listingCounter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// A lone org's readiness comes from a tunnel listing that takes the tunnel
// watch's run of the current slot (issue 17: no call of its own beyond
// the three writes); a second listing in the same slot is counted as
// extra. A pass before the launched instance can have booted looks at
// nothing.
func TestReadinessListingTakesTheWatchRun(t *testing.T) {
	mc := &listingCounter{n: map[string]int{}}
	fe := newFakeEngineWith(t, func(c *Config) { c.Metrics = mc })
	c := fe.cloud
	fe.apply(created("acme", "acme"), created("beta", "beta"))
	fe.pass("acme")
	fe.pass("beta")
	if c.calls["tunnel.create"] != 2 || c.calls["tunnel_config.put"] != 2 {
		t.Fatalf("first passes' calls %v", c.calls)
	}
	// Requeued early (another event, a batch): nothing is looked at.
	fe.now = fe.now.Add(30 * time.Second)
	if res := fe.pass("acme"); res.RequeueAfter != 60*time.Second || c.calls["tunnels.list"] != 0 {
		t.Fatalf("a pass during the boot: requeue %v, calls %v; want a wait of 60 s and no call", res.RequeueAfter, c.calls)
	}
	// The tunnel watch's slot began a second before the polls are due.
	fe.now = fe.now.Add(60 * time.Second)
	fe.e.viewMu.Lock()
	fe.e.slots[ListTunnels] = watchSlot{start: fe.now.Add(-time.Second), iv: WatchFloors[ListTunnels]}
	fe.e.viewMu.Unlock()
	c.setStatus("acme", "healthy")
	fe.pass("acme")
	fe.pass("beta") // shares acme's listing: beta still connecting
	if !IsTrue(fe.org("acme"), state.CondReady) || IsTrue(fe.org("beta"), state.CondReady) {
		t.Fatalf("acme Ready %v, beta Ready %v: want only acme", IsTrue(fe.org("acme"), state.CondReady), IsTrue(fe.org("beta"), state.CondReady))
	}
	if c.calls["tunnel.get"] != 0 || c.calls["tunnels.list"] != 1 {
		t.Fatalf("readiness calls %v, want one shared tunnel listing and no GET", c.calls)
	}
	fe.e.viewMu.Lock()
	taken := fe.e.slots[ListTunnels].taken
	fe.e.viewMu.Unlock()
	if !taken || mc.get("tunnels/early") != 1 || mc.get("tunnels/early_extra") != 0 {
		t.Fatalf("slot taken %v, listings %v: want the watch's run taken by the readiness listing", taken, mc.n)
	}

	// beta's next look needs a newer listing, in the same slot: an extra one.
	fe.now = fe.now.Add(5 * time.Second)
	c.setStatus("beta", "healthy")
	fe.pass("beta")
	if !IsTrue(fe.org("beta"), state.CondReady) {
		t.Fatalf("beta not Ready: %+v", fe.org("beta").Conditions)
	}
	if mc.get("tunnels/early") != 1 || mc.get("tunnels/early_extra") != 1 || c.calls["tunnel.get"] != 0 || c.calls["tunnels.list"] != 2 {
		t.Fatalf("listings %v, calls %v: want the second one counted as extra", mc.n, c.calls)
	}
}

// A replica that owns half the partitions spends half of each budget on
// its watches: two replicas list no more than one did.
func TestWatchScheduleFollowsBudgetShare(t *testing.T) {
	fe := newFakeEngineWith(t, func(c *Config) { c.SweepInterval = time.Hour })
	inv := Inventory{}
	for i := range 10000 {
		inv.Tunnels = append(inv.Tunnels, Tunnel{ID: fmt.Sprint(i)})
		inv.Params = append(inv.Params, Param{Name: fmt.Sprint(i)})
	}
	fe.e.remember(inv, fe.now, Listings...)
	whole := fe.e.WatchSchedule()
	fe.e.SetBudgetShare(0.5)
	half := fe.e.WatchSchedule()
	for _, l := range []Listing{ListTunnels, ListParams} { // past their floors at 10,000
		// At least twice as long (the sweep's own calls come out of the
		// smaller share too), so this replica's watch calls are at most half.
		if half[l] < 2*whole[l] {
			t.Errorf("%s: %v with the whole budget, %v with half; want at least twice as long", l, whole[l], half[l])
		}
	}
	if half[ListInstances] != WatchFloors[ListInstances] {
		t.Errorf("instances: %v, want the floor (the budget does not bind)", half[ListInstances])
	}
}

// With several pools every pool's listing costs its own pages (one at
// least); pools on one budget spend it together, so the watches are paced
// by the budget that spends most, not by the sum over separate budgets.
func TestWatchPagesByBudget(t *testing.T) {
	w := WatchConfig{TunnelPage: 10}
	var inv Inventory
	for i := range 25 {
		inv.Tunnels = append(inv.Tunnels, Tunnel{Pool: "a"})
		if i < 5 {
			inv.Tunnels = append(inv.Tunnels, Tunnel{Pool: "b"})
		}
	}
	for _, c := range []struct {
		name           string
		budgets        map[string]string
		total, busiest int
	}{
		{"one pool", nil, 3, 3},
		{"separate budgets", map[string]string{"a": "a", "b": "b", "c": "c"}, 5, 3},
		{"one budget", map[string]string{"a": "u", "b": "u", "c": "u"}, 5, 5},
		{"a and c on one", map[string]string{"a": "u", "b": "b", "c": "u"}, 5, 4},
	} {
		got := tunnelPagesOf(inv, w, c.budgets)
		if got.total != c.total || got.busiest != c.busiest {
			t.Errorf("%s: %+v, want total %d busiest %d", c.name, got, c.total, c.busiest)
		}
	}
}
