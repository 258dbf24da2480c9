package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// benchRepair is the mean time to repair an out-of-band change: the engine
// runs its watches on their schedule (floors scaled with the world's time),
// each kind of change is made to a few Ready orgs at once, and the time
// from the change to the org being Ready again is measured, beside the
// detection bound (the listing's interval) and the repair's critical path.
func benchRepair(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	scale := time.Duration(pick(o, 100, timeScale, timeScale))
	boot, connect := realBoot/scale, realConnect/scale
	orgsN := pick(o, 5, 10, 20)
	perKind := pick(o, 1, 2, 4)
	floors := map[reconcile.Listing]time.Duration{}
	for l, d := range reconcile.WatchFloors {
		floors[l] = d / scale
	}
	w, err := newWorld(worldOpts{
		sim: func(c *cloudsim.Config) { c.BootDelay, c.ConnectDelay = boot, connect },
		engine: func(c *reconcile.Config) {
			c.BootConnect = boot + connect
			c.PollInterval = 10 * time.Second / scale
			c.HealthGrace = time.Minute / scale
			c.SweepInterval = time.Hour // the ceiling; the watches do the looking
			c.Watch.BudgetShare, c.Watch.Floors = reconcile.DefaultWatchBudgetShare, floors
		},
	})
	if err != nil {
		return nil, err
	}
	defer w.close()
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: latencyRules()}); err != nil {
		return nil, err
	}
	w.start()
	var orgs []string
	for i := range orgsN {
		orgs = append(orgs, fmt.Sprintf("rep-%d", i))
		if err := w.apply(created(orgs[i])); err != nil {
			return nil, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = w.waitOrgs(wctx, orgs, 5*time.Millisecond, ready)
	cancel()
	if err != nil {
		return nil, err
	}
	kinds := []struct {
		name    string
		act     string
		kind    string
		listing reconcile.Listing
	}{
		{"DNS record deleted", "delete", "dns_record", reconcile.ListDNS},
		{"instance terminated", "terminate_instance", "", reconcile.ListInstances},
		{"cloudflared killed", "kill_connector", "", reconcile.ListTunnels},
		{"tunnel deleted", "delete", "tunnel", reconcile.ListTunnels},
		{"parameter deleted", "delete", "parameter", reconcile.ListParams},
	}
	cp, _ := criticalPath(boot, connect)
	var rows []Row
	next := 0
	for _, k := range kinds {
		if next+perKind > len(orgs) {
			next = 0
		}
		batch := orgs[next : next+perKind]
		next += perKind
		start := time.Now()
		for _, org := range batch {
			if _, err := w.sim.ApplyWorld(cloudsim.WorldAction{Action: k.act, Kind: k.kind, Org: org}); err != nil {
				return nil, err
			}
		}
		// Ready again: a Ready condition stamped after the change.
		again := func(o state.Org) bool {
			c, ok := reconcile.Condition(o, state.CondReady)
			return ok && c.Status && c.LastTransitionTime.After(start)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		at, err := w.waitOrgs(wctx, batch, 5*time.Millisecond, again)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		var took []time.Duration
		for _, org := range batch {
			took = append(took, at[org].Sub(start))
		}
		slices.Sort(took)
		detect := floors[k.listing]
		bound := detect + cp
		p50, p99 := took[len(took)/2], took[len(took)-1]
		rows = append(rows, Row{
			Figure:   "8 repair: " + k.name + " to Ready (" + fmt.Sprint(len(took)) + ")",
			Measured: fmt.Sprintf("p50 %s, max %s", secs(p50), secs(p99)),
			Bound:    fmt.Sprintf("watch %s + critical path %s", secs(detect), secs(cp)),
			Goal:     "<= " + secs(bound),
			Met:      met(p99 <= bound),
			Note: fmt.Sprintf("%d orgs, world time /%d (the %s watch every %s = %s real); %d change(s) at once; p99 is the max of %d, not a percentile of >= 20 (the issue's 1,000 and 10,000 orgs are not measured here)",
				orgsN, scale, k.listing, secs(detect), secs(detect*scale), len(took), len(took)),
		})
		// Let the restart/replacement settle before the next kind.
		wctx, cancel = context.WithTimeout(ctx, time.Minute)
		_, err = w.waitOrgs(wctx, orgs, 5*time.Millisecond, ready)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: settle: %w", k.name, err)
		}
	}
	return rows, nil
}
