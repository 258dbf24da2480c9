package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/userdata"
)

// startEngine builds the provider clients for the cloud mode, starts the
// reconcile engine (workers and sweep) and connects it to ingest. It stops
// before bbolt closes (closers run in reverse).
func (a *app) startEngine(ctx context.Context) error {
	cfg, clouds, err := a.engineConfig(ctx)
	if err != nil {
		return err
	}
	eng, err := reconcile.New(cfg, clouds, a.store, nil)
	if err != nil {
		return err
	}
	a.onApplied = eng.OnApplied

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

// engineConfig is the engine's configuration and clients: the sandbox
// identities against the emulator, or the live settings (TUNNELWARD_*
// environment and config file, see internal/config) against the real APIs.
func (a *app) engineConfig(ctx context.Context) (reconcile.Config, reconcile.Clouds, error) {
	cfg := reconcile.Config{Logger: a.log, GC: true}
	if a.cloudURL != "" {
		sc := cloudsim.DefaultConfig()
		cf, err := cloudflare.New(cloudflare.Config{BaseURL: a.cloudURL + "/client/v4/", APIToken: sc.CFToken,
			AccountID: sc.AccountID, ZoneID: sc.ZoneID, ZoneName: sc.ZoneName})
		if err != nil {
			return cfg, reconcile.Clouds{}, err
		}
		aw, err := aws.New(ctx, aws.Config{Endpoint: a.cloudURL, Region: sc.Region,
			AccessKeyID: sc.AWSAccessKey, SecretAccessKey: sc.AWSSecret})
		if err != nil {
			return cfg, reconcile.Clouds{}, err
		}
		cfg.ZoneName = sc.ZoneName
		cfg.Instance = reconcile.InstanceSpec{ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro",
			SubnetID: "subnet-0123456789abcdef0", SecurityGroupIDs: []string{"sg-0123456789abcdef0"},
			InstanceProfile: "tunnelward-instance"}
		// The emulator boots in 2 s and connects in 1 s: poll soon after.
		cfg.BootConnect, cfg.PollInterval = sc.BootDelay+sc.ConnectDelay+500*time.Millisecond, time.Second
		cfg.OrphanGrace = time.Minute
		return cfg, reconcile.NewClouds(cf, aw, userdata.Params{}), nil
	}

	lc, err := config.Parse(nil, os.Getenv)
	if err != nil {
		return cfg, reconcile.Clouds{}, fmt.Errorf("live mode configuration: %w", err)
	}
	cf, err := cloudflare.New(cloudflare.Config{APIToken: lc.Cloudflare.APIToken.Reveal(),
		AccountID: lc.Cloudflare.AccountID, ZoneID: lc.Cloudflare.ZoneID, ZoneName: lc.Cloudflare.ZoneName})
	if err != nil {
		return cfg, reconcile.Clouds{}, err
	}
	aw, err := aws.New(ctx, aws.Config{Region: lc.AWS.Region})
	if err != nil {
		return cfg, reconcile.Clouds{}, err
	}
	cfg.ZoneName = lc.Cloudflare.ZoneName
	cfg.Service = lc.Instance.IngressService
	cfg.ParamPrefix = lc.Instance.SSMPathPrefix
	cfg.Instance = reconcile.InstanceSpec{ImageID: lc.Instance.AMI, InstanceType: lc.Instance.Type,
		SubnetID: lc.Instance.Subnet, SecurityGroupIDs: lc.Instance.SecurityGroups, InstanceProfile: lc.Instance.Profile}
	cfg.Workers, cfg.SweepInterval, cfg.GC, cfg.HealthGrace = lc.Workers, lc.SweepInterval, lc.GC, lc.HealthGrace
	return cfg, reconcile.NewClouds(cf, aw, userdata.Params{}), nil
}
