package reconcile

import (
	"context"
	"testing"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/plan"
)

// The dry run reports exactly the drift made out of band, nothing once the
// org is converged, and only ever reads.
func TestPlanReportsDriftAndOnlyReads(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"), created("beta", "beta"))
	h.waitReady("acme", "beta")
	h.stop() // nobody repairs while we look
	ctx := context.Background()

	for _, org := range []string{"acme", "beta"} {
		p, err := h.eng.PlanOrg(ctx, org)
		if err != nil || !p.Plan.Empty() || !p.Plan.Ready {
			t.Fatalf("converged org %s plans %+v (err %v)\n%s", org, p.Plan, err, h.describe())
		}
	}
	h.worldAction(cloudsim.WorldAction{Action: "delete", Kind: "dns_record", Org: "acme"})
	h.worldAction(cloudsim.WorldAction{Action: "terminate_instance", Org: "beta"})
	h.waitFor("beta's instance gone", 5e9, func() bool { return len(h.world().instances) == 1 })
	h.sim.ResetCalls()

	p, err := h.eng.PlanOrg(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Plan.Changes) != 1 || p.Plan.Changes[0].Resource != plan.ResDNS || p.Plan.Changes[0].Op != plan.OpCreate {
		t.Fatalf("acme: want one dns create, got %+v", p.Plan.Changes)
	}
	all, orphans, err := h.eng.PlanAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || len(orphans) != 0 {
		t.Fatalf("plan all: %+v orphans %+v", all, orphans)
	}
	for _, op := range all {
		want := map[string]plan.Resource{"acme": plan.ResDNS, "beta": plan.ResInstance}[op.OrgID]
		if len(op.Plan.Changes) != 1 || op.Plan.Changes[0].Resource != want || op.Plan.Changes[0].Op != plan.OpCreate {
			t.Fatalf("%s: want one %s create, got %+v", op.OrgID, want, op.Plan.Changes)
		}
	}
	if m := mutations(h.sim.Calls()); m != 0 {
		t.Fatalf("the dry run wrote: %v", h.sim.Calls())
	}
	for op := range h.sim.Calls() {
		if !isRead(op) {
			t.Fatalf("the dry run sent %s", op)
		}
	}
}
