package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/userdata"
)

// startEngine builds the provider clients for the cloud mode, starts the
// reconcile engine (workers and sweep) and connects it to ingest. It stops
// before bbolt closes (closers run in reverse).
func (a *app) startEngine(ctx context.Context) error {
	cfg, clouds, err := engineConfig(ctx, a.cfg, a.cloudURL, a.log, a.metrics)
	if err != nil {
		return err
	}
	eng, err := reconcile.New(cfg, clouds, a.store, nil)
	if err != nil {
		return err
	}
	a.engine = eng
	a.onApplied = eng.OnApplied
	a.metrics.SetQueueFuncs(eng.Queue().Len, eng.Queue().Waiting)
	servePlans(a.admin, func(ctx context.Context, org string) (planReport, error) { return planWith(ctx, eng, org) },
		a.store, newPlanCache(nil))

	ectx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := eng.Run(ectx); err != nil {
			a.log.Error("reconcile engine stopped", "err", err)
		}
	}()
	a.closers = append(a.closers, func() {
		stop()
		wg.Wait()
		a.log.Info("reconcile engine stopped")
	})
	if a.admin != nil && cfg.SweepInterval > 0 {
		// Ready only while sweeps keep succeeding: three intervals without
		// one means drift and orphans go unnoticed.
		started := time.Now()
		a.admin.AddCheck("sweep", func(context.Context) error {
			last := eng.LastSweep().At
			if last.IsZero() {
				if time.Since(started) > 3*cfg.SweepInterval {
					return fmt.Errorf("no sweep finished since start %s ago", time.Since(started).Round(time.Second))
				}
				return nil
			}
			if age := time.Since(last); age > 3*cfg.SweepInterval {
				return fmt.Errorf("last sweep finished %s ago (interval %s)", age.Round(time.Second), cfg.SweepInterval)
			}
			return nil
		})
	}
	return nil
}

// engineConfig is the engine's configuration and provider clients, all
// from the one resolved configuration: the emulator at cloudURL in sandbox
// and URL mode (with the sandbox identities config filled in), the real
// APIs in live mode (cloudURL ""). Every HTTP attempt is observed by m.
func engineConfig(ctx context.Context, c config.Config, cloudURL string, log *slog.Logger, m *metrics.Metrics) (reconcile.Config, reconcile.Clouds, error) {
	cfg := reconcile.Config{
		Logger:      log,
		Metrics:     m,
		ZoneName:    c.Cloudflare.ZoneName,
		Service:     c.Instance.IngressService,
		ParamPrefix: c.Instance.SSMPathPrefix,
		Instance: reconcile.InstanceSpec{ImageID: c.Instance.AMI, InstanceType: c.Instance.Type,
			SubnetID: c.Instance.Subnet, SecurityGroupIDs: c.Instance.SecurityGroups, InstanceProfile: c.Instance.Profile},
		Workers:       c.Workers,
		SweepInterval: c.SweepInterval,
		GC:            c.GC,
		HealthGrace:   c.HealthGrace,
	}
	cfc, awc := providerConfigs(c, cloudURL, log, m)
	if cloudURL != "" {
		// The emulator boots in seconds, not minutes: poll soon after.
		sc := cloudsim.DefaultConfig()
		cfg.BootConnect, cfg.PollInterval = sc.BootDelay+sc.ConnectDelay+500*time.Millisecond, time.Second
		cfg.OrphanGrace = time.Minute
	}
	cf, err := cloudflare.New(cfc)
	if err != nil {
		return cfg, reconcile.Clouds{}, fmt.Errorf("cloudflare client: %w", err)
	}
	aw, err := aws.New(ctx, awc)
	if err != nil {
		return cfg, reconcile.Clouds{}, fmt.Errorf("aws client: %w", err)
	}
	clouds := reconcile.NewClouds(cf, aw, userdata.Params{})
	clouds.DefaultRegion = c.AWS.Region
	// Every other served region gets its own clients (and so its own EC2
	// and SSM rate limiters: AWS limits are per region).
	for _, region := range c.ServedRegions() {
		if region == c.AWS.Region {
			continue
		}
		in, _ := c.InstanceFor(region)
		rc := awc
		rc.Region = region
		awr, err := aws.New(ctx, rc)
		if err != nil {
			return cfg, reconcile.Clouds{}, fmt.Errorf("aws client for region %s: %w", region, err)
		}
		clouds = clouds.WithRegion(region, awr, reconcile.InstanceSpec{ImageID: in.AMI, InstanceType: in.Type,
			SubnetID: in.Subnet, SecurityGroupIDs: in.SecurityGroups, InstanceProfile: in.Profile})
	}
	return cfg, clouds, nil
}

// providerConfigs are the Cloudflare and default-region AWS client settings:
// the emulator at cloudURL with the sandbox identities config filled in, or
// the real APIs (cloudURL ""). The engine and the credentials check share
// them.
func providerConfigs(c config.Config, cloudURL string, log *slog.Logger, m *metrics.Metrics) (cloudflare.Config, aws.Config) {
	cfc := cloudflare.Config{APIToken: c.Cloudflare.APIToken.Reveal(), AccountID: c.Cloudflare.AccountID,
		ZoneID: c.Cloudflare.ZoneID, ZoneName: c.Cloudflare.ZoneName, Observe: m.APICall}
	awc := aws.Config{Region: c.AWS.Region, Observe: m.APICall, Logger: log}
	if cloudURL != "" {
		cfc.BaseURL = cloudURL + "/client/v4/"
		awc.Endpoint, awc.AccessKeyID, awc.SecretAccessKey = cloudURL, c.AWS.AccessKeyID, c.AWS.SecretAccessKey.Reveal()
	}
	return cfc, awc
}
