package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/config"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/cluster"
)

// startCluster creates (or checks) the lease bucket and builds this
// replica's lease manager; runCluster starts it once the engine exists.
// The embedded default is the same code with one replica: it takes every
// partition in its first round. A process restarted after a crash on the
// same host and data dir takes its predecessor's leases at once (see
// leaseHolder).
func (a *app) startCluster(ctx context.Context) error {
	c := a.cfg
	kv, err := broker.EnsureLeaseBucket(ctx, a.js, c.StreamReplicas, c.LeaseTTL)
	if err != nil {
		return withNATSCause(a.nc, err)
	}
	a.cluster, err = cluster.New(cluster.Config{
		KV: kv, Conn: a.nc, Replica: c.ReplicaID, TTL: c.LeaseTTL, Holder: leaseHolder(c),
		Log: a.log, Metrics: a.metrics,
		OnGained: func([]int) {
			if a.engine != nil {
				a.engine.PartitionsGained()
			}
		},
		OnOwned: func(owned, total int) {
			// At least one partition's worth: a replica that owns none
			// still answers /v1/plan and lists for its sweep. Every budget
			// is per user or per account, not per process: the replicas'
			// shares add up to the whole, the watches' listings included.
			share := float64(max(owned, 1)) / float64(total)
			for _, c := range a.cfs { // pools on one budget resize its one limiter
				c.SetBudgetShare(share)
			}
			for _, c := range a.aws {
				c.SetBudgetShare(share)
			}
			if a.engine != nil {
				a.engine.SetBudgetShare(share)
			}
			a.log.Info("budget share follows the partitions owned", "owned", owned, "partitions", total,
				"share", fmt.Sprintf("%.3f", share))
		},
	})
	if err != nil {
		return fmt.Errorf("partition leases: %w", err)
	}
	// The pools' counts are shared: each replica keeps only its own orgs'
	// observed state (internal/reconcile/ledger.go).
	pkv, err := broker.EnsurePlacementBucket(ctx, a.js, c.StreamReplicas)
	if err != nil {
		return withNATSCause(a.nc, err)
	}
	a.placements = cluster.NewPlacements(pkv, a.nc)
	a.log.Info("replica", "replica_id", c.ReplicaID, "stream_replicas", c.StreamReplicas, "lease_ttl", c.LeaseTTL,
		"partitions", a.cluster.Partitions(), "lease_bucket", broker.LeaseBucket)
	return nil
}

// runCluster runs the lease rounds until the closer: registered before the
// engine's, it runs after the engine stopped writing, then gives every
// lease back so the other replicas take over at once.
func (a *app) runCluster() {
	// The first round before ingest starts: events applied at start find
	// their partitions already taken (a fresh start, or after a graceful
	// stop that gave the leases back), so the engine acts on them at once.
	rctx, cancel := context.WithTimeout(context.Background(), a.cfg.LeaseTTL/4)
	a.cluster.Round(rctx)
	cancel()
	cctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.cluster.Run(cctx) })
	a.closers = append(a.closers, func() {
		stop()
		wg.Wait()
		a.log.Info("partition leases given back")
	})
	if a.admin != nil {
		a.admin.ServeCluster(a.cluster)
		a.admin.AddCheck("partitions", func(context.Context) error {
			if len(a.cluster.Owned()) == 0 {
				return fmt.Errorf("replica %s owns no partition yet (of %d; see /v1/cluster): it reconciles no org", a.cluster.Replica(), a.cluster.Partitions())
			}
			return nil
		})
	}
}

// clusterSummary is the line `reconciler status` prints under the WATCH
// line while the daemon runs: which replica answered and who owns how many
// partitions (GET /v1/cluster). "" when the daemon does not say.
func clusterSummary(c config.Config) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, _, err := adminGet(ctx, c, "/v1/cluster")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var v cluster.View
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil || v.Replica == "" {
		return ""
	}
	var parts []string
	for _, r := range v.Replicas {
		s := fmt.Sprintf("%s %d", r.ID, len(r.Partitions))
		if !r.Announced {
			s += " (gone; leases expiring)"
		}
		parts = append(parts, s)
	}
	line := fmt.Sprintf("CLUSTER  replica %s answered; partitions owned of %d: %s", v.Replica, v.PartitionsTotal, strings.Join(parts, ", "))
	if len(v.Free) > 0 {
		line += fmt.Sprintf("; %d free", len(v.Free))
	}
	return line + "; observed state is current on each org's owner (GET /v1/cluster?org=ID)"
}

// orgOwnerLine is the detail view's line naming the org's partition and
// the replica that owns it now, from the daemon ("" when it does not say).
func orgOwnerLine(c config.Config, org string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, _, err := adminGet(ctx, c, "/v1/cluster?org="+url.QueryEscape(org))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var o admin.ClusterOrg
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&o) != nil || o.Org == "" {
		return ""
	}
	owner := o.Owner
	if owner == "" {
		owner = "none (being taken over)"
	}
	return fmt.Sprintf("partition %d, owned now by replica %s", o.Partition, owner)
}

// leaseHolder names this process's exclusive hold for the lease manager:
// the host and the absolute data dir, whose state file the process has
// locked by the time leases are taken (preflight). A lease left by a
// process of the same replica id with the same holder was left by a dead
// process (a live one would still hold the lock), so it is adopted at once.
func leaseHolder(c config.Config) string {
	host, err := os.Hostname()
	if err != nil {
		return ""
	}
	dir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return ""
	}
	return host + ":" + dir
}
