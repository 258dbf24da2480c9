package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/reconcile"
)

// minCalls is the fewest calls per provider the design needs for one org on
// the happy path. PERFORMANCE.md ("API economy") gives the reason for each;
// in short, with the engine's create-first / adopt-on-exists strategy
// (docs/decisions.md):
//
//	create: CF tunnel create (with a secret drawn here: the token is built
//	        locally, no token read; issue 17), ingress config put, DNS
//	        create (a batch when other orgs are in flight; it is also the
//	        claim on the hostname: "already exists" is the only time the
//	        name is read, and a record another party holds withholds the
//	        token and the instance); Ready needs an observation, a tunnel
//	        listing that sees it healthy, and that listing is the tunnel
//	        watch's run taken early (watch.go, watchSlot): the watch skips
//	        its run, so the org adds no call for it; EC2 DescribeInstances by
//	        OrgID tag (EC2 has no unique names: the only way to know no
//	        instance of the org exists) and RunInstances; SSM PutParameter
//	        and AddTagsToResource (InstanceArn=<the instance's ARN>: the
//	        instance role may read only the parameter tagged with its own
//	        ARN, and the ARN exists only after launch).
//	delete: CF tunnel list by name and DNS list by ownership comment (a
//	        tombstone finds what a crash left unrecorded before it says
//	        Deleted), DNS delete and tunnel delete (connections clean only
//	        when the delete is refused); EC2 DescribeInstances by tag and
//	        TerminateInstances; SSM DeleteParameter.
var minCalls = map[string][3]int{
	"create": {3, 2, 2},
	"delete": {4, 2, 1},
}

func benchEconomy(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	// The daemon's schedule: the watches run (sweep every 5 minutes, the
	// watch floors), so readiness can take the tunnel watch's run.
	lc := &listingCount{}
	w, err := newWorld(worldOpts{engine: func(c *reconcile.Config) {
		c.SweepInterval = 5 * time.Minute
		c.Metrics = lc.wrap(c.Metrics)
	}})
	if err != nil {
		return nil, err
	}
	defer w.close()
	w.start()
	org := "economy-1"
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// The sweep at start lists everything once: not the org's calls.
	for w.eng.LastSweep().At.IsZero() {
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return nil, fmt.Errorf("the sweep at start did not run: %w", err)
		}
	}
	w.sim.ResetCalls()

	start := time.Now()
	if err := w.apply(created(org)); err != nil {
		return nil, err
	}
	if _, err := w.waitOrgs(ctx, []string{org}, 5*time.Millisecond, ready); err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	createCalls := sumCalls(w.sim.Calls())
	createTook := time.Since(start)
	// Listings that took a watch's run replace one the watch would have
	// made: they are the watch's calls, not the org's.
	createWatch := lc.take()
	createCalls.cf -= createWatch
	w.sim.ResetCalls()

	start = time.Now()
	if err := w.apply(deleted(org)); err != nil {
		return nil, err
	}
	if _, err := w.waitOrgs(ctx, []string{org}, 5*time.Millisecond, deleteDone); err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	deleteCalls := sumCalls(w.sim.Calls())
	deleteTook := time.Since(start)
	deleteWatch := lc.take()
	deleteCalls.cf -= deleteWatch
	w.stop()
	if v := w.sim.CheckInvariants([]string{}); len(v) > 0 {
		return nil, fmt.Errorf("after delete the emulator reports %d invariant violations, first: %+v", len(v), v[0])
	}
	total := createCalls.cf + createCalls.ec2 + createCalls.ssm + deleteCalls.cf + deleteCalls.ec2 + deleteCalls.ssm
	rep.sawRate(float64(total)/(createTook+deleteTook).Seconds(), "economy")

	row := func(phase string, pc providerCalls, watch int) Row {
		m := minCalls[phase]
		ok := pc.cf == m[0] && pc.ec2 == m[1] && pc.ssm == m[2]
		return Row{
			Figure:   "2 API economy: one org " + phase + map[string]string{"create": " (to Ready)", "delete": " (to gone)"}[phase],
			Measured: fmt.Sprintf("CF %d, EC2 %d, SSM %d", pc.cf, pc.ec2, pc.ssm),
			Bound:    fmt.Sprintf("minimum CF %d, EC2 %d, SSM %d", m[0], m[1], m[2]),
			Goal:     "= minimum",
			Met:      met(ok),
			Note: fmt.Sprintf("%s calls counted by the emulator: %s; of the Cloudflare listings, %d took a watch's run (the watch skipped it: not counted as the org's)",
				phase, pc.detail(), watch),
		}
	}
	return []Row{row("create", createCalls, createWatch), row("delete", deleteCalls, deleteWatch)}, nil
}

// listingCount counts the engine's Cloudflare listings that took a
// watch's run (tunnelward_listings_total{by="early"}), beside the metrics
// the engine already reports to.
type listingCount struct {
	reconcile.Observer
	mu    sync.Mutex
	early int
}

func (c *listingCount) wrap(o reconcile.Observer) reconcile.Observer {
	if o == nil {
		o = metrics.New() // the world reports to none: a registry of its own
	}
	c.Observer = o
	return c
}

func (c *listingCount) Listing(l, by string) {
	c.Observer.Listing(l, by)
	if by == "early" && (l == string(reconcile.ListTunnels) || l == string(reconcile.ListDNS)) {
		c.mu.Lock()
		c.early++
		c.mu.Unlock()
	}
}

// take returns the Cloudflare listings that took a watch's run since the
// last take.
func (c *listingCount) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.early
	c.early = 0
	return n
}
