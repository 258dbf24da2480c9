package reconcile

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Token rotation (issue 16). A rotation is asked for by an
// org.token_rotation_requested event, or by the --token-max-age policy. It
// runs as plan steps on a converged org, each committed to bbolt before the
// next (state.Rotation), so a crash anywhere resumes it and it finishes
// exactly once:
//
//	secret   PATCH the tunnel with a new secret drawn here; the old token
//	         can open no new connection (a crash after the PATCH draws
//	         another: still one rotation)
//	token    the new token into the org's SSM parameter (built from the
//	         secret, or read from Cloudflare after a crash)
//	restart  cloudflared restarted through SSM RunCommand: it re-reads the
//	         parameter; the health diagnosis holds while the rotation waits,
//	         and an instance with no connector on the new token after
//	         rotationGrace is replaced (the health rules' next step after
//	         a restart)
//	connect  a connector not connected before the secret is the new token's:
//	         the old connectors' connections are deleted and the rotation is
//	         recorded (token_rotated_at)
//
// The token never leaves the token step's stack and e.tokens.

// rotationJitter spreads max-age rotations over this share of the max age
// (by org id), so tokens issued together are not rotated together.
const rotationJitter = 0.05

// rotations bounds the max-age rotations in flight at once.
type rotations struct {
	mu       sync.Mutex
	inFlight map[string]bool // orgs rotating for the max-age policy
}

// rotationView is the rotation's part of an org's plan input, but the
// connectors (read by the observer when they are needed: connectorsNeeded).
func (e *Engine) rotationView(org state.Org, now time.Time) plan.Rotation {
	var v plan.Rotation
	if r := org.Observed.Rotation; r != nil {
		v.Phase, v.Old, v.Replaced = r.Phase, r.Old, r.Replaced
		v.Stuck = r.Phase == plan.RotateConnect && !r.RestartedAt.IsZero() && now.Sub(r.RestartedAt) > e.rotationGrace()
		return v
	}
	v.Want = e.rotationWant(org, now)
	return v
}

// connectorsNeeded reports whether a look at the org reads its tunnel's
// connectors: a rotation starting (the old ones are recorded) or waiting
// for its connector.
func connectorsNeeded(v plan.Rotation) bool {
	return v.Phase == plan.RotateConnect || (v.Phase == "" && v.Want != "")
}

// rotationWant says why the org's token should be rotated now, "" when it
// should not: an unserved request, or a token past the max age (and a
// place among the max-age rotations in flight).
func (e *Engine) rotationWant(org state.Org, now time.Time) string {
	if rotationAsked(org) {
		return fmt.Sprintf("rotation requested (event sequence %d)", org.Desired.TokenRotationSeq)
	}
	if due, ok := e.tokenDue(org); ok && !now.Before(due) && e.maxAgeFree(org.ID) {
		// Only with a place free: an org waiting for one is not queued
		// (a pass that observes it only to wait would cost its calls at
		// every sweep and watch); a later one finds the place.
		return fmt.Sprintf("token issued %s is older than the max age %s", org.Observed.TokenSince.UTC().Format(time.RFC3339), e.cfg.TokenMaxAge)
	}
	return ""
}

// rotationAsked reports an org.token_rotation_requested not served yet.
func rotationAsked(org state.Org) bool {
	return org.Desired.TokenRotationSeq > org.Observed.TokenRotatedSeq
}

// tokenDue is when the max-age policy rotates the org's token.
func (e *Engine) tokenDue(org state.Org) (time.Time, bool) {
	since := org.Observed.TokenSince
	if e.cfg.TokenMaxAge <= 0 || since.IsZero() {
		return time.Time{}, false
	}
	h := fnv.New32a()
	h.Write([]byte(org.ID))
	spread := time.Duration(float64(e.cfg.TokenMaxAge) * rotationJitter)
	jitter := time.Duration(0)
	if spread > 0 {
		jitter = time.Duration(uint64(h.Sum32()) % uint64(spread))
	}
	return since.Add(e.cfg.TokenMaxAge + jitter), true
}

// pastMaxAge reports whether the org's token is older than the max age
// (the gauge, without the jitter).
func (e *Engine) pastMaxAge(org state.Org, now time.Time) bool {
	return e.cfg.TokenMaxAge > 0 && !org.Observed.TokenSince.IsZero() && now.Sub(org.Observed.TokenSince) > e.cfg.TokenMaxAge
}

// maxAgeSlot takes a place among the max-age rotations in flight (at most
// one per two workers), false when they are all taken: the org's rotation
// waits for a later pass.
func (e *Engine) maxAgeSlot(orgID string) bool {
	e.rotating.mu.Lock()
	defer e.rotating.mu.Unlock()
	if !e.maxAgeFreeLocked(orgID) {
		return false
	}
	e.rotating.inFlight[orgID] = true
	return true
}

// maxAgeFree reports whether orgID holds or could take a place among the
// max-age rotations in flight.
func (e *Engine) maxAgeFree(orgID string) bool {
	e.rotating.mu.Lock()
	defer e.rotating.mu.Unlock()
	return e.maxAgeFreeLocked(orgID)
}

// maxAgeFreeLocked is maxAgeFree with rotating.mu held.
func (e *Engine) maxAgeFreeLocked(orgID string) bool {
	e.maxAgeUnownedLocked()
	return e.rotating.inFlight[orgID] || len(e.rotating.inFlight) < e.maxAgeCap()
}

// maxAgeCap is how many max-age rotations may be in flight at once.
func (e *Engine) maxAgeCap() int { return max(1, e.cfg.Workers/2) }

// maxAgeUnownedLocked gives back the places of orgs this replica no
// longer owns (their rotation goes on at their new owner). Caller holds
// rotating.mu.
func (e *Engine) maxAgeUnownedLocked() {
	if e.rotating.inFlight == nil {
		e.rotating.inFlight = map[string]bool{}
	}
	for id := range e.rotating.inFlight {
		if !e.owns(id) {
			delete(e.rotating.inFlight, id)
		}
	}
}

// maxAgeHolds reports whether orgID holds a place among the max-age
// rotations in flight.
func (e *Engine) maxAgeHolds(orgID string) bool {
	e.rotating.mu.Lock()
	defer e.rotating.mu.Unlock()
	return e.rotating.inFlight[orgID]
}

// maxAgeFreePlaces is how many more max-age rotations may start now.
func (e *Engine) maxAgeFreePlaces() int {
	e.rotating.mu.Lock()
	defer e.rotating.mu.Unlock()
	e.maxAgeUnownedLocked()
	return e.maxAgeCap() - len(e.rotating.inFlight)
}

// pruneMaxAgeSlots gives back the places of orgs with no max-age rotation
// in flight in the state file (one ended another way: finished as a
// requested one, or its start not saved). The sweep calls it.
func (e *Engine) pruneMaxAgeSlots() {
	e.rotating.mu.Lock()
	ids := sortedKeys(e.rotating.inFlight)
	e.rotating.mu.Unlock()
	for _, id := range ids {
		o, ok, err := e.store.Get(id)
		if err != nil || (ok && o.Observed.Rotation != nil && o.Observed.Rotation.Seq == 0) {
			continue
		}
		e.maxAgeDone(id)
	}
}

func (e *Engine) maxAgeDone(orgID string) {
	e.rotating.mu.Lock()
	delete(e.rotating.inFlight, orgID)
	e.rotating.mu.Unlock()
}

// applyRotation carries out a plan's rotation changes: the steps of a
// rotation (OpRotate), the old connectors' drops and the record of a
// finished one. It runs before the pass's other steps.
func (e *Engine) applyRotation(ctx context.Context, log *slog.Logger, org state.Org, tunnelID, keep string, ob observation,
	changes []plan.Change, aw RegionClouds, cf PoolClouds) error {
	for _, c := range changes {
		var err error
		switch {
		case c.Resource == plan.ResToken && c.Op == plan.OpRotate:
			err = e.rotate(ctx, log, org, tunnelID, keep, ob.plan.Rotation, aw, cf)
		case c.Resource == plan.ResTunnel && c.Op == plan.OpDrop:
			err = mutate(ctx, log, "cf.tunnel_connections.delete", c.Target, func(ctx context.Context) error {
				return cf.Tunnels.DropConnector(ctx, tunnelID, c.Target)
			})
			if errors.Is(err, ErrNotFound) {
				err = nil
			}
			if err != nil {
				err = fmt.Errorf("drop connector %s of tunnel %s: %w", c.Target, tunnelID, err)
			} else {
				log.Info("old connector's connections deleted", "tunnel_id", tunnelID, "client_id", c.Target)
			}
		case c.Resource == plan.ResToken && c.Op == plan.OpRotated:
			err = e.rotated(log, org.ID)
		}
		if err != nil {
			return fmt.Errorf("org %s: token rotation: %w", org.ID, err)
		}
	}
	return nil
}

// rotate starts a rotation or resumes one, up to waiting for its connector.
func (e *Engine) rotate(ctx context.Context, log *slog.Logger, org state.Org, tunnelID, keep string, v plan.Rotation,
	aw RegionClouds, cf PoolClouds) error {
	r := org.Observed.Rotation
	if r == nil {
		seq := uint64(0)
		if s := org.Desired.TokenRotationSeq; s > org.Observed.TokenRotatedSeq {
			seq = s
		} else if !e.maxAgeSlot(org.ID) {
			log.Info("token past its max age waits for a place among the rotations in flight")
			return nil
		}
		r = &state.Rotation{Seq: seq, Reason: v.Want, Phase: plan.RotateSecret, Old: v.Connectors, StartedAt: e.cfg.Now()}
		if err := e.saveRotation(org.ID, r); err != nil {
			return err
		}
		log.Info("token rotation started", "reason", r.Reason, "old_connectors", len(r.Old))
	} else if r.Seq == 0 {
		e.maxAgeSlot(org.ID) // resumed after a restart: it holds its place
	}
	for {
		switch r.Phase {
		case plan.RotateSecret:
			err := mutate(ctx, log, "cf.tunnel.edit", tunnelID, func(ctx context.Context) error {
				tok, err := cf.Tunnels.RotateSecret(ctx, tunnelID)
				if err == nil {
					e.tokens.hold(tunnelID, tok) // the token step takes it: no token read
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("new secret for tunnel %s: %w", tunnelID, err)
			}
			r.Phase = plan.RotateToken
		case plan.RotateToken:
			if err := e.putToken(ctx, log, org.ID, tunnelID, aw, cf); err != nil {
				return err
			}
			r.Phase = plan.RotateRestart
		case plan.RotateRestart:
			// No instance kept (one is being launched): it boots on the
			// parameter, which holds the new token.
			if keep != "" {
				if err := e.restartCloudflared(ctx, log, org.ID, keep, tunnelID, aw); err != nil {
					return err
				}
			}
			r.Phase, r.RestartedAt = plan.RotateConnect, e.cfg.Now()
		default:
			return nil
		}
		if err := e.saveRotation(org.ID, r); err != nil {
			return err
		}
	}
}

// rotationPoll is a waiting rotation's look: only the tunnel's connectors
// (one call), until a connector not there before the new secret shows up
// or the grace is over; then a full pass finishes it (or replaces the
// instance). done is false when the pass should go on.
func (e *Engine) rotationPoll(ctx context.Context, log *slog.Logger, org state.Org, cf PoolClouds) (Result, bool, error) {
	r := org.Observed.Rotation
	now := e.cfg.Now()
	if r == nil || r.Phase != plan.RotateConnect || org.Observed.TunnelID == "" || now.Sub(r.RestartedAt) > e.rotationGrace() ||
		unhandledReports(org) > 0 || org.Observed.ReconciledSeq < org.LastSeq {
		return Result{}, false, nil
	}
	cs, err := cf.Tunnels.Connectors(ctx, org.Observed.TunnelID)
	if err != nil {
		return Result{}, false, nil // the full pass reads it again and says what failed
	}
	for _, c := range cs {
		if !slices.Contains(r.Old, c) {
			return Result{}, false, nil // the new connector is there: a full pass finishes
		}
	}
	log.Debug("token rotation waits for a connector on the new token", "connectors", len(cs))
	return Result{RequeueAfter: e.rotationPollAfter()}, true, nil
}

// rotationPollAfter spaces a waiting rotation's looks: the old connector
// serves until the restart and the new one needs seconds, so a poll
// interval, not the shared listings' pace.
func (e *Engine) rotationPollAfter() time.Duration {
	return max(e.readyPollAfter(), e.cfg.PollInterval)
}

// rotationGrace is how long a restarted cloudflared gets to connect on the
// new token before the instance is replaced: the health grace a restart
// remediation gets, plus a boot's (the restart may meet a booting
// instance).
func (e *Engine) rotationGrace() time.Duration { return e.cfg.HealthGrace + e.cfg.BootConnect }

// rotationRestarted restarts a waiting rotation's grace (its instance was
// replaced).
func (e *Engine) rotationRestarted(orgID string) error {
	now := e.cfg.Now()
	if err := e.store.Update(orgID, func(o *state.Org) error {
		if r := o.Observed.Rotation; r != nil && r.Phase == plan.RotateConnect {
			cp := *r
			cp.RestartedAt = now
			cp.Replaced++
			o.Observed.Rotation = &cp
		}
		return nil
	}); err != nil {
		return fmt.Errorf("org %s: record rotation's replacement: %w", orgID, err)
	}
	return nil
}

func (e *Engine) saveRotation(orgID string, r *state.Rotation) error {
	cp := *r
	if err := e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.Rotation = &cp
		return nil
	}); err != nil {
		return fmt.Errorf("record rotation phase %s: %w", r.Phase, err)
	}
	return nil
}

// rotated records a finished rotation: the org's token is the new one.
func (e *Engine) rotated(log *slog.Logger, orgID string) error {
	now := e.cfg.Now()
	var r state.Rotation
	err := e.store.Update(orgID, func(o *state.Org) error {
		if o.Observed.Rotation == nil {
			return nil
		}
		r = *o.Observed.Rotation
		o.Observed.Rotation = nil
		o.Observed.TokenRotatedAt, o.Observed.TokenSince = now, now
		o.Observed.TokenRotatedSeq = max(o.Observed.TokenRotatedSeq, r.Seq)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record rotation done: %w", err)
	}
	if r.Phase == "" {
		return nil
	}
	trigger := "requested"
	if r.Seq == 0 {
		trigger = "max_age"
		e.maxAgeDone(orgID)
	}
	e.cfg.Metrics.TokenRotated(trigger)
	log.Info("token rotated", "trigger", trigger, "took", now.Sub(r.StartedAt).Round(time.Millisecond))
	return nil
}
