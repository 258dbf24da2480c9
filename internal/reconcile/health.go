package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Remediation actions and outcomes as recorded in an org's history.
const (
	ActFalseAlarm = "false_alarm"
	ActRestart    = "restart_cloudflared"
	ActReplace    = "replace_instance"

	OutcomeOK      = "ok"
	OutcomeFailed  = "failed"
	OutcomePending = "pending"
)

// verdict is what the health diagnosis decided for one reconcile.
type verdict struct {
	restart          *Instance // restart cloudflared on it
	replace          *Instance // terminate it and launch a new one
	resumeReplace    bool      // replace continues a pending replacement (no new record)
	replaceStopped   string    // the plan replaces a stopped instance: record it (detail)
	suppressInstance bool      // rate limit reached: leave the stopped instance be
	falseAlarm       bool
	handleReports    bool
	resolvePending   string // outcome for the pending remediation
	degraded         string // reason for a Degraded condition, "" for none
	detail           string
	wait             time.Duration
}

func pendingRemediation(o state.Org) *state.Remediation {
	for i := len(o.Remediations) - 1; i >= 0; i-- {
		if o.Remediations[i].Outcome == OutcomePending {
			return &o.Remediations[i]
		}
	}
	return nil
}

func unhandledReports(o state.Org) int {
	n := 0
	for _, r := range o.HealthReports {
		if !r.Handled {
			n++
		}
	}
	return n
}

// rateLimited reports whether the org used up its repairs for the window,
// and when the oldest of them leaves it.
func (e *Engine) rateLimited(o state.Org, now time.Time) (bool, time.Duration) {
	var inWindow []time.Time
	for _, r := range o.Remediations {
		if (r.Action == ActRestart || r.Action == ActReplace) && now.Sub(r.At) < e.cfg.RemediationWindow {
			inWindow = append(inWindow, r.At)
		}
	}
	if len(inWindow) < e.cfg.RemediationLimit {
		return false, 0
	}
	return true, inWindow[0].Add(e.cfg.RemediationWindow).Sub(now) + time.Second
}

// diagnose looks at the tunnel's status and the org's instance and decides
// whether to wait, call a report a false alarm, restart cloudflared or
// replace the instance.
func (e *Engine) diagnose(org state.Org, ob observation, d plan.Desired, now time.Time) verdict {
	var v verdict
	unhandled := unhandledReports(org)
	pending := pendingRemediation(org)
	limited, until := e.rateLimited(org, now)

	deletes, launch, keep := plan.InstanceWork(d, ob.plan)
	if deletes > 0 && launch {
		// The plan replaces a stopped (or gone-wrong) instance: a remediation.
		if limited {
			v.suppressInstance = true
			v.degraded, v.detail, v.wait = "RemediationRateLimited", "instance needs replacing; remediation limit reached", until
			return v
		}
		v.replaceStopped = "instance stopped or from an older generation; replaced"
		v.handleReports = unhandled > 0
		if pending != nil {
			v.resolvePending = OutcomeFailed
		}
		return v
	}
	if ob.tunnel == nil || launch {
		return v // provisioning: nothing to diagnose yet
	}
	if r := org.Observed.Rotation; r != nil && r.Phase == plan.RotateConnect && !ob.plan.Rotation.Stuck {
		// cloudflared was restarted on a new token: the rotation waits for
		// its connector (and replaces the instance when it is stuck).
		return v
	}
	// The instance whose health is judged is the one the plan keeps.
	var live *Instance
	for i := range ob.instances {
		if ob.instances[i].ID == keep {
			live = &ob.instances[i]
		}
	}
	if live == nil {
		return v
	}
	status := ob.tunnel.Status
	if status == "healthy" {
		if pending != nil {
			v.resolvePending = OutcomeOK
		} else if unhandled > 0 {
			v.falseAlarm = true
		}
		v.handleReports = unhandled > 0
		return v
	}
	if live.State != "running" {
		v.wait = e.cfg.PollInterval // still booting
		return v
	}
	sinceLaunch := now.Sub(live.LaunchTime)
	if live.LaunchTime.IsZero() {
		sinceLaunch = e.cfg.BootConnect + e.cfg.HealthGrace + time.Second
	}
	connecting := status == "inactive" && sinceLaunch < e.cfg.BootConnect+e.cfg.HealthGrace
	if connecting && pending == nil {
		v.wait = e.cfg.PollInterval
		return v
	}
	if status == "degraded" && unhandled == 0 && pending == nil {
		// Some connections are up and traffic flows: a restart would drop
		// them all. Watch it; a health report or "down" triggers repair.
		v.degraded, v.detail = "TunnelDegraded", "tunnel has fewer connections than a healthy connector"
		v.wait = e.cfg.HealthGrace
		return v
	}
	v.handleReports = unhandled > 0
	v.degraded, v.detail = "TunnelNotHealthy", fmt.Sprintf("tunnel status %s with instance %s running", status, live.ID)
	doRestart := func() {
		if limited {
			v.degraded, v.detail, v.wait = "RemediationRateLimited", v.detail+"; remediation limit reached", until
			return
		}
		v.restart = live
		// Look again soon: a restart usually reconnects in seconds, and the
		// remediation is resolved the moment the tunnel is healthy; the grace
		// only bounds how long it may take before the instance is replaced.
		v.wait = min(e.cfg.HealthGrace, e.cfg.PollInterval)
	}
	if pending == nil {
		doRestart()
		return v
	}
	age := now.Sub(pending.At)
	switch pending.Action {
	case ActRestart:
		if age < e.cfg.HealthGrace {
			v.wait = min(e.cfg.HealthGrace-age, e.cfg.PollInterval)
			return v
		}
		v.resolvePending = OutcomeFailed
		if limited {
			v.degraded, v.detail, v.wait = "RemediationRateLimited", v.detail+"; restart did not help and the remediation limit is reached", until
			return v
		}
		v.replace = live
		v.wait = e.cfg.BootConnect
	case ActReplace:
		if live.LaunchTime.Before(pending.At) {
			// The replacement was recorded but its launch never happened (crash): resume it.
			v.replace, v.resumeReplace, v.wait = live, true, e.cfg.BootConnect
			return v
		}
		if age < e.cfg.BootConnect+e.cfg.HealthGrace {
			v.wait = e.cfg.BootConnect + e.cfg.HealthGrace - age
			return v
		}
		v.resolvePending = OutcomeFailed
		doRestart()
	default:
		v.resolvePending = OutcomeFailed
		doRestart()
	}
	return v
}

// remedy is the verdict as the plan takes it.
func (v verdict) remedy() plan.Remedy {
	var m plan.Remedy
	switch {
	case v.replace != nil:
		m.Replace, m.Reason = v.replace.ID, "tunnel still down after restart"
	case v.restart != nil:
		m.Restart, m.Reason = v.restart.ID, "tunnel not healthy; restarting cloudflared"
	}
	m.HoldReplace = v.suppressInstance
	return m
}

// recordRemediationStart persists what diagnose decided before acting, so a
// crash mid-remediation resumes instead of forgetting it.
func (e *Engine) recordRemediationStart(orgID string, v verdict, now time.Time) error {
	if v.restart == nil && v.replace == nil && v.replaceStopped == "" && !v.falseAlarm &&
		!v.handleReports && v.resolvePending == "" && v.degraded == "" {
		return nil
	}
	var counted [][2]string
	err := e.store.Update(orgID, func(o *state.Org) error {
		counted = counted[:0]
		if v.resolvePending != "" {
			for i := len(o.Remediations) - 1; i >= 0; i-- {
				if o.Remediations[i].Outcome == OutcomePending {
					o.Remediations[i].Outcome = v.resolvePending
					counted = append(counted, [2]string{o.Remediations[i].Action, v.resolvePending})
					break
				}
			}
		}
		switch {
		case v.falseAlarm:
			addRemediation(o, state.Remediation{At: now, Action: ActFalseAlarm, Outcome: OutcomeOK, Detail: "tunnel healthy when checked"})
		case v.restart != nil:
			addRemediation(o, state.Remediation{At: now, Action: ActRestart, Outcome: OutcomePending,
				Detail: "tunnel not healthy; restarting cloudflared on " + v.restart.ID})
		case v.replace != nil && !v.resumeReplace:
			addRemediation(o, state.Remediation{At: now, Action: ActReplace, Outcome: OutcomePending,
				Detail: "tunnel still down after restart; replacing " + v.replace.ID})
		case v.replaceStopped != "":
			addRemediation(o, state.Remediation{At: now, Action: ActReplace, Outcome: OutcomePending, Detail: v.replaceStopped})
		}
		if v.handleReports {
			for i := range o.HealthReports {
				o.HealthReports[i].Handled = true
			}
		}
		if v.degraded != "" {
			setCondition(o, state.CondDegraded, true, v.degraded, v.detail, now)
			setCondition(o, state.CondReady, false, v.degraded, v.detail, now)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("org %s: record remediation: %w", orgID, err)
	}
	for _, c := range counted {
		e.cfg.Metrics.Remediation(c[0], c[1])
	}
	switch {
	case v.falseAlarm:
		e.cfg.Metrics.Remediation(ActFalseAlarm, OutcomeOK)
	case v.restart != nil:
		e.cfg.Metrics.Remediation(ActRestart, "started")
	case v.replace != nil && !v.resumeReplace, v.replaceStopped != "":
		e.cfg.Metrics.Remediation(ActReplace, "started")
	}
	return nil
}

// finishRemediation sets the outcome of the newest pending remediation of action.
func (e *Engine) finishRemediation(orgID, action, outcome, detail string, now time.Time) error {
	e.cfg.Metrics.Remediation(action, outcome)
	return e.store.Update(orgID, func(o *state.Org) error {
		for i := len(o.Remediations) - 1; i >= 0; i-- {
			r := &o.Remediations[i]
			if r.Action == action && r.Outcome == OutcomePending {
				r.Outcome = outcome
				if detail != "" {
					r.Detail += "; " + detail
				}
				break
			}
		}
		return nil
	})
}

// recordOutcome writes the org's status after a reconcile and decides
// when to look again.
func (e *Engine) recordOutcome(ctx context.Context, log *slog.Logger, org state.Org, d plan.Desired, ob observation,
	p plan.Result, ap applied, v verdict, applyErr error, now time.Time) (Result, error) {
	if applyErr != nil {
		return Result{}, applyErr
	}
	status := ""
	if ob.tunnel != nil && !ap.tunnelCreated {
		status = ob.tunnel.Status
	} else if ap.tunnelCreated {
		status = "inactive"
	}
	conflicts := ap.conflicts
	var resolved []string
	defer func() { e.countRemediations(resolved, OutcomeOK) }()
	var toReady time.Duration
	var first bool // this Ready ends a (re)provisioning
	ready := len(conflicts) == 0 && status == "healthy" && !ap.tunnelCreated && !ap.instanceChange &&
		v.restart == nil && v.replace == nil && !v.suppressInstance
	err := e.store.Update(org.ID, func(o *state.Org) error {
		o.Observed.TunnelStatus = status
		o.Observed.ObservedAt = now
		o.Observed.ReconciledSeq = max(o.Observed.ReconciledSeq, org.LastSeq)
		e.setConflict(o, conflicts, now)
		if ready {
			toReady, first = provisioningTime(*o, now)
			resolved = e.markReady(o, status, now)
			return nil
		}
		reason, msg := "Provisioning", "waiting for the tunnel to connect"
		switch {
		case len(conflicts) > 0:
			reason, msg = "Conflict", conflicts[0].Reason
		case v.degraded != "":
			reason, msg = v.degraded, v.detail
		case takeoverWaits(p):
			reason, msg = ReasonTakeoverWaits, takeoverWaitsDetail(p)
		case ap.tunnelCreated || ap.launched:
			msg = "resources created; waiting for the instance to boot and connect"
		}
		setCondition(o, state.CondReady, false, reason, msg, now)
		if v.degraded == "" && len(conflicts) == 0 {
			setCondition(o, state.CondProvisioning, true, reason, msg, now)
		}
		o.LastError, o.LastErrorAt = "", time.Time{}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("org %s: record status: %w", org.ID, err)
	}
	if first {
		e.cfg.Metrics.ObserveTimeToReady(toReady)
	}
	switch {
	case ready:
		log.Info("org ready", "tunnel_status", status)
		e.clearPoll(org.ID)
		return Result{}, nil
	case len(conflicts) > 0:
		// Nothing to retry until someone removes the record; the sweep looks again.
		e.clearPoll(org.ID)
		return Result{}, nil
	}
	tunnelID := ap.tunnelID
	awaiting := v.restart == nil && v.replace == nil && v.degraded == "" && pendingRemediation(org) == nil &&
		tunnelID != "" && v.wait == 0
	if awaiting {
		e.setPoll(org, tunnelID, now)
	} else {
		e.clearPoll(org.ID)
	}
	if awaiting && ap.launched {
		// The instance cannot have connected before its boot: polls that
		// come sooner (the org requeued for another reason) wait. Only a
		// launch this pass made counts (the cloud's LaunchTime is on
		// another clock); the pass's now is its start, and the launch came
		// after the DNS claim.
		e.pollMu.Lock()
		if p, ok := e.polls[org.ID]; ok {
			p.notBefore = e.cfg.Now().Add(e.cfg.BootConnect)
			e.polls[org.ID] = p
		}
		e.pollMu.Unlock()
	}
	switch {
	case ap.launched:
		return Result{RequeueAfter: e.cfg.BootConnect}, nil
	case v.wait > 0:
		return Result{RequeueAfter: v.wait}, nil
	case awaiting:
		// Only the tunnel's connection is awaited (after a restart, or a
		// new token): the next look is a shared listing, at its pace.
		return Result{RequeueAfter: e.readyPollAfter()}, nil
	}
	return Result{RequeueAfter: e.cfg.PollInterval}, nil
}

// readyPollAfter is when an org awaiting its tunnel's connection looks
// again: at the shared listings' pace (readyGap), at least a quarter of
// the poll interval.
func (e *Engine) readyPollAfter() time.Duration {
	return max(e.readyGap(e.tunnelPages()), e.cfg.PollInterval/4)
}

// setConflict derives the Conflict condition from what this pass saw: a
// record another party owns at the org's hostname, else a region the org
// can no longer move to (the org keeps being served, and may be Ready,
// where it is), else none. Every path that writes status goes through it,
// so a conflict is never cleared by a path that did not look for one.
func (e *Engine) setConflict(o *state.Org, dns []plan.Conflict, now time.Time) {
	pool := e.poolConflict(*o)
	switch msg := e.regionConflict(*o); {
	case len(dns) > 0:
		setCondition(o, state.CondConflict, true, "DNSRecordNotOwned", dns[0].Reason, now)
	case msg != "":
		setCondition(o, state.CondConflict, true, "RegionChangeRefused", msg, now)
	case pool != "":
		setCondition(o, state.CondConflict, true, "PoolChangeRefused", pool, now)
	default:
		setCondition(o, state.CondConflict, false, "NoConflict", "", now)
	}
}

// provisioningTime is how long the org has been Provisioning, when it is
// (markReady ends it): the time to Ready that the metrics record. Measured
// from the condition's transition, which the first reconcile pass of a
// build stamps once it has requested the resources.
func provisioningTime(o state.Org, now time.Time) (time.Duration, bool) {
	c, ok := Condition(o, state.CondProvisioning)
	if !ok || !c.Status {
		return 0, false
	}
	return now.Sub(c.LastTransitionTime), true
}

// markReady sets the conditions of a converged, connected org and returns
// the remediations it marked successful.
func (e *Engine) markReady(o *state.Org, status string, now time.Time) []string {
	var resolved []string
	o.Observed.TunnelStatus = status
	o.Observed.ObservedAt = now
	setCondition(o, state.CondReady, true, "TunnelHealthy", "tunnel connected and every resource in place", now)
	setCondition(o, state.CondProvisioning, false, "Provisioned", "", now)
	setCondition(o, state.CondDegraded, false, "TunnelHealthy", "", now)
	e.setConflict(o, nil, now)
	o.LastError, o.LastErrorAt = "", time.Time{}
	for i := len(o.Remediations) - 1; i >= 0; i-- {
		if o.Remediations[i].Outcome == OutcomePending {
			o.Remediations[i].Outcome = OutcomeOK
			o.Remediations[i].Detail += "; tunnel healthy at " + now.UTC().Format(time.RFC3339)
			resolved = append(resolved, o.Remediations[i].Action)
		}
	}
	for i := range o.HealthReports {
		o.HealthReports[i].Handled = true
	}
	return resolved
}

func (e *Engine) countRemediations(actions []string, outcome string) {
	for _, a := range actions {
		e.cfg.Metrics.Remediation(a, outcome)
	}
}

func (e *Engine) setPoll(org state.Org, tunnelID string, now time.Time) {
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	if old, ok := e.polls[org.ID]; ok && old.tunnelID == tunnelID && old.lastSeq == org.LastSeq {
		return // keep the first converge time: the grace runs from there
	}
	e.polls[org.ID] = pollState{lastSeq: org.LastSeq, reports: len(org.HealthReports), tunnelID: tunnelID, converged: now}
}

func (e *Engine) clearPoll(orgID string) {
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	delete(e.polls, orgID)
}

// readinessPoll is the cheap look at an org that only waits for its tunnel
// to connect: one tunnel GET. done=false means a full reconcile is needed.
func (e *Engine) readinessPoll(ctx context.Context, log *slog.Logger, org state.Org) (Result, bool, error) {
	e.pollMu.Lock()
	ps, ok := e.polls[org.ID]
	e.pollMu.Unlock()
	if !ok {
		return Result{}, false, nil
	}
	now := e.cfg.Now()
	if ps.lastSeq != org.LastSeq || ps.reports != len(org.HealthReports) || unhandledReports(org) > 0 || org.Observed.Rotation != nil ||
		org.Observed.TunnelID != ps.tunnelID || now.Sub(ps.converged) > e.cfg.BootConnect+e.cfg.HealthGrace {
		e.clearPoll(org.ID)
		return Result{}, false, nil
	}
	if now.Before(ps.notBefore) {
		return Result{RequeueAfter: ps.notBefore.Sub(now)}, true, nil // it cannot have connected yet
	}
	// The status from a shared tunnel listing newer than the org's last
	// step (ready.go); a GET only while fewer orgs wait than it has pages.
	listed, at, wait, fromList, err := e.listedTunnel(ctx, ps.tunnelID, ps.converged, ps.listedAt)
	if err != nil {
		return Result{}, true, fmt.Errorf("org %s: poll tunnel %s: %w", org.ID, ps.tunnelID, err)
	}
	if fromList && wait > 0 {
		return Result{RequeueAfter: wait}, true, nil // the next shared listing answers
	}
	var t Tunnel
	if fromList {
		if listed == nil {
			e.clearPoll(org.ID) // not among the live tunnels: a full look
			return Result{}, false, nil
		}
		t, now = *listed, at // the status is as of the listing
		e.pollMu.Lock()
		if p, ok := e.polls[org.ID]; ok {
			p.listedAt = at
			e.polls[org.ID] = p
		}
		e.pollMu.Unlock()
	} else {
		cf, cerr := e.cfOf(org)
		if cerr != nil {
			return Result{}, true, cerr
		}
		t, err = cf.Tunnels.GetTunnel(ctx, ps.tunnelID)
		if errors.Is(err, ErrNotFound) || (err == nil && t.Deleted) {
			e.clearPoll(org.ID)
			return Result{}, false, nil
		}
		if err != nil {
			return Result{}, true, fmt.Errorf("org %s: poll tunnel %s: %w", org.ID, ps.tunnelID, err)
		}
	}
	if t.Status == "healthy" && pendingTakeover(org) != nil {
		e.clearPoll(org.ID) // the takeover waited for this: a full pass makes it
		return Result{}, false, nil
	}
	if t.Status == "healthy" {
		e.clearPoll(org.ID)
		var resolved []string
		var toReady time.Duration
		var first bool
		if err := e.store.Update(org.ID, func(o *state.Org) error {
			toReady, first = provisioningTime(*o, now)
			resolved = e.markReady(o, t.Status, now)
			return nil
		}); err != nil {
			return Result{}, true, fmt.Errorf("org %s: record ready: %w", org.ID, err)
		}
		if first {
			e.cfg.Metrics.ObserveTimeToReady(toReady)
		}
		e.countRemediations(resolved, OutcomeOK)
		log.Info("org ready", "tunnel_status", t.Status)
		return Result{}, true, nil
	}
	if err := e.store.Update(org.ID, func(o *state.Org) error {
		o.Observed.TunnelStatus, o.Observed.ObservedAt = t.Status, now
		return nil
	}); err != nil {
		return Result{}, true, fmt.Errorf("org %s: record tunnel status: %w", org.ID, err)
	}
	if fromList {
		// A shared listing costs no more for being looked at sooner: poll
		// again at the listings' pace (a quarter of the GET's at least).
		return Result{RequeueAfter: e.readyPollAfter()}, true, nil
	}
	return Result{RequeueAfter: e.cfg.PollInterval}, true, nil
}
