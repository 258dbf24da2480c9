package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/config"
	wiring "github.com/tunnelward/tunnelward/internal/daemon"
	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/reconcile"
)

// startEngine builds the provider clients for the cloud mode, starts the
// reconcile engine (workers and sweep) and connects it to ingest. It stops
// before bbolt closes (closers run in reverse).
func (a *app) startEngine(ctx context.Context) error {
	// The Cloudflare budgets are per user: with partitions, this replica's
	// clients (one per pool) spend the share of the partitions it owns
	// (cluster.go).
	cfg, clouds, err := wiring.EngineConfig(ctx, a.cfg, a.cloudURL, a.log, a.metrics,
		wiring.Knobs{OnCloudflare: func(c *cloudflare.Client) { a.cfs = append(a.cfs, c) },
			OnAWS: func(c *aws.Client) { a.aws = append(a.aws, c) }})
	if err != nil {
		return err
	}
	a.log.Info("cloudflare pools", "placement", a.cfg.Cloudflare.Placement, "count", len(a.cfg.Pools()),
		"pools", a.cfg.PoolsSummary()) // never a token: Summary shows where it came from
	if a.cluster != nil {
		cfg.Fence, cfg.Replica = a.cluster, a.cfg.ReplicaID
		cfg.Placements = a.placements
	}
	eng, err := reconcile.New(cfg, clouds, a.store, nil)
	if err != nil {
		return err
	}
	a.engine = eng
	a.onApplied = eng.OnApplied
	a.metrics.SetQueueFuncs(eng.Queue().Len, eng.Queue().Waiting)
	if a.admin != nil {
		a.admin.SetWatchSchedule(func() map[string]time.Duration {
			out := map[string]time.Duration{}
			for l, d := range eng.WatchSchedule() {
				out[string(l)] = d
			}
			return out
		})
		a.admin.SetOrgView(eng.Seen)
		a.admin.SetPoolOf(eng.PoolOf)
		a.admin.SetPoolUsage(func() any { return eng.Pools() })
	}
	servePlans(a.admin, func(ctx context.Context, org string) (planReport, error) { return planWith(ctx, eng, org) },
		a.store, newPlanCache(nil))

	if a.cluster != nil {
		a.runCluster() // its closer runs after the engine's
	}
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

// engineConfig and providerConfigs are internal/daemon's, with the
// daemon's own knobs.
func engineConfig(ctx context.Context, c config.Config, cloudURL string, log *slog.Logger, m *metrics.Metrics) (reconcile.Config, reconcile.Clouds, error) {
	return wiring.EngineConfig(ctx, c, cloudURL, log, m, wiring.Knobs{})
}

// poolConfigs are every pool's Cloudflare client settings, in
// config.Pools' order.
func poolConfigs(c config.Config, cloudURL string, m *metrics.Metrics) []cloudflare.Config {
	var out []cloudflare.Config
	for _, p := range c.Pools() {
		out = append(out, wiring.CloudflareConfig(p, cloudURL, m, wiring.Knobs{}))
	}
	return out
}

func providerConfigs(c config.Config, cloudURL string, log *slog.Logger, m *metrics.Metrics) (cloudflare.Config, aws.Config) {
	return wiring.ProviderConfigs(c, cloudURL, log, m, wiring.Knobs{})
}
