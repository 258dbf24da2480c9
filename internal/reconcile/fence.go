package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/tunnelward/tunnelward/internal/state"
)

// Fence is the cluster's say over this replica's cloud writes
// (internal/cluster's Manager satisfies it): which orgs it reconciles, and
// whether one write for an org may go out now. nil in Config: every org,
// always (tests, the bench, the dry run).
type Fence interface {
	// Owns reports whether this replica holds the lease of orgID's
	// partition: only then does it reconcile the org.
	Owns(orgID string) bool
	// Hold lets one write for orgID through, or fails when the lease is
	// not held or not renewed in time; the context it returns is cancelled
	// when that changes mid-write; done ends the write.
	Hold(ctx context.Context, orgID string) (context.Context, func(), error)
}

// ErrNotOwner marks a write refused by the fence (errors.Is).
var ErrNotOwner = errors.New("org not owned by this replica")

type fenceKey struct{}

// fenceScope is the orgs a context's writes are made for.
type fenceScope struct {
	f    Fence
	orgs []string
}

// withFence marks ctx's cloud writes as made for orgs: mutate holds each
// one's lease for the write. Without a fence ctx is returned as is.
func (e *Engine) withFence(ctx context.Context, orgs ...string) context.Context {
	if e.cfg.Fence == nil || len(orgs) == 0 {
		return ctx
	}
	return context.WithValue(ctx, fenceKey{}, fenceScope{f: e.cfg.Fence, orgs: orgs})
}

// fenceOrgs is the orgs ctx's writes are made for (nil: not fenced).
func fenceOrgs(ctx context.Context) []string {
	s, _ := ctx.Value(fenceKey{}).(fenceScope)
	return s.orgs
}

// holdFence is the one check before every cloud write (mutate): it holds
// the lease of every org ctx's writes are made for, or fails naming why.
func holdFence(ctx context.Context) (context.Context, func(), error) {
	s, ok := ctx.Value(fenceKey{}).(fenceScope)
	if !ok {
		return ctx, func() {}, nil
	}
	var dones []func()
	release := func() {
		for _, d := range dones {
			d()
		}
	}
	for _, org := range s.orgs {
		hctx, done, err := s.f.Hold(ctx, org)
		if err != nil {
			release()
			return ctx, func() {}, fmt.Errorf("%w: %w", ErrNotOwner, err)
		}
		ctx = hctx
		dones = append(dones, done)
	}
	return ctx, release, nil
}

// ownsNothing reports whether this replica holds no partition now (a
// replica just started, or one whose partitions all went elsewhere): its
// sweep and watches have nothing to act on, and would only reserve calls
// at the one-partition share of the budgets it has then (the limiter keeps
// a reservation's delay when the share grows later).
func (e *Engine) ownsNothing() bool {
	o, ok := e.cfg.Fence.(interface{ Owned() []int })
	return ok && len(o.Owned()) == 0
}

// owns reports whether this replica reconciles orgID.
func (e *Engine) owns(orgID string) bool { return e.cfg.Fence == nil || e.cfg.Fence.Owns(orgID) }

// PartitionsGained is the cluster's hook: this replica took partitions, so
// their orgs may need work. It queues the owned orgs a restart would queue
// (everything but the Ready ones with nothing unhandled, see EnqueueAll)
// and asks for a sweep, whose listings requeue the Ready ones that drifted
// while another replica had them: the observed ids in this replica's
// state file are its own, as of when it last owned them.
func (e *Engine) PartitionsGained() {
	n := 0
	err := e.store.ForEach(func(o state.Org) error {
		if !e.owns(o.ID) || (o.Desired.Presence == state.Deleted && o.Observed.DeleteDone) {
			return nil
		}
		if o.Desired.Presence != state.Deleted && IsTrue(o, state.CondReady) &&
			unhandledReports(o) == 0 && pendingRemediation(o) == nil && o.Observed.ReconciledSeq >= o.LastSeq {
			return nil
		}
		e.queue.Add(o.ID)
		n++
		return nil
	})
	if err != nil {
		e.log.Warn("partitions gained: cannot list orgs; the sweep queues them", "err", err)
	}
	e.log.Info("partitions gained: orgs queued", "orgs_queued", n)
	e.KickSweep()
}

// KickSweep asks for a sweep now instead of at the next interval (at most
// one waits).
func (e *Engine) KickSweep() {
	select {
	case e.sweepKick <- struct{}{}:
	default:
	}
}

// recordReplica names this replica in the org's status (observed.replica)
// when another name is there.
func (e *Engine) recordReplica(org state.Org) {
	if e.cfg.Replica == "" || org.Observed.Replica == e.cfg.Replica {
		return
	}
	if err := e.store.Update(org.ID, func(o *state.Org) error { o.Observed.Replica = e.cfg.Replica; return nil }); err != nil {
		e.log.Warn("record the reconciling replica", "org_id", org.ID, "err", err)
	}
}

// FencedOrgs is the orgs a request's context is fenced for (nil: none):
// tests tag each request to the emulator with it, to check that every
// cloud write went out under a lease.
func FencedOrgs(ctx context.Context) []string { return fenceOrgs(ctx) }
