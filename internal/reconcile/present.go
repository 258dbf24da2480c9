package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

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
		host = strings.ToLower(org.Desired.Slug + "." + e.cfg.ZoneName)
	}
	return plan.Desired{OrgID: org.ID, Present: org.Desired.Presence != state.Deleted,
		Hostname: host, Service: e.cfg.Service, Generation: gen}
}

// observation is what the reads of one reconcile found.
type observation struct {
	plan      plan.Observed
	tunnel    *Tunnel    // nil: none recorded or it is gone
	instances []Instance // live-ish (not terminated) owned instances
	// paramTags are the token parameter's tags, read only while an org with
	// an instance is not Ready (paramTagsKnown): a crash between launch and
	// tagging leaves the InstanceArn tag stale, and the instance cannot
	// read its token until it is fixed.
	paramTags      map[string]string
	paramTagsKnown bool
}

// observePresent reads what is recorded, by id, plus the instances by tag.
// What is not recorded is not searched for: creation goes first and adopts
// on "already exists" (docs/decisions.md), which saves a list call per
// resource on the common path.
func (e *Engine) observePresent(ctx context.Context, org state.Org, d plan.Desired, aw RegionClouds) (observation, error) {
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
	rec := org.Observed
	ob.plan.RecordsKnown, ob.plan.ParamKnown, ob.plan.InstanceKnown = true, true, true

	if rec.TunnelID != "" {
		wg.Add(2)
		go func() {
			defer wg.Done()
			t, err := e.clouds.Tunnels.GetTunnel(ctx, rec.TunnelID)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				fail("get tunnel "+rec.TunnelID, err)
			case !t.Deleted:
				mu.Lock()
				ob.tunnel = &t
				mu.Unlock()
			}
		}()
		go func() {
			defer wg.Done()
			rules, err := e.clouds.Tunnels.GetIngress(ctx, rec.TunnelID)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				fail("get ingress of tunnel "+rec.TunnelID, err)
			default:
				mu.Lock()
				ob.plan.Ingress, ob.plan.IngressKnown = rules, true
				mu.Unlock()
			}
		}()
	}

	// By name too when no record is recorded (a new org, or a crash before
	// the id reached bbolt): a name held by another party's record must be
	// seen before anything billable is built (plan withholds it).
	// And when the recorded record has another name (a slug change whose
	// new record may exist unrecorded).
	findFirst := (IsTrue(org, state.CondConflict) || rec.DNSRecordID == "" || !strings.EqualFold(rec.DNSName, d.Hostname)) &&
		d.Hostname != ""
	if rec.DNSRecordID != "" || findFirst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var recs []plan.Record
			if rec.DNSRecordID != "" {
				r, err := e.clouds.DNS.GetRecord(ctx, rec.DNSRecordID)
				switch {
				case errors.Is(err, ErrNotFound):
				case err != nil:
					fail("get dns record "+rec.DNSRecordID, err)
					return
				default:
					recs = append(recs, r)
				}
			}
			if findFirst {
				found, err := e.clouds.DNS.FindRecords(ctx, d.Hostname)
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
			mu.Lock()
			ob.plan.Records = recs
			mu.Unlock()
		}()
	}

	// The tag is read back when this process has not seen it for the
	// instance (a crash between launch and tag), and while a remediation is
	// pending: a wrong tag keeps a restarted cloudflared out, and re-tagging
	// is one call where replacing the instance would be a boot.
	if rec.ParameterName != "" && (rec.InstanceID != "" || rec.LaunchInFlight) && !IsTrue(org, state.CondReady) &&
		(!e.taggedFor(org.ID, rec.InstanceID) || pendingRemediation(org) != nil) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tags, err := aw.Params.ParamTags(ctx, rec.ParameterName)
			switch {
			case errors.Is(err, ErrNotFound): // the token step re-creates it, then it is tagged
			case err != nil:
				fail("read tags of parameter "+rec.ParameterName, err)
			default:
				mu.Lock()
				ob.paramTags, ob.paramTagsKnown = tags, true
				mu.Unlock()
			}
		}()
	}
	if rec.ParameterName != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := aw.Params.DescribeParam(ctx, rec.ParameterName)
			if err != nil {
				fail("describe parameter "+rec.ParameterName, err)
				return
			}
			if p != nil {
				mu.Lock()
				ob.plan.Param = &plan.Param{Name: p.Name, TunnelID: rec.ParamTunnelID}
				mu.Unlock()
			}
		}()
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		ins, err := aw.Instances.OrgInstances(ctx, org.ID)
		if err != nil {
			fail("describe instances", err)
			return
		}
		mu.Lock()
		ob.instances = ins
		mu.Unlock()
	}()
	wg.Wait()
	if len(errs) > 0 {
		return ob, fmt.Errorf("observe org %s: %w", org.ID, errors.Join(errs...))
	}
	if ob.tunnel != nil {
		ob.plan.Tunnel = &plan.Tunnel{ID: ob.tunnel.ID, Status: ob.tunnel.Status}
	} else {
		ob.plan.Ingress, ob.plan.IngressKnown = nil, false
	}
	for _, in := range ob.instances {
		ob.plan.Instances = append(ob.plan.Instances, plan.Instance{ID: in.ID, State: in.State,
			TunnelID: effectiveTunnel(org.Observed, in), Generation: in.Generation})
	}
	return ob, nil
}

// presentOrg converges an org that should exist.
func (e *Engine) presentOrg(ctx context.Context, log *slog.Logger, org state.Org) (Result, error) {
	d := e.Desired(org)
	if d.Hostname == "" {
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

	// The org's AWS region, committed before anything is written there.
	region, aw, err := e.regionFor(org)
	if err != nil {
		return Result{}, err
	}
	if err := e.pinRegion(&org, region); err != nil {
		return Result{}, err
	}

	if res, done, err := e.readinessPoll(ctx, log, org); done || err != nil {
		return res, err
	}

	ob, err := e.observePresent(ctx, org, d, aw)
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
	if first := plan.Compute(d, ob.plan); hasChange(first, plan.ResTunnel, plan.OpCreate) {
		t, err := e.ensureTunnel(ctx, log, org.ID)
		if err != nil {
			return Result{}, fmt.Errorf("org %s: %w", org.ID, err)
		}
		tunnelCreated = true
		ob.tunnel = &t
		ob.plan.Tunnel = &plan.Tunnel{ID: t.ID, Status: t.Status}
		ob.plan.Ingress, ob.plan.IngressKnown = nil, true // a new (or adopted) tunnel's ingress is written once
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
	if e.planned != nil {
		e.planned(org.ID, p)
	}
	for _, c := range p.Changes {
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

	ap, applyErr := e.apply(ctx, log, org, d, ob, p, aw)
	ap.tunnelCreated = tunnelCreated
	if hv.restart != nil && ap.restartErr != nil {
		_ = e.finishRemediation(org.ID, ActRestart, OutcomeFailed, ap.restartErr.Error(), now)
	}

	return e.recordOutcome(ctx, log, org, d, ob, p, ap, hv, applyErr, now)
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
func (e *Engine) apply(ctx context.Context, log *slog.Logger, org state.Org, d plan.Desired, ob observation, p plan.Result, aw RegionClouds) (applied, error) {
	ap := applied{conflicts: p.Conflicts}
	if ob.tunnel != nil {
		ap.tunnelID = ob.tunnel.ID
	}
	by := map[plan.Resource][]plan.Change{}
	for _, c := range p.Changes {
		by[c.Resource] = append(by[c.Resource], c)
	}
	if ap.tunnelID == "" {
		return ap, nil // nothing else can be done without a tunnel
	}

	var (
		steps fanOut
		mu    sync.Mutex // guards ap.conflicts
	)
	run := steps.run
	if len(by[plan.ResIngress]) > 0 {
		run(func() error { return e.putIngress(ctx, log, org.ID, ap.tunnelID, d) })
	}
	if hasOp(by[plan.ResDNS], plan.OpCreate) {
		// The hostname is claimed before anything billable is made: when
		// another party's record holds it (two orgs with one slug, created at
		// once), no token or instance is built for an org that could never
		// serve. One DNS call on the critical path of a new org buys that.
		cs, err := e.applyDNS(ctx, log, org, d, ap.tunnelID, by[plan.ResDNS])
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
				if err := e.putToken(ctx, log, org.ID, ap.tunnelID, aw); err != nil {
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
			cs, err := e.applyDNS(ctx, log, org, d, ap.tunnelID, by[plan.ResDNS])
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
	if err := e.tagTokenForInstance(ctx, log, org, ob, launchedInst, len(by[plan.ResToken]) > 0, kill, aw); err != nil {
		return ap, fmt.Errorf("org %s: %w", org.ID, err)
	}
	return ap, nil
}
