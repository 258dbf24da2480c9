package reconcile

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Cloudflare pools against the emulator serving one identity (account,
// zone, token) per pool, through the real SDK.

func createdInPool(org, slug, pool string) state.Fact {
	f := created(org, slug)
	f.Pool = pool
	return f
}

// poolWorld is where the emulator holds each org's tunnel and records:
// org id -> account of its live tunnels, and org id -> zone names of its
// records.
func (h *harness) poolWorld() (tunnels map[string][]string, records map[string][]string) {
	tunnels, records = map[string][]string{}, map[string][]string{}
	w := h.world()
	for _, t := range w.tunnels {
		name, _ := t["name"].(string)
		if org, ok := owner.OrgFromTunnelName(name); ok {
			acct, _ := t["account_tag"].(string)
			tunnels[org] = append(tunnels[org], acct)
		}
	}
	for _, r := range w.records {
		comment, _ := r["comment"].(string)
		if org, ok := owner.OrgFromDNSComment(comment); ok {
			name, _ := r["name"].(string)
			records[org] = append(records[org], name)
		}
	}
	return tunnels, records
}

// limitErrors counts answers of the emulator that are its pool limits
// (records per zone 81045, tunnels per account 1014): a normal run never
// meets them, placement keeps under the limits first.
func (h *harness) limitErrors() int {
	n := 0
	for _, r := range h.requests.all() {
		if r.method == http.MethodPost && r.status == http.StatusBadRequest {
			n++
		}
	}
	return n
}

func failedReason(o state.Org) string {
	c, ok := Condition(o, state.CondFailed)
	if !ok || !c.Status {
		return ""
	}
	return c.Reason
}

// Eight orgs created at once into two pools of three: three in each, the
// hostnames in their pool's zone, two Failed with PoolFull and nothing made
// for them; a delete frees a place and a waiting org is built in it.
func TestPlacementFillsPoolsAndWaitsForRoom(t *testing.T) {
	t.Parallel()
	acct1, acct2 := cloudsim.DefaultAccountID, cloudsim.DefaultAccount2ID
	h := newHarness(t, harnessOpts{pools: []PoolLimits{{MaxTunnels: 3, MaxRecords: 100}, {MaxTunnels: 100, MaxRecords: 3}},
		sim: func(c *cloudsim.Config) { c.DNSQuota = 3; c.TunnelQuota = 3 }})
	h.start()
	var orgs []string
	var facts []state.Fact
	for i := range 8 {
		id := fmt.Sprintf("org-%d", i)
		orgs = append(orgs, id)
		facts = append(facts, created(id, id))
	}
	h.apply(facts...)
	var ready, full []string
	h.waitFor("every org Ready or Failed", 20*time.Second, func() bool {
		ready, full = nil, nil
		for _, id := range orgs {
			o := h.org(id)
			switch {
			case IsTrue(o, state.CondReady):
				ready = append(ready, id)
			case failedReason(o) == ReasonPoolFull:
				full = append(full, id)
			}
		}
		return len(ready)+len(full) == len(orgs)
	})
	if len(ready) != 6 || len(full) != 2 {
		t.Fatalf("ready %v, pool full %v; want 6 and 2\n%s", ready, full, h.describe())
	}
	tunnels, records := h.poolWorld()
	inPool := map[string]int{}
	for _, id := range ready {
		o := h.org(id)
		pool := o.Observed.Pool
		inPool[pool]++
		wantAcct, wantZone := acct1, cloudsim.DefaultZoneName
		if pool == "sandbox2" {
			wantAcct, wantZone = acct2, cloudsim.DefaultZone2Name
		}
		if !slices.Equal(tunnels[id], []string{wantAcct}) || !slices.Equal(records[id], []string{id + "." + wantZone}) {
			t.Errorf("org %s in pool %q: tunnels in accounts %v, records %v", id, pool, tunnels[id], records[id])
		}
	}
	if inPool["sandbox"] != 3 || inPool["sandbox2"] != 3 {
		t.Fatalf("placements %v, want 3 in each pool", inPool)
	}
	for _, id := range full {
		o := h.org(id)
		if o.Observed.Pool != "" || len(tunnels[id]) > 0 || len(records[id]) > 0 || o.Observed.InstanceID != "" {
			t.Errorf("org %s is Failed with PoolFull but has pool %q, tunnels %v, records %v, instance %q",
				id, o.Observed.Pool, tunnels[id], records[id], o.Observed.InstanceID)
		}
		if c, _ := Condition(o, state.CondFailed); !strings.Contains(c.Message, "every Cloudflare pool is full") {
			t.Errorf("org %s: Failed message %q does not say the pools are full", id, c.Message)
		}
	}
	if n := h.limitErrors(); n != 0 {
		t.Fatalf("%d Cloudflare creates were refused (the emulator's limits fired); placement must keep under them", n)
	}
	if got := h.eng.Pools(); got[0].Tunnels != 3 || got[1].Records != 3 || got[0].Waiting != 2 {
		t.Fatalf("pool usage %+v", got)
	}

	// A delete in sandbox2 frees one place; one waiting org is built there.
	var gone string
	for _, id := range ready {
		if h.org(id).Observed.Pool == "sandbox2" {
			gone = id
			break
		}
	}
	h.apply(deleted(gone))
	h.waitDeleted(gone)
	var built string
	h.waitFor("a waiting org built in the freed place", 20*time.Second, func() bool {
		for _, id := range full {
			if IsTrue(h.org(id), state.CondReady) {
				built = id
				return true
			}
		}
		return false
	})
	if p := h.org(built).Observed.Pool; p != "sandbox2" {
		t.Fatalf("org %s built in pool %q, want sandbox2 (the only one with room)", built, p)
	}
	still := full[0]
	if still == built {
		still = full[1]
	}
	if r := failedReason(h.org(still)); r != ReasonPoolFull {
		t.Fatalf("org %s: Failed reason %q, want PoolFull (the freed place was taken)", still, r)
	}
	live := slices.DeleteFunc(slices.Clone(orgs), func(id string) bool { return id == gone || id == still })
	h.requireClean(live...)
	if n := h.limitErrors(); n != 0 {
		t.Fatalf("%d Cloudflare creates were refused by the emulator's limits", n)
	}
}

// data.pool places an org in the pool it names; one slug in two pools is
// two hostnames, no conflict; an unknown pool and a full named pool fail
// with a reason naming the pool, and nothing is made.
func TestExplicitPoolAndSlugPerZone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{pools: []PoolLimits{{MaxRecords: 1}, {MaxRecords: 5}},
		engine: func(c *Config) { c.Placement = PlaceLeastUsed }})
	h.start()
	h.apply(createdInPool("a", "shop", "sandbox"), createdInPool("b", "shop", "sandbox2"), createdInPool("c", "other", "nowhere"))
	h.waitReady("a", "b")
	_, records := h.poolWorld()
	if !slices.Equal(records["a"], []string{"shop." + cloudsim.DefaultZoneName}) || !slices.Equal(records["b"], []string{"shop." + cloudsim.DefaultZone2Name}) {
		t.Fatalf("records %v", records)
	}
	h.waitFor("org c Failed", 10*time.Second, func() bool { return failedReason(h.org("c")) == ReasonPoolNotServed })
	if c, _ := Condition(h.org("c"), state.CondFailed); !strings.Contains(c.Message, "nowhere") {
		t.Fatalf("message %q does not name the pool", c.Message)
	}
	// sandbox holds one record and has it: an org naming it waits.
	h.apply(createdInPool("d", "late", "sandbox"))
	h.waitFor("org d Failed", 10*time.Second, func() bool { return failedReason(h.org("d")) == ReasonPoolFull })
	if c, _ := Condition(h.org("d"), state.CondFailed); !strings.Contains(c.Message, "pool sandbox, which is full") {
		t.Fatalf("message %q", c.Message)
	}
	// No pool named: least-used picks sandbox2 (sandbox is full anyway).
	h.apply(created("e", "e"))
	h.waitReady("e")
	if p := h.org("e").Observed.Pool; p != "sandbox2" {
		t.Fatalf("org e in %q", p)
	}
	// A later created naming the other pool is refused, the org stays.
	h.apply(createdInPool("e", "e", "sandbox"))
	h.waitFor("pool conflict shown", 10*time.Second, func() bool {
		c, ok := Condition(h.org("e"), state.CondConflict)
		return ok && c.Status && c.Reason == "PoolChangeRefused"
	})
	if p := h.org("e").Observed.Pool; p != "sandbox2" {
		t.Fatalf("org e moved to %q", p)
	}
	h.requireClean("a", "b", "e")
}

// The placement is committed before the first Cloudflare write: an engine
// that dies after placing (its tunnel create failing) and restarts with
// another pool order builds the org in the pool it was placed in.
func TestPlacementSurvivesRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{pools: []PoolLimits{{}, {}}})
	if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{{Op: "cf.tunnel.create", ErrorRate: 1}}}); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.apply(created("a", "a"))
	h.waitFor("org a placed", 10*time.Second, func() bool { return h.org("a").Observed.Pool != "" })
	h.stop()
	if p := h.org("a").Observed.Pool; p != "sandbox" {
		t.Fatalf("placed in %q, want sandbox (fill order)", p)
	}
	if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{}); err != nil {
		t.Fatal(err)
	}
	h.reopen(func(c *Clouds) { c.PoolOrder = []string{"sandbox2", "sandbox"}; c.DefaultPool = "sandbox2" })
	h.start()
	h.waitReady("a")
	tunnels, _ := h.poolWorld()
	if !slices.Equal(tunnels["a"], []string{cloudsim.DefaultAccountID}) || h.org("a").Observed.Pool != "sandbox" {
		t.Fatalf("org a: tunnels in %v, pool %q; want the first account, sandbox", tunnels["a"], h.org("a").Observed.Pool)
	}
	h.requireClean("a")
}

// The sweep lists every pool: an owned tunnel and record of an org that
// does not exist, in the second account and zone, are collected there,
// and so is an org's tunnel in a pool it is not placed in.
func TestOrphansCollectedAcrossPools(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{pools: []PoolLimits{{}, {}}})
	h.start()
	h.apply(createdInPool("a", "a", "sandbox"))
	h.waitReady("a")
	ghost := h.sim.LoadTunnelIn(cloudsim.DefaultAccount2ID, owner.TunnelName("ghost"))
	stray := h.sim.LoadTunnelIn(cloudsim.DefaultAccount2ID, owner.TunnelName("a"))
	h.sim.LoadDNSRecord(cloudsim.DNSRecord{ZoneID: cloudsim.DefaultZone2ID, Name: "ghost." + cloudsim.DefaultZone2Name,
		Type: "CNAME", Content: ghost.ID + ".cfargotunnel.com", Proxied: true, Comment: owner.DNSComment("ghost")})
	for range 2 { // first seen, then past the grace
		if _, err := h.eng.Sweep(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // OrphanGrace is 1 ms of wall time
	}
	tunnels, records := h.poolWorld()
	if len(tunnels["ghost"]) != 0 || len(records["ghost"]) != 0 {
		t.Fatalf("ghost's tunnel %v and record %v left", tunnels["ghost"], records["ghost"])
	}
	if !slices.Equal(tunnels["a"], []string{cloudsim.DefaultAccountID}) {
		t.Fatalf("org a's tunnels in %v; the stray %s in the second account should be collected", tunnels["a"], stray.ID)
	}
	if !IsTrue(h.org("a"), state.CondReady) {
		t.Fatalf("org a not Ready after the sweep\n%s", h.describe())
	}
	h.requireClean("a")
}

// Two pools in one Cloudflare account (two zones): each pool's listing
// shows the account's every tunnel, and none of them is an orphan for
// being listed in the other pool. A tunnel of an org that does not exist
// is collected once.
func TestPoolsSharingAnAccountKeepTheirTunnels(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{pools: []PoolLimits{{}, {}}, sim: func(c *cloudsim.Config) {
		c.CFExtra[0].AccountID = c.AccountID // sandbox2: a second zone of the first account
	}})
	h.start()
	h.apply(createdInPool("a", "a", "sandbox"), createdInPool("b", "b", "sandbox2"))
	h.waitReady("a", "b")
	h.sim.LoadTunnelIn(cloudsim.DefaultAccountID, owner.TunnelName("ghost"))
	var collected []Orphan
	for range 2 { // first seen, then past the grace
		rep, err := h.eng.Sweep(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range rep.Orphans {
			if o.Collected {
				collected = append(collected, o)
			}
		}
		time.Sleep(5 * time.Millisecond) // OrphanGrace is 1 ms of wall time
	}
	if len(collected) != 1 || collected[0].OrgID != "ghost" {
		t.Fatalf("collected %+v; want only ghost's tunnel, once", collected)
	}
	tunnels, _ := h.poolWorld()
	for _, org := range []string{"a", "b"} {
		if !slices.Equal(tunnels[org], []string{cloudsim.DefaultAccountID}) {
			t.Fatalf("org %s's live tunnels in accounts %v, want its one\n%s", org, tunnels[org], h.describe())
		}
		if !IsTrue(h.org(org), state.CondReady) {
			t.Fatalf("org %s not Ready after the sweeps\n%s", org, h.describe())
		}
	}
	if len(tunnels["ghost"]) != 0 {
		t.Fatalf("ghost's tunnel left in %v", tunnels["ghost"])
	}
	h.requireClean("a", "b")
}
