package reconcile

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/ratelimit"
)

// WatchConfig shapes the watches: each listing runs on its own interval,
// the one that keeps its calls within BudgetShare of its provider's budget
// for the pages it currently has.
type WatchConfig struct {
	// BudgetShare is the share of each provider's budget the watches may
	// spend; default DefaultWatchBudgetShare; < 0 turns the watches off
	// (only the full sweep lists).
	BudgetShare float64
	// Provider budgets in calls per second; default internal/ratelimit's:
	// Cloudflare's window budget, EC2's non-mutating bucket, SSM's bucket.
	CFPerSecond, EC2ReadPerSecond, SSMPerSecond float64
	// Page sizes of each listing; default the largest each API allows.
	TunnelPage, DNSPage, InstancePage, ParamPage int
	// Floors replaces WatchFloors (the bench scales time down); nil keeps them.
	Floors map[Listing]time.Duration
}

// DefaultWatchBudgetShare is the default WatchConfig.BudgetShare.
const DefaultWatchBudgetShare = 0.05

// WatchFloors are the shortest intervals: tunnel status is what tells a
// dead connector, so it is looked at most often; SSM pages hold 50
// parameters (and are read one after another), so past a few hundred orgs
// parameters are looked at least often. Each floor is short
// enough that a change is seen within 30 s (the listing's own time
// included) while the fleet's pages fit the budget share; past that the
// share sets the interval (WatchIntervals). Tunnels are 14 s rather than
// 15: a listing made early for readiness may take the watch's next run
// (watchSlot), and two 14 s intervals still leave room in 30 s.
var WatchFloors = map[Listing]time.Duration{
	ListTunnels: 14 * time.Second, ListDNS: 20 * time.Second,
	ListInstances: 20 * time.Second, ListParams: 20 * time.Second,
}

// cfShare splits the Cloudflare share between its two listings: tunnel
// status changes by itself (a connector dies), records only by hand.
var cfShare = map[Listing]float64{ListTunnels: 2.0 / 3, ListDNS: 1.0 / 3}

func (w *WatchConfig) defaults() {
	if w.BudgetShare == 0 {
		w.BudgetShare = DefaultWatchBudgetShare
	}
	if w.CFPerSecond <= 0 {
		b := ratelimit.DefaultCloudflare
		w.CFPerSecond = float64(b.Requests) / b.Window.Seconds()
	}
	if w.EC2ReadPerSecond <= 0 {
		w.EC2ReadPerSecond = ratelimit.DefaultEC2().NonMutating.Rate
	}
	if w.SSMPerSecond <= 0 {
		w.SSMPerSecond = ratelimit.DefaultSSM.Rate
	}
	if w.TunnelPage <= 0 {
		w.TunnelPage = 1000
	}
	if w.DNSPage <= 0 {
		w.DNSPage = 5000
	}
	if w.InstancePage <= 0 {
		w.InstancePage = 1000
	}
	if w.ParamPage <= 0 {
		w.ParamPage = 50
	}
}

// WatchIntervals is the watch schedule: for each listing, the interval at
// which pages[l] calls per run, with the sweep's listing of the same pages
// every ceiling, stay within the budget share of its provider (AWS pages
// are per region, and so is the budget: pages is the largest region's), at
// least its floor and at most ceiling (the full sweep lists everything
// then anyway). A pure function of its inputs.
func WatchIntervals(pages map[Listing]int, w WatchConfig, floors map[Listing]time.Duration, ceiling time.Duration) map[Listing]time.Duration {
	w.defaults()
	perSecond := map[Listing]float64{
		ListTunnels: w.CFPerSecond * cfShare[ListTunnels], ListDNS: w.CFPerSecond * cfShare[ListDNS],
		ListInstances: w.EC2ReadPerSecond, ListParams: w.SSMPerSecond,
	}
	out := make(map[Listing]time.Duration, len(Listings))
	for _, l := range Listings {
		n := max(pages[l], 1)
		iv := floors[l]
		if budget := perSecond[l] * w.BudgetShare; budget > 0 {
			// The sweep lists the same pages every ceiling: its calls come
			// out of the share too.
			if ceiling > 0 {
				budget -= float64(n) / ceiling.Seconds()
			}
			need := ceiling
			if budget > 0 {
				need = time.Duration(math.Ceil(float64(n) / budget * float64(time.Second)))
			}
			iv = max(iv, need)
		}
		if ceiling > 0 {
			iv = min(iv, ceiling)
		}
		out[l] = iv
	}
	return out
}

// pagesOf is how many pages each listing of the view takes: at least one,
// AWS ones in their largest region.
func pagesOf(inv Inventory, w WatchConfig, budgets map[string]string) map[Listing]int {
	w.defaults()
	perRegion := func(regions []string, size int) int {
		n := map[string]int{}
		for _, r := range regions {
			n[r]++
		}
		most := 1
		for _, c := range n {
			most = max(most, (c+size-1)/size)
		}
		return most
	}
	ins := make([]string, len(inv.Instances))
	for i, in := range inv.Instances {
		ins[i] = in.Region
	}
	ps := make([]string, len(inv.Params))
	for i, p := range inv.Params {
		ps[i] = p.Region
	}
	return map[Listing]int{
		ListTunnels:   tunnelPagesOf(inv, w, budgets).busiest,
		ListDNS:       recordPagesOf(inv, w, budgets).busiest,
		ListInstances: perRegion(ins, w.InstancePage),
		ListParams:    perRegion(ps, w.ParamPage),
	}
}

// cfPages is what one Cloudflare listing costs: every pool lists its own
// account or zone (a page at least, empty or not), so total is the calls of
// one run; pools on one budget spend it together, so busiest is the pages
// of the budget that spends most, which paces the listing.
type cfPages struct{ total, busiest int }

// pagesByBudget counts the pages of a listing whose items are in pools
// (each item's pool), with budgets mapping every served pool to its budget
// (nil: one pool).
func pagesByBudget(pools []string, budgets map[string]string, size int) cfPages {
	n := map[string]int{}
	for _, p := range pools {
		n[p]++
	}
	if len(budgets) == 0 {
		pages := max(1, (len(pools)+size-1)/size)
		return cfPages{pages, pages}
	}
	var out cfPages
	by := map[string]int{}
	for pool, budget := range budgets {
		pages := max(1, (n[pool]+size-1)/size)
		out.total += pages
		by[budget] += pages
	}
	for _, c := range by {
		out.busiest = max(out.busiest, c)
	}
	return out
}

func tunnelPagesOf(inv Inventory, w WatchConfig, budgets map[string]string) cfPages {
	pools := make([]string, len(inv.Tunnels))
	for i, t := range inv.Tunnels {
		pools[i] = t.Pool
	}
	return pagesByBudget(pools, budgets, w.TunnelPage)
}

func recordPagesOf(inv Inventory, w WatchConfig, budgets map[string]string) cfPages {
	pools := make([]string, len(inv.Records))
	for i, r := range inv.Records {
		pools[i] = r.Pool
	}
	return pagesByBudget(pools, budgets, w.DNSPage)
}

// poolBudgets maps each served pool to the budget it draws from (its own
// when the configuration names none); nil for one pool.
func (e *Engine) poolBudgets() map[string]string {
	if len(e.clouds.Pools) < 2 {
		return nil
	}
	out := map[string]string{}
	for _, name := range e.poolNames() {
		pc, _ := e.poolClouds(name)
		out[name] = cmp.Or(pc.Limits.Budget, name)
	}
	return out
}

// PagesFor is the pages of each listing for n orgs in one region (one
// tunnel, record, instance and parameter each): the schedule a daemon would
// start with, shown while it is not running.
func PagesFor(n int, w WatchConfig) map[Listing]int {
	w.defaults()
	pages := func(size int) int { return max(1, (n+size-1)/size) }
	return map[Listing]int{ListTunnels: pages(w.TunnelPage), ListDNS: pages(w.DNSPage),
		ListInstances: pages(w.InstancePage), ListParams: pages(w.ParamPage)}
}

// WatchSchedule is the effective interval of each listing now (the sweep
// interval for all of them while the watches are off).
func (e *Engine) WatchSchedule() map[Listing]time.Duration {
	e.viewMu.Lock()
	inv := e.view.inv
	e.viewMu.Unlock()
	if e.cfg.Watch.BudgetShare < 0 || e.cfg.SweepInterval <= 0 {
		out := map[Listing]time.Duration{}
		for _, l := range Listings {
			out[l] = max(e.cfg.SweepInterval, 0)
		}
		return out
	}
	floors := WatchFloors
	if e.cfg.Watch.Floors != nil {
		floors = e.cfg.Watch.Floors
	}
	w := e.watchConfig()
	return WatchIntervals(pagesOf(inv, w, e.poolBudgets()), w, floors, e.cfg.SweepInterval)
}

// watchConfig is the watches' configuration with each provider's budget
// scaled to this process's share of it (SetBudgetShare).
func (e *Engine) watchConfig() WatchConfig {
	w := e.cfg.Watch
	w.defaults()
	if s := e.budgetShare(); s < 1 {
		w.CFPerSecond, w.EC2ReadPerSecond, w.SSMPerSecond = w.CFPerSecond*s, w.EC2ReadPerSecond*s, w.SSMPerSecond*s
	}
	return w
}

// SetBudgetShare tells the engine which share (0..1] of each provider's
// budget this process spends (a replica: the partitions it owns). Every
// replica lists everything, so the watches' intervals stretch by it:
// adding a replica does not multiply the listing calls.
func (e *Engine) SetBudgetShare(share float64) {
	if share <= 0 || share > 1 {
		share = 1
	}
	e.budgetPPM.Store(int64(share * 1e6))
}

func (e *Engine) budgetShare() float64 {
	if v := e.budgetPPM.Load(); v > 0 {
		return float64(v) / 1e6
	}
	return 1
}

// WatchReport is what one watch found.
type WatchReport struct {
	Listing  Listing   `json:"listing"`
	At       time.Time `json:"at"`
	Items    int       `json:"items"`
	Requeued []string  `json:"requeued"`
}

// Watch runs one listing, puts it into the inventory view and runs the
// inventory pass over the view: what the listing shows wrong with a Ready
// org turns it not Ready at once, and queues it.
func (e *Engine) Watch(ctx context.Context, l Listing) (WatchReport, error) {
	return e.watchAt(ctx, l, e.cfg.Now())
}

// watchAt is Watch with the listing's start time given.
func (e *Engine) watchAt(ctx context.Context, l Listing, now time.Time) (WatchReport, error) {
	rep := WatchReport{Listing: l, At: now, Requeued: []string{}}
	if e.ownsNothing() {
		return rep, nil // nothing of this replica's to look at (fence.go)
	}
	// A watch goes ahead of waiting repairs and creations: its calls are
	// bounded by its share of the budget, and a burst of repairs queued on
	// the limiter must not delay the listing that notices the next drift.
	inv, requeued, err := e.listPass(ratelimit.WithPriority(ctx, ratelimit.High), now, map[Listing]string{l: "watch"})
	if err != nil {
		return rep, fmt.Errorf("watch %s: %w", l, err)
	}
	rep.Items = len(inv.Tunnels) + len(inv.Records) + len(inv.Instances) + len(inv.Params)
	rep.Requeued = append(rep.Requeued, requeued...)
	return rep, nil
}

// listPass lists, puts the listings into the inventory view and runs the
// inventory pass over the view, as a watch does; early listings do the
// same (one that takes a watch's run must do its work). by names, per
// listing, who asked for it (tunnelward_listings_total).
func (e *Engine) listPass(ctx context.Context, now time.Time, by map[Listing]string) (Inventory, []string, error) {
	which := make([]Listing, 0, len(by))
	for _, l := range Listings {
		if _, ok := by[l]; ok {
			which = append(which, l)
		}
	}
	inv, err := e.list(ctx, which...)
	if err != nil {
		return inv, nil, err
	}
	for _, l := range which {
		e.cfg.Metrics.Listing(string(l), by[l])
	}
	v := e.remember(inv, now, which...)
	var sr SweepReport
	if _, err := e.inventoryPass(v, now, false, &sr); err != nil {
		return inv, nil, fmt.Errorf("list orgs: %w", err)
	}
	return inv, sr.Requeued, nil
}

// watchMaxGap bounds the time between two listings of one kind when an
// early listing takes a watch's run (never below the listing's interval):
// a change is then seen within it plus the listing's own time.
const watchMaxGap = 28 * time.Second

// watchSlot is the watch schedule of one listing: the watch runs once per
// interval (a slot); a listing made early in a slot (for readiness or a
// tombstone, early.go) takes the slot's run when the watch's next run
// after it stays within watchMaxGap of it, so readiness rides on a listing
// the watch would have made anyway instead of adding one.
type watchSlot struct {
	start time.Time     // the slot's start: the last run, or the end of the slot before
	iv    time.Duration // the slot's length
	taken bool          // an early listing in this slot made its run
}

// takes reports whether a listing starting at t takes the slot's run: t
// is within the slot, no other listing took it, and the watch's run after
// it (one interval after the slot's end) comes at most max(watchMaxGap,
// iv) after t.
func (s watchSlot) takes(t time.Time) bool {
	if s.start.IsZero() || s.taken || t.Before(s.start) || !t.Before(s.start.Add(s.iv)) {
		return false
	}
	return s.start.Add(2*s.iv).Sub(t) <= max(watchMaxGap, s.iv)
}

// claimSlot says who an early listing of l starting at now is counted as:
// "early" when it takes the watch's run of the current slot (the watch
// then skips it), "early_extra" when it adds a listing.
func (e *Engine) claimSlot(l Listing, now time.Time) string {
	e.viewMu.Lock()
	defer e.viewMu.Unlock()
	s, ok := e.slots[l]
	if !ok || !s.takes(now) {
		return "early_extra"
	}
	s.taken = true
	e.slots[l] = s
	return "early"
}

// sweepListing tracks the listings of running sweeps, under the engine's
// viewMu: done is closed when the last of them ends.
type sweepListing struct {
	n    int
	done chan struct{}
}

// start records a sweep's listing; the channel it returns is given to end.
func (s *sweepListing) start(mu *sync.Mutex) chan struct{} {
	mu.Lock()
	defer mu.Unlock()
	if s.n == 0 {
		s.done = make(chan struct{})
	}
	s.n++
	return s.done
}

// end records that a sweep's listing ended (done or failed).
func (s *sweepListing) end(mu *sync.Mutex, done chan struct{}) {
	mu.Lock()
	defer mu.Unlock()
	s.n--
	if s.n == 0 {
		close(done)
		s.done = nil
	}
}

// watchTurn is what the watch of l does when its slot s comes due (at
// due): run, a listing starting at now; or not, because a sweep listed
// everything meanwhile (the slot restarted there) or an early listing made
// this run. While a sweep is listing, the watch waits (wait, closed when
// that listing is in the view) and runs not: the sweep's listing, started
// no later than now, is this run, and restarts the slot; the caller then
// looks at the slot again (a failed sweep listing leaves it due, and the
// watch runs). A watch listing beside the sweep would decode the same
// pages at once (at 100,000 orgs: a second inventory alive, and the
// watches' priority on the limiter starving the sweep, whose partial
// listings stay alive the longer).
func (e *Engine) watchTurn(l Listing, s watchSlot, due time.Time) (now time.Time, run bool, wait <-chan struct{}) {
	e.viewMu.Lock()
	defer e.viewMu.Unlock()
	now = e.cfg.Now()
	cur := e.slots[l]
	switch {
	case cur.start.After(s.start):
		// A sweep listed everything meanwhile: the slot restarted there.
		return now, false, nil
	case e.sweepListing.n > 0:
		return now, false, e.sweepListing.done
	case cur.taken:
		e.slots[l] = watchSlot{start: due} // an early listing made this run
		return now, false, nil
	}
	e.slots[l] = watchSlot{start: now}
	return now, true, nil
}

// watchLoops runs each listing on its interval, recomputed after every run
// from the pages it then had, until ctx ends. The interval is from the
// start of one run to the start of the next (the run's own time is not
// added), so a change waits at most one interval plus one run to be seen;
// a slot whose run an early listing made is skipped (watchSlot), a
// sweep (which lists everything) restarts every slot, and a watch that
// comes due while a sweep lists waits for that listing (watchTurn).
func (e *Engine) watchLoops(ctx context.Context) {
	var wg sync.WaitGroup
	for _, l := range Listings {
		wg.Go(func() {
			e.viewMu.Lock()
			if _, ok := e.slots[l]; !ok {
				e.slots[l] = watchSlot{start: e.cfg.Now()}
			}
			e.viewMu.Unlock()
			for {
				iv := e.WatchSchedule()[l]
				e.cfg.Metrics.SetWatchInterval(string(l), iv)
				e.viewMu.Lock()
				s := e.slots[l]
				s.iv = iv
				e.slots[l] = s
				e.viewMu.Unlock()
				due := s.start.Add(iv)
				t := time.NewTimer(due.Sub(e.cfg.Now()))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				now, run, wait := e.watchTurn(l, s, due)
				if wait != nil {
					select {
					case <-ctx.Done():
						return
					case <-wait:
					}
				}
				if !run {
					continue
				}
				if _, err := e.watchAt(ctx, l, now); err != nil && ctx.Err() == nil {
					e.log.Warn("watch failed", "listing", l, "err", err)
				}
			}
		})
	}
	wg.Wait()
}
