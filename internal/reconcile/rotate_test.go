package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/state"
)

func rotationRequested(org string) state.Fact {
	return state.Fact{Type: state.FactTokenRotationRequested, OrgID: org}
}

// tunnelToken is the tunnel's current token as Cloudflare hands it out
// (compared, never printed).
func (h *harness) tunnelToken(id string) string {
	h.t.Helper()
	tok, err := h.cf.Token(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok.Reveal()
}

// A requested rotation, shown first by the dry run, gives the tunnel a new
// secret, puts its token into SSM, restarts cloudflared on it and ends
// with the org's instance
// connected on the new token as a new connector, token_rotated_at set, and
// nothing else changed (one tunnel, record, instance, parameter).
func TestTokenRotationRequested(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	before := h.org("acme")
	oldTok := h.tunnelToken(before.Observed.TunnelID)
	oldConn, ok := h.connectorOf(before.Observed.InstanceID)
	if !ok || !oldConn.Connected {
		t.Fatalf("no connected connector before the rotation: %+v", oldConn)
	}
	// The dry run shows the rotation the pass then starts.
	h.stop()
	h.apply(rotationRequested("acme"))
	op, err := h.eng.PlanOrg(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(op.Plan.Changes) != 1 || op.Plan.Changes[0].Op != plan.OpRotate || op.Plan.Changes[0].Resource != plan.ResToken {
		t.Fatalf("dry run: %+v, want one token rotate", op.Plan.Changes)
	}
	h.reopen(nil)
	h.start()
	if _, err := h.eng.EnqueueAll(false); err != nil {
		t.Fatal(err)
	}
	h.waitFor("rotation done", 20*time.Second, func() bool {
		o := h.org("acme")
		return !o.Observed.TokenRotatedAt.IsZero() && o.Observed.Rotation == nil && IsTrue(o, state.CondReady)
	})
	after := h.org("acme")
	if after.Observed.TunnelID != before.Observed.TunnelID || after.Observed.InstanceID != before.Observed.InstanceID {
		t.Fatalf("rotation replaced the tunnel or instance: %+v -> %+v", before.Observed, after.Observed)
	}
	if h.tunnelToken(after.Observed.TunnelID) == oldTok {
		t.Fatal("the tunnel's token did not change")
	}
	conn, ok := h.connectorOf(after.Observed.InstanceID)
	if !ok || !conn.Connected || conn.ClientID == oldConn.ClientID {
		t.Fatalf("after the rotation the instance's connector is %+v; want connected as a new connector (old %s)", conn, oldConn.ClientID)
	}
	if after.Observed.TokenRotatedSeq != after.Desired.TokenRotationSeq || after.Observed.TokenSince.Before(after.Observed.TokenRotatedAt) {
		t.Fatalf("rotation bookkeeping: rotated seq %d, asked %d, since %v, rotated at %v", after.Observed.TokenRotatedSeq,
			after.Desired.TokenRotationSeq, after.Observed.TokenSince, after.Observed.TokenRotatedAt)
	}
	h.requireOneEach("acme")
	h.requireClean("acme")

	// The old token can open no connection any more: put it back into the
	// parameter and restart cloudflared, and it stays out; the current
	// token brings it back.
	h.stop()
	if _, err := h.aw.PutToken(context.Background(), after.Observed.ParameterName, secret.NewToken(oldTok), nil); err != nil {
		t.Fatal(err)
	}
	h.worldAction(cloudsim.WorldAction{Action: "restart_connector", ID: after.Observed.InstanceID})
	h.waitFor("the old token refused", 10*time.Second, func() bool {
		c, ok := h.connectorOf(after.Observed.InstanceID)
		return ok && !c.Connected && c.Attempts >= 2
	})
	if c, _ := h.connectorOf(after.Observed.InstanceID); c.Connected || c.LastError == "" {
		t.Fatalf("cloudflared on the old token: %+v; want refused", c)
	}
	if _, err := h.aw.PutToken(context.Background(), after.Observed.ParameterName, secret.NewToken(h.tunnelToken(after.Observed.TunnelID)), nil); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the current token connects", 10*time.Second, func() bool {
		c, ok := h.connectorOf(after.Observed.InstanceID)
		return ok && c.Connected
	})
	h.reopen(nil)
	h.start()

	// A second request is a second rotation; an old request redelivered is not.
	first := after.Observed.TokenRotatedAt
	h.apply(rotationRequested("acme"))
	h.waitFor("second rotation done", 20*time.Second, func() bool {
		o := h.org("acme")
		return o.Observed.TokenRotatedAt.After(first) && o.Observed.Rotation == nil && IsTrue(o, state.CondReady)
	})
	if n := h.sim.CallCount("cf.tunnel.edit"); n != 2 {
		t.Fatalf("%d secret changes for two rotations", n)
	}
}

// Cut off at each step (the step's call fails, or applies and its answer
// is lost), then the process restarted: the rotation resumes from the
// phase bbolt holds and finishes exactly once, the instance connected on
// the tunnel's current token.
func TestTokenRotationResumesAfterEachStep(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		phase string
		rule  cloudsim.FaultRule
	}{
		{plan.RotateSecret, cloudsim.FaultRule{Op: "cf.tunnel.edit", LostRate: 1}},
		{plan.RotateToken, cloudsim.FaultRule{Op: "ssm.PutParameter", LostRate: 1}},
		{plan.RotateRestart, cloudsim.FaultRule{Op: "ssm.SendCommand", ErrorRate: 1}},
	} {
		t.Run(c.phase, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{})
			h.start()
			h.apply(created("acme", "acme"))
			h.waitReady("acme")
			if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{c.rule}}); err != nil {
				t.Fatal(err)
			}
			h.apply(rotationRequested("acme"))
			h.waitFor("rotation held at "+c.phase, 20*time.Second, func() bool {
				r := h.org("acme").Observed.Rotation
				return r != nil && r.Phase == c.phase && h.sim.CallCount(c.rule.Op) > 0
			})
			h.stop()
			if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{}); err != nil {
				t.Fatal(err)
			}
			h.reopen(nil)
			h.start()
			if _, err := h.eng.EnqueueAll(false); err != nil {
				t.Fatal(err)
			}
			h.waitFor("rotation done after restart", 20*time.Second, func() bool {
				o := h.org("acme")
				return o.Observed.TokenRotatedSeq == o.Desired.TokenRotationSeq && o.Observed.Rotation == nil && IsTrue(o, state.CondReady)
			})
			o := h.org("acme")
			conn, ok := h.connectorOf(o.Observed.InstanceID)
			if !ok || !conn.Connected {
				t.Fatalf("instance not connected after the rotation: %+v", conn)
			}
			h.requireOneEach("acme")
			h.requireClean("acme")
		})
	}
}

// The max-age policy rotates a token issued longer ago than the max age,
// and leaves a young one alone.
func TestTokenMaxAgeRotates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.TokenMaxAge = time.Hour }})
	h.start()
	h.apply(created("old", "old"), created("young", "young"))
	h.waitReady("old", "young")
	h.stop()
	if err := h.store.Update("old", func(o *state.Org) error {
		o.Observed.TokenSince = time.Now().Add(-2 * time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h.reopen(nil)
	h.start()
	if _, err := h.eng.Sweep(context.Background()); err != nil { // the inventory pass finds it due
		t.Fatal(err)
	}
	h.waitFor("old token rotated", 20*time.Second, func() bool {
		o := h.org("old")
		return !o.Observed.TokenRotatedAt.IsZero() && o.Observed.Rotation == nil && IsTrue(o, state.CondReady)
	})
	if y := h.org("young"); !y.Observed.TokenRotatedAt.IsZero() || y.Observed.Rotation != nil {
		t.Fatalf("young token rotated: %+v", y.Observed)
	}
	h.requireClean("old", "young")
}

// A record from before TokenSince was kept (a converged org: no token step
// will set it) gets it from its parameter's last write at the sweep, so
// the max-age policy counts its token too.
func TestTokenSinceStampedForOlderRecords(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.TokenMaxAge = time.Hour }})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	put := h.org("acme").Observed.TokenSince
	h.stop()
	if err := h.store.Update("acme", func(o *state.Org) error {
		o.Observed.TokenSince = time.Time{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h.reopen(nil)
	h.start()
	if _, err := h.eng.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := h.org("acme").Observed.TokenSince
	// The emulator stamps the parameter as it stores it, a moment around
	// the engine's own stamp of the put.
	if got.IsZero() || got.Sub(put).Abs() > 2*time.Second {
		t.Fatalf("token_since after the sweep %v; want the parameter's write, about %v", got, put)
	}
}

// A fleet whose tokens are all past the max age is rotated a few at a
// time: a sweep queues only as many as there are places among the
// rotations in flight (Workers/2), not every due org for a pass that would
// only wait; later sweeps queue the rest as places free up.
func TestTokenMaxAgeQueuesOnlyWhatHasAPlace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.TokenMaxAge = time.Hour; c.Workers = 4 }})
	orgs := []string{"o1", "o2", "o3", "o4", "o5", "o6"}
	h.start()
	for _, o := range orgs {
		h.apply(created(o, o))
	}
	h.waitReady(orgs...)
	h.stop()
	for _, o := range orgs {
		if err := h.store.Update(o, func(o *state.Org) error {
			o.Observed.TokenSince = time.Now().Add(-2 * time.Hour)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	h.reopen(nil)
	rep, err := h.eng.Sweep(context.Background()) // workers not started: nothing is taken off the queue
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rep.Requeued); n != 2 {
		t.Fatalf("first sweep queued %d orgs (%v), want 2: the places among the max-age rotations", n, rep.Requeued)
	}
	h.start()
	rotated := func() int {
		n := 0
		for _, o := range orgs {
			if !h.org(o).Observed.TokenRotatedAt.IsZero() {
				n++
			}
		}
		return n
	}
	h.waitFor("every token rotated", 60*time.Second, func() bool {
		if _, err := h.eng.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		return rotated() == len(orgs)
	})
	h.requireClean(orgs...)
}

// A place among the max-age rotations is given back when its org moves to
// another replica mid-rotation (its new owner finishes it there), and when
// the state file shows no max-age rotation in flight for it any more.
func TestMaxAgePlacesGivenBack(t *testing.T) {
	t.Parallel()
	f := owning("a", "b", "c")
	fe := newFakeEngineWith(t, func(c *Config) { c.Fence = f; c.Workers = 2 }) // one place
	fe.apply(created("a", "a"), created("b", "b"), created("c", "c"))
	if !fe.e.maxAgeSlot("a") || fe.e.maxAgeSlot("b") {
		t.Fatal("want a to take the one place and b to find none")
	}
	f.mu.Lock()
	delete(f.owned, "a")
	f.mu.Unlock()
	if !fe.e.maxAgeSlot("b") {
		t.Fatal("the place of a, now another replica's, was not given back")
	}
	// b's state file has no max-age rotation in flight (it never saved
	// one): the sweep's prune gives the place back.
	fe.e.pruneMaxAgeSlots()
	if !fe.e.maxAgeSlot("c") {
		t.Fatal("the place of b, with no rotation in flight, was not given back")
	}
}

// A rotation in flight ends with the org's delete: an org re-created while
// the cascade runs does not resume it on its new tunnel.
func TestRotationEndsWithTheDelete(t *testing.T) {
	t.Parallel()
	pools := newTwoPools()
	rc := recreateOnDelete(pools, "acme")
	fe := pools.engine(t, nil, nil)
	rc.fe = fe
	fe.apply(created("acme", "acme"))
	fe.pass("acme")
	if err := fe.store.Update("acme", func(o *state.Org) error {
		o.Observed.Rotation = &state.Rotation{Reason: "test", Phase: plan.RotateConnect, Old: []string{"c1"}, StartedAt: fe.now}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	fe.apply(deleted("acme"))
	rc.deleteUntilRecreated()
	if r := fe.org("acme").Observed.Rotation; r != nil {
		t.Fatalf("the re-created org carries the deleted tunnel's rotation: %+v", r)
	}
}
