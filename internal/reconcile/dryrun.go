package reconcile

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// OrgPlan is what a reconcile of one org would change (`reconciler plan`).
type OrgPlan struct {
	OrgID   string       `json:"org_id"`
	Desired plan.Desired `json:"desired"`
	Plan    plan.Result  `json:"plan"`
	// Pool is the Cloudflare pool the org is in, or would be placed in.
	Pool string `json:"pool,omitempty"`
}

// PlanOrg reads the clouds for one org and returns what a reconcile would
// change. It only reads: where the engine would create first and adopt, a
// dry run has to look up by name instead.
func (e *Engine) PlanOrg(ctx context.Context, orgID string) (OrgPlan, error) {
	org, ok, err := e.store.Get(orgID)
	if err != nil {
		return OrgPlan{}, fmt.Errorf("plan org %s: read state: %w", orgID, err)
	}
	if !ok {
		return OrgPlan{}, fmt.Errorf("plan org %s: no such org in state", orgID)
	}
	d := e.Desired(org)
	region, aw, err := e.planRegion(org)
	if err != nil {
		return OrgPlan{OrgID: org.ID, Desired: d, Plan: regionPlan(region, err.Error())}, nil
	}
	pool, cf, err := e.planPool(org)
	if err != nil {
		return OrgPlan{OrgID: org.ID, Desired: d, Pool: pool, Plan: poolPlan(pool, err.Error())}, nil
	}
	if !d.Present {
		obs, err := e.observe(ctx, org, d, aw, cf, forDelete)
		if err != nil {
			return OrgPlan{}, err
		}
		if org.Observed.DeleteDone {
			obs.plan.Param = nil // a finished tombstone: the sweep's orphan check owns leftovers
		}
		return OrgPlan{OrgID: org.ID, Desired: d, Pool: pool, Plan: plan.Compute(d, obs.plan)}, nil
	}
	ob, err := e.observe(ctx, org, d, aw, cf, forDryRun)
	if err != nil {
		return OrgPlan{}, err
	}
	// The same health diagnosis a pass runs, so the dry run shows the
	// restart or replacement the pass would make.
	if ob.tunnel != nil {
		ob.plan.Remedy = e.diagnose(org, ob, d, e.cfg.Now()).remedy()
	}
	return OrgPlan{OrgID: org.ID, Desired: d, Pool: pool, Plan: e.withPlacement(plan.Compute(d, ob.plan), org, region)}, nil
}

// poolPlan is the plan of an org that cannot be placed, or whose pool is
// not served: nothing happens for it, and the conflict says why.
func poolPlan(pool, why string) plan.Result {
	return plan.Result{Changes: []plan.Change{}, Conflicts: []plan.Conflict{{Resource: plan.ResTunnel, Target: pool, Reason: why}}}
}

// regionPlan is the plan of an org whose region is not served: nothing
// happens for it, and the conflict says why.
func regionPlan(region, why string) plan.Result {
	return plan.Result{Changes: []plan.Change{}, Conflicts: []plan.Conflict{{Resource: plan.ResInstance, Target: region, Reason: why}}}
}

// withPlacement adds a refused region or pool change to a plan.
func (e *Engine) withPlacement(p plan.Result, org state.Org, region string) plan.Result {
	p = withRegionConflict(p, region, e.regionConflict(org))
	if why := e.poolConflict(org); why != "" {
		p.Conflicts = append(p.Conflicts, plan.Conflict{Resource: plan.ResTunnel, Target: e.PoolOf(org), Reason: why})
	}
	return p
}

// withRegionConflict adds a refused region change to a plan.
func withRegionConflict(p plan.Result, region, why string) plan.Result {
	if why != "" {
		p.Conflicts = append(p.Conflicts, plan.Conflict{Resource: plan.ResInstance, Target: region, Reason: why})
		p.Ready = false
	}
	return p
}

// PlanAll is the dry run over every org from one inventory listing (cost:
// list pages). Ingress is not listed, so ingress drift shows only in PlanOrg.
// Orphans are owned resources whose org is absent or a finished tombstone.
// The listing holds only owned records, so an org with a takeover pending
// has its name read as well (one read each), as PlanOrg and a pass do.
func (e *Engine) PlanAll(ctx context.Context) ([]OrgPlan, []Orphan, error) {
	inv, err := e.List(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("plan: %w", err)
	}
	e.loadBook() // not inside the read below
	ix := indexInventory(inv)
	var out []OrgPlan
	type takeover struct {
		org          state.Org
		region, pool string
		cf           PoolClouds
		ob           plan.Observed
	}
	var takeovers []takeover
	live := map[string]liveOrg{}
	err = e.store.ForEach(func(org state.Org) error {
		if org.Desired.Presence == state.Deleted && org.Observed.DeleteDone {
			return nil
		}
		live[org.ID] = e.liveOrg(org)
		d := e.Desired(org)
		if d.Present && d.Hostname == "" {
			return nil
		}
		region, _, rerr := e.planRegion(org)
		if rerr != nil {
			out = append(out, OrgPlan{OrgID: org.ID, Desired: d, Plan: regionPlan(region, rerr.Error())})
			return nil
		}
		pool, cf, perr := e.planPool(org)
		if perr != nil {
			out = append(out, OrgPlan{OrgID: org.ID, Desired: d, Pool: pool, Plan: poolPlan(pool, perr.Error())})
			return nil
		}
		ob := e.observedFrom(ix, org)
		if d.Present && d.Takeover != nil {
			takeovers = append(takeovers, takeover{org: org, region: region, pool: pool, cf: cf, ob: ob})
			return nil
		}
		p := e.withPlacement(plan.Compute(d, ob), org, region)
		out = append(out, OrgPlan{OrgID: org.ID, Desired: d, Pool: pool, Plan: p})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("plan: list orgs: %w", err)
	}
	for _, t := range takeovers {
		d := e.Desired(t.org)
		found, err := t.cf.DNS.FindRecords(ctx, d.Hostname)
		if err != nil {
			return nil, nil, fmt.Errorf("plan: org %s: find dns records named %s: %w", t.org.ID, d.Hostname, err)
		}
		for _, f := range found {
			if !slices.ContainsFunc(t.ob.Records, func(r plan.Record) bool { return r.ID == f.ID }) {
				t.ob.Records = append(t.ob.Records, f)
			}
		}
		p := e.withPlacement(plan.Compute(d, t.ob), t.org, t.region)
		out = append(out, OrgPlan{OrgID: t.org.ID, Desired: d, Pool: t.pool, Plan: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].OrgID < out[j].OrgID })
	return out, findOrphans(e.cfg.ParamPrefix, inv, live, e.tunnelHome), nil
}
