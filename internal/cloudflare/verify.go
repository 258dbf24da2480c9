package cloudflare

import (
	"context"
	"errors"
	"net/http"

	"github.com/cloudflare/cloudflare-go/v7/zero_trust"

	"github.com/tunnelward/tunnelward/internal/apicall"
)

// ErrTokenRefused: the API refused the token for this account (wrong,
// expired or revoked, or without the Cloudflare Tunnel permission on the
// account), as opposed to an outage.
var ErrTokenRefused = errors.New("API token refused")

// Codes Cloudflare answers a bad token with.
const (
	codeAuthError      = 10000 // Authentication error (wrong token, or no permission)
	codeInvalidToken   = 1000  // Invalid API Token
	codeInvalidHeaders = 6003  // Invalid request headers
	codeBadAuthHeader  = 6111  // Invalid format for Authorization header
	codeNoAccess       = 9109  // Unauthorized to access requested resource
)

// VerifyToken lists one tunnel of the account: the cheapest call that
// proves the token may read this account's tunnels. A refusal is marked
// ErrTokenRefused; anything else (an outage, throttling that outlasted the
// retries) is returned as is.
func (c *Client) VerifyToken(ctx context.Context) error {
	err := c.do(ctx, "tunnel.list", "credentials check", func(ctx context.Context) error {
		var p zero_trust.TunnelCloudflaredListParams
		setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
		setField(&p.IsDeleted.Value, &p.IsDeleted.Present, false)
		setField(&p.PerPage.Value, &p.PerPage.Present, 1)
		_, err := c.tunnels.List(ctx, p)
		return err
	})
	if err == nil {
		return nil
	}
	switch st := apicall.StatusOf(err); {
	case st == http.StatusUnauthorized || st == http.StatusForbidden,
		st == http.StatusBadRequest && (hasCode(err, codeInvalidToken) || hasCode(err, codeInvalidHeaders) || hasCode(err, codeBadAuthHeader)),
		hasCode(err, codeAuthError) || hasCode(err, codeNoAccess):
		return apicall.WithKind(err, ErrTokenRefused)
	}
	return err
}
