package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The tunnel step: create (adopting a live tunnel of the org's name) and
// delete, used by a pass, the delete cascade and orphan collection alike.

// ensureTunnel creates the org's tunnel, adopting a live one of the same
// name (ours by its name) when the create says it exists, and records the id.
func (e *Engine) ensureTunnel(ctx context.Context, log *slog.Logger, orgID string, cf PoolClouds) (Tunnel, error) {
	name := owner.TunnelName(orgID)
	var t Tunnel
	var tok secret.Token
	err := mutate(ctx, log, "cf.tunnel.create", name, func(ctx context.Context) error {
		var err error
		t, tok, err = cf.Tunnels.CreateTunnel(ctx, name)
		return err
	})
	if err == nil && !tok.IsZero() {
		e.tokens.hold(t.ID, tok) // the token step takes it: no token read
	}
	if errors.Is(err, ErrExists) {
		found, ferr := cf.Tunnels.FindTunnel(ctx, name)
		if ferr != nil {
			return t, fmt.Errorf("find tunnel %s after conflict: %w", name, ferr)
		}
		if found == nil {
			return t, fmt.Errorf("tunnel %s: create says it exists but no live tunnel has the name", name)
		}
		log.Info("adopted existing tunnel", "tunnel_id", found.ID, "tunnel_name", name)
		t, err = *found, nil
	}
	if err != nil {
		return t, fmt.Errorf("create tunnel %s: %w", name, err)
	}
	if err := e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.TunnelID, o.Observed.TunnelName = t.ID, name
		o.Observed.TunnelStatus = t.Status
		o.Observed.IngressHost = ""
		return nil
	}); err != nil {
		return t, fmt.Errorf("record tunnel %s: %w", t.ID, err)
	}
	return t, nil
}

// withdrawTunnel deletes the tunnel a pass created for its hostname claim
// when the claim found the name held by another party (the record had to
// name a tunnel): the org is left as a read by name would have left it,
// with nothing built, and the id forgotten.
func (e *Engine) withdrawTunnel(ctx context.Context, log *slog.Logger, orgID, id string, cf PoolClouds) error {
	if err := e.deleteTunnel(ctx, log, id, cf); err != nil {
		return err
	}
	return e.store.Update(orgID, func(o *state.Org) error {
		if o.Observed.TunnelID == id {
			o.Observed.TunnelID, o.Observed.TunnelName, o.Observed.TunnelStatus, o.Observed.IngressHost = "", "", "", ""
		}
		return nil
	})
}

// deleteTunnel deletes a tunnel, cleaning its connections first when the
// API refuses because some are still active.
func (e *Engine) deleteTunnel(ctx context.Context, log *slog.Logger, id string, cf PoolClouds) error {
	del := func() error {
		return mutate(ctx, log, "cf.tunnel.delete", id, func(ctx context.Context) error {
			return cf.Tunnels.DeleteTunnel(ctx, id)
		})
	}
	err := del()
	if errors.Is(err, ErrActiveConnections) {
		if cerr := mutate(ctx, log, "cf.tunnel_connections.delete", id, func(ctx context.Context) error {
			return cf.Tunnels.CleanConnections(ctx, id)
		}); cerr != nil && !errors.Is(cerr, ErrNotFound) {
			return fmt.Errorf("clean connections of tunnel %s: %w", id, cerr)
		}
		err = del()
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete tunnel %s: %w", id, err)
	}
	e.tokens.drop(id)
	return nil
}
