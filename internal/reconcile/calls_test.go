package reconcile

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The tunnel is created with a secret drawn here and its token is built
// locally: no token read, and the emulator's connector (which refuses a
// token whose secret is not the tunnel's) connects with it.
func TestLocalTokenNeedsNoRead(t *testing.T) {
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
