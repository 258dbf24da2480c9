package reconcile

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// A new org's hostname is claimed by creating its record (issue 17): an
// owned record a crash left unrecorded (pointing at a tunnel that is gone)
// answers the create with "already exists", is adopted, fixed to the new
// tunnel and recorded; nothing is made twice.
func TestClaimAdoptsOwnedRecordLeftByCrash(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	left, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "acme." + h.sim.Config().ZoneName,
		Content: "gone.cfargotunnel.com", Comment: owner.DNSComment("acme")})
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	o := h.org("acme")
	w := h.world()
	if o.Observed.DNSRecordID != left.ID || len(w.records) != 1 {
		t.Fatalf("recorded %q with %d records live, want the left record %s adopted\n%s", o.Observed.DNSRecordID, len(w.records), left.ID, h.describe())
	}
	if got := w.records[0]["content"]; !strings.EqualFold(got.(string), plan.TunnelTarget(o.Observed.TunnelID)) {
		t.Fatalf("adopted record points at %v, want the org's tunnel %s", got, o.Observed.TunnelID)
	}
	h.requireClean("acme")
}

// Orgs created together claim their hostnames in one DNS batch; the one
// whose name another party holds gets a Conflict and is left with nothing
// built: the tunnel its claim needed is withdrawn, no token, no instance.
// The others are Ready.
func TestClaimLoserInBatchIsLeftWithNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	if _, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "held." + h.sim.Config().ZoneName,
		Content: "elsewhere.example.com", Comment: "not ours"}); err != nil {
		t.Fatal(err)
	}
	h.apply(created("c1", "c1"), created("c2", "c2"), created("c3", "held"), created("c4", "c4"))
	h.start()
	h.waitReady("c1", "c2", "c4")
	h.waitFor("c3 in conflict", 10*time.Second, func() bool { return IsTrue(h.org("c3"), state.CondConflict) })
	w := h.world()
	for _, tun := range w.tunnels {
		if tun["name"] == owner.TunnelName("c3") {
			t.Fatalf("the conflicting org kept a tunnel\n%s", h.describe())
		}
	}
	if len(w.instances) != 3 || len(w.params) != 3 || len(w.records) != 4 {
		t.Fatalf("want 3 instances, 3 parameters, 4 records (one not ours); got %d, %d, %d\n%s",
			len(w.instances), len(w.params), len(w.records), h.describe())
	}
	if o := h.org("c3"); o.Observed.TunnelID != "" || o.Observed.ParameterName != "" || o.Observed.InstanceID != "" {
		t.Fatalf("c3 records resources: %+v", o.Observed)
	}
	h.requireClean("c1", "c2", "c4")
}
