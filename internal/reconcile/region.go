package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/state"
)

// An org's token parameter and instance live in one AWS region: the one it
// asked for (org.created data.region), else the default region. The region
// is committed to bbolt before the first AWS write for the org and stays
// while the org has resources; moving an org is a delete and a re-create.

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// wantRegion is the region the org asks for, the default when it names none.
func (e *Engine) wantRegion(org state.Org) string {
	if r := org.Desired.Region; r != "" {
		return r
	}
	return e.clouds.DefaultRegion
}

// orgRegion is where the org's AWS resources are, or go when it has none.
// An org moving to another region (movingFrom) goes to the new one.
func (e *Engine) orgRegion(org state.Org) string {
	ob := org.Observed
	if _, moving := e.movingFrom(org); moving {
		return e.wantRegion(org)
	}
	switch {
	case ob.Region != "":
		return ob.Region
	case ob.ParameterName != "" || ob.InstanceID != "" || ob.LaunchInFlight:
		return e.clouds.DefaultRegion // recorded before regions were kept
	}
	return e.wantRegion(org)
}

// regionClouds returns the AWS surfaces and launch settings of a served region.
func (e *Engine) regionClouds(name string) (RegionClouds, bool) {
	if name == e.clouds.DefaultRegion {
		return RegionClouds{Instances: e.clouds.Instances, Params: e.clouds.Params, Commands: e.clouds.Commands,
			Instance: e.cfg.Instance}, true
	}
	rc, ok := e.clouds.Regions[name]
	if !ok {
		return RegionClouds{}, false
	}
	// Not regional: the type default and the (global) instance profile.
	if rc.Instance.InstanceType == "" {
		rc.Instance.InstanceType = e.cfg.Instance.InstanceType
	}
	if rc.Instance.InstanceProfile == "" {
		rc.Instance.InstanceProfile = e.cfg.Instance.InstanceProfile
	}
	return rc, true
}

// servedList names the served regions for messages.
func (e *Engine) servedList() string {
	var out []string
	for _, r := range e.clouds.served() {
		if r == "" {
			r = "(the default region)"
		}
		out = append(out, r)
	}
	return strings.Join(out, ", ")
}

// regionFor returns the org's region and its clouds; an error names the
// region when this reconciler does not serve it.
func (e *Engine) regionFor(org state.Org) (string, RegionClouds, error) {
	name := e.orgRegion(org)
	rc, ok := e.regionClouds(name)
	if !ok {
		if org.Observed.Region != "" {
			return name, rc, &TerminalError{Reason: "RegionNotServed", Err: fmt.Errorf(
				"org %s has its parameter and instance in AWS region %s, which this reconciler no longer serves (it serves %s); add the region back (--aws-regions) to manage them",
				org.ID, name, e.servedList())}
		}
		return name, rc, &TerminalError{Reason: "RegionNotServed", Err: fmt.Errorf(
			"org %s asks for AWS region %s, which this reconciler does not serve (it serves %s); nothing was created",
			org.ID, name, e.servedList())}
	}
	return name, rc, nil
}

// deleteRegion is regionFor for a tombstone: an org whose unserved region
// was never pinned has no AWS resource anywhere, so its delete looks in the
// default region (finding nothing) instead of failing forever.
func (e *Engine) deleteRegion(org state.Org) (string, RegionClouds, error) {
	name, rc, err := e.regionFor(org)
	if err != nil && org.Observed.Region == "" {
		rc, _ = e.regionClouds(e.clouds.DefaultRegion)
		return e.clouds.DefaultRegion, rc, nil
	}
	return name, rc, err
}

// planRegion is the region a reconcile of org would use: deleteRegion for a
// tombstone, regionFor otherwise.
func (e *Engine) planRegion(org state.Org) (string, RegionClouds, error) {
	if org.Desired.Presence == state.Deleted {
		return e.deleteRegion(org)
	}
	return e.regionFor(org)
}

// regionConflict says why a later event's region is not followed, "" when
// the org is where it asks to be.
func (e *Engine) regionConflict(org state.Org) string {
	have, want := org.Observed.Region, e.wantRegion(org)
	if _, moving := e.movingFrom(org); moving || have == "" || have == want {
		return ""
	}
	return fmt.Sprintf("org asks for AWS region %s but its instance and parameter are in %s; an org's region is fixed while it exists (delete and re-create the org to move it)", want, have)
}

// movingFrom reports the region an org leaves: one committed by an older
// generation of the org, when the current generation asks for another.
// That is an org deleted and re-created in another region before the old
// generation's cascade ran (both events in one batch, or the delete not yet
// reconciled): the new generation is not refused, the old one's AWS
// resources are removed from the old region first (leaveRegion). The same
// generation asking for another region is refused (regionConflict).
func (e *Engine) movingFrom(org state.Org) (string, bool) {
	ob := org.Observed
	if org.Desired.Presence == state.Deleted || ob.Region == "" || ob.Region == e.wantRegion(org) {
		return "", false
	}
	gen := ob.RegionGeneration
	if gen == 0 { // recorded before it was kept: the generation that launched there
		gen = max(ob.InstanceGeneration, ob.LaunchGeneration)
	}
	return ob.Region, gen < max(org.Desired.Generation, 1)
}

// leaveRegion removes an older generation's instances and token parameter
// from the region the org leaves, then forgets the region so the current
// generation pins its own. Every step tolerates "already gone", and the
// region is forgotten only after them: a crash in between repeats them.
func (e *Engine) leaveRegion(ctx context.Context, log *slog.Logger, org *state.Org, from string) error {
	aw, ok := e.regionClouds(from)
	if !ok {
		return &TerminalError{Reason: "RegionNotServed", Err: fmt.Errorf(
			"org %s moves to AWS region %s, but its old generation's instance and parameter are in %s, which this reconciler no longer serves (it serves %s); add the region back (--aws-regions) so they can be removed",
			org.ID, e.wantRegion(*org), from, e.servedList())}
	}
	log.Info("org re-created in another region: removing the old generation's instance and parameter", "from_region", from, "to_region", e.wantRegion(*org))
	insts, err := aw.Instances.OrgInstances(ctx, org.ID)
	if err != nil {
		return fmt.Errorf("org %s: list instances in %s: %w", org.ID, from, err)
	}
	var kill []string
	for _, in := range insts {
		kill = append(kill, in.ID)
	}
	if len(kill) > 0 {
		if err := e.terminateInstances(ctx, log, org.ID, kill, aw); err != nil {
			return err
		}
	}
	if err := e.deleteToken(ctx, log, org.ID, owner.ParamName(e.cfg.ParamPrefix, org.ID), aw); err != nil {
		return err
	}
	err = e.store.Update(org.ID, func(o *state.Org) error {
		if o.Observed.Region != from {
			return nil
		}
		ob := &o.Observed
		ob.Region, ob.RegionGeneration = "", 0
		ob.InstanceID, ob.InstanceGeneration, ob.InstanceTunnelID = "", 0, ""
		ob.ParameterName, ob.ParamTunnelID = "", ""
		ob.LaunchInFlight = false // a launch in flight was the old region's
		return nil
	})
	if err != nil {
		return fmt.Errorf("org %s: record leaving region %s: %w", org.ID, from, err)
	}
	org.Observed.Region = ""
	return nil
}

// pinRegion commits the org's region before its first AWS write, so a
// crash after a write in that region can never lose where it happened.
func (e *Engine) pinRegion(org *state.Org, region string) error {
	if org.Observed.Region == region {
		return nil
	}
	err := e.store.Update(org.ID, func(o *state.Org) error {
		if o.Observed.Region == "" {
			o.Observed.Region, o.Observed.RegionGeneration = region, max(o.Desired.Generation, 1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("org %s: record region %s: %w", org.ID, region, err)
	}
	org.Observed.Region = region
	return nil
}
