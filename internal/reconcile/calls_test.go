package reconcile

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The tunnel is created with a secret drawn here and its token is built
// locally: no token read, and the emulator's connector (which refuses a
// token whose secret is not the tunnel's) connects with it.
func TestLocalTokenNeedsNoRead(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.requireOneEach("acme")
	if n := h.sim.CallCount("cf.tunnel_token.get"); n != 0 {
		t.Fatalf("token read %d times; the token is built locally", n)
	}
	// The secret itself is held like the token: not in logs or bbolt.
	tok, err := h.cf.Token(context.Background(), h.org("acme").Observed.TunnelID)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(tok.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ S string }
	if err := json.Unmarshal(raw, &v); err != nil || v.S == "" {
		t.Fatalf("token is not cloudflared's format: %v", err)
	}
	h.stop()
	db, err := os.ReadFile(h.store.Path())
	if err != nil {
		t.Fatal(err)
	}
	for where, text := range map[string]string{"logs": h.logs.String(), "bbolt": string(db), "status": h.describe()} {
		if strings.Contains(text, v.S) || strings.Contains(text, tok.Reveal()) {
			t.Fatalf("tunnel secret found in %s", where)
		}
	}
}

// A crash after the tunnel create and before the SSM write loses the
// secret: the next process finds the tunnel (create answers 409, adopted by
// name) without its token, reads the token from Cloudflare once, and the
// org gets Ready with exactly one tunnel.
func TestLostSecretTokenReadFromAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	tun, err := h.cf.CreateTunnel(context.Background(), owner.TunnelName("acme")) // secret drawn by Cloudflare, never seen here
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	h.requireOneEach("acme")
	if got := h.org("acme").Observed.TunnelID; got != tun.ID {
		t.Fatalf("tunnel %s, want the adopted %s", got, tun.ID)
	}
	if n := h.sim.CallCount("cf.tunnel_token.get"); n != 1 {
		t.Fatalf("token read %d times, want once (the secret was lost)", n)
	}
}

// Orgs waiting for their tunnels take the status from one shared tunnel
// listing, not a GET each; a tunnel the listing shows not yet connected
// keeps its org Provisioning with the status the listing showed, and the
// next listing (not before the gap) makes it Ready.
func TestFakeReadinessFromOneSharedListing(t *testing.T) {
	fe := newFakeEngine(t)
	orgs := []string{"a1", "a2", "a3", "a4", "a5"}
	for _, o := range orgs {
		fe.apply(created(o, o))
		fe.pass(o)
	}
	c := fe.cloud
	fe.now = fe.now.Add(90 * time.Second)
	for _, o := range orgs[:4] {
		c.setStatus(o, "healthy")
	}
	for _, o := range orgs {
		fe.pass(o)
	}
	for _, o := range orgs[:4] {
		if !IsTrue(fe.org(o), state.CondReady) {
			t.Fatalf("%s not Ready: %+v", o, fe.org(o).Conditions)
		}
	}
	if c.calls["tunnel.get"] != 0 || c.calls["tunnels.list"] != 1 {
		t.Fatalf("readiness cost %d GETs and %d listings, want 0 and 1 (%v)", c.calls["tunnel.get"], c.calls["tunnels.list"], c.calls)
	}
	a5 := fe.org("a5")
	if IsTrue(a5, state.CondReady) || a5.Observed.TunnelStatus != "inactive" {
		t.Fatalf("a5: Ready %v, status %q; want not Ready, inactive", IsTrue(a5, state.CondReady), a5.Observed.TunnelStatus)
	}
	// Polled again at once: the listing it read is not news, and the next
	// one waits for the gap.
	if res := fe.pass("a5"); res.RequeueAfter <= 0 || c.calls["tunnels.list"] != 1 {
		t.Fatalf("second poll at once: requeue %v, listings %d", res.RequeueAfter, c.calls["tunnels.list"])
	}
	fe.now = fe.now.Add(10 * time.Second)
	c.setStatus("a5", "healthy")
	fe.pass("a5")
	if !IsTrue(fe.org("a5"), state.CondReady) || c.calls["tunnels.list"] != 2 || c.calls["tunnel.get"] != 0 {
		t.Fatalf("a5 Ready %v after the next listing; calls %v", IsTrue(fe.org("a5"), state.CondReady), c.calls)
	}
}

// A listing costs its pages: while fewer orgs wait than it has pages, each
// waiting org reads its own tunnel instead.
func TestFakeReadinessGETWhenListingCostsMore(t *testing.T) {
	fe := newFakeEngineWith(t, func(c *Config) { c.Watch.TunnelPage = 1 })
	for _, o := range []string{"a1", "a2", "a3"} {
		fe.apply(created(o, o))
		fe.pass(o)
	}
	c := fe.cloud
	fe.now = fe.now.Add(90 * time.Second)
	c.setStatus("a1", "healthy")
	fe.pass("a1") // 3 waiting, 1 page so far (nothing listed yet): one listing
	if c.calls["tunnels.list"] != 1 || !IsTrue(fe.org("a1"), state.CondReady) {
		t.Fatalf("calls %v", c.calls)
	}
	fe.e.clearPoll("a3") // only a2 waits now, and the listing has 3 pages
	c.setStatus("a2", "healthy")
	fe.now = fe.now.Add(10 * time.Second)
	fe.pass("a2")
	if c.calls["tunnels.list"] != 1 || c.calls["tunnel.get"] != 1 || !IsTrue(fe.org("a2"), state.CondReady) {
		t.Fatalf("calls %v, a2 Ready %v", c.calls, IsTrue(fe.org("a2"), state.CondReady))
	}
}

// Orgs created together get their records in DNS batches, fewer requests
// than orgs, through the real SDK and the emulator's batch endpoint; an
// owned record a crash left unrecorded is still adopted and a name another
// party holds is still a Conflict while others are batched beside them.
func TestDNSBatchAndFallback(t *testing.T) {
	h := newHarness(t, harnessOpts{engine: func(c *Config) { c.DNSBatchWindow = 300 * time.Millisecond }})
	ctx := context.Background()
	adopted, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "b2." + h.sim.Config().ZoneName,
		Content: "x.cfargotunnel.com", Comment: owner.DNSComment("b2")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.cf.CreateRecord(ctx, cloudflare.RecordSpec{Name: "held." + h.sim.Config().ZoneName,
		Content: "elsewhere.example.com", Comment: "not ours"}); err != nil {
		t.Fatal(err)
	}
	h.start()
	good := []string{"a1", "a2", "a3", "a4", "a5"}
	for _, o := range good {
		h.apply(created(o, o))
	}
	h.waitReady(good...)
	if b, c := h.sim.CallCount("cf.dns.batch"), h.sim.CallCount("cf.dns.create"); b == 0 || b+c >= len(good) {
		t.Fatalf("%d orgs' records took %d batches and %d single creates", len(good), b, c)
	}
	h.sim.ResetCalls()
	h.apply(created("b1", "b1"), created("b2", "b2"), created("b3", "held"))
	h.waitReady("b1", "b2")
	h.waitFor("b3 in conflict", 10*time.Second, func() bool { return IsTrue(h.org("b3"), state.CondConflict) })
	if got := h.org("b2").Observed.DNSRecordID; got != adopted.ID {
		t.Fatalf("b2 records %s, want the adopted %s", got, adopted.ID)
	}
	h.requireClean(append(good, "b1", "b2")...)
}

// A batch that fails (one name is taken) falls back to single creates: the
// others are made, the taken one answers "already exists" (the caller's
// adoption path), nothing is made twice.
func TestFakeDNSBatchFallsBackToSingles(t *testing.T) {
	fe := newFakeEngineWith(t, func(c *Config) { c.DNSBatchWindow = 50 * time.Millisecond })
	c := fe.cloud
	c.records["r-taken"] = plan.Record{ID: "r-taken", Name: "taken.example.test", Type: "CNAME", Content: "x", Comment: "not ours"}
	names := []string{"x1.example.test", "taken.example.test", "x2.example.test"}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			_, errs[i] = fe.e.batchedCreate(context.Background(), fe.e.mustPool(""), n, "t.cfargotunnel.com", "tunnelward:org=x")
		})
	}
	wg.Wait()
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], ErrExists) {
		t.Fatalf("errors %v; want nil, ErrExists, nil", errs)
	}
	byName := map[string]int{}
	for _, r := range c.records {
		byName[r.Name]++
	}
	if len(c.records) != 3 || byName["x1.example.test"] != 1 || byName["x2.example.test"] != 1 {
		t.Fatalf("records %v", byName)
	}
	if c.calls["dns.batch"] != 1 || c.calls["dns.create"] != 3 {
		t.Fatalf("calls %v: want the failed batch, then three single creates", c.calls)
	}
}
