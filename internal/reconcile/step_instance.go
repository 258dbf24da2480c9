package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The instance step: launch (one ClientToken per org, generation and
// attempt), adopt, restart cloudflared, terminate.

// launchInstance runs the org's instance in aw's region and returns it (its
// ARN tags the token). The attempt number is committed before the call: a
// crash mid-call retries with the same ClientToken and gets the same
// reservation back instead of a second instance.
func (e *Engine) launchInstance(ctx context.Context, log *slog.Logger, orgID string, d plan.Desired, typeOverride, tunnelID string, aw RegionClouds) (Instance, error) {
	var gen int64
	var attempt int
	err := e.store.Update(orgID, func(o *state.Org) error {
		ob := &o.Observed
		switch {
		case ob.LaunchGeneration != d.Generation:
			ob.LaunchGeneration, ob.LaunchAttempt = d.Generation, 1
		case !ob.LaunchInFlight:
			ob.LaunchAttempt++
		}
		ob.LaunchInFlight = true
		gen, attempt = ob.LaunchGeneration, ob.LaunchAttempt
		return nil
	})
	if err != nil {
		return Instance{}, fmt.Errorf("record launch attempt: %w", err)
	}
	param := owner.ParamName(e.cfg.ParamPrefix, orgID)
	ud, err := e.clouds.UserData(orgID, param)
	if err != nil {
		return Instance{}, Terminal(fmt.Errorf("render user-data: %w", err))
	}
	spec := RunSpec{
		ClientToken: owner.ClientToken(orgID, gen, int64(attempt)), ImageID: aw.Instance.ImageID,
		InstanceType: aw.Instance.InstanceType, SubnetID: aw.Instance.SubnetID,
		SecurityGroupIDs: aw.Instance.SecurityGroupIDs, InstanceProfile: aw.Instance.InstanceProfile,
		UserData: ud,
		Tags: map[string]string{owner.TagManagedBy: owner.ManagedBy, owner.TagOrgID: orgID,
			owner.TagTunnelID: tunnelID, owner.TagGeneration: fmt.Sprint(gen), owner.TagName: owner.InstanceName(orgID)},
	}
	if typeOverride != "" {
		spec.InstanceType = typeOverride
	}
	var inst Instance
	err = mutate(ctx, log, "ec2.RunInstances", spec.ClientToken, func(ctx context.Context) error {
		var err error
		inst, err = aw.Instances.RunInstance(ctx, spec)
		return err
	})
	if errors.Is(err, ErrTokenMismatch) {
		// The spec changed under a reused token; the next try takes a new attempt.
		_ = e.store.Update(orgID, func(o *state.Org) error { o.Observed.LaunchInFlight = false; return nil })
	}
	if err != nil {
		return Instance{}, fmt.Errorf("run instance (client token %s): %w", spec.ClientToken, err)
	}
	if inst.State == "shutting-down" || inst.State == "terminated" {
		// EC2 idempotency handed back this token's earlier launch, which has
		// since been terminated: the next try takes a new attempt.
		if uerr := e.store.Update(orgID, func(o *state.Org) error { o.Observed.LaunchInFlight = false; return nil }); uerr != nil {
			return Instance{}, fmt.Errorf("record ended launch attempt: %w", uerr)
		}
		return Instance{}, fmt.Errorf("run instance (client token %s): EC2 returned instance %s, already %s; retrying with a new attempt",
			spec.ClientToken, inst.ID, inst.State)
	}
	return inst, e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.InstanceID, o.Observed.InstanceGeneration = inst.ID, gen
		o.Observed.InstanceTunnelID = ""
		o.Observed.LaunchInFlight = false
		return nil
	})
}

// restartCloudflared restarts cloudflared on an instance through SSM (a
// health remedy, or to pick up a replaced tunnel's token: it reads the
// parameter again as it starts).
func (e *Engine) restartCloudflared(ctx context.Context, log *slog.Logger, orgID, instanceID, tunnelID string, aw RegionClouds) error {
	err := mutate(ctx, log, "ssm.SendCommand", instanceID, func(ctx context.Context) error {
		_, err := aw.Commands.RestartCloudflared(ctx, instanceID)
		return err
	})
	if err != nil {
		return fmt.Errorf("restart cloudflared on %s: %w", instanceID, err)
	}
	// The TunnelID tag stays as launched; bbolt remembers what the instance
	// now runs (see effectiveTunnel).
	if err := e.store.Update(orgID, func(o *state.Org) error {
		if o.Observed.InstanceID == instanceID {
			o.Observed.InstanceTunnelID = tunnelID
		}
		return nil
	}); err != nil {
		return fmt.Errorf("record tunnel %s of instance %s: %w", tunnelID, instanceID, err)
	}
	return nil
}

// effectiveTunnel is the tunnel an instance's cloudflared runs: its tag,
// unless bbolt records a restart for a newer tunnel.
func effectiveTunnel(rec state.Observed, in Instance) string {
	if rec.InstanceTunnelID != "" && in.ID == rec.InstanceID {
		return rec.InstanceTunnelID
	}
	return in.TunnelID
}

// adoptInstance records the instance the plan keeps when bbolt does not
// name it (a crash between RunInstances and recording its id, or the
// recorded one is gone) and ends a launch left "in flight": the next launch
// then takes a new attempt, and so a new ClientToken, instead of being
// handed back the instance it just replaced.
func (e *Engine) adoptInstance(log *slog.Logger, org *state.Org, ob observation, p plan.Result) error {
	keep := p.KeepInstance
	if keep == "" {
		return nil
	}
	for _, c := range p.Changes {
		if c.Resource == plan.ResInstance && c.Op == plan.OpDelete && c.Target == keep {
			return nil // being replaced: the launch records its successor
		}
	}
	rec := org.Observed
	if rec.InstanceID == keep && !rec.LaunchInFlight {
		return nil
	}
	var gen int64
	for _, in := range ob.instances {
		if in.ID == keep {
			gen = in.Generation
		}
	}
	err := e.store.Update(org.ID, func(o *state.Org) error {
		if o.Observed.InstanceID != keep {
			o.Observed.InstanceID, o.Observed.InstanceGeneration, o.Observed.InstanceTunnelID = keep, gen, ""
		}
		o.Observed.LaunchInFlight = false
		org.Observed = o.Observed
		return nil
	})
	if err != nil {
		return fmt.Errorf("org %s: record adopted instance %s: %w", org.ID, keep, err)
	}
	if rec.InstanceID != keep {
		log.Info("adopted unrecorded instance", "instance_id", keep, "generation", gen, "previously_recorded", rec.InstanceID)
	}
	return nil
}

// terminateInstances terminates instances ("not found" is success) and
// forgets the recorded one if it is among them (orgID "" for orphans).
func (e *Engine) terminateInstances(ctx context.Context, log *slog.Logger, orgID string, ids []string, aw RegionClouds) error {
	return e.deleteStep(ctx, log, "ec2.TerminateInstances", strings.Join(ids, ","), fmt.Sprintf("terminate instances %v", ids),
		func(ctx context.Context) error { return aw.Instances.TerminateInstances(ctx, ids) },
		orgID, func(ob *state.Observed) {
			if slices.Contains(ids, ob.InstanceID) {
				ob.InstanceID, ob.InstanceTunnelID = "", ""
			}
		})
}
