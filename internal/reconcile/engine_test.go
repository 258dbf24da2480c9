package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/state"
)

// mutations counts the emulator's mutating requests that changed something
// (2xx; a delete answered "not found" changed nothing).
func mutations(calls map[string]map[int]int) int {
	n := 0
	for op, st := range calls {
		if isRead(op) {
			continue
		}
		for code, c := range st {
			if code >= 200 && code < 300 {
				n += c
			}
		}
	}
	return n
}

func isRead(op string) bool {
	for _, s := range []string{".get", ".list", "Describe", "GetParameter", "GetCommandInvocation"} {
		if strings.Contains(op, s) {
			return true
		}
	}
	return false
}

func tagOf(in map[string]any, key string) string {
	tags, _ := in["Tags"].([]map[string]string)
	for _, t := range tags {
		if t["Key"] == key {
			return t["Value"]
		}
	}
	return ""
}

// convergedErr says how the world differs from "exactly one of each, as
// recorded, and Ready" for one org (the only org in the world).
func (h *harness) convergedErr(org string) error {
	w := h.world()
	if len(w.tunnels) != 1 || len(w.records) != 1 || len(w.instances) != 1 || len(w.params) != 1 {
		return fmt.Errorf("org %s: want exactly one tunnel, record, instance, parameter; got %d %d %d %d", org,
			len(w.tunnels), len(w.records), len(w.instances), len(w.params))
	}
	o := h.org(org)
	if !IsTrue(o, state.CondReady) {
		return fmt.Errorf("org %s not Ready: %+v", org, o.Conditions)
	}
	if w.tunnels[0]["id"] != o.Observed.TunnelID || w.tunnels[0]["name"] != owner.TunnelName(org) {
		return fmt.Errorf("tunnel %v is not the recorded %s", w.tunnels[0]["id"], o.Observed.TunnelID)
	}
	rec := w.records[0]
	if rec["id"] != o.Observed.DNSRecordID || rec["type"] != "CNAME" || rec["proxied"] != true ||
		rec["content"] != plan.TunnelTarget(o.Observed.TunnelID) || rec["comment"] != owner.DNSComment(org) {
		return fmt.Errorf("dns record %+v does not match org %s (recorded %s)", rec, org, o.Observed.DNSRecordID)
	}
	if w.instances[0]["InstanceId"] != o.Observed.InstanceID || tagOf(w.instances[0], owner.TagOrgID) != org ||
		tagOf(w.instances[0], owner.TagManagedBy) != owner.ManagedBy || instState(w.instances[0]) != "running" {
		return fmt.Errorf("instance %+v does not match org %s", w.instances[0], org)
	}
	if w.params[0]["Name"] != o.Observed.ParameterName || w.params[0]["Type"] != "SecureString" {
		return fmt.Errorf("parameter %+v does not match org %s", w.params[0], org)
	}
	// Named with its generation: the live instance must be this generation's.
	if v := h.invariants(fmt.Sprintf("%s:%d", org, o.Desired.Generation)); len(v) > 0 {
		return fmt.Errorf("invariant violations: %+v", v)
	}
	return nil
}

func (h *harness) requireOneEach(org string) {
	h.t.Helper()
	if err := h.convergedErr(org); err != nil {
		h.t.Fatalf("%v\n%s", err, h.describe())
	}
}

func TestCreateReadyDelete(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.requireOneEach("acme")

	o := h.org("acme")
	ud, _ := h.world().instances[0]["UserDataScript"].(string)
	if !strings.Contains(ud, "TUNNEL_TOKEN_PARAMETER='"+o.Observed.ParameterName+"'") {
		t.Fatalf("user-data does not name the parameter %s:\n%s", o.Observed.ParameterName, ud)
	}
	if c, _ := Condition(o, state.CondProvisioning); c.Status {
		t.Fatalf("Provisioning still true on a Ready org: %+v", o.Conditions)
	}

	h.apply(deleted("acme"))
	h.waitDeleted("acme")
	h.waitFor("nothing left", 5*time.Second, func() bool { return len(h.invariants()) == 0 && len(h.world().instances) == 0 })
	w := h.world()
	if len(w.tunnels)+len(w.records)+len(w.params) != 0 {
		t.Fatalf("left behind: %s", h.describe())
	}
	o = h.org("acme")
	if !IsTrue(o, state.CondDeleted) || IsTrue(o, state.CondDeleting) || o.Observed.TunnelID != "" {
		t.Fatalf("tombstone status wrong: %+v %+v", o.Conditions, o.Observed)
	}
}

func TestCreateDeleteCreateNewGeneration(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	first := h.world().instances[0]["ClientToken"]
	h.apply(deleted("acme"))
	h.waitDeleted("acme")
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.waitFor("old instance gone", 5*time.Second, func() bool { return len(h.world().instances) == 1 })
	h.requireOneEach("acme")
	second := h.world().instances[0]["ClientToken"]
	if first == second || !strings.Contains(fmt.Sprint(second), "-g2-") {
		t.Fatalf("re-created org reused client token %v (first %v)", second, first)
	}
	if g := h.org("acme").Desired.Generation; g != 2 {
		t.Fatalf("generation %d, want 2", g)
	}
}

// All three events land before the engine looks: it sees only the newest
// desired state (present, generation 2) and builds it once.
func TestCreateDeleteCreateCoalesced(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.apply(created("acme", "acme"), deleted("acme"), created("acme", "acme"))
	h.start()
	h.waitReady("acme")
	h.requireOneEach("acme")
	if tok := fmt.Sprint(h.world().instances[0]["ClientToken"]); !strings.Contains(tok, "-g2-") {
		t.Fatalf("client token %s, want generation 2", tok)
	}
}

func TestDeletedBeforeCreated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(state.Fact{Seq: 10, Type: state.FactDeleted, OrgID: "ghost"})
	h.apply(state.Fact{Seq: 5, Type: state.FactCreated, OrgID: "ghost", Slug: "ghost"}) // older: stale
	h.waitFor("ghost tombstone done", 5*time.Second, func() bool {
		o, ok, _ := h.store.Get("ghost")
		return ok && o.Observed.DeleteDone
	})
	if m := mutations(h.sim.Calls()); m != 0 {
		t.Fatalf("deleted-before-created made %d mutating calls: %v", m, h.sim.Calls())
	}
	h.requireClean()
}

// Replayed and duplicate events change nothing, and a reconcile of a
// converged org sends no write at all.
func TestReplayAndDuplicatesChangeNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	facts := []state.Fact{{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "acme", Slug: "acme"}}
	h.apply(facts...)
	h.waitReady("acme")
	before := h.org("acme")
	h.sim.ResetCalls()

	h.apply(facts...) // redelivery
	h.apply(facts...) // replay
	h.eng.Enqueue("acme")
	h.eng.Enqueue("acme") // as startup and a sweep would
	start := h.eng.Reconciles()
	h.waitFor("a reconcile of the converged org", 5*time.Second, func() bool { return h.eng.Reconciles() > start })
	h.eng.Queue().ShutDownWithDrain(context.Background())
	if m := mutations(h.sim.Calls()); m != 0 {
		t.Fatalf("converged org got %d writes: %v", m, h.sim.Calls())
	}
	after := h.org("acme")
	if after.LastSeq != before.LastSeq || after.Observed.TunnelID != before.Observed.TunnelID ||
		after.Observed.InstanceID != before.Observed.InstanceID || !IsTrue(after, state.CondReady) {
		t.Fatalf("replay changed the org: before %+v after %+v", before, after)
	}
	h.requireOneEach("acme")
}

func TestSlugChangeMovesIngressAndDNS(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	oldRecord := h.org("acme").Observed.DNSRecordID
	h.apply(created("acme", "acme-corp"))
	h.waitFor("record moved", 10*time.Second, func() bool {
		o := h.org("acme")
		return IsTrue(o, state.CondReady) && o.Observed.DNSName == "acme-corp.sandbox.tunnelward.test"
	})
	w := h.world()
	if len(w.records) != 1 || w.records[0]["name"] != "acme-corp.sandbox.tunnelward.test" || w.records[0]["id"] == oldRecord {
		t.Fatalf("want only the new record, got %+v", w.records)
	}
	rules, _, err := h.cf.GetConfig(context.Background(), h.org("acme").Observed.TunnelID)
	if err != nil || len(rules) != 2 || rules[0].Hostname != "acme-corp.sandbox.tunnelward.test" {
		t.Fatalf("ingress not moved: %+v %v", rules, err)
	}
	h.requireOneEach("acme")
}

func remediations(o state.Org, action string) []state.Remediation {
	var out []state.Remediation
	for _, r := range o.Remediations {
		if r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

func TestHealthKilledConnectorRestarted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.HealthGrace = restartGrace }})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	inst := h.org("acme").Observed.InstanceID
	h.worldAction(cloudsim.WorldAction{Action: "kill_connector", Org: "acme"})
	h.apply(healthFailed("acme"))
	h.waitFor("restart recorded ok and Ready", 10*time.Second, func() bool {
		o := h.org("acme")
		rs := remediations(o, ActRestart)
		return IsTrue(o, state.CondReady) && len(rs) == 1 && rs[0].Outcome == OutcomeOK
	})
	o := h.org("acme")
	if o.Observed.InstanceID != inst || len(remediations(o, ActReplace)) != 0 {
		t.Fatalf("a restart should have been enough; instance %s -> %s, remediations %+v", inst, o.Observed.InstanceID, o.Remediations)
	}
	if h.sim.CallCount("ssm.SendCommand") != 1 {
		t.Fatalf("SendCommand calls %d, want 1", h.sim.CallCount("ssm.SendCommand"))
	}
	for _, r := range o.HealthReports {
		if !r.Handled {
			t.Fatalf("health report not handled: %+v", r)
		}
	}
	h.requireOneEach("acme")
}

func TestHealthStoppedInstanceReplaced(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	old := h.org("acme").Observed.InstanceID
	h.worldAction(cloudsim.WorldAction{Action: "stop_instance", ID: old})
	h.apply(healthFailed("acme"))
	// The new instance id is recorded at launch, while Ready still shows the
	// old instance's status; the remediation's outcome marks the end.
	h.waitFor("replacement Ready", 10*time.Second, func() bool {
		o := h.org("acme")
		rs := remediations(o, ActReplace)
		return IsTrue(o, state.CondReady) && o.Observed.InstanceID != old && len(rs) > 0 && rs[len(rs)-1].Outcome != OutcomePending
	})
	o := h.org("acme")
	rs := remediations(o, ActReplace)
	if len(rs) != 1 || rs[0].Outcome != OutcomeOK {
		t.Fatalf("want one replace_instance ok, got %+v", o.Remediations)
	}
	h.waitFor("stopped instance terminated", 5*time.Second, func() bool { return len(h.world().instances) == 1 })
	if tok := fmt.Sprint(h.world().instances[0]["ClientToken"]); !strings.HasSuffix(tok, "-a2") {
		t.Fatalf("replacement client token %s, want attempt 2", tok)
	}
	h.requireOneEach("acme")
}

// A connector that does not come back after a restart (its instance keeps
// failing) gets the instance replaced after the grace period.
func TestHealthRestartFailsThenReplace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	old := h.org("acme").Observed.InstanceID
	// cloudflared on this instance now exits at every start: the restart
	// runs but cannot help, so the grace runs out and the instance goes.
	h.worldAction(cloudsim.WorldAction{Action: "break_connector", Org: "acme"})
	h.apply(healthFailed("acme"))
	h.waitFor("replaced and Ready", 15*time.Second, func() bool {
		o := h.org("acme")
		return IsTrue(o, state.CondReady) && o.Observed.InstanceID != old
	})
	o := h.org("acme")
	rs := remediations(o, ActRestart)
	if len(rs) != 1 || rs[0].Outcome != OutcomeFailed {
		t.Fatalf("want one failed restart: %+v", o.Remediations)
	}
	if n := h.sim.CallCount("ssm.SendCommand"); n != 1 {
		t.Fatalf("SendCommand %d times, want 1", n)
	}
	if rp := remediations(o, ActReplace); len(rp) != 1 || rp[0].Outcome != OutcomeOK {
		t.Fatalf("want one successful replacement: %+v", o.Remediations)
	}
	h.waitFor("one instance", 5*time.Second, func() bool { return len(h.world().instances) == 1 })
	h.requireOneEach("acme")
}

func TestHealthFalseAlarm(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.sim.ResetCalls()
	h.apply(healthFailed("acme"))
	h.waitFor("false alarm recorded", 5*time.Second, func() bool {
		return len(remediations(h.org("acme"), ActFalseAlarm)) == 1
	})
	if m := mutations(h.sim.Calls()); m != 0 {
		t.Fatalf("false alarm caused %d writes: %v", m, h.sim.Calls())
	}
	if o := h.org("acme"); !IsTrue(o, state.CondReady) || len(o.Remediations) != 1 {
		t.Fatalf("want Ready and only the false alarm: %+v", o.Remediations)
	}
}

func TestRemediationRateLimited(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) {
		c.RemediationLimit, c.RemediationWindow, c.HealthGrace = 1, time.Hour, restartGrace
	}})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.worldAction(cloudsim.WorldAction{Action: "kill_connector", Org: "acme"})
	h.apply(healthFailed("acme"))
	h.waitFor("first restart ok", 10*time.Second, func() bool {
		rs := remediations(h.org("acme"), ActRestart)
		return len(rs) == 1 && rs[0].Outcome == OutcomeOK
	})
	h.worldAction(cloudsim.WorldAction{Action: "kill_connector", Org: "acme"})
	h.apply(healthFailed("acme"))
	h.waitFor("Degraded by the rate limit", 5*time.Second, func() bool {
		c, ok := Condition(h.org("acme"), state.CondDegraded)
		return ok && c.Status && c.Reason == "RemediationRateLimited"
	})
	if n := h.sim.CallCount("ssm.SendCommand"); n != 1 {
		t.Fatalf("SendCommand %d times, want 1 (limit)", n)
	}
}

func TestUnownedRecordConflict(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	theirs, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "acme.sandbox.tunnelward.test",
		Content: "legacy.example.net", Comment: "hand-made by ops"})
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	h.apply(created("acme", "acme"))
	h.waitFor("Conflict", 10*time.Second, func() bool { return IsTrue(h.org("acme"), state.CondConflict) })
	// The hostname is checked before anything billable is built: the
	// conflicting org gets no tunnel, token or instance (the Conflict
	// condition is written after the pass that decided it).
	if w := h.world(); len(w.tunnels)+len(w.instances)+len(w.params) != 0 {
		t.Fatalf("conflicting org was built: %d tunnels, %d instances, %d parameters\n%s",
			len(w.tunnels), len(w.instances), len(w.params), h.describe())
	}
	op, err := h.eng.PlanOrg(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	withheld := map[plan.Resource]bool{}
	for _, c := range op.Plan.Withheld {
		withheld[c.Resource] = true
	}
	if len(op.Plan.Changes) != 0 || !withheld[plan.ResTunnel] || !withheld[plan.ResToken] || !withheld[plan.ResInstance] {
		t.Fatalf("plan of a conflicting org: changes %v, withheld %v; want no change and tunnel, token, instance withheld",
			op.Plan.Changes, op.Plan.Withheld)
	}
	got, err := h.cf.GetRecord(ctx, theirs.ID)
	if err != nil || got.Content != "legacy.example.net" || got.Comment != "hand-made by ops" {
		t.Fatalf("unowned record touched: %+v %v", got, err)
	}
	o := h.org("acme")
	if IsTrue(o, state.CondReady) || o.Observed.DNSRecordID != "" {
		t.Fatalf("conflicting org must not be Ready nor record the record: %+v", o)
	}
	if c, _ := Condition(o, state.CondConflict); !strings.Contains(c.Message, theirs.ID) {
		t.Fatalf("conflict message does not name the record: %q", c.Message)
	}
	// Ops removes it; the next sweep requeues and the org converges.
	if _, err := h.cf.DeleteRecord(ctx, theirs.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	h.waitReady("acme")
	h.requireOneEach("acme")
}

func TestSweepRestoresDrift(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		act  cloudsim.WorldAction
	}{
		{"record deleted", cloudsim.WorldAction{Action: "delete", Kind: "dns_record", Org: "acme"}},
		{"tunnel deleted", cloudsim.WorldAction{Action: "delete", Kind: "tunnel", Org: "acme"}},
		{"instance terminated", cloudsim.WorldAction{Action: "terminate_instance", Org: "acme"}},
		{"parameter deleted", cloudsim.WorldAction{Action: "delete", Kind: "parameter", Org: "acme"}},
		{"record altered", cloudsim.WorldAction{Action: "alter_dns", Org: "acme", Content: "elsewhere.example.net"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{})
			h.start()
			h.apply(created("acme", "acme"))
			h.waitReady("acme")
			h.worldAction(tc.act)
			h.waitFor("drift visible", 5*time.Second, func() bool { return true })
			rep, err := h.eng.Sweep(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Drift) == 0 || len(rep.Requeued) != 1 {
				t.Fatalf("sweep did not see the drift: %+v", rep)
			}
			h.waitFor("restored", 15*time.Second, func() bool { return h.convergedErr("acme") == nil })
			h.requireOneEach("acme")
			rep, err = h.eng.Sweep(context.Background())
			if err != nil || len(rep.Drift) != 0 {
				t.Fatalf("second sweep still finds drift: %+v %v", rep, err)
			}
			// A restart sent for the re-created tunnel may still be on its way
			// when the connector already found the new token by itself: it
			// drops the tunnel once more, briefly, and the sweep rightly looks
			// again. It settles without further drift.
			h.waitFor("a sweep with nothing to do", 5*time.Second, func() bool {
				rep, err := h.eng.Sweep(context.Background())
				return err == nil && len(rep.Drift) == 0 && len(rep.Requeued) == 0
			})
		})
	}
}

func TestSweepCollectsOrphans(t *testing.T) {
	t.Parallel()
	for _, gc := range []bool{true, false} {
		t.Run(fmt.Sprintf("gc=%v", gc), func(t *testing.T) {
			t.Parallel()
			// The orphan grace passes on the engine's clock, moved by the
			// test, not by sleeping.
			var skew atomic.Int64
			h := newHarness(t, harnessOpts{engine: func(c *Config) {
				c.GC, c.OrphanGrace = gc, time.Minute
				c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
			}})
			ctx := context.Background()
			// Left by an org tunnelward no longer knows (lost bbolt, a bug):
			tun, err := h.cf.CreateTunnel(ctx, owner.TunnelName("gone"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "gone.sandbox.tunnelward.test",
				Content: plan.TunnelTarget(tun.ID), Comment: owner.DNSComment("gone")}); err != nil {
				t.Fatal(err)
			}
			// ...and resources it does not own, which must never be touched.
			if _, err := h.cf.CreateTunnel(ctx, "someone-elses"); err != nil {
				t.Fatal(err)
			}
			if _, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "www.sandbox.tunnelward.test",
				Content: "origin.example.net", Comment: "ops"}); err != nil {
				t.Fatal(err)
			}
			h.start()
			h.apply(created("acme", "acme"))
			h.waitReady("acme")
			if _, err := h.eng.Sweep(ctx); err != nil { // first sighting starts the grace period
				t.Fatal(err)
			}
			skew.Store(int64(time.Minute + time.Second))
			rep, err := h.eng.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Orphans) != 2 {
				t.Fatalf("want 2 orphans, got %+v", rep.Orphans)
			}
			for _, o := range rep.Orphans {
				if o.OrgID != "gone" || o.Collected != gc {
					t.Fatalf("orphan %+v: want org gone, collected=%v", o, gc)
				}
			}
			st := h.sim.State()
			names := map[string]bool{}
			for _, tt := range st.Tunnels {
				if tt["deleted_at"] == nil {
					names[fmt.Sprint(tt["name"])] = true
				}
			}
			for _, r := range st.DNSRecords {
				names[fmt.Sprint(r["name"])] = true
			}
			if !names["someone-elses"] || !names["www.sandbox.tunnelward.test"] || !names["tw-acme"] {
				t.Fatalf("a resource that is not an orphan was touched: %v", names)
			}
			if gc == names["tw-gone"] || gc == names["gone.sandbox.tunnelward.test"] {
				t.Fatalf("gc=%v but orphans present=%v/%v", gc, names["tw-gone"], names["gone.sandbox.tunnelward.test"])
			}
			if gc {
				h.requireClean("acme")
			}
		})
	}
}

// Responses lost after the operation was applied, on every mutating call
// (and the reads the engine finds resources with): every create is done
// twice from the engine's view, so its retry must meet the first result —
// 409 on the tunnel name, 81053 on the DNS name, the same reservation for
// the ClientToken, an overwrite of the parameter, not-found on deletes —
// and still end with exactly one of each, then nothing.
func TestLostResponsesConvergeWithoutDuplicates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{
		{Op: "cf.tunnel.create", LostRate: 0.5}, {Op: "cf.tunnel.delete", LostRate: 0.5},
		{Op: "cf.tunnel_config.put", LostRate: 0.5}, {Op: "cf.tunnel_token.get", LostRate: 0.5},
		{Op: "cf.dns.create", LostRate: 0.5}, {Op: "cf.dns.delete", LostRate: 0.5}, {Op: "cf.dns.batch", LostRate: 0.5},
		{Op: "cf.tunnel_connections.delete", LostRate: 0.5},
		{Op: "ec2.RunInstances", LostRate: 0.5}, {Op: "ec2.TerminateInstances", LostRate: 0.5},
		{Op: "ec2.DescribeInstances", LostRate: 0.2},
		{Op: "ssm.PutParameter", LostRate: 0.5}, {Op: "ssm.AddTagsToResource", LostRate: 0.5},
		{Op: "ssm.DeleteParameter", LostRate: 0.5},
	}}); err != nil {
		t.Fatal(err)
	}
	h.start()
	orgs := []string{"l1", "l2", "l3", "l4"}
	for _, o := range orgs {
		h.apply(created(o, o))
	}
	h.waitReady(orgs...)
	h.requireClean(orgs...) // one tunnel, record, parameter and instance per org, no orphan
	if w := h.world(); len(w.tunnels) != len(orgs) || len(w.records) != len(orgs) || len(w.params) != len(orgs) || len(w.instances) != len(orgs) {
		t.Fatalf("want %d of each:\n%s", len(orgs), h.describe())
	}
	lost := h.sim.LostCalls()
	lost["cf.dns.create"] += lost["cf.dns.batch"] // the creates went alone or in a batch
	for _, op := range []string{"cf.tunnel.create", "cf.dns.create", "ec2.RunInstances", "ssm.PutParameter"} {
		if lost[op] == 0 {
			t.Fatalf("no %s response was lost; the test exercised nothing: %v", op, lost)
		}
	}
	for _, o := range orgs {
		h.apply(deleted(o))
	}
	h.waitDeleted(orgs...)
	h.waitFor("nothing left", 10*time.Second, func() bool { return len(h.invariants()) == 0 && len(h.world().instances) == 0 })
	if w := h.world(); len(w.tunnels)+len(w.records)+len(w.params) != 0 {
		t.Fatalf("left behind: %s", h.describe())
	}
	t.Logf("lost responses: %v", h.sim.LostCalls())
}

// Throttling and server errors on every API: the engine still converges,
// and the throttles were really served (and waited out).
func TestFaultsStillConverge(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{
		{Op: "cf.*", ThrottleRate: 0.1, RetryAfter: cloudsim.Duration(50 * time.Millisecond), ErrorRate: 0.15, ErrorStatus: 502},
		{Op: "ec2.*", ThrottleRate: 0.2, ErrorRate: 0.1, ErrorStatus: 503},
		{Op: "ssm.*", ThrottleRate: 0.2, ErrorRate: 0.1, ErrorStatus: 500},
	}}); err != nil {
		t.Fatal(err)
	}
	h.start()
	orgs := []string{"a1", "a2", "a3", "a4", "a5"}
	for _, o := range orgs {
		h.apply(created(o, o))
	}
	h.waitReady(orgs...)
	throttled, failed := 0, 0
	for _, st := range h.sim.Calls() {
		for code, n := range st {
			switch {
			case code == 429:
				throttled += n
			case code >= 500:
				failed += n
			}
		}
	}
	if throttled == 0 || failed == 0 {
		t.Fatalf("faults not exercised: throttled=%d failed=%d", throttled, failed)
	}
	// Retry-After honoured: once the client has a 429 asking for N seconds,
	// no Cloudflare request passes its gate for N seconds. Judged on the
	// client's side: when each attempt passed the gate (a request that
	// passed it before the 429 came back may reach the transport later on
	// a loaded machine, and is not a violation) and when the 429's answer
	// came back; the transport pauses the client right then, so 20 ms is
	// only the few statements between the two.
	reqs := h.sends.all()
	n429 := 0
	for _, r := range reqs {
		if r.status != http.StatusTooManyRequests {
			continue
		}
		n429++
		secs, err := strconv.Atoi(r.retryAfter)
		if err != nil || secs < 1 {
			t.Fatalf("429 without a usable Retry-After: %+v", r)
		}
		quiet := r.done.Add(20 * time.Millisecond)
		until := r.done.Add(time.Duration(secs) * time.Second)
		for _, next := range reqs {
			if next.gated.IsZero() {
				t.Fatalf("request %s %s: no attempt in its context", next.method, next.path)
			}
			if next.gated.After(quiet) && next.gated.Before(until) {
				t.Fatalf("request %s %s let through %v after a 429 with Retry-After %ds came back", next.method, next.path, next.gated.Sub(r.done), secs)
			}
		}
	}
	if n429 == 0 {
		t.Fatal("the client saw no 429")
	}
	h.requireClean(orgs...)
	if w := h.world(); len(w.tunnels) != 5 || len(w.instances) != 5 || len(w.records) != 5 || len(w.params) != 5 {
		t.Fatalf("want 5 of each: %s", h.describe())
	}
	for _, o := range orgs {
		h.apply(deleted(o))
	}
	h.waitDeleted(orgs...)
	h.waitFor("clean", 10*time.Second, func() bool { return len(h.invariants()) == 0 })
}

func TestManyOrgsInParallel(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.Workers = 8 }})
	h.start()
	var orgs []string
	for i := range 24 {
		orgs = append(orgs, fmt.Sprintf("org-%02d", i))
	}
	for _, o := range orgs {
		h.apply(created(o, o), healthFailed(o)) // two events per org: two queue adds
	}
	h.waitReady(orgs...)
	h.requireClean(orgs...)
	if n := h.eng.Overlaps(); n != 0 {
		t.Fatalf("%d reconciles overlapped on one org", n)
	}
	if w := h.world(); len(w.tunnels) != 24 || len(w.instances) != 24 {
		t.Fatalf("want 24 tunnels and instances: %d %d", len(w.tunnels), len(w.instances))
	}
	// A sweep of 24 converged orgs costs list pages (page size 20: 2 per
	// listing), not calls per org, and requeues nobody.
	h.waitFor("readiness polls over", 5*time.Second, func() bool { return h.eng.Queue().Waiting() == 0 && h.eng.Queue().Len() == 0 })
	h.sim.ResetCalls()
	rep, err := h.eng.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	calls := h.sim.Calls()
	total := 0
	for op, st := range calls {
		for _, n := range st {
			total += n
		}
		if !strings.Contains(op, "list") && !strings.Contains(op, "Describe") {
			t.Fatalf("sweep made a per-org call %s: %v", op, calls)
		}
	}
	if total != 8 || len(rep.Requeued) != 0 || len(rep.Drift) != 0 || rep.Tunnels != 24 || rep.Instances != 24 {
		t.Fatalf("sweep of 24 orgs: %d calls (want 8 = 4 listings x 2 pages), report %+v, calls %v", total, rep, calls)
	}

	for _, o := range orgs {
		h.apply(deleted(o))
	}
	h.waitDeleted(orgs...)
	h.waitFor("clean", 10*time.Second, func() bool { return len(h.invariants()) == 0 })
	if n := h.eng.Overlaps(); n != 0 {
		t.Fatalf("%d reconciles overlapped on one org", n)
	}
}

// A crash right after a create, before its id reached bbolt: the next
// reconcile's create meets "already exists" and adopts what is ours.
func TestAdoptsUnrecordedResources(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	tun, err := h.cf.CreateTunnel(ctx, owner.TunnelName("acme"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "acme.sandbox.tunnelward.test",
		Content: plan.TunnelTarget(tun.ID), Comment: owner.DNSComment("acme")})
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	o := h.org("acme")
	if o.Observed.TunnelID != tun.ID || o.Observed.DNSRecordID != rec.ID {
		t.Fatalf("did not adopt: tunnel %s (want %s), record %s (want %s)", o.Observed.TunnelID, tun.ID, o.Observed.DNSRecordID, rec.ID)
	}
	h.requireOneEach("acme")
}

// A crash after the launch attempt was committed but before the instance id
// was: the retry uses the same ClientToken and gets the same instance.
func TestLaunchInFlightReusesClientToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	o := h.org("acme")
	d := h.eng.Desired(o)
	// Pretend the launch record says "in flight" for the live instance's attempt.
	if err := h.store.Update("acme", func(x *state.Org) error {
		x.Observed.LaunchInFlight = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	log := h.eng.log.With("org_id", "acme")
	_, aw, err := h.eng.regionFor(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.launchInstance(context.Background(), log, "acme", d, "", o.Observed.TunnelID, aw); err != nil {
		t.Fatal(err)
	}
	if got := h.org("acme").Observed.InstanceID; got != o.Observed.InstanceID {
		t.Fatalf("retried launch made instance %s, want the original %s", got, o.Observed.InstanceID)
	}
	if w := h.world(); len(w.instances) != 1 {
		t.Fatalf("want one instance, got %d", len(w.instances))
	}
}

// The token must never leave Cloudflare and SSM: not in logs, bbolt,
// user-data or the emulator's view of anything but the parameter.
func TestTokenNeverLeaks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.HealthGrace = restartGrace }})
	h.start()
	orgs := []string{"acme", "beta"}
	for _, o := range orgs {
		h.apply(created(o, o))
	}
	h.waitReady(orgs...)
	h.worldAction(cloudsim.WorldAction{Action: "kill_connector", Org: "acme"})
	h.apply(healthFailed("acme"))
	h.waitFor("restart done", 10*time.Second, func() bool {
		rs := remediations(h.org("acme"), ActRestart)
		return len(rs) == 1 && rs[0].Outcome == OutcomeOK
	})
	var secrets []string
	for _, o := range orgs {
		tok, err := h.cf.Token(context.Background(), h.org(o).Observed.TunnelID)
		if err != nil || tok.IsZero() {
			t.Fatal(err)
		}
		secrets = append(secrets, tok.Reveal())
	}
	h.stop()
	db, err := os.ReadFile(h.store.Path())
	if err != nil {
		t.Fatal(err)
	}
	st := h.sim.State()
	var ud strings.Builder
	for _, in := range st.Instances {
		fmt.Fprint(&ud, in["UserData"], in["UserDataScript"])
	}
	for _, s := range secrets {
		for where, text := range map[string]string{"logs": h.logs.String(), "bbolt": string(db), "user-data": ud.String(), "status": h.describe()} {
			if strings.Contains(text, s) {
				t.Fatalf("token found in %s", where)
			}
		}
	}
	if len(h.logs.String()) == 0 {
		t.Fatal("no logs captured")
	}
	h.requireClean(orgs...)
}

// No health event at all: the sweep sees the tunnel down, the org is
// requeued, and the engine restarts cloudflared on its own.
func TestSweepFindsDownTunnel(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.HealthGrace = restartGrace }})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.worldAction(cloudsim.WorldAction{Action: "kill_connector", Org: "acme"})
	h.waitFor("tunnel down", 5*time.Second, func() bool {
		t, err := h.cf.GetTunnel(context.Background(), h.org("acme").Observed.TunnelID)
		return err == nil && t.Status != "healthy"
	})
	rep, err := h.eng.Sweep(context.Background())
	if err != nil || len(rep.Requeued) != 1 {
		t.Fatalf("sweep did not requeue the down org: %+v %v", rep, err)
	}
	h.waitFor("restarted and Ready", 10*time.Second, func() bool {
		o := h.org("acme")
		rs := remediations(o, ActRestart)
		return IsTrue(o, state.CondReady) && len(rs) == 1 && rs[0].Outcome == OutcomeOK
	})
	h.requireOneEach("acme")
}

// A restart on the same bbolt file: Ready orgs are left to the startup
// sweep (no per-org reads), a drifted one is found by it and repaired.
func TestRestartLeavesReadyOrgsToTheSweep(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"), created("beta", "beta"))
	h.waitReady("acme", "beta")
	h.stop()
	h.worldAction(cloudsim.WorldAction{Action: "delete", Kind: "dns_record", Org: "beta"})
	h.sim.ResetCalls()

	cfg := h.eng.Config()
	cfg.SweepInterval = time.Hour // sweeps at start
	eng, err := New(cfg, h.eng.clouds, h.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	h.start()
	h.waitFor("beta's record back", 10*time.Second, func() bool {
		o := h.org("beta")
		return o.Observed.DNSRecordID != "" && len(h.world().records) == 2 && IsTrue(o, state.CondReady)
	})
	h.requireClean("acme", "beta")
	if n := h.sim.CallCount("cf.tunnel.get"); n != 1 {
		t.Fatalf("tunnel GETs after restart: %d, want 1 (beta only): %v", n, h.sim.Calls())
	}
	if n := h.sim.CallCount("cf.dns.create"); n != 1 {
		t.Fatalf("dns creates %d, want 1", n)
	}
}

// Cloudflare refuses to delete a tunnel with active connections; the
// engine cleans them and deletes again.
func TestDeleteTunnelWithActiveConnections(t *testing.T) {
	// Not parallel: the emulated cloudflared reconnects within 100 ms of its connections being cleaned.
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.stop()
	id := h.org("acme").Observed.TunnelID
	err := h.eng.clouds.Tunnels.DeleteTunnel(context.Background(), id)
	if !errors.Is(err, ErrActiveConnections) {
		t.Fatalf("delete of a connected tunnel: %v, want ErrActiveConnections", err)
	}
	if err := h.eng.deleteTunnel(context.Background(), h.eng.log, id, h.eng.mustPool("")); err != nil {
		t.Fatal(err)
	}
	if tun, err := h.cf.GetTunnel(context.Background(), id); err == nil && !tun.Deleted {
		t.Fatalf("tunnel %s still live: %+v", id, tun)
	}
}

// With the emulator enforcing a Cloudflare-shaped budget (going over blocks
// every call for the rest of the window) and the client limiter sized to
// the same budget, a burst of orgs converges without a single 429: the
// budget is kept by tunnelward, not discovered.
func TestCloudflareBudgetNeverExceeded(t *testing.T) {
	// Not parallel: the client budget equals the emulator's: a loaded machine's delivery delays would spend it twice.
	budget := 20
	window := 2 * time.Second
	h := newHarness(t, harnessOpts{
		sim: func(c *cloudsim.Config) {
			c.Limits = cloudsim.RateLimits{CFEnabled: true, CFBudget: budget, CFWindow: cloudsim.Duration(window)}
		},
		cfBudget: &ratelimit.WindowBudget{Requests: budget, Window: window, Burst: 5},
	})
	h.start()
	orgs := []string{"b1", "b2", "b3", "b4", "b5", "b6"}
	for _, o := range orgs {
		h.apply(created(o, o))
	}
	h.waitReady(orgs...)
	for _, o := range orgs {
		h.apply(deleted(o))
	}
	h.waitDeleted(orgs...)
	cf := 0
	for op, st := range h.sim.Calls() {
		if !strings.HasPrefix(op, "cf.") {
			continue
		}
		for code, n := range st {
			cf += n
			if code == 429 {
				t.Fatalf("%s answered 429 %d times: the budget was exceeded (%v)", op, n, h.sim.Calls())
			}
		}
	}
	if cf <= budget {
		t.Fatalf("only %d Cloudflare calls: the budget (%d per %v) was never under pressure", cf, budget, window)
	}
	h.requireClean()
}

// A created that arrives while the delete cascade is stuck (tunnel delete
// failing) turns the org around: generation 2 converges, the Deleting
// condition is cleared, nothing is duplicated.
func TestRecreatedDuringDelete(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{{Op: "cf.tunnel.delete", ErrorRate: 1}}}); err != nil {
		t.Fatal(err)
	}
	h.apply(deleted("acme"))
	h.waitFor("cascade stuck on the tunnel", 10*time.Second, func() bool {
		o := h.org("acme")
		return IsTrue(o, state.CondDeleting) && o.LastError != "" && len(h.world().instances) == 0
	})
	h.apply(created("acme", "acme"))
	h.waitFor("generation 2 Ready", 10*time.Second, func() bool { return h.convergedErr("acme") == nil })
	o := h.org("acme")
	if IsTrue(o, state.CondDeleting) || o.Desired.Generation != 2 || o.Observed.DeleteDone {
		t.Fatalf("status after re-create: %+v %+v", o.Conditions, o.Observed)
	}
	if tok := fmt.Sprint(h.world().instances[0]["ClientToken"]); !strings.Contains(tok, "-g2-") {
		t.Fatalf("client token %s, want generation 2", tok)
	}
}
