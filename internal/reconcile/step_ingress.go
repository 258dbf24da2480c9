package reconcile

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The ingress step: the tunnel's remotely-managed configuration.

func (e *Engine) putIngress(ctx context.Context, log *slog.Logger, orgID, tunnelID string, d plan.Desired, cf PoolClouds) error {
	err := mutate(ctx, log, "cf.tunnel_config.put", tunnelID, func(ctx context.Context) error {
		return cf.Tunnels.PutIngress(ctx, tunnelID, plan.WantIngress(d))
	})
	if err != nil {
		return fmt.Errorf("put ingress of tunnel %s: %w", tunnelID, err)
	}
	return e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.IngressHost = d.Hostname
		return nil
	})
}
