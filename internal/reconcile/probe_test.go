package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Regressions for the defects an outside probe found (issue 10): each test
// failed before its fix.

// longOrg is 63 characters, the schema's longest org id: its readable
// ClientToken would be longer than EC2's 64, so the token is a hash and
// carries no generation.
var longOrg = strings.Repeat("a", 50) + "-0123456789ab"

func init() {
	if len(longOrg) != 63 {
		panic(fmt.Sprintf("longOrg has %d characters, want 63", len(longOrg)))
	}
}

// generationTag is the Generation tag of the org's one live instance.
func (h *harness) liveInstance(org string) (id, gen string) {
	h.t.Helper()
	w := h.world()
	if len(w.instances) != 1 {
		h.t.Fatalf("org %s: want exactly one live instance, got %d\n%s", org, len(w.instances), h.describe())
	}
	in := w.instances[0]
	return fmt.Sprint(in["InstanceId"]), tagOf(in, owner.TagGeneration)
}

// A tombstone whose record names a tunnel that is already gone, while a
// live tunnel of the org's name exists (re-created after an out-of-band
// delete, the process killed before the new id was recorded), and an owned
// DNS record under another name that was never recorded: the cascade finds
// both by name and ownership marker, and only then says Deleted.
func TestDeleteFindsUnrecordedTunnelAndRecords(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.GC = false }})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.stop()
	ctx := context.Background()
	old := h.org("acme").Observed.TunnelID
	h.worldAction(cloudsim.WorldAction{Action: "delete", Kind: "tunnel", ID: old})
	fresh, err := h.cf.CreateTunnel(ctx, owner.TunnelName("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "acme-old.sandbox.tunnelward.test",
		Content: plan.TunnelTarget(fresh.ID), Comment: owner.DNSComment("acme")}); err != nil {
		t.Fatal(err)
	}
	h.apply(deleted("acme"))
	for i := 0; i < 5 && !h.org("acme").Observed.DeleteDone; i++ {
		if _, err := h.eng.Reconcile(ctx, "acme"); err != nil {
			t.Logf("reconcile %d: %v", i, err)
		}
	}
	o := h.org("acme")
	if !o.Observed.DeleteDone || !IsTrue(o, state.CondDeleted) {
		t.Fatalf("tombstone not done: %+v", o)
	}
	if w := h.world(); len(w.tunnels) != 0 || len(w.records) != 0 {
		t.Fatalf("Deleted with %d live tunnels and %d records left (the unrecorded tunnel %s)\n%s",
			len(w.tunnels), len(w.records), fresh.ID, h.describe())
	}
	h.requireClean()
}

// Conditions say what is happening: the cascade's reason while it runs,
// Deleted stamped when it ends, and nothing of the old generation left on a
// re-created org.
func TestDeleteConditionsAndRecreate(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.Now = now }})
	h.start()
	// While it builds, the clock runs (a readiness poll waits for the
	// boot on the engine's clock); it stands still for the steps below.
	ticking, ticked := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ticked)
		for {
			select {
			case <-ticking:
				return
			case <-time.After(5 * time.Millisecond):
				clock.Add(int64(100 * time.Millisecond))
			}
		}
	}()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	close(ticking)
	<-ticked
	h.stop()
	ctx := context.Background()
	h.apply(deleted("acme"))

	// The cascade's first step records that it runs, before any cloud call:
	// make the first cloud read fail so the record stays at that point.
	if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{{Op: "cf.tunnel.list", ErrorRate: 1}}}); err != nil {
		t.Fatal(err)
	}
	start := now()
	if _, err := h.eng.Reconcile(ctx, "acme"); err == nil {
		t.Fatal("reconcile with the tunnel listing failing succeeded")
	}
	c, _ := Condition(h.org("acme"), state.CondDeleting)
	if !c.Status || c.Reason != state.ReasonCascadeRunning || !c.LastTransitionTime.Equal(start) {
		t.Fatalf("Deleting while the cascade runs: %+v, want true %s at %v", c, state.ReasonCascadeRunning, start)
	}
	if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{}); err != nil {
		t.Fatal(err)
	}

	clock.Add(int64(90 * time.Second)) // the cascade takes a while
	end := now()
	if _, err := h.eng.Reconcile(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	o := h.org("acme")
	d, _ := Condition(o, state.CondDeleted)
	if !d.Status || d.Reason != state.ReasonCascadeDone || !d.LastTransitionTime.Equal(end) || !o.Observed.ObservedAt.Equal(end) {
		t.Fatalf("Deleted %+v observed_at %v, want true %s stamped at the end %v", d, o.Observed.ObservedAt, state.ReasonCascadeDone, end)
	}
	for _, typ := range []string{state.CondDeleting, state.CondProvisioning, state.CondConflict, state.CondDegraded, state.CondFailed} {
		if c, ok := Condition(o, typ); ok {
			t.Errorf("finished tombstone still carries %+v", c)
		}
	}

	h.apply(created("acme", "acme"))
	if _, err := h.eng.Reconcile(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{state.CondDeleted, state.CondDeleting} {
		if c, ok := Condition(h.org("acme"), typ); ok {
			t.Errorf("re-created org still carries %+v", c)
		}
	}
}

// A 63-character org id through create, instance replacement and delete:
// every instance carries its Generation tag, and exactly one is live at the
// end of every step.
func TestLongOrgIDCreateReplaceDelete(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created(longOrg, "long"))
	h.waitReady(longOrg)
	h.requireOneEach(longOrg)
	first, gen := h.liveInstance(longOrg)
	if gen != "1" {
		t.Fatalf("instance %s has Generation tag %q, want 1", first, gen)
	}

	acted := time.Now()
	h.worldAction(cloudsim.WorldAction{Action: "stop_instance", Org: longOrg})
	h.apply(healthFailed(longOrg))
	h.waitFor("instance replaced", 15*time.Second, func() bool {
		o, _, _ := h.store.Get(longOrg)
		return o.Observed.InstanceID != first && readySince(o, acted) && h.convergedErr(longOrg) == nil
	})
	h.requireOneEach(longOrg)
	if id, gen := h.liveInstance(longOrg); gen != "1" || id == first {
		t.Fatalf("replacement %s has Generation tag %q, want a new instance of generation 1", id, gen)
	}

	h.apply(deleted(longOrg))
	h.waitDeleted(longOrg)
	h.requireClean()
}

// Deleted and created in one ingest batch (the engine never sees the
// tombstone): the org is at generation 2 and must not keep the generation-1
// instance, which the ClientToken of a 63-character id cannot tell.
func TestLongOrgIDRecreatedInOneBatchGetsNewInstance(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created(longOrg, "long"))
	h.waitReady(longOrg)
	old, _ := h.liveInstance(longOrg)
	acted := time.Now()
	h.apply(deleted(longOrg), created(longOrg, "long"))
	h.waitFor("generation-2 instance Ready", 15*time.Second, func() bool {
		o, _, _ := h.store.Get(longOrg)
		return o.Observed.InstanceID != old && readySince(o, acted) && h.convergedErr(longOrg) == nil
	})
	id, gen := h.liveInstance(longOrg)
	if id == old || gen != "2" {
		t.Fatalf("re-created org runs instance %s (Generation %q), want a new generation-2 instance (old %s)", id, gen, old)
	}
	if v := h.sim.CheckInvariants([]string{longOrg + ":2"}); len(v) > 0 {
		t.Fatalf("invariant violations: %+v", v)
	}
	h.requireOneEach(longOrg)
}

// crashAfterRun launches for real, then fails the call as if the process had
// been killed between RunInstances and recording its answer.
type crashAfterRun struct {
	InstanceAPI
	armed atomic.Bool
}

var errKilled = errors.New("simulated kill after RunInstances")

func (c *crashAfterRun) RunInstance(ctx context.Context, s RunSpec) (Instance, error) {
	in, err := c.InstanceAPI.RunInstance(ctx, s)
	if err == nil && c.armed.CompareAndSwap(true, false) {
		return Instance{}, errKilled
	}
	return in, err
}

// Killed after RunInstances, before the instance id was recorded, with a
// 63-character org id: the next pass adopts the launched instance (matched
// by its Generation tag), tags the token parameter for it so cloudflared can
// read it, and ends the launch that was in flight. No restart, no
// replacement, no second instance.
func TestLongOrgIDKilledAfterRunInstancesAdopts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	crash := &crashAfterRun{InstanceAPI: h.eng.clouds.Instances}
	crash.armed.Store(true)
	h.eng.clouds.Instances = crash
	h.start()
	h.apply(created(longOrg, "long"))
	h.waitFor("converged", 15*time.Second, func() bool { return h.convergedErr(longOrg) == nil })
	if crash.armed.Load() {
		t.Fatal("the simulated kill never happened")
	}
	o := h.org(longOrg)
	id, gen := h.liveInstance(longOrg)
	if o.Observed.InstanceID != id || o.Observed.LaunchInFlight || gen != "1" {
		t.Fatalf("after the kill: recorded instance %q launch_in_flight=%v (live %s, Generation %q); want it adopted and the launch ended",
			o.Observed.InstanceID, o.Observed.LaunchInFlight, id, gen)
	}
	if n := h.sim.Calls()["ec2.RunInstances"][200]; n != 1 {
		t.Fatalf("%d RunInstances answered, want 1 (the adopted launch)", n)
	}
	if len(o.Remediations) != 0 {
		t.Fatalf("recovering from the kill took remediations: %+v", o.Remediations)
	}
	h.requireOneEach(longOrg)
}

// A replacement after a launch that was left in flight takes a new
// ClientToken: the old one would hand back the instance being terminated.
func TestReplacementAfterInFlightLaunchTakesNewToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	crash := &crashAfterRun{InstanceAPI: h.eng.clouds.Instances}
	crash.armed.Store(true)
	h.eng.clouds.Instances = crash
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	first := h.org("acme").Observed.InstanceID

	h.worldAction(cloudsim.WorldAction{Action: "stop_instance", Org: "acme"})
	h.apply(healthFailed("acme"))
	h.waitFor("instance replaced", 15*time.Second, func() bool {
		o, _, _ := h.store.Get("acme")
		return o.Observed.InstanceID != "" && o.Observed.InstanceID != first && h.convergedErr("acme") == nil
	})
	if n := h.sim.Calls()["ec2.RunInstances"][200]; n != 2 {
		t.Fatalf("%d RunInstances answered, want 2 (create, then one replacement with a new token)", n)
	}
	if strings.Contains(h.logs.String(), "already terminated") || strings.Contains(h.logs.String(), "already shutting-down") {
		t.Fatalf("a replacement reused the crashed launch's ClientToken:\n%s", h.logs.String())
	}
	h.requireOneEach("acme")
}

// Two orgs with one slug, created together: one gets the hostname, the
// other a Conflict, and no token parameter or instance (nothing billable
// that could never serve), whichever order their passes interleave in.
func TestSlugRaceLoserBuildsNothingBillable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.apply(created("first", "shared"), created("second", "shared"))
	h.start()
	var winner, loser string
	h.waitFor("one Ready, one in Conflict", 15*time.Second, func() bool {
		a, b := h.org("first"), h.org("second")
		switch {
		case IsTrue(a, state.CondReady) && IsTrue(b, state.CondConflict):
			winner, loser = "first", "second"
		case IsTrue(b, state.CondReady) && IsTrue(a, state.CondConflict):
			winner, loser = "second", "first"
		default:
			return false
		}
		return true
	})
	w := h.world()
	if len(w.instances) != 1 || len(w.params) != 1 || len(w.records) != 1 {
		t.Fatalf("want the winner's instance, parameter and record only; got %d instances, %d parameters, %d records\n%s",
			len(w.instances), len(w.params), len(w.records), h.describe())
	}
	if tagOf(w.instances[0], owner.TagOrgID) != winner {
		t.Fatalf("the instance belongs to %s, want the winner %s", tagOf(w.instances[0], owner.TagOrgID), winner)
	}
	if o := h.org(loser); o.Observed.InstanceID != "" || o.Observed.ParameterName != "" || o.Observed.LaunchInFlight {
		t.Fatalf("loser %s recorded billable resources: %+v", loser, o.Observed)
	}
}

// readySince reports whether o became Ready after t: a pass records a new
// instance's id before it writes the conditions, so a Ready from before
// the act can sit beside the new id for a moment.
func readySince(o state.Org, t time.Time) bool {
	c, ok := Condition(o, state.CondReady)
	return ok && c.Status && c.LastTransitionTime.After(t)
}
