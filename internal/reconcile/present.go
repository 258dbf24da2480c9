package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/tunnelward/tunnelward/internal/owner"
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

// adoptRecord records the org's own record at its hostname when bbolt does
// not name it (found by name after a crash before its id was recorded), so
// later passes read it by id instead of searching by name.
func (e *Engine) adoptRecord(log *slog.Logger, org *state.Org, p plan.Result, hostname string) error {
	id := p.KeepRecord
	if id == "" || org.Observed.DNSRecordID == id {
		return nil
	}
	err := e.store.Update(org.ID, func(o *state.Org) error {
		o.Observed.DNSRecordID, o.Observed.DNSName = id, hostname
		org.Observed = o.Observed
		return nil
	})
	if err != nil {
		return fmt.Errorf("org %s: record adopted dns record %s: %w", org.ID, id, err)
	}
	log.Info("adopted unrecorded dns record", "record_id", id, "name", hostname)
	return nil
}

// adoptInstance records the instance the plan keeps when bbolt does not
// name it (a crash between RunInstances and recording its id, or the
// recorded one is gone) and ends a launch left "in flight": the next launch
// then takes a new attempt, and so a new ClientToken, instead of being
// handed back the instance it just replaced.
func (e *Engine) adoptInstance(log *slog.Logger, org *state.Org, ob observation, p plan.Result) error {
	keep := p.KeepInstance
	if keep == "" {
		return nil
	}
	for _, c := range p.Changes {
		if c.Resource == plan.ResInstance && c.Op == plan.OpDelete && c.Target == keep {
			return nil // being replaced: the launch records its successor
		}
	}
	rec := org.Observed
	if rec.InstanceID == keep && !rec.LaunchInFlight {
		return nil
	}
	var gen int64
	for _, in := range ob.instances {
		if in.ID == keep {
			gen = in.Generation
		}
	}
	err := e.store.Update(org.ID, func(o *state.Org) error {
		if o.Observed.InstanceID != keep {
			o.Observed.InstanceID, o.Observed.InstanceGeneration, o.Observed.InstanceTunnelID = keep, gen, ""
		}
		o.Observed.LaunchInFlight = false
		org.Observed = o.Observed
		return nil
	})
	if err != nil {
		return fmt.Errorf("org %s: record adopted instance %s: %w", org.ID, keep, err)
	}
	if rec.InstanceID != keep {
		log.Info("adopted unrecorded instance", "instance_id", keep, "generation", gen, "previously_recorded", rec.InstanceID)
	}
	return nil
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
				err = mutate(ctx, log, "ec2.TerminateInstances", strings.Join(kill, ","), func(ctx context.Context) error {
					return aw.Instances.TerminateInstances(ctx, kill)
				})
				if err != nil && !errors.Is(err, ErrNotFound) {
					err = fmt.Errorf("terminate instances %v: %w", kill, err)
				} else {
					err = nil
				}
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

// tagTokenForInstance tags the token parameter InstanceArn=<the org's
// instance ARN> after a launch, after the token was (re)written, or when a
// non-Ready org's parameter names another instance (a crash between launch
// and tag). The instance role may read only the parameter tagged with its
// own ARN; until then its boot script retries.
func (e *Engine) tagTokenForInstance(ctx context.Context, log *slog.Logger, org state.Org, ob observation,
	launched Instance, tokenPut bool, killed []string, aw RegionClouds) error {
	inst := launched
	if inst.ID == "" {
		for _, in := range ob.instances {
			if slices.Contains(killed, in.ID) {
				continue
			}
			// The recorded instance, or (a crash before it was recorded)
			// the one launched for this generation.
			if in.ID == org.Observed.InstanceID ||
				(org.Observed.InstanceID == "" && in.Generation == org.Desired.Generation) {
				inst = in
			}
		}
	}
	if inst.ID == "" {
		return nil // no instance yet: tagged when it is launched
	}
	stale := ob.paramTagsKnown && ob.paramTags[owner.TagInstanceArn] != inst.ARN
	if launched.ID == "" && !tokenPut && !stale {
		if ob.paramTagsKnown {
			e.tagged.Store(org.ID, inst.ID)
		}
		return nil
	}
	if inst.ARN == "" {
		log.Warn("instance ARN unknown (no owner in the EC2 response); token parameter not tagged", "instance_id", inst.ID)
		return nil
	}
	name := owner.ParamName(e.cfg.ParamPrefix, org.ID)
	err := mutate(ctx, log, "ssm.AddTagsToResource", name, func(ctx context.Context) error {
		return aw.Params.TagParam(ctx, name, map[string]string{owner.TagInstanceArn: inst.ARN})
	})
	if err != nil {
		e.tagged.Delete(org.ID)
		return fmt.Errorf("tag parameter %s with %s=%s: %w", name, owner.TagInstanceArn, inst.ARN, err)
	}
	e.tagged.Store(org.ID, inst.ID)
	return nil
}

// taggedFor reports whether this process tagged (or read back) the org's
// token parameter for instanceID.
func (e *Engine) taggedFor(orgID, instanceID string) bool {
	v, ok := e.tagged.Load(orgID)
	return ok && instanceID != "" && v.(string) == instanceID
}

// ensureTunnel creates the org's tunnel, adopting a live one of the same
// name (ours by its name) when the create says it exists, and records the id.
func (e *Engine) ensureTunnel(ctx context.Context, log *slog.Logger, orgID string) (Tunnel, error) {
	name := owner.TunnelName(orgID)
	var t Tunnel
	err := mutate(ctx, log, "cf.tunnel.create", name, func(ctx context.Context) error {
		var err error
		t, err = e.clouds.Tunnels.CreateTunnel(ctx, name)
		return err
	})
	if errors.Is(err, ErrExists) {
		found, ferr := e.clouds.Tunnels.FindTunnel(ctx, name)
		if ferr != nil {
			return t, fmt.Errorf("find tunnel %s after conflict: %w", name, ferr)
		}
		if found == nil {
			return t, fmt.Errorf("tunnel %s: create says it exists but no live tunnel has the name", name)
		}
		log.Info("adopted existing tunnel", "tunnel_id", found.ID, "tunnel_name", name)
		t, err = *found, nil
	}
	if err != nil {
		return t, fmt.Errorf("create tunnel %s: %w", name, err)
	}
	if err := e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.TunnelID, o.Observed.TunnelName = t.ID, name
		o.Observed.TunnelStatus = t.Status
		o.Observed.IngressHost = ""
		return nil
	}); err != nil {
		return t, fmt.Errorf("record tunnel %s: %w", t.ID, err)
	}
	return t, nil
}

func (e *Engine) putIngress(ctx context.Context, log *slog.Logger, orgID, tunnelID string, d plan.Desired) error {
	err := mutate(ctx, log, "cf.tunnel_config.put", tunnelID, func(ctx context.Context) error {
		return e.clouds.Tunnels.PutIngress(ctx, tunnelID, plan.WantIngress(d))
	})
	if err != nil {
		return fmt.Errorf("put ingress of tunnel %s: %w", tunnelID, err)
	}
	return e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.IngressHost = d.Hostname
		return nil
	})
}

// putToken moves the tunnel token from Cloudflare into SSM. The token lives
// only in this function's stack.
func (e *Engine) putToken(ctx context.Context, log *slog.Logger, orgID, tunnelID string, aw RegionClouds) error {
	tok, err := e.clouds.Tunnels.Token(ctx, tunnelID)
	if err != nil {
		return fmt.Errorf("get token of tunnel %s: %w", tunnelID, err)
	}
	name := owner.ParamName(e.cfg.ParamPrefix, orgID)
	tags := map[string]string{owner.TagManagedBy: owner.ManagedBy, owner.TagOrgID: orgID, owner.TagTunnelID: tunnelID}
	err = mutate(ctx, log, "ssm.PutParameter", name, func(ctx context.Context) error {
		return aw.Params.PutToken(ctx, name, tok, tags)
	})
	if err != nil {
		return fmt.Errorf("put token parameter %s: %w", name, err)
	}
	return e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.ParameterName, o.Observed.ParamTunnelID = name, tunnelID
		return nil
	})
}

// restartCloudflared restarts cloudflared on an instance through SSM (a
// health remedy, or to pick up a replaced tunnel's token: it reads the
// parameter again as it starts).
func (e *Engine) restartCloudflared(ctx context.Context, log *slog.Logger, orgID, instanceID, tunnelID string, aw RegionClouds) error {
	err := mutate(ctx, log, "ssm.SendCommand", instanceID, func(ctx context.Context) error {
		_, err := aw.Commands.RestartCloudflared(ctx, instanceID)
		return err
	})
	if err != nil {
		return fmt.Errorf("restart cloudflared on %s: %w", instanceID, err)
	}
	// The TunnelID tag stays as launched; bbolt remembers what the instance
	// now runs (see effectiveTunnel).
	if err := e.store.Update(orgID, func(o *state.Org) error {
		if o.Observed.InstanceID == instanceID {
			o.Observed.InstanceTunnelID = tunnelID
		}
		return nil
	}); err != nil {
		return fmt.Errorf("record tunnel %s of instance %s: %w", tunnelID, instanceID, err)
	}
	return nil
}

// effectiveTunnel is the tunnel an instance's cloudflared runs: its tag,
// unless bbolt records a restart for a newer tunnel.
func effectiveTunnel(rec state.Observed, in Instance) string {
	if rec.InstanceTunnelID != "" && in.ID == rec.InstanceID {
		return rec.InstanceTunnelID
	}
	return in.TunnelID
}

// applyDNS deletes owned records that are not the org's hostname first
// (so a crash never strands one under an old slug), then creates or fixes
// the org's CNAME. It returns conflicts found on the way.
func (e *Engine) applyDNS(ctx context.Context, log *slog.Logger, org state.Org, d plan.Desired, tunnelID string, changes []plan.Change) ([]plan.Conflict, error) {
	target := plan.TunnelTarget(tunnelID)
	comment := owner.DNSComment(org.ID)
	for _, c := range changes {
		if c.Op != plan.OpDelete {
			continue
		}
		err := mutate(ctx, log, "cf.dns.delete", c.Target, func(ctx context.Context) error {
			return e.clouds.DNS.DeleteRecord(ctx, c.Target)
		})
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("delete dns record %s: %w", c.Target, err)
		}
		if err := e.store.Update(org.ID, func(o *state.Org) error {
			if o.Observed.DNSRecordID == c.Target {
				o.Observed.DNSRecordID, o.Observed.DNSName = "", ""
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("record deletion of dns record %s: %w", c.Target, err)
		}
	}
	for _, c := range changes {
		var rec plan.Record
		var err error
		switch c.Op {
		case plan.OpUpdate:
			err = mutate(ctx, log, "cf.dns.update", c.Target, func(ctx context.Context) error {
				rec, err = e.clouds.DNS.UpdateCNAME(ctx, c.Target, d.Hostname, target, comment)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("update dns record %s: %w", c.Target, err)
			}
		case plan.OpCreate:
			err = mutate(ctx, log, "cf.dns.create", d.Hostname, func(ctx context.Context) error {
				rec, err = e.clouds.DNS.CreateCNAME(ctx, d.Hostname, target, comment)
				return err
			})
			if errors.Is(err, ErrExists) {
				found, ferr := e.clouds.DNS.FindRecords(ctx, d.Hostname)
				if ferr != nil {
					return nil, fmt.Errorf("find dns records named %s after conflict: %w", d.Hostname, ferr)
				}
				var mine *plan.Record
				var conflicts []plan.Conflict
				for i, f := range found {
					if owner, ok := owner.OrgFromDNSComment(f.Comment); ok && owner == org.ID {
						if mine == nil {
							mine = &found[i]
						}
						continue
					}
					conflicts = append(conflicts, plan.Conflict{Resource: plan.ResDNS, Target: f.Name,
						Reason: fmt.Sprintf("%s record %s (%s) exists and is not owned by org %s", f.Type, f.Name, f.ID, org.ID)})
				}
				if len(conflicts) > 0 || mine == nil {
					if len(conflicts) == 0 {
						return nil, fmt.Errorf("dns create of %s says it exists but no record has the name", d.Hostname)
					}
					log.Warn("dns record not owned by tunnelward; left untouched", "name", d.Hostname, "detail", conflicts[0].Reason)
					return conflicts, nil
				}
				rec, err = *mine, nil
				log.Info("adopted owned dns record", "record_id", rec.ID, "name", rec.Name)
				if rec.Type != "CNAME" || !strings.EqualFold(rec.Content, target) || !rec.Proxied {
					err = mutate(ctx, log, "cf.dns.update", rec.ID, func(ctx context.Context) error {
						rec, err = e.clouds.DNS.UpdateCNAME(ctx, rec.ID, d.Hostname, target, comment)
						return err
					})
				}
			}
			if err != nil {
				return nil, fmt.Errorf("create dns record %s: %w", d.Hostname, err)
			}
		default:
			continue
		}
		if err := e.store.Update(org.ID, func(o *state.Org) error {
			o.Observed.DNSRecordID, o.Observed.DNSName = rec.ID, d.Hostname
			return nil
		}); err != nil {
			return nil, fmt.Errorf("record dns record %s: %w", rec.ID, err)
		}
	}
	return nil, nil
}

// launchInstance runs the org's instance in aw's region and returns it (its
// ARN tags the token). The attempt number is committed before the call: a
// crash mid-call retries with the same ClientToken and gets the same
// reservation back instead of a second instance.
func (e *Engine) launchInstance(ctx context.Context, log *slog.Logger, orgID string, d plan.Desired, typeOverride, tunnelID string, aw RegionClouds) (Instance, error) {
	var gen int64
	var attempt int
	err := e.store.Update(orgID, func(o *state.Org) error {
		ob := &o.Observed
		switch {
		case ob.LaunchGeneration != d.Generation:
			ob.LaunchGeneration, ob.LaunchAttempt = d.Generation, 1
		case !ob.LaunchInFlight:
			ob.LaunchAttempt++
		}
		ob.LaunchInFlight = true
		gen, attempt = ob.LaunchGeneration, ob.LaunchAttempt
		return nil
	})
	if err != nil {
		return Instance{}, fmt.Errorf("record launch attempt: %w", err)
	}
	param := owner.ParamName(e.cfg.ParamPrefix, orgID)
	ud, err := e.clouds.UserData(orgID, param)
	if err != nil {
		return Instance{}, Terminal(fmt.Errorf("render user-data: %w", err))
	}
	spec := RunSpec{
		ClientToken: owner.ClientToken(orgID, gen, int64(attempt)), ImageID: aw.Instance.ImageID,
		InstanceType: aw.Instance.InstanceType, SubnetID: aw.Instance.SubnetID,
		SecurityGroupIDs: aw.Instance.SecurityGroupIDs, InstanceProfile: aw.Instance.InstanceProfile,
		UserData: ud,
		Tags: map[string]string{owner.TagManagedBy: owner.ManagedBy, owner.TagOrgID: orgID,
			owner.TagTunnelID: tunnelID, owner.TagGeneration: fmt.Sprint(gen), owner.TagName: owner.InstanceName(orgID)},
	}
	if typeOverride != "" {
		spec.InstanceType = typeOverride
	}
	var inst Instance
	err = mutate(ctx, log, "ec2.RunInstances", spec.ClientToken, func(ctx context.Context) error {
		var err error
		inst, err = aw.Instances.RunInstance(ctx, spec)
		return err
	})
	if errors.Is(err, ErrTokenMismatch) {
		// The spec changed under a reused token; the next try takes a new attempt.
		_ = e.store.Update(orgID, func(o *state.Org) error { o.Observed.LaunchInFlight = false; return nil })
	}
	if err != nil {
		return Instance{}, fmt.Errorf("run instance (client token %s): %w", spec.ClientToken, err)
	}
	if inst.State == "shutting-down" || inst.State == "terminated" {
		// EC2 idempotency handed back this token's earlier launch, which has
		// since been terminated: the next try takes a new attempt.
		if uerr := e.store.Update(orgID, func(o *state.Org) error { o.Observed.LaunchInFlight = false; return nil }); uerr != nil {
			return Instance{}, fmt.Errorf("record ended launch attempt: %w", uerr)
		}
		return Instance{}, fmt.Errorf("run instance (client token %s): EC2 returned instance %s, already %s; retrying with a new attempt",
			spec.ClientToken, inst.ID, inst.State)
	}
	return inst, e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.InstanceID, o.Observed.InstanceGeneration = inst.ID, gen
		o.Observed.InstanceTunnelID = ""
		o.Observed.LaunchInFlight = false
		return nil
	})
}
