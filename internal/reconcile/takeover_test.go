package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Cutover of an existing tenant (issue 16): org.created names the record
// that serves the org's hostname today (an A record to its EC2), and
// tunnelward replaces it with the org's CNAME once the tunnel is healthy.

const legacyIP = "192.0.2.10"

func createdTakeover(org, slug string, t state.Takeover) state.Fact {
	f := created(org, slug)
	f.Takeover = &t
	return f
}

// loadLegacy preloads the record a tenant is served by before its cutover.
func (h *harness) loadLegacy(slug, typ, content string) (id, host string) {
	host = slug + "." + h.sim.Config().ZoneName
	id = h.sim.LoadDNSRecord(cloudsim.DNSRecord{Name: host, Type: typ, Content: content, TTL: 300, Comment: "legacy ec2 " + slug})
	return id, host
}

// resolveProbe looks at the hostname as a resolver would, every 100 ms,
// through the emulator (Sim.Resolve: the record answered and the tunnel
// behind a CNAME, one consistent look each): the name must always have a
// record, and a CNAME to a tunnel must lead to a healthy tunnel that
// serves it. It reports the first violation and how many looks it made.
type resolveProbe struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	bad  string
	n    int
	seen map[string]bool // record types answered for the name
}

func (h *harness) probeName(host string) *resolveProbe {
	p := &resolveProbe{stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}}
	look := func() string {
		res := h.sim.Resolve(host)
		if !res.Found {
			return "the name has no record"
		}
		p.mu.Lock()
		p.seen[res.Type] = true
		p.mu.Unlock()
		if res.TunnelID != "" && (res.TunnelStatus != "healthy" || !res.TunnelHealthy) {
			return fmt.Sprintf("CNAME to tunnel %s whose status is %q (%s)", res.TunnelID, res.TunnelStatus, res.Reason)
		}
		return ""
	}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			bad := look()
			p.mu.Lock()
			p.n++
			if bad != "" && p.bad == "" {
				p.bad = bad
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				bad := look() // the last word: after the cutover
				p.mu.Lock()
				if bad != "" && p.bad == "" {
					p.bad = bad
				}
				p.mu.Unlock()
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// finish stops the probe and fails the test on what it saw.
func (p *resolveProbe) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bad != "" {
		t.Fatalf("resolver probe: %s", p.bad)
	}
	if p.n < 2 || !p.seen["A"] || !p.seen["CNAME"] {
		t.Fatalf("resolver probe looked %d times and saw %v: it did not watch the cutover", p.n, p.seen)
	}
}

// (a) The tenant's A record is replaced by the org's CNAME in one DNS
// batch, only once the tunnel is healthy; what was replaced is recorded;
// the org is Ready and the cloud clean. A resolver looking all along never
// finds the name without a record, nor pointing at a tunnel not healthy.
func TestTakeoverReplacesRecordOnceTunnelHealthy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	oldID, host := h.loadLegacy("acme", "A", legacyIP)
	var (
		mu    sync.Mutex
		plans []plan.Result
	)
	h.eng.planned = func(org string, p plan.Result) {
		mu.Lock()
		defer mu.Unlock()
		plans = append(plans, p)
	}
	probe := h.probeName(host)
	h.start()
	h.apply(createdTakeover("acme", "acme", state.Takeover{Type: "A", Content: legacyIP}))
	h.waitReady("acme")
	probe.finish(t)

	if err := h.convergedErr("acme"); err != nil {
		t.Fatalf("%v\n%s", err, h.describe())
	}
	o := h.org("acme")
	want := state.ReplacedRecord{ID: oldID, Name: host, Type: "A", Content: legacyIP, TTL: 300, Comment: "legacy ec2 acme"}
	got := o.Observed.Replaced
	got.At = time.Time{}
	if got != want || o.Observed.Replaced.At.IsZero() {
		t.Fatalf("replaced record %+v, want %+v with its time", o.Observed.Replaced, want)
	}
	if j, _ := json.Marshal(o); !strings.Contains(string(j), `"replaced_record":{"id":"`+oldID+`"`) {
		t.Fatalf("the org's JSON (as /v1/orgs/{id} serves it) does not show the replaced record: %s", j)
	}
	// One DNS change: the batch; no create, update or delete of its own.
	for op, n := range map[string]int{"cf.dns.batch": 1, "cf.dns.create": 0, "cf.dns.delete": 0, "cf.dns.update": 0} {
		if got := h.sim.CallCount(op); got != n {
			t.Errorf("%s called %d times, want %d", op, got, n)
		}
	}
	// The plans: the takeover held back while the tunnel was not healthy,
	// then made once; never both in one plan.
	mu.Lock()
	waited, made := 0, 0
	for _, p := range plans {
		if _, ok := plan.TakeoverWaiting(p); ok {
			waited++
		}
		for _, c := range p.Changes {
			if c.Op == plan.OpTakeover {
				made++
				if c.Target != oldID || !strings.Contains(c.Reason, "replace A "+legacyIP+" with CNAME "+plan.TunnelTarget(o.Observed.TunnelID)+": tunnel healthy") {
					t.Errorf("takeover change %+v", c)
				}
			}
		}
	}
	mu.Unlock()
	if waited == 0 || made != 1 {
		t.Fatalf("plans held the takeover back %d times and made it %d times; want at least once, then exactly once", waited, made)
	}
	h.requireClean("acme")
}

// (b) The record at the name is not the one the takeover names (its
// content changed): a Conflict that says so, nothing built, nothing
// replaced.
func TestTakeoverMismatchIsConflict(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	oldID, _ := h.loadLegacy("acme", "A", "198.51.100.7")
	h.start()
	h.apply(createdTakeover("acme", "acme", state.Takeover{Type: "A", Content: legacyIP}))
	h.waitFor("acme in conflict", 10*time.Second, func() bool { return IsTrue(h.org("acme"), state.CondConflict) })
	h.stop()
	o := h.org("acme")
	c, _ := Condition(o, state.CondConflict)
	if !strings.Contains(c.Message, "does not match the takeover (A "+legacyIP+")") || !strings.Contains(c.Message, "nothing was replaced") {
		t.Fatalf("Conflict says %q; want it to name the mismatch and that nothing was replaced", c.Message)
	}
	if IsTrue(o, state.CondReady) {
		t.Fatal("an org in conflict is Ready")
	}
	w := h.world()
	if len(w.tunnels) != 0 || len(w.instances) != 0 || len(w.params) != 0 {
		t.Fatalf("built for an org in conflict: %d tunnels, %d instances, %d parameters\n%s", len(w.tunnels), len(w.instances), len(w.params), h.describe())
	}
	if len(w.records) != 1 || w.records[0]["id"] != oldID || w.records[0]["content"] != "198.51.100.7" {
		t.Fatalf("the record at the name was touched: %+v", w.records)
	}
	if o.Observed.Replaced != (state.ReplacedRecord{}) || h.sim.CallCount("cf.dns.batch") != 0 {
		t.Fatalf("replaced %+v with %d batches; want nothing", o.Observed.Replaced, h.sim.CallCount("cf.dns.batch"))
	}
	h.requireClean("acme")
}

// (c) Crash safety. A batch refused (as if the process died before it):
// the old record stays, what it would replace is recorded, the org is not
// Ready and says it waits or retries. A batch applied whose answer is lost
// (as if the process died right after it, before the new record's id
// reached bbolt): the next process reads the name, adopts its CNAME and
// records it, with no second batch; the old record is gone and the name
// has exactly one record.
func TestTakeoverCrashSafety(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	oldID, host := h.loadLegacy("acme", "A", legacyIP)
	ctx := context.Background()
	probe := h.probeName(host)
	fault := func(r cloudsim.FaultRule) {
		t.Helper()
		fs := h.sim.FaultSettings()
		fs.Rules = nil
		if r.Op != "" {
			fs.Rules = []cloudsim.FaultRule{r}
		}
		if err := h.sim.SetFaultSettings(fs); err != nil {
			t.Fatal(err)
		}
	}
	atName := func() []map[string]any {
		var out []map[string]any
		for _, r := range h.world().records {
			if r["name"] == host {
				out = append(out, r)
			}
		}
		return out
	}
	h.apply(createdTakeover("acme", "acme", state.Takeover{Type: "A", RecordID: oldID}))

	// The first pass builds the org and says the takeover waits.
	if _, err := h.eng.Reconcile(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	o := h.org("acme")
	ready, _ := Condition(o, state.CondReady)
	if ready.Status || ready.Reason != ReasonTakeoverWaits || !strings.Contains(ready.Message, "waits for the tunnel to be healthy") ||
		!IsTrue(o, state.CondProvisioning) || o.Observed.TunnelID == "" || o.Observed.InstanceID == "" {
		t.Fatalf("after the first pass: Ready %+v, Provisioning %v, observed %+v", ready, IsTrue(o, state.CondProvisioning), o.Observed)
	}

	// The batch refused: passes until one tried it.
	fault(cloudsim.FaultRule{Op: "cf.dns.batch", ErrorRate: 1})
	h.waitFor("a refused takeover", 15*time.Second, func() bool {
		_, _ = h.eng.Reconcile(ctx, "acme")
		return h.sim.CallCount("cf.dns.batch") > 0
	})
	o = h.org("acme")
	if recs := atName(); len(recs) != 1 || recs[0]["id"] != oldID {
		t.Fatalf("after a refused batch the name holds %+v, want the old record", recs)
	}
	if o.Observed.Replaced.ID != oldID || o.Observed.DNSRecordID != "" || IsTrue(o, state.CondReady) {
		t.Fatalf("after a refused batch: replaced %+v, recorded %q, ready %v", o.Observed.Replaced, o.Observed.DNSRecordID, IsTrue(o, state.CondReady))
	}

	// The batch applied, its answer lost.
	fault(cloudsim.FaultRule{Op: "cf.dns.batch", LostRate: 1})
	h.waitFor("the batch applied", 15*time.Second, func() bool {
		_, _ = h.eng.Reconcile(ctx, "acme")
		recs := atName()
		return len(recs) == 1 && recs[0]["type"] == "CNAME"
	})
	if o := h.org("acme"); o.Observed.DNSRecordID != "" || h.sim.LostCalls()["cf.dns.batch"] == 0 {
		t.Fatalf("recorded %q with %d batch answers lost; want the batch's answer lost and nothing recorded",
			o.Observed.DNSRecordID, h.sim.LostCalls()["cf.dns.batch"])
	}
	batches := h.sim.CallCount("cf.dns.batch")

	// A new process, the fault gone.
	fault(cloudsim.FaultRule{})
	h.reopen(nil)
	h.start()
	h.waitReady("acme")
	probe.finish(t)
	if err := h.convergedErr("acme"); err != nil {
		t.Fatalf("%v\n%s", err, h.describe())
	}
	o = h.org("acme")
	recs := atName()
	if len(recs) != 1 || recs[0]["id"] != o.Observed.DNSRecordID || o.Observed.Replaced.ID != oldID {
		t.Fatalf("name holds %+v, recorded %q, replaced %+v", recs, o.Observed.DNSRecordID, o.Observed.Replaced)
	}
	if n := h.sim.CallCount("cf.dns.batch"); n != batches {
		t.Fatalf("%d more batches after the restart; the CNAME should have been adopted", n-batches)
	}
	h.requireClean("acme")
}

// After a cutover the takeover is spent: an operator who rolls back (the
// org's CNAME deleted, the old record put back from replaced_record) gets
// a Conflict, not a second takeover.
func TestTakeoverIsSpentAfterCutover(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	_, host := h.loadLegacy("acme", "A", legacyIP)
	h.start()
	h.apply(createdTakeover("acme", "acme", state.Takeover{Type: "A", Content: legacyIP}))
	h.waitReady("acme")
	h.stop()
	o := h.org("acme")
	if _, err := h.cf.DeleteRecord(context.Background(), o.Observed.DNSRecordID); err != nil {
		t.Fatal(err)
	}
	r := o.Observed.Replaced
	h.sim.LoadDNSRecord(cloudsim.DNSRecord{Name: r.Name, Type: r.Type, Content: r.Content, TTL: r.TTL, Proxied: r.Proxied, Comment: r.Comment})
	h.reopen(nil)
	h.start()
	h.waitFor("acme in conflict", 10*time.Second, func() bool { return IsTrue(h.org("acme"), state.CondConflict) })
	for _, rec := range h.world().records {
		if rec["name"] == host && rec["type"] != "A" {
			t.Fatalf("the rolled-back name holds %+v", rec)
		}
	}
}

// (d) `reconciler plan` over every org (PlanAll, from listings that hold
// only owned records) shows a pending takeover as PlanOrg does: withheld
// while the tunnel is not healthy, not as a record to create.
func TestTakeoverDryRunAllShowsItWaiting(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	oldID, _ := h.loadLegacy("acme", "A", legacyIP)
	h.apply(createdTakeover("acme", "acme", state.Takeover{Type: "A", Content: legacyIP}), created("beta", "beta"))
	all, _, err := h.eng.PlanAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	one, err := h.eng.PlanOrg(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		if p.OrgID != "acme" {
			continue
		}
		c, waits := plan.TakeoverWaiting(p.Plan)
		if !waits || c.Target != oldID || !strings.Contains(c.Reason, "waits for the tunnel to be healthy") || hasChange(p.Plan, plan.ResDNS, plan.OpCreate) {
			t.Fatalf("PlanAll for acme: %+v", p.Plan)
		}
		if got, want := changeKeys(p.Plan), changeKeys(one.Plan); !slices.Equal(got, want) {
			t.Fatalf("PlanAll %q, PlanOrg %q", got, want)
		}
		return
	}
	t.Fatalf("PlanAll has no plan for acme: %+v", all)
}

// Deleting an org after its cutover removes its CNAME, so the hostname has
// no record: the tombstone still says what the cutover replaced, for an
// operator to put it back.
func TestReplacedRecordKeptOnTheTombstone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.loadLegacy("acme", "A", legacyIP)
	h.start()
	h.apply(createdTakeover("acme", "acme", state.Takeover{Type: "A", Content: legacyIP}))
	h.waitReady("acme")
	replaced := h.org("acme").Observed.Replaced
	if replaced.ID == "" {
		t.Fatal("no replaced record after the cutover")
	}
	h.apply(deleted("acme"))
	h.waitFor("acme deleted", 20*time.Second, func() bool { return h.org("acme").Observed.DeleteDone })
	if got := h.org("acme").Observed.Replaced; got != replaced {
		t.Fatalf("tombstone's replaced record %+v, want %+v", got, replaced)
	}
}
