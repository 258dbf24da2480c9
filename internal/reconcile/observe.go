package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// observeMode says how an org's resources are looked for.
type observeMode int

const (
	// forPass reads what is recorded, by id, plus the instances by tag, and
	// a record by name where one may stand unrecorded (a new org, a slug
	// change, a conflict). Other unrecorded resources are not searched
	// for: the pass creates first and adopts on "already exists"
	// (docs/decisions.md), which saves a list call per resource.
	forPass observeMode = iota
	// forDryRun cannot create-and-adopt, so it also looks up by name what
	// the pass would adopt: the tunnel and the token parameter.
	forDryRun
	// forDelete finds everything a tombstone may still own, by name and tag
	// as well as by id, before the cascade may say Deleted: the tunnel by its
	// name (unique among live tunnels, so a recorded one still live is the
	// one found), the records by ownership comment under any name, the
	// parameter by its name, the instances by tag.
	forDelete
)

// observation is what the reads of one reconcile found.
type observation struct {
	plan      plan.Observed
	tunnel    *Tunnel    // nil: none recorded (or found) or it is gone
	instances []Instance // live-ish (not terminated) owned instances
	// paramTags are the token parameter's tags, read only in a pass while
	// an org with an instance is not Ready (paramTagsKnown): a crash between
	// launch and tagging leaves the InstanceArn tag stale, and the instance
	// cannot read its token until it is fixed.
	paramTags      map[string]string
	paramTagsKnown bool
	// claim: the pass claims the hostname by creating its record
	// (claimsHostname), so it did not read the name; claimHostname adds
	// what the create found before the plan is made.
	claim bool
}

// observe builds the observed state of one org: the one place that does,
// for a pass, the dry run and the delete cascade (the sweep's view of an
// org comes from its inventory, observeInventory, with the same tunnel rule).
func (e *Engine) observe(ctx context.Context, org state.Org, d plan.Desired, aw RegionClouds, cf PoolClouds, mode observeMode) (observation, error) {
	return e.observeListed(ctx, org, d, aw, cf, mode, nil)
}

// observeListed is observe where a tombstone's lookups by name and by
// ownership comment are answered from listed, shared listings that
// started after its floor (tombstone.go), when listed is not nil.
func (e *Engine) observeListed(ctx context.Context, org state.Org, d plan.Desired, aw RegionClouds, cf PoolClouds, mode observeMode, listed *Inventory) (observation, error) {
	var (
		ob   observation
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	fail := func(what string, err error) {
		mu.Lock()
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
		mu.Unlock()
	}
	set := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	rec := org.Observed
	ob.plan.RecordsKnown, ob.plan.ParamKnown, ob.plan.InstanceKnown = true, true, true
	// A pass learns who holds a new org's hostname from its record create
	// (claimHostname); the dry run cannot create and reads the name.
	ob.claim = mode == forPass && claimsHostname(org, d)
	if mode != forDelete {
		ob.plan.Rotation = e.rotationView(org, e.cfg.Now())
	}

	// Tunnel and its ingress. A pass knows the id: both reads at once.
	ingressOf := func(id string) {
		rules, err := cf.Tunnels.GetIngress(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound): // gone: the tunnel read says so
		case err != nil:
			fail("get ingress of tunnel "+id, err)
		default:
			set(func() { ob.plan.Ingress, ob.plan.IngressKnown = rules, true })
		}
	}
	if mode == forPass && rec.TunnelID != "" {
		wg.Go(func() { ingressOf(rec.TunnelID) })
	}
	wg.Go(func() {
		var t *Tunnel
		if mode != forDelete && rec.TunnelID != "" {
			got, err := cf.Tunnels.GetTunnel(ctx, rec.TunnelID)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				fail("get tunnel "+rec.TunnelID, err)
				return
			case !got.Deleted:
				t = &got
			}
		}
		if t == nil && mode == forDelete && listed != nil {
			t = listedTunnelOf(listed, org.ID, cf.Name)
		} else if t == nil && mode != forPass {
			found, err := cf.Tunnels.FindTunnel(ctx, owner.TunnelName(org.ID))
			if err != nil {
				fail("find tunnel "+owner.TunnelName(org.ID), err)
				return
			}
			t = found
		}
		set(func() { ob.tunnel = t })
		if t != nil && mode == forDryRun {
			ingressOf(t.ID)
		}
		if t != nil && mode != forDelete && connectorsNeeded(ob.plan.Rotation) {
			cs, err := cf.Tunnels.Connectors(ctx, t.ID)
			if err != nil && !errors.Is(err, ErrNotFound) {
				fail("list connectors of tunnel "+t.ID, err)
				return
			}
			set(func() { ob.plan.Rotation.Connectors, ob.plan.Rotation.ConnectorsKnown = cs, err == nil })
		}
	})

	// DNS records.
	wg.Go(func() {
		if mode == forDelete && listed != nil {
			set(func() { ob.plan.Records = listedRecordsOf(listed, org.ID, cf.Name) })
			return
		}
		if mode == forDelete {
			found, err := cf.DNS.OwnedRecords(ctx, org.ID)
			if err != nil {
				fail("find dns records owned by the org", err)
				return
			}
			set(func() { ob.plan.Records = found })
			return
		}
		// By name when the recorded record has another name (a slug
		// change's new record may stand unrecorded) and while in conflict.
		// When nothing is recorded (a new org, or a crash before the id
		// reached bbolt) a pass claims the name by creating the record
		// instead (ob.claim, claimHostname: "already exists" is the read),
		// before anything billable is built; the dry run reads it.
		byName := d.Hostname != "" && (IsTrue(org, state.CondConflict) || rec.DNSRecordID == "" ||
			!strings.EqualFold(rec.DNSName, d.Hostname)) && !ob.claim
		var recs []plan.Record
		if rec.DNSRecordID != "" {
			r, err := cf.DNS.GetRecord(ctx, rec.DNSRecordID)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				fail("get dns record "+rec.DNSRecordID, err)
				return
			default:
				recs = append(recs, r)
			}
		}
		if byName {
			found, err := cf.DNS.FindRecords(ctx, d.Hostname)
			if err != nil {
				fail("find dns records named "+d.Hostname, err)
				return
			}
			for _, f := range found {
				if len(recs) == 0 || f.ID != recs[0].ID {
					recs = append(recs, f)
				}
			}
		}
		set(func() { ob.plan.Records = recs })
	})

	// The token parameter (metadata only; the value is never read).
	paramName := rec.ParameterName
	if paramName == "" && mode != forPass {
		paramName = owner.ParamName(e.cfg.ParamPrefix, org.ID)
	}
	switch {
	case mode == forDelete:
		// Deleting a parameter that is not there is success: no read needed.
		ob.plan.Param = &plan.Param{Name: paramName}
	case paramName != "":
		wg.Go(func() {
			p, err := aw.Params.DescribeParam(ctx, paramName)
			if err != nil {
				fail("describe parameter "+paramName, err)
				return
			}
			if p != nil {
				set(func() { ob.plan.Param = &plan.Param{Name: p.Name, TunnelID: rec.ParamTunnelID} })
			}
		})
	}
	// The tag is read back when this process has not seen it for the
	// instance (a crash between launch and tag), and while a remediation is
	// pending: a wrong tag keeps a restarted cloudflared out, and re-tagging
	// is one call where replacing the instance would be a boot.
	if mode == forPass && rec.ParameterName != "" && (rec.InstanceID != "" || rec.LaunchInFlight) && !IsTrue(org, state.CondReady) &&
		(!e.taggedFor(org.ID, rec.InstanceID) || pendingRemediation(org) != nil) {
		wg.Go(func() {
			tags, err := aw.Params.ParamTags(ctx, rec.ParameterName)
			switch {
			case errors.Is(err, ErrNotFound): // the token step re-creates it, then it is tagged
			case err != nil:
				fail("read tags of parameter "+rec.ParameterName, err)
			default:
				set(func() { ob.paramTags, ob.paramTagsKnown = tags, true })
			}
		})
	}

	// Instances, by tag.
	wg.Go(func() {
		ins, err := aw.Instances.OrgInstances(ctx, org.ID)
		if err != nil {
			fail("describe instances", err)
			return
		}
		set(func() { ob.instances = ins })
	})
	wg.Wait()
	if len(errs) > 0 {
		return ob, fmt.Errorf("observe org %s: %w", org.ID, errors.Join(errs...))
	}
	if ob.tunnel != nil {
		ob.plan.Tunnel = &plan.Tunnel{ID: ob.tunnel.ID, Status: ob.tunnel.Status}
	} else {
		ob.plan.Ingress, ob.plan.IngressKnown = nil, false // the recorded tunnel's, if it is gone
	}
	ob.plan.Instances = planInstances(rec, ob.instances)
	return ob, nil
}

// planInstances is the plan's view of an org's instances, with the one
// rule for which tunnel each runs (effectiveTunnel).
func planInstances(rec state.Observed, ins []Instance) []plan.Instance {
	out := make([]plan.Instance, 0, len(ins))
	for _, in := range ins {
		out = append(out, plan.Instance{ID: in.ID, State: in.State, TunnelID: effectiveTunnel(rec, in), Generation: in.Generation})
	}
	return out
}
