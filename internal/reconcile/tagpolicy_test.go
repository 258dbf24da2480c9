package reconcile

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/state"
)

// connectorOf is the emulator's simulated cloudflared on instance id.
func (h *harness) connectorOf(id string) (cloudsim.ConnectorState, bool) {
	for _, c := range h.sim.State().Connectors {
		if c.InstanceID == id {
			return c, true
		}
	}
	return cloudsim.ConnectorState{}, false
}

// With the emulator enforcing the instance role's policy (a cloudflared
// may read only the parameter tagged InstanceArn=<its own instance ARN>,
// deploy/iam/instance-role-policy.json), create still reaches Ready: the
// engine tags the parameter with the ARN the emulator's policy wants, and
// the tunnel is really connected by the org's instance.
func TestCreateReadyUnderInstanceRoleTagPolicy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if !h.sim.Config().InstanceRoleTagPolicy {
		t.Fatal("the harness's emulator does not enforce the instance role's tag policy")
	}
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.requireOneEach("acme")

	o := h.org("acme")
	tags, err := h.aw.ParameterTags(context.Background(), o.Observed.ParameterName)
	if err != nil {
		t.Fatal(err)
	}
	if want := h.sim.InstanceARN(o.Observed.InstanceID); tags[owner.TagInstanceArn] != want {
		t.Fatalf("parameter %s tagged %s=%q, the emulator's policy wants %q", o.Observed.ParameterName, owner.TagInstanceArn, tags[owner.TagInstanceArn], want)
	}
	c, ok := h.connectorOf(o.Observed.InstanceID)
	if !ok || !c.Connected || c.TunnelID != o.Observed.TunnelID {
		t.Fatalf("the org's instance did not connect its tunnel: %+v\n%s", c, h.describe())
	}
}

// A Ready org whose parameter tag is changed out of band keeps running
// (cloudflared read its token at start), but once cloudflared restarts it is
// denied and the tunnel stays down. The engine brings the org back to Ready
// (today by remediation: restart, then replace the instance, whose launch
// tags the parameter), and the parameter ends tagged for the instance the
// org records, whose cloudflared is the one connected.
func TestWrongTagIsRepairedUnderInstanceRoleTagPolicy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.HealthGrace = restartGrace }})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	ctx := context.Background()
	o := h.org("acme")
	inst, param := o.Observed.InstanceID, o.Observed.ParameterName

	if err := h.aw.TagParameter(ctx, param, map[string]string{owner.TagInstanceArn: h.sim.InstanceARN("i-0000000000000dead")}); err != nil {
		t.Fatal(err)
	}
	h.worldAction(cloudsim.WorldAction{Action: "restart_connector", ID: inst})
	h.waitFor("the restarted cloudflared denied", 5*time.Second, func() bool {
		c, _ := h.connectorOf(inst)
		return strings.Contains(c.LastError, "AccessDeniedException")
	})
	if _, err := h.eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	var now string
	h.waitFor("Ready again with the parameter tagged for the recorded instance", 30*time.Second, func() bool {
		o := h.org("acme")
		now = o.Observed.InstanceID
		c, _ := h.connectorOf(now)
		tags, err := h.aw.ParameterTags(ctx, param)
		return err == nil && IsTrue(o, state.CondReady) && c.Connected && tags[owner.TagInstanceArn] == h.sim.InstanceARN(now)
	})
	if now != inst {
		t.Errorf("recovered by replacing instance %s with %s; re-tagging the parameter should have been enough", inst, now)
	}
	h.requireOneEach("acme")
}
