package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// deleteOrg runs the cascade of a tombstone: instances, DNS, parameter,
// then the tunnel (whose connections drop with the instances), then marks
// the tombstone done. Every step tolerates "already gone".
func (e *Engine) deleteOrg(ctx context.Context, log *slog.Logger, org state.Org) (Result, error) {
	e.clearPoll(org.ID)
	if c, _ := Condition(org, state.CondDeleting); !c.Status || c.Reason != state.ReasonCascadeRunning {
		now := e.cfg.Now()
		if err := e.store.Update(org.ID, func(o *state.Org) error {
			setCondition(o, state.CondDeleting, true, state.ReasonCascadeRunning, "removing the org's instances, DNS record, token parameter and tunnel", now)
			setCondition(o, state.CondReady, false, "Deleting", "", now)
			o.RemoveCondition(state.CondProvisioning, state.CondDegraded)
			// A rotation in flight ends with the tunnel: an org re-created
			// meanwhile must not resume it on its new one.
			o.Observed.Rotation = nil
			return nil
		}); err != nil {
			return Result{}, fmt.Errorf("org %s: record deleting: %w", org.ID, err)
		}
	}
	d := e.Desired(org)
	_, aw, err := e.deleteRegion(org)
	if err != nil {
		return Result{}, err
	}
	// The lookups by name and comment from shared listings when they pay
	// (tombstone.go); the instances are always described by tag.
	e.tombs.mu.Lock()
	e.tombs.running++
	e.tombs.mu.Unlock()
	defer func() {
		e.tombs.mu.Lock()
		e.tombs.running--
		e.tombs.mu.Unlock()
	}()
	listed, wait, err := e.listedForDelete(ctx, e.tombstoneFloor(org.ID))
	if err != nil {
		return Result{}, fmt.Errorf("org %s: %w", org.ID, err)
	}
	if wait > 0 {
		return Result{RequeueAfter: wait}, nil // the next shared listing serves it
	}
	cf, err := e.deletePool(org, listed)
	if err != nil {
		return Result{}, err
	}
	obs, err := e.observeListed(ctx, org, d, aw, cf, forDelete, listed)
	if err != nil {
		return Result{}, err
	}
	p := plan.Compute(d, obs.plan)
	if e.planned != nil {
		e.planned(org.ID, p)
	}
	for _, c := range p.Changes {
		log.Info("planned change", "resource", c.Resource, "op", c.Op, "target", c.Target, "reason", c.Reason)
	}

	var steps fanOut
	run := steps.run
	var tunnelID string
	var kill []string
	for _, c := range p.Changes {
		switch c.Resource {
		case plan.ResInstance:
			kill = append(kill, c.Target)
		case plan.ResDNS:
			run(func() error { return e.deleteRecord(ctx, log, org.ID, c.Target, cf) })
		case plan.ResToken:
			run(func() error { return e.deleteToken(ctx, log, org.ID, c.Target, aw) })
		case plan.ResTunnel:
			tunnelID = c.Target
		}
	}
	if len(kill) > 0 {
		run(func() error { return e.terminateInstances(ctx, log, org.ID, kill, aw) })
	}
	if err := steps.wait(); err != nil {
		return Result{}, fmt.Errorf("delete org %s: %w", org.ID, err)
	}
	if tunnelID != "" {
		if err := e.deleteTunnel(ctx, log, tunnelID, cf); err != nil {
			return Result{}, fmt.Errorf("delete org %s: %w", org.ID, err)
		}
	}
	// Stamped when the cascade ends, not when it began: Deleted's time is
	// when the last resource was gone.
	now := e.cfg.Now()
	done := false
	err = e.store.Update(org.ID, func(o *state.Org) error {
		if o.Desired.Presence != state.Deleted {
			// Re-created meanwhile: the next reconcile builds it again, in
			// the pool it keeps (its place is not given back).
			return nil
		}
		done = true
		launch := o.Observed
		// The record a cutover replaced stays on the tombstone: the
		// hostname has no record now, and this says what it had.
		o.Observed = state.Observed{DeleteDone: true, ObservedAt: now, LaunchGeneration: launch.LaunchGeneration,
			LaunchAttempt: launch.LaunchAttempt, Replaced: launch.Replaced}
		setCondition(o, state.CondDeleted, true, state.ReasonCascadeDone, "every resource of the org is gone (searched by id, name and tag)", now)
		setCondition(o, state.CondReady, false, "Deleted", "", now)
		// What described the live org no longer applies to a finished tombstone.
		o.RemoveCondition(state.CondDeleting, state.CondConflict, state.CondFailed, state.CondProvisioning, state.CondDegraded)
		o.LastError, o.LastErrorAt = "", time.Time{}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("org %s: record delete done: %w", org.ID, err)
	}
	e.tombs.floors.Delete(org.ID)
	if done {
		e.releasePlacement(ctx, org.ID)
	}
	e.maxAgeDone(org.ID) // a rotation cut short by the delete gives its place back
	log.Info("org deleted; every resource removed")
	return Result{}, nil
}
