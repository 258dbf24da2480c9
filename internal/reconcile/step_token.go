package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The token step: the tunnel token from Cloudflare into the org's SSM
// SecureString (and nowhere else), the parameter's InstanceArn tag, and its
// deletion.

// putToken puts the tunnel token into SSM. A tunnel this process created
// left its token in e.tokens (built locally from the secret it drew, no
// call); otherwise (adopted after a 409, or created before a crash that
// came before the SSM write) the token is read from Cloudflare. The token
// lives only in this function's stack and, until the put succeeds, in
// e.tokens.
func (e *Engine) putToken(ctx context.Context, log *slog.Logger, orgID, tunnelID string, aw RegionClouds, cf PoolClouds) error {
	tok, held := e.tokens.get(tunnelID)
	if !held {
		var err error
		tok, err = cf.Tunnels.Token(ctx, tunnelID)
		if err != nil {
			return fmt.Errorf("get token of tunnel %s: %w", tunnelID, err)
		}
		log.Info("tunnel token read from Cloudflare (not held by this process)", "tunnel_id", tunnelID)
	}
	name := owner.ParamName(e.cfg.ParamPrefix, orgID)
	tags := map[string]string{owner.TagManagedBy: owner.ManagedBy, owner.TagOrgID: orgID, owner.TagTunnelID: tunnelID}
	err := mutate(ctx, log, "ssm.PutParameter", name, func(ctx context.Context) error {
		return aw.Params.PutToken(ctx, name, tok, tags)
	})
	if err != nil {
		return fmt.Errorf("put token parameter %s: %w", name, err)
	}
	e.tokens.drop(tunnelID)
	now := e.cfg.Now()
	return e.store.Update(orgID, func(o *state.Org) error {
		if o.Observed.ParamTunnelID != tunnelID || o.Observed.TokenSince.IsZero() {
			o.Observed.TokenSince = now // a new tunnel's token (a rotation's is stamped when it is done)
		}
		o.Observed.ParameterName, o.Observed.ParamTunnelID = name, tunnelID
		return nil
	})
}

// tagTokenForInstance tags the token parameter InstanceArn=<the org's
// instance ARN> after a launch, after the token was (re)written, or when a
// non-Ready org's parameter names another instance (a crash between launch
// and tag). The instance role may read only the parameter tagged with its
// own ARN; until then its boot script retries.
func (e *Engine) tagTokenForInstance(ctx context.Context, log *slog.Logger, org state.Org, ob observation,
	launched Instance, tokenPut bool, keep string, aw RegionClouds) error {
	// The instance just launched, else the one the plan keeps (recorded, or
	// adopted this pass after a crash before it was recorded).
	inst := launched
	for _, in := range ob.instances {
		if inst.ID == "" && in.ID == keep {
			inst = in
		}
	}
	if inst.ID == "" {
		return nil // no instance yet: tagged when it is launched
	}
	stale := ob.paramTagsKnown && ob.paramTags[owner.TagInstanceArn] != inst.ARN
	if launched.ID == "" && !tokenPut && !stale {
		if ob.paramTagsKnown {
			e.tagged.Store(org.ID, inst.ID)
		}
		return nil
	}
	if inst.ARN == "" {
		log.Warn("instance ARN unknown (no owner in the EC2 response); token parameter not tagged", "instance_id", inst.ID)
		return nil
	}
	name := owner.ParamName(e.cfg.ParamPrefix, org.ID)
	err := mutate(ctx, log, "ssm.AddTagsToResource", name, func(ctx context.Context) error {
		return aw.Params.TagParam(ctx, name, map[string]string{owner.TagInstanceArn: inst.ARN})
	})
	if err != nil {
		e.tagged.Delete(org.ID)
		return fmt.Errorf("tag parameter %s with %s=%s: %w", name, owner.TagInstanceArn, inst.ARN, err)
	}
	e.tagged.Store(org.ID, inst.ID)
	return nil
}

// taggedFor reports whether this process tagged (or read back) the org's
// token parameter for instanceID.
func (e *Engine) taggedFor(orgID, instanceID string) bool {
	v, ok := e.tagged.Load(orgID)
	return ok && instanceID != "" && v.(string) == instanceID
}

// deleteToken deletes the token parameter ("not found" is success) and
// forgets it in the org's record (orgID "" for an orphan's).
func (e *Engine) deleteToken(ctx context.Context, log *slog.Logger, orgID, name string, aw RegionClouds) error {
	return e.deleteStep(ctx, log, "ssm.DeleteParameter", name, "delete parameter "+name,
		func(ctx context.Context) error { return aw.Params.DeleteParam(ctx, name) },
		orgID, func(ob *state.Observed) {
			if ob.ParameterName == name {
				ob.ParameterName, ob.ParamTunnelID = "", ""
			}
		})
}

// heldTokens are the tokens of tunnels this process created, built locally
// from the secret it drew, kept in memory only until the token step has
// put them into SSM (never in bbolt, logs or errors). A process that dies
// in between loses them; the next one reads the token from Cloudflare.
type heldTokens struct {
	mu sync.Mutex
	m  map[string]secret.Token // tunnel id -> token
}

func (h *heldTokens) hold(tunnelID string, tok secret.Token) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]secret.Token{}
	}
	h.m[tunnelID] = tok
}

func (h *heldTokens) get(tunnelID string) (secret.Token, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tok, ok := h.m[tunnelID]
	return tok, ok
}

func (h *heldTokens) drop(tunnelID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, tunnelID)
}
