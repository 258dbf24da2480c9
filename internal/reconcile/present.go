package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Desired resolves an org's record against the engine's configuration.
func (e *Engine) Desired(org state.Org) plan.Desired {
	gen := org.Desired.Generation
	if gen <= 0 {
		gen = 1
	}
	host := ""
	if org.Desired.Slug != "" {
		host = strings.ToLower(org.Desired.Slug + "." + e.zoneOf(org))
	}
	return plan.Desired{OrgID: org.ID, Present: org.Desired.Presence != state.Deleted,
		Hostname: host, Service: e.cfg.Service, Generation: gen, Takeover: pendingTakeover(org)}
}

// presentOrg converges an org that should exist.
func (e *Engine) presentOrg(ctx context.Context, log *slog.Logger, org state.Org) (Result, error) {
	if org.Desired.Slug == "" {
		return Result{}, Terminal(fmt.Errorf("org %s: no slug in desired state", org.ID))
	}
	now := e.cfg.Now()
	if org.Observed.DeleteDone || IsTrue(org, state.CondDeleted) || IsTrue(org, state.CondDeleting) || IsTrue(org, state.CondFailed) {
		// Re-created after (or during) a delete, or retried
		// after a terminal failure: start from clean ids; launch
		// bookkeeping stays so ClientTokens never repeat.
		err := e.store.Update(org.ID, func(o *state.Org) error {
			if o.Observed.DeleteDone {
				o.Observed = state.Observed{LaunchGeneration: o.Observed.LaunchGeneration,
					LaunchAttempt: o.Observed.LaunchAttempt}
			}
			// A re-created org is a new org: the old generation's delete
			// conditions no longer apply, and a retried failure is gone.
			o.RemoveCondition(state.CondDeleted, state.CondDeleting, state.CondFailed)
			return nil
		})
		if err != nil {
			return Result{}, fmt.Errorf("org %s: reset observed state: %w", org.ID, err)
		}
		if org, _, err = e.store.Get(org.ID); err != nil {
			return Result{}, fmt.Errorf("org %s: reread state: %w", org.ID, err)
		}
	}

	// An older generation's region left behind first (re-created elsewhere).
	if from, moving := e.movingFrom(org); moving {
		if err := e.leaveRegion(ctx, log, &org, from); err != nil {
			return Result{}, err
		}
	}
	// The org's AWS region, committed before anything is written there.
	region, aw, err := e.regionFor(org)
	if err != nil {
		return Result{}, err
	}
	if err := e.pinRegion(&org, region); err != nil {
		return Result{}, err
	}
	// Its Cloudflare pool likewise, before anything is written there; the
	// hostname is in the pool's zone.
	cf, err := e.place(ctx, log, &org)
	if err != nil {
		return Result{}, err
	}
	d := e.Desired(org)

	if res, done, err := e.readinessPoll(ctx, log, org); done || err != nil {
		return res, err
	}
	if res, done, err := e.rotationPoll(ctx, log, org, cf); done || err != nil {
		return res, err
	}

	ob, err := e.observe(ctx, org, d, aw, cf, forPass)
	if err != nil {
		return Result{}, err
	}
	if ob.tunnel == nil && org.Observed.TunnelID != "" {
		log.Info("recorded tunnel is gone; it is recreated", "tunnel_id", org.Observed.TunnelID)
	}
	// The tunnel first: every other resource names it, so ingress, token,
	// DNS and instance are decided in this same pass with it in place. The
	// plan decides whether it is created (a conflict withholds it).
	tunnelCreated := false
	var tunnelChange plan.Change
	if p0 := plan.Compute(d, ob.plan); ob.plan.Tunnel == nil && hasChange(p0, plan.ResTunnel, plan.OpCreate) {
		tunnelChange = p0.Changes[slices.IndexFunc(p0.Changes, func(c plan.Change) bool { return c.Resource == plan.ResTunnel })]
		t, err := e.ensureTunnel(ctx, log, org.ID, cf)
		if err != nil {
			return Result{}, fmt.Errorf("org %s: %w", org.ID, err)
		}
		tunnelCreated = true
		ob.tunnel = &t
		ob.plan.Tunnel = &plan.Tunnel{ID: t.ID, Status: t.Status}
		ob.plan.Ingress, ob.plan.IngressKnown = nil, true // a new (or adopted) tunnel's ingress is written once
	}
	// Then the hostname, claimed by creating its record (a batch with the
	// other orgs in flight) instead of reading the name first: what the
	// create found joins the observation, so the plan below keeps the org's
	// record, or withholds every creation when another party holds the
	// name. Nothing billable exists before this; a tunnel this pass made
	// for the claim is withdrawn again, so the org is left exactly as a
	// read by name would have left it.
	if ob.claim && ob.tunnel != nil && hasChange(plan.Compute(d, ob.plan), plan.ResDNS, plan.OpCreate) {
		found, held, err := e.claimHostname(ctx, log, &org, d, ob.tunnel.ID, cf)
		if err != nil {
			return Result{}, err
		}
		ob.plan.Records = append(ob.plan.Records, found...)
		if held && tunnelCreated {
			if err := e.withdrawTunnel(ctx, log, org.ID, ob.tunnel.ID, cf); err != nil {
				return Result{}, fmt.Errorf("org %s: withdraw tunnel made for the hostname claim: %w", org.ID, err)
			}
			tunnelCreated, ob.tunnel, ob.plan.Tunnel = false, nil, nil
			ob.plan.Ingress, ob.plan.IngressKnown = nil, false
		}
	}

	// The health verdict is an input of the plan: a restart or a
	// replacement joins it as changes, a reached remediation limit holds a
	// replacement back. Nothing edits the plan after this.
	hv := verdict{}
	if !tunnelCreated {
		hv = e.diagnose(org, ob, d, now)
	}
	ob.plan.Remedy = hv.remedy()
	p := plan.Compute(d, ob.plan)
	// The pass's plan as shown: with the tunnel create it made first.
	shown := p
	if tunnelCreated {
		shown.Changes = append([]plan.Change{tunnelChange}, p.Changes...)
	}
	if e.planned != nil {
		e.planned(org.ID, shown)
	}
	for _, c := range shown.Changes {
		log.Info("planned change", "resource", c.Resource, "op", c.Op, "target", c.Target, "reason", c.Reason)
	}
	if err := e.recordRemediationStart(org.ID, hv, now); err != nil {
		return Result{}, err
	}
	if err := e.adoptRecord(log, &org, p, d.Hostname); err != nil {
		return Result{}, err
	}
	if err := e.adoptInstance(log, &org, ob, p); err != nil {
		return Result{}, err
	}

	ap, applyErr := e.apply(ctx, log, org, d, ob, p, aw, cf)
	ap.tunnelCreated = tunnelCreated
	if ob.plan.Rotation.Stuck && ap.launched && applyErr == nil {
		// The replacement boots on the new token: its grace starts now.
		if err := e.rotationRestarted(org.ID); err != nil {
			return Result{}, err
		}
	}
	if hv.restart != nil && ap.restartErr != nil {
		_ = e.finishRemediation(org.ID, ActRestart, OutcomeFailed, ap.restartErr.Error(), now)
	}

	res, err := e.recordOutcome(ctx, log, org, d, ob, p, ap, hv, applyErr, now)
	if err == nil && (hasOp(p.Changes, plan.OpRotate) || org.Observed.Rotation != nil) && !hasOp(p.Changes, plan.OpRotated) {
		// A rotation waits for its connector: look again soon (rotationPoll);
		// one stuck past its replacements only at the sweep's pace (an
		// operator's fix shows there), saying so.
		after := e.rotationPollAfter()
		if c, held := plan.RotationHeld(p); held {
			log.Warn("token rotation stuck: no connector on the new token", "detail", c.Reason)
			after = max(after, e.cfg.SweepInterval, time.Minute)
		}
		if res.RequeueAfter == 0 || after < res.RequeueAfter {
			res.RequeueAfter = after
		}
	}
	return res, err
}

func hasChange(p plan.Result, res plan.Resource, op plan.Op) bool {
	return slices.ContainsFunc(p.Changes, func(c plan.Change) bool { return c.Resource == res && c.Op == op })
}

func hasOp(cs []plan.Change, op plan.Op) bool {
	return slices.ContainsFunc(cs, func(c plan.Change) bool { return c.Op == op })
}

func withoutOp(cs []plan.Change, op plan.Op) []plan.Change {
	return slices.DeleteFunc(slices.Clone(cs), func(c plan.Change) bool { return c.Op == op })
}

// applied is what apply changed.
type applied struct {
	restartErr     error // a cloudflared restart failed (the remediation's outcome)
	tunnelID       string
	tunnelCreated  bool
	launched       bool
	conflicts      []plan.Conflict
	instanceChange bool
}

// apply carries out a plan: the tunnel first (everything names it), then
// every independent step at once.
func (e *Engine) apply(ctx context.Context, log *slog.Logger, org state.Org, d plan.Desired, ob observation, p plan.Result, aw RegionClouds, cf PoolClouds) (applied, error) {
	ap := applied{conflicts: p.Conflicts}
	if ob.tunnel != nil {
		ap.tunnelID = ob.tunnel.ID
	}
	by := map[plan.Resource][]plan.Change{}
	var rotation []plan.Change
	for _, c := range p.Changes {
		if c.Op == plan.OpRotate || c.Op == plan.OpDrop || c.Op == plan.OpRotated {
			rotation = append(rotation, c)
			continue
		}
		by[c.Resource] = append(by[c.Resource], c)
	}
	if ap.tunnelID == "" {
		return ap, nil // nothing else can be done without a tunnel
	}
	// A rotation's steps first: they are ordered (secret, token, restart),
	// and a restart must not race the pass's other instance steps.
	if len(rotation) > 0 {
		if err := e.applyRotation(ctx, log, org, ap.tunnelID, p.KeepInstance, ob, rotation, aw, cf); err != nil {
			return ap, err
		}
	}

	var (
		steps fanOut
		mu    sync.Mutex // guards ap.conflicts
	)
	run := steps.run
	if len(by[plan.ResIngress]) > 0 {
		run(func() error { return e.putIngress(ctx, log, org.ID, ap.tunnelID, d, cf) })
	}
	if hasOp(by[plan.ResDNS], plan.OpCreate) {
		// The hostname is claimed before anything billable is made: when
		// another party's record holds it (two orgs with one slug, created at
		// once), no token or instance is built for an org that could never
		// serve. One DNS call on the critical path of a new org buys that.
		cs, err := e.applyDNS(ctx, log, org, d, ap.tunnelID, by[plan.ResDNS], ob.plan.Records, cf)
		if err == nil && len(cs) > 0 {
			ap.conflicts = append(ap.conflicts, cs...)
			by[plan.ResToken] = withoutOp(by[plan.ResToken], plan.OpCreate)
			by[plan.ResInstance] = withoutOp(by[plan.ResInstance], plan.OpCreate)
			log.Warn("hostname held by a record tunnelward does not own; token and instance not built", "name", d.Hostname)
		}
		delete(by, plan.ResDNS)
		if err != nil {
			return ap, errors.Join(fmt.Errorf("org %s: %w", org.ID, err), steps.wait())
		}
	}
	var restarts []plan.Change
	for _, c := range by[plan.ResInstance] {
		if c.Op == plan.OpRestart {
			restarts = append(restarts, c)
		}
	}
	if len(by[plan.ResToken]) > 0 || len(restarts) > 0 {
		run(func() error {
			if len(by[plan.ResToken]) > 0 {
				if err := e.putToken(ctx, log, org.ID, ap.tunnelID, aw, cf); err != nil {
					return err
				}
			}
			// cloudflared re-reads the parameter on restart; only after the put.
			for _, c := range restarts {
				if err := e.restartCloudflared(ctx, log, org.ID, c.Target, ap.tunnelID, aw); err != nil {
					mu.Lock()
					ap.restartErr = err
					mu.Unlock()
					return err
				}
			}
			return nil
		})
	}
	if len(by[plan.ResDNS]) > 0 {
		run(func() error {
			cs, err := e.applyDNS(ctx, log, org, d, ap.tunnelID, by[plan.ResDNS], ob.plan.Records, cf)
			mu.Lock()
			ap.conflicts = append(ap.conflicts, cs...)
			mu.Unlock()
			return err
		})
	}
	var kill []string
	create := false
	for _, c := range by[plan.ResInstance] {
		switch c.Op {
		case plan.OpDelete:
			kill = append(kill, c.Target)
		case plan.OpCreate:
			create = true
		}
	}
	var launchedInst Instance
	if len(kill) > 0 || create {
		ap.instanceChange = true
		ap.launched = create
		run(func() error {
			var err error
			if len(kill) > 0 {
				err = e.terminateInstances(ctx, log, org.ID, kill, aw)
			}
			if create {
				inst, lerr := e.launchInstance(ctx, log, org.ID, d, org.Desired.InstanceType, ap.tunnelID, aw)
				if lerr != nil {
					err = errors.Join(err, lerr)
				}
				launchedInst = inst
			}
			return err
		})
	}
	if err := steps.wait(); err != nil {
		return ap, fmt.Errorf("org %s: %w", org.ID, err)
	}
	// Only after both the token and the instance are in place: the tag
	// names the instance on the parameter.
	if err := e.tagTokenForInstance(ctx, log, org, ob, launchedInst, len(by[plan.ResToken]) > 0, p.KeepInstance, aw); err != nil {
		return ap, fmt.Errorf("org %s: %w", org.ID, err)
	}
	return ap, nil
}
