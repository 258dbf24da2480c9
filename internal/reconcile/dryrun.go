package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// OrgPlan is what a reconcile of one org would change (`reconciler plan`).
type OrgPlan struct {
	OrgID   string       `json:"org_id"`
	Desired plan.Desired `json:"desired"`
	Plan    plan.Result  `json:"plan"`
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
	if !d.Present {
		ob, err := e.observeDeleted(ctx, org, d, aw)
		if err != nil {
			return OrgPlan{}, err
		}
		if org.Observed.DeleteDone {
			ob.Param = nil // a finished tombstone: the sweep's orphan check owns leftovers
		}
		return OrgPlan{OrgID: org.ID, Desired: d, Plan: plan.Compute(d, ob)}, nil
	}
	ob, err := e.observeReadOnly(ctx, org, d, aw)
	if err != nil {
		return OrgPlan{}, err
	}
	// The same health diagnosis a pass runs, so the dry run shows the
	// restart or replacement the pass would make.
	if ob.tunnel != nil {
		ob.plan.Remedy = e.diagnose(org, ob, d, e.cfg.Now()).remedy()
	}
	return OrgPlan{OrgID: org.ID, Desired: d, Plan: withRegionConflict(plan.Compute(d, ob.plan), region, e.regionConflict(org))}, nil
}

// regionPlan is the plan of an org whose region is not served: nothing
// happens for it, and the conflict says why.
func regionPlan(region, why string) plan.Result {
	return plan.Result{Changes: []plan.Change{}, Conflicts: []plan.Conflict{{Resource: plan.ResInstance, Target: region, Reason: why}}}
}

// withRegionConflict adds a refused region change to a plan.
func withRegionConflict(p plan.Result, region, why string) plan.Result {
	if why != "" {
		p.Conflicts = append(p.Conflicts, plan.Conflict{Resource: plan.ResInstance, Target: region, Reason: why})
		p.Ready = false
	}
	return p
}

func (e *Engine) observeReadOnly(ctx context.Context, org state.Org, d plan.Desired, aw RegionClouds) (observation, error) {
	var obs observation
	ob := &obs.plan
	ob.RecordsKnown, ob.ParamKnown, ob.InstanceKnown = true, true, true
	rec := org.Observed
	var t *Tunnel
	if rec.TunnelID != "" {
		got, err := e.clouds.Tunnels.GetTunnel(ctx, rec.TunnelID)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return obs, fmt.Errorf("plan org %s: get tunnel: %w", org.ID, err)
		case !got.Deleted:
			t = &got
		}
	}
	if t == nil {
		found, err := e.clouds.Tunnels.FindTunnel(ctx, owner.TunnelName(org.ID))
		if err != nil {
			return obs, fmt.Errorf("plan org %s: find tunnel: %w", org.ID, err)
		}
		t = found
	}
	if t != nil {
		obs.tunnel = t
		ob.Tunnel = &plan.Tunnel{ID: t.ID, Status: t.Status}
		rules, err := e.clouds.Tunnels.GetIngress(ctx, t.ID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return obs, fmt.Errorf("plan org %s: get ingress: %w", org.ID, err)
		}
		ob.Ingress, ob.IngressKnown = rules, err == nil
	}
	recs, err := e.clouds.DNS.FindRecords(ctx, d.Hostname)
	if err != nil {
		return obs, fmt.Errorf("plan org %s: find dns records: %w", org.ID, err)
	}
	ob.Records = recs
	if rec.DNSRecordID != "" && rec.DNSName != d.Hostname {
		if r, err := e.clouds.DNS.GetRecord(ctx, rec.DNSRecordID); err == nil {
			if !slices.ContainsFunc(ob.Records, func(x plan.Record) bool { return x.ID == r.ID }) {
				ob.Records = append(ob.Records, r) // ours under an old slug
			}
		} else if !errors.Is(err, ErrNotFound) {
			return obs, fmt.Errorf("plan org %s: get dns record: %w", org.ID, err)
		}
	}
	p, err := aw.Params.DescribeParam(ctx, owner.ParamName(e.cfg.ParamPrefix, org.ID))
	if err != nil {
		return obs, fmt.Errorf("plan org %s: describe parameter: %w", org.ID, err)
	}
	if p != nil {
		ob.Param = &plan.Param{Name: p.Name, TunnelID: rec.ParamTunnelID}
	}
	ins, err := aw.Instances.OrgInstances(ctx, org.ID)
	if err != nil {
		return obs, fmt.Errorf("plan org %s: describe instances: %w", org.ID, err)
	}
	obs.instances = ins
	for _, in := range ins {
		ob.Instances = append(ob.Instances, plan.Instance{ID: in.ID, State: in.State,
			TunnelID: effectiveTunnel(rec, in), Generation: in.Generation})
	}
	return obs, nil
}

// PlanAll is the dry run over every org from one inventory listing (cost:
// list pages). Ingress is not listed, so ingress drift shows only in PlanOrg.
// Orphans are owned resources whose org is absent or a finished tombstone.
func (e *Engine) PlanAll(ctx context.Context) ([]OrgPlan, []Orphan, error) {
	inv, err := e.List(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("plan: %w", err)
	}
	ix := indexInventory(inv)
	var out []OrgPlan
	live := map[string]string{}
	err = e.store.ForEach(func(org state.Org) error {
		if org.Desired.Presence == state.Deleted && org.Observed.DeleteDone {
			return nil
		}
		live[org.ID] = e.orgRegion(org)
		d := e.Desired(org)
		if d.Present && d.Hostname == "" {
			return nil
		}
		region, _, rerr := e.planRegion(org)
		if rerr != nil {
			out = append(out, OrgPlan{OrgID: org.ID, Desired: d, Plan: regionPlan(region, rerr.Error())})
			return nil
		}
		p := withRegionConflict(plan.Compute(d, e.observedFrom(ix, org)), region, e.regionConflict(org))
		out = append(out, OrgPlan{OrgID: org.ID, Desired: d, Plan: p})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("plan: list orgs: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].OrgID < out[j].OrgID })
	return out, findOrphans(e.cfg.ParamPrefix, inv, live), nil
}
