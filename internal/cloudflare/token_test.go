package cloudflare_test

import (
	"errors"
	"testing"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
)

// The token built locally from the secret the client drew is exactly the
// token Cloudflare (here the emulator) issues for the tunnel, and each
// tunnel gets its own secret.
func TestCreateTunnelWithSecretBuildsTheToken(t *testing.T) {
	_, c := newWorld(t, cloudsim.RateLimits{}, nil)
	tun, tok, err := c.CreateTunnelWithSecret(ctx, "tw-acme")
	if err != nil {
		t.Fatal(err)
	}
	issued, err := c.Token(ctx, tun.ID)
	if err != nil {
		t.Fatal(err)
	}
	if tok.IsZero() || tok.Reveal() != issued.Reveal() {
		t.Fatal("the locally built token is not the one Cloudflare issues")
	}
	tun2, tok2, err := c.CreateTunnelWithSecret(ctx, "tw-beta")
	if err != nil {
		t.Fatal(err)
	}
	if tun2.ID == tun.ID || tok2.Reveal() == tok.Reveal() {
		t.Fatal("two tunnels share a token")
	}
	if _, _, err := c.CreateTunnelWithSecret(ctx, "tw-acme"); !errors.Is(err, cloudflare.ErrConflict) {
		t.Fatalf("duplicate name: err = %v, want ErrConflict", err)
	}
}
