package reconcile

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/owner"
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
