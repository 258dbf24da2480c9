package reconcile

import (
	"slices"
	"strings"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// invIndex finds an org's resources in an Inventory by map lookups. The
// sweep compares every org with the listing; scanning the four lists per
// org made a 10,000-org sweep cost 10,000 × 40,000 comparisons of CPU.
// Lookups return the same resources, in the same (listing) order, as the
// scans did.
type invIndex struct {
	inv       Inventory
	tunnel    map[string]int   // pool and tunnel name -> first live tunnel of that name there
	byOwner   map[string][]int // org id in the ownership comment -> records
	byName    map[string][]int // lower-cased record name -> records
	param     map[paramKey]int // region and name -> last parameter of that name there
	instances map[string][]int // OrgID tag -> instances
}

type paramKey struct{ region, name string }

func indexInventory(inv Inventory) *invIndex {
	ix := &invIndex{inv: inv,
		tunnel: make(map[string]int, len(inv.Tunnels)), byOwner: make(map[string][]int, len(inv.Records)),
		byName: make(map[string][]int, len(inv.Records)), param: make(map[paramKey]int, len(inv.Params)),
		instances: make(map[string][]int, len(inv.Instances))}
	for i, t := range inv.Tunnels {
		if k := t.Pool + "/" + t.Name; !t.Deleted {
			if _, seen := ix.tunnel[k]; !seen {
				ix.tunnel[k] = i
			}
		}
	}
	for i, r := range inv.Records {
		if owner, ok := owner.OrgFromDNSComment(r.Comment); ok {
			ix.byOwner[owner] = append(ix.byOwner[owner], i)
		}
		k := strings.ToLower(r.Name)
		ix.byName[k] = append(ix.byName[k], i)
	}
	for i, p := range inv.Params {
		ix.param[paramKey{p.Region, p.Name}] = i
	}
	for i, in := range inv.Instances {
		ix.instances[in.OrgID] = append(ix.instances[in.OrgID], i)
	}
	return ix
}

// observedFrom is ObservedFrom through the index.
func (e *Engine) observedFrom(ix *invIndex, org state.Org) plan.Observed {
	d := e.Desired(org)
	ob := plan.Observed{RecordsKnown: true, ParamKnown: true, InstanceKnown: true}
	// The org's Cloudflare resources are those in its pool (in the one
	// placement would choose while it is not placed); owned ones elsewhere
	// are orphans.
	pool := e.PoolOf(org)
	if pool == "" {
		pool, _, _ = e.planPool(org)
	}
	if i, ok := ix.tunnel[pool+"/"+owner.TunnelName(org.ID)]; ok {
		t := ix.inv.Tunnels[i]
		ob.Tunnel = &plan.Tunnel{ID: t.ID, Status: t.Status}
	}
	recs := slices.DeleteFunc(slices.Clone(ix.byOwner[org.ID]), func(i int) bool { return ix.inv.Records[i].Pool != pool })
	if d.Hostname != "" {
		for _, i := range ix.byName[strings.ToLower(d.Hostname)] {
			r := ix.inv.Records[i]
			if strings.EqualFold(r.Name, d.Hostname) && r.Pool == pool && !slices.Contains(recs, i) {
				recs = append(recs, i)
			}
		}
	}
	slices.Sort(recs)
	for _, i := range recs {
		ob.Records = append(ob.Records, ix.inv.Records[i])
	}
	region := e.orgRegion(org)
	if i, ok := ix.param[paramKey{region, owner.ParamName(e.cfg.ParamPrefix, org.ID)}]; ok {
		ob.Param = &plan.Param{Name: ix.inv.Params[i].Name, TunnelID: org.Observed.ParamTunnelID}
	}
	if org.ID != "" {
		for _, i := range ix.instances[org.ID] {
			in := ix.inv.Instances[i]
			if in.Region != region {
				continue // not the org's: the orphan check reports it
			}
			ob.Instances = append(ob.Instances, planInstances(org.Observed, []Instance{in})...)
		}
	}
	return ob
}
