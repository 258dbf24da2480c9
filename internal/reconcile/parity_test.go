package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// changeKeys is a plan's changes (and withheld creations) as comparable
// strings, in a stable order.
func changeKeys(p plan.Result) []string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, fmt.Sprintf("%s %s %s", c.Op, c.Resource, c.Target))
	}
	for _, c := range p.Withheld {
		out = append(out, fmt.Sprintf("withheld %s %s %s", c.Op, c.Resource, c.Target))
	}
	slices.Sort(out)
	return out
}

// `reconciler plan` shows exactly what a pass does: for each scenario the
// dry run's plan (PlanOrg) and the plan the next real pass computes (seen
// through the engine's hook) have the same changes, and a conflict the dry
// run reports is the one the pass records in status.
func TestDryRunAgreesWithPass(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		regions []string
		setup   func(h *harness)      // before the org is created ("" when none)
		org     func(h *harness)      // creates the org; default: created("acme", "acme"), Ready
		act     func(h *harness)      // the change the pass and the dry run look at
		want    func(p []string) bool // sanity: the scenario produced what it stages
	}{
		{name: "drift: dns record deleted", act: func(h *harness) {
			h.worldAction(cloudsim.WorldAction{Action: "delete", Kind: "dns_record", Org: "acme"})
		}, want: func(p []string) bool { return slices.Contains(p, "create dns acme.sandbox.tunnelward.test") }},
		{name: "drift: record altered", act: func(h *harness) {
			h.worldAction(cloudsim.WorldAction{Action: "alter_dns", Org: "acme", Content: "elsewhere.example.net"})
		}, want: func(p []string) bool { return len(p) == 1 }},
		{name: "drift: instance terminated", act: func(h *harness) {
			h.worldAction(cloudsim.WorldAction{Action: "terminate_instance", Org: "acme"})
		}, want: func(p []string) bool { return slices.Contains(p, "create instance acme") }},
		{name: "drift: parameter deleted", act: func(h *harness) {
			h.worldAction(cloudsim.WorldAction{Action: "delete", Kind: "parameter", Org: "acme"})
		}, want: func(p []string) bool { return slices.Contains(p, "create token ") }},
		{name: "unhealthy tunnel: restart", act: func(h *harness) {
			h.worldAction(cloudsim.WorldAction{Action: "kill_connector", Org: "acme"})
			h.waitFor("tunnel down", 5*time.Second, func() bool {
				t, err := h.cf.GetTunnel(ctx, h.org("acme").Observed.TunnelID)
				return err == nil && t.Status == "down"
			})
			h.apply(healthFailed("acme"))
		}, want: func(p []string) bool { return len(p) == 1 && p[0][:len("restart instance")] == "restart instance" }},
		{name: "stopped instance: replaced", act: func(h *harness) {
			h.worldAction(cloudsim.WorldAction{Action: "stop_instance", Org: "acme"})
			h.waitFor("stopped", 5*time.Second, func() bool {
				w := h.world()
				return len(w.instances) == 1 && instState(w.instances[0]) == "stopped"
			})
		}, want: func(p []string) bool { return slices.Contains(p, "create instance acme") && len(p) == 2 }},
		{name: "conflict: hostname held by another record", setup: func(h *harness) {
			if _, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "acme.sandbox.tunnelward.test", Content: "legacy.example.net"}); err != nil {
				h.t.Fatal(err)
			}
		}, org: func(h *harness) {
			h.apply(created("acme", "acme"))
		}, want: func(p []string) bool { return len(p) == 4 && slices.Contains(p, "withheld create instance acme") }},
		{name: "takeover: waits for the tunnel to be healthy", setup: func(h *harness) {
			h.loadLegacy("acme", "A", legacyIP)
		}, org: func(h *harness) {
			h.apply(createdTakeover("acme", "acme", state.Takeover{Type: "A", Content: legacyIP}))
		}, want: func(p []string) bool {
			return len(p) == 5 && slices.ContainsFunc(p, func(k string) bool { return strings.HasPrefix(k, "withheld takeover dns ") })
		}},
		{name: "takeover: tunnel healthy", setup: func(h *harness) {
			h.loadLegacy("acme", "A", legacyIP)
		}, org: func(h *harness) {
			h.apply(createdTakeover("acme", "acme", state.Takeover{Type: "A", Content: legacyIP}))
			if _, err := h.eng.Reconcile(ctx, "acme"); err != nil {
				h.t.Fatal(err)
			}
		}, act: func(h *harness) {
			h.waitFor("tunnel healthy", 5*time.Second, func() bool {
				t, err := h.cf.GetTunnel(ctx, h.org("acme").Observed.TunnelID)
				return err == nil && t.Status == "healthy"
			})
			// The readiness poll looks no sooner than the boot allows.
			h.waitFor("the poll due", 5*time.Second, func() bool {
				h.eng.pollMu.Lock()
				defer h.eng.pollMu.Unlock()
				return !h.eng.cfg.Now().Before(h.eng.polls["acme"].notBefore)
			})
		}, want: func(p []string) bool { return len(p) == 1 && strings.HasPrefix(p[0], "takeover dns ") }},
		{name: "region change refused", regions: []string{"eu-west-1"}, org: func(h *harness) {
			h.apply(createdIn("acme", "acme", "eu-west-1"))
			h.start()
			h.waitReady("acme")
			h.stop()
		}, act: func(h *harness) { h.apply(createdIn("acme", "acme", "us-east-1")) },
			want: func(p []string) bool { return len(p) == 0 }},
		{name: "crash leftovers: unrecorded instance and an owned record under an old name", act: func(h *harness) {
			if err := h.store.Update("acme", func(o *state.Org) error {
				o.Observed.InstanceID, o.Observed.LaunchInFlight = "", true
				return nil
			}); err != nil {
				h.t.Fatal(err)
			}
			// A slug change whose new record was created but not recorded: bbolt
			// still names the old slug's record.
			old, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "acme-old.sandbox.tunnelward.test",
				Content: plan.TunnelTarget(h.org("acme").Observed.TunnelID), Comment: owner.DNSComment("acme")})
			if err != nil {
				h.t.Fatal(err)
			}
			if err := h.store.Update("acme", func(o *state.Org) error {
				o.Observed.DNSRecordID, o.Observed.DNSName = old.ID, old.Name
				return nil
			}); err != nil {
				h.t.Fatal(err)
			}
		}, want: func(p []string) bool { return len(p) == 1 && p[0][:len("delete dns")] == "delete dns" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{regions: tc.regions})
			if tc.setup != nil {
				tc.setup(h)
			}
			if tc.org != nil {
				tc.org(h)
			} else {
				h.start()
				h.apply(created("acme", "acme"))
				h.waitFor("converged", 15*time.Second, func() bool { return h.convergedErr("acme") == nil })
				h.stop()
			}
			if tc.act != nil {
				tc.act(h)
			}
			dry, err := h.eng.PlanOrg(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu   sync.Mutex
				pass *plan.Result
			)
			h.eng.planned = func(org string, p plan.Result) {
				mu.Lock()
				defer mu.Unlock()
				if pass == nil {
					pass = &p
				}
			}
			if _, err := h.eng.Reconcile(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			if pass == nil {
				t.Fatal("the pass computed no plan")
			}
			got, want := changeKeys(dry.Plan), changeKeys(*pass)
			if !slices.Equal(got, want) {
				t.Fatalf("dry run %q, the pass %q", got, want)
			}
			if !tc.want(got) {
				t.Fatalf("the scenario did not stage what it should: plan %q", got)
			}
			c, _ := Condition(h.org("acme"), state.CondConflict)
			if (len(dry.Plan.Conflicts) > 0) != c.Status || (c.Status && c.Message != dry.Plan.Conflicts[0].Reason) {
				t.Fatalf("dry run conflicts %+v, status Conflict %+v", dry.Plan.Conflicts, c)
			}
		})
	}
}
