package reconcile

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Tombstones deleted together answer their lookups by name and comment
// from one tunnel and one DNS listing that started after they were
// committed (issue 17), and still find what a crash left unrecorded: a
// tunnel re-created under the org's name and an owned record under
// another name, both made after an older listing the watches had taken,
// which must not serve.
func TestFakeTombstonesShareListingsAndFindLeftovers(t *testing.T) {
	fe := newFakeEngine(t)
	ctx := context.Background()
	orgs := []string{"a1", "a2", "a3", "a4"}
	for _, o := range orgs {
		fe.apply(created(o, o))
		fe.e.OnApplied(o)
		fe.pass(o)
	}
	fe.now = fe.now.Add(time.Minute)
	for _, l := range []Listing{ListTunnels, ListDNS} {
		if _, err := fe.e.Watch(ctx, l); err != nil { // the view an older watch left
			t.Fatal(err)
		}
	}
	c := fe.cloud
	fe.now = fe.now.Add(time.Second)
	// Crash leftovers, made after that view: a1's tunnel deleted out of band
	// and re-created unrecorded; an unrecorded owned record of a2's.
	if err := c.DeleteTunnel(ctx, fe.org("a1").Observed.TunnelID); err != nil {
		t.Fatal(err)
	}
	fresh, _, err := c.CreateTunnel(ctx, owner.TunnelName("a1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateCNAME(ctx, "a2-old.example.test", plan.TunnelTarget(fresh.ID), owner.DNSComment("a2")); err != nil {
		t.Fatal(err)
	}
	fe.now = fe.now.Add(time.Second)
	for _, o := range orgs {
		fe.apply(deleted(o))
		fe.e.OnApplied(o)
	}
	fe.now = fe.now.Add(time.Second)
	lists := c.calls["tunnels.list"]
	// As if two more cascades ran beside each of these passes (workers).
	fe.e.tombs.running = 2
	for _, o := range orgs {
		fe.pass(o)
	}
	fe.e.tombs.running = 0
	if n := c.calls["tunnels.list"] - lists; n != 1 {
		t.Fatalf("%d tunnel listings for 4 tombstones, want one shared", n)
	}
	live, _ := c.ListTunnels(ctx)
	if len(live) != 0 || len(c.records) != 0 || len(c.params) != 0 {
		t.Fatalf("left behind: %d tunnels (the re-created %s), %d records, %d params", len(live), fresh.ID, len(c.records), len(c.params))
	}
	for _, o := range orgs {
		if len(c.live(o)) != 0 || !fe.org(o).Observed.DeleteDone || !IsTrue(fe.org(o), state.CondDeleted) {
			t.Fatalf("%s not deleted: %+v", o, fe.org(o))
		}
	}
}

// A lone tombstone looks itself up (two lookups cost no more than the two
// listings), and so does one whose floor no listing follows while the gap
// holds the next early listing back: found all the same.
func TestFakeLoneTombstoneLooksItselfUp(t *testing.T) {
	fe := newFakeEngine(t)
	ctx := context.Background()
	fe.apply(created("acme", "acme"))
	fe.e.OnApplied("acme")
	fe.pass("acme")
	c := fe.cloud
	fe.now = fe.now.Add(time.Second)
	if _, _, err := c.CreateTunnel(ctx, owner.TunnelName("acme")+"-x"); err != nil { // not acme's
		t.Fatal(err)
	}
	fe.apply(deleted("acme"))
	fe.e.OnApplied("acme")
	fe.now = fe.now.Add(time.Second)
	fe.pass("acme")
	if c.calls["tunnels.list"] != 0 {
		t.Fatalf("a lone tombstone listed tunnels: %v", c.calls)
	}
	live, _ := c.ListTunnels(ctx)
	if len(live) != 1 || live[0].Name != owner.TunnelName("acme")+"-x" || len(c.records) != 0 || !fe.org("acme").Observed.DeleteDone {
		t.Fatalf("after the lone delete: tunnels %+v, %d records, done %v", live, len(c.records), fe.org("acme").Observed.DeleteDone)
	}
}

// Through the real SDK and the emulator: orgs deleted together (their
// cascades share listings while several run at once) leave nothing, a
// tunnel re-created and unrecorded before the delete included.
func TestBulkDeleteLeavesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.GC = false }})
	h.start()
	orgs := []string{"d1", "d2", "d3", "d4", "d5", "d6"}
	for _, o := range orgs {
		h.apply(created(o, o))
	}
	h.waitReady(orgs...)
	h.stop()
	ctx := context.Background()
	h.worldAction(cloudsim.WorldAction{Action: "delete", Kind: "tunnel", ID: h.org("d3").Observed.TunnelID})
	fresh, err := h.cf.CreateTunnel(ctx, owner.TunnelName("d3"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range orgs {
		h.apply(deleted(o))
	}
	// The cascades run at once, as the workers would run them.
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		for _, o := range orgs {
			wg.Go(func() {
				if _, err := h.eng.Reconcile(ctx, o); err != nil {
					t.Logf("reconcile %s: %v", o, err)
				}
			})
		}
		wg.Wait()
	}
	for _, o := range orgs {
		if !h.org(o).Observed.DeleteDone {
			t.Fatalf("%s: tombstone not done\n%s", o, h.describe())
		}
	}
	if w := h.world(); len(w.tunnels)+len(w.records)+len(w.instances)+len(w.params) != 0 {
		t.Fatalf("left behind (the unrecorded tunnel %s): %d tunnels, %d records, %d instances, %d parameters\n%s",
			fresh.ID, len(w.tunnels), len(w.records), len(w.instances), len(w.params), h.describe())
	}
	h.requireClean()
}
