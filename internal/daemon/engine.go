// Package daemon builds the running system from one resolved
// configuration: the provider clients for the cloud mode and the reconcile
// engine on them. cmd/reconciler and the bench (internal/bench) both build
// through it, so a figure measures the engine that ships; the knobs a bench
// turns (limits, page sizes, engine timings) are explicit overrides.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/userdata"
)

// Knobs override what a bench or a test varies; zero values keep what the
// daemon runs with.
type Knobs struct {
	HTTPClient *http.Client
	Policy     apicall.Policy
	// CFBudget sizes every Cloudflare budget (each one user's; default
	// ratelimit.DefaultCloudflare): the pools on one budget share one
	// limiter of this size.
	CFBudget   ratelimit.WindowBudget
	CFPageSize int
	AWSPage    int
	EC2Buckets ratelimit.EC2Buckets
	SSMBucket  ratelimit.Bucket
	// Engine edits the engine's configuration last.
	Engine func(*reconcile.Config)
	// OnCloudflare receives each pool's Cloudflare client once built, the
	// default pool's first (the daemon sets each one's share of its budget
	// as its partitions change).
	OnCloudflare func(*cloudflare.Client)
	// OnAWS receives each region's AWS client once built (likewise).
	OnAWS func(*aws.Client)
}

// ProviderConfigs are the default pool's Cloudflare and the default
// region's AWS client settings: the emulator at cloudURL with the sandbox
// identities config filled in, or the real APIs (cloudURL ""). Every HTTP
// attempt is observed by m (nil: not observed).
func ProviderConfigs(c config.Config, cloudURL string, log *slog.Logger, m *metrics.Metrics, k Knobs) (cloudflare.Config, aws.Config) {
	cfc := CloudflareConfig(c.Pools()[0], cloudURL, m, k)
	awc := aws.Config{Region: c.AWS.Region, Logger: log, HTTPClient: k.HTTPClient, Policy: k.Policy,
		PageSize: k.AWSPage, EC2Buckets: k.EC2Buckets, SSMBucket: k.SSMBucket}
	if m != nil {
		awc.Observe = m.APICall
	}
	if cloudURL != "" {
		awc.Endpoint, awc.AccessKeyID, awc.SecretAccessKey = cloudURL, c.AWS.AccessKeyID, c.AWS.SecretAccessKey.Reveal()
	}
	return cfc, awc
}

// CloudflareConfig is one pool's Cloudflare client settings: its token,
// account and zone, on the emulator at cloudURL or the real API (cloudURL
// ""), with the knobs' HTTP client, policy, page size and budget. Its
// Limiter is left to the caller: EngineConfig shares one per budget.
func CloudflareConfig(p config.Pool, cloudURL string, m *metrics.Metrics, k Knobs) cloudflare.Config {
	cfc := cloudflare.Config{APIToken: p.APIToken.Reveal(), AccountID: p.AccountID, ZoneID: p.ZoneID, ZoneName: p.ZoneName,
		HTTPClient: k.HTTPClient, Policy: k.Policy, PageSize: k.CFPageSize, Budget: k.CFBudget}
	if m != nil {
		cfc.Observe = m.APICall
	}
	if cloudURL != "" {
		cfc.BaseURL = cloudURL + "/client/v4/"
	}
	return cfc
}

// cloudflareClients builds one client per pool, in c.Pools' order (the
// default pool first), with one pacer per budget shared by the budget's
// pools (its window limiter, call order and 429 pause): the budget is the
// Cloudflare user's, whichever pool's zone a call is for.
func cloudflareClients(c config.Config, cloudURL string, m *metrics.Metrics, k Knobs) ([]*cloudflare.Client, error) {
	pacers := map[string]*cloudflare.Pacer{}
	var out []*cloudflare.Client
	for _, p := range c.Pools() {
		cfc := CloudflareConfig(p, cloudURL, m, k)
		pacer, ok := pacers[p.Budget]
		if !ok {
			var err error
			if pacer, err = cloudflare.NewPacer(cfc); err != nil {
				return nil, fmt.Errorf("cloudflare budget %s: %w", p.Budget, err)
			}
			pacers[p.Budget] = pacer
		}
		cfc.Pacer = pacer
		cf, err := cloudflare.New(cfc)
		if err != nil {
			return nil, fmt.Errorf("cloudflare client of pool %s: %w", p.Name, err)
		}
		out = append(out, cf)
	}
	return out, nil
}

// EngineConfig is the engine's configuration and provider clients, all from
// the one resolved configuration (every served region gets its own AWS
// clients, and so its own EC2 and SSM limiters: AWS limits are per region).
func EngineConfig(ctx context.Context, c config.Config, cloudURL string, log *slog.Logger, m *metrics.Metrics, k Knobs) (reconcile.Config, reconcile.Clouds, error) {
	cfg := reconcile.Config{
		Logger:      log,
		ZoneName:    c.Cloudflare.ZoneName,
		Service:     c.Instance.IngressService,
		ParamPrefix: c.Instance.SSMPathPrefix,
		Instance: reconcile.InstanceSpec{ImageID: c.Instance.AMI, InstanceType: c.Instance.Type,
			SubnetID: c.Instance.Subnet, SecurityGroupIDs: c.Instance.SecurityGroups, InstanceProfile: c.Instance.Profile},
		Workers:       c.Workers,
		SweepInterval: c.SweepInterval,
		GC:            c.GC,
		HealthGrace:   c.HealthGrace,
		TokenMaxAge:   c.TokenMaxAge,
		Watch:         watchConfig(c, k),
		Placement:     c.Cloudflare.Placement,
	}
	if m != nil {
		cfg.Metrics = m
	}
	_, awc := ProviderConfigs(c, cloudURL, log, m, k)
	if cloudURL != "" {
		// The emulator boots in seconds, not minutes: poll soon after.
		sc := cloudsim.DefaultConfig()
		cfg.BootConnect, cfg.PollInterval = sc.BootDelay+sc.ConnectDelay+500*time.Millisecond, time.Second
		cfg.OrphanGrace = time.Minute
	}
	if k.Engine != nil {
		k.Engine(&cfg)
	}
	cfs, err := cloudflareClients(c, cloudURL, m, k)
	if err != nil {
		return cfg, reconcile.Clouds{}, err
	}
	if k.OnCloudflare != nil {
		for _, cf := range cfs {
			k.OnCloudflare(cf)
		}
	}
	aw, err := aws.New(ctx, awc)
	if err != nil {
		return cfg, reconcile.Clouds{}, fmt.Errorf("aws client: %w", err)
	}
	if k.OnAWS != nil {
		k.OnAWS(aw)
	}
	clouds := reconcile.NewClouds(cfs[0], aw, userdata.Params{})
	clouds.DefaultRegion = c.AWS.Region
	// Every pool, the default first, then the pools file's in its order:
	// the order placement fills them in.
	clouds.DefaultPool = c.Cloudflare.Pool
	for i, p := range c.Pools() {
		clouds = clouds.WithPool(p.Name, cfs[i], reconcile.PoolLimits{Account: p.AccountID, Budget: p.Budget,
			MaxTunnels: p.MaxTunnels, MaxRecords: p.MaxDNSRecords})
	}
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
		if k.OnAWS != nil {
			k.OnAWS(awr)
		}
		clouds = clouds.WithRegion(region, awr, reconcile.InstanceSpec{ImageID: in.AMI, InstanceType: in.Type,
			SubnetID: in.Subnet, SecurityGroupIDs: in.SecurityGroups, InstanceProfile: in.Profile})
	}
	return cfg, clouds, nil
}

// watchConfig sizes the watches from the budgets and page sizes the
// provider clients are built with, so the share is of the limits in force.
// 0% in the configuration turns the watches off.
func watchConfig(c config.Config, k Knobs) reconcile.WatchConfig {
	w := reconcile.WatchConfig{BudgetShare: c.WatchBudgetShare, TunnelPage: k.CFPageSize, DNSPage: k.CFPageSize,
		InstancePage: k.AWSPage, ParamPage: min(k.AWSPage, 50)}
	if w.BudgetShare == 0 {
		w.BudgetShare = -1
	}
	if b := k.CFBudget; b.Requests > 0 && b.Window > 0 {
		w.CFPerSecond = float64(b.Requests) / b.Window.Seconds()
	}
	w.EC2ReadPerSecond = k.EC2Buckets.NonMutating.Rate
	w.SSMPerSecond = k.SSMBucket.Rate
	return w
}
