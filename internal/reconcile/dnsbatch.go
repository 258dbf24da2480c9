package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/plan"
)

// DNS changes of several orgs in flight go out together (issue 17): a
// record create or delete waits up to DNSBatchWindow for others, then they
// are sent as one POST .../dns_records/batch (one request against the
// Cloudflare budget, whatever the number of changes; docs/decisions.md),
// at most DNSBatchMax changes a batch (200 on Free zones, 3,500 on paid).
// A window that gathered only one change sends it as the single call it
// always was. Cloudflare applies a batch all or nothing: when it fails,
// every change in it is retried alone, so one bad record (a name another
// party holds, a record already gone) cannot block the others, and the
// single create's "already exists" keeps its adoption path (step_dns.go).

// Defaults of Config.DNSBatchWindow and Config.DNSBatchMax.
const (
	DefaultDNSBatchWindow = 200 * time.Millisecond
	DefaultDNSBatchMax    = 200
)

// errAlone tells a waiting change to make its single call after all: its
// window gathered nothing else, or the batch it was in failed.
var errAlone = errors.New("dns change not batched")

func (c *Config) dnsBatchDefaults() {
	if c.DNSBatchWindow == 0 {
		c.DNSBatchWindow = DefaultDNSBatchWindow
	}
	if c.DNSBatchMax <= 0 {
		c.DNSBatchMax = DefaultDNSBatchMax
	}
}

// dnsChange is one org's record create (create set) or delete (del set)
// waiting for its batch.
type dnsChange struct {
	ctx    context.Context
	create *CNAME
	del    string
	done   chan struct{}
	rec    plan.Record // the created record
	err    error
}

// dnsBatcher gathers one zone's changes (a batch is per zone): one per
// Cloudflare pool, made on first use.
type dnsBatcher struct {
	dns     DNSAPI
	mu      sync.Mutex
	pending []*dnsChange
	timer   *time.Timer // the open window's, nil when none is open
}

// dnsBatchers are the engine's batchers by zone name.
type dnsBatchers struct {
	mu sync.Mutex
	by map[string]*dnsBatcher
}

// batcher returns the batcher of a pool's zone.
func (e *Engine) batcher(cf PoolClouds) *dnsBatcher {
	bs := &e.dnsBatch
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.by == nil {
		bs.by = map[string]*dnsBatcher{}
	}
	b := bs.by[cf.ZoneName]
	if b == nil {
		b = &dnsBatcher{dns: cf.DNS}
		bs.by[cf.ZoneName] = b
	}
	return b
}

// batchedCreate creates a proxied CNAME, in a batch when others are in
// flight; ErrExists as the single create (the caller adopts).
func (e *Engine) batchedCreate(ctx context.Context, cf PoolClouds, name, target, comment string) (plan.Record, error) {
	if e.cfg.DNSBatchWindow > 0 {
		c := &dnsChange{ctx: ctx, create: &CNAME{Name: name, Target: target, Comment: comment}}
		if err := e.dnsSubmit(e.batcher(cf), c); !errors.Is(err, errAlone) {
			return c.rec, err
		}
	}
	return cf.DNS.CreateCNAME(ctx, name, target, comment)
}

// batchedDelete deletes a record, in a batch when others are in flight;
// ErrNotFound as the single delete.
func (e *Engine) batchedDelete(ctx context.Context, cf PoolClouds, id string) error {
	if e.cfg.DNSBatchWindow > 0 {
		if err := e.dnsSubmit(e.batcher(cf), &dnsChange{ctx: ctx, del: id}); !errors.Is(err, errAlone) {
			return err
		}
	}
	return cf.DNS.DeleteRecord(ctx, id)
}

// dnsSubmit queues c for the open window (opening one if none is) and
// waits for its outcome; a full batch is sent at once.
func (e *Engine) dnsSubmit(b *dnsBatcher, c *dnsChange) error {
	c.done = make(chan struct{})
	b.mu.Lock()
	b.pending = append(b.pending, c)
	var full []*dnsChange
	switch {
	case len(b.pending) >= e.cfg.DNSBatchMax:
		full, b.pending = b.pending, nil
		if b.timer != nil {
			b.timer.Stop()
			b.timer = nil
		}
	case b.timer == nil:
		b.timer = time.AfterFunc(e.cfg.DNSBatchWindow, func() { e.dnsWindowClosed(b) })
	}
	b.mu.Unlock()
	if full != nil {
		go e.dnsFlush(b, full)
	}
	select {
	case <-c.done:
		return c.err
	case <-c.ctx.Done():
		// The batch may still apply it: the next pass finds the record by
		// name (adopted) or sees it gone.
		return c.ctx.Err()
	}
}

func (e *Engine) dnsWindowClosed(b *dnsBatcher) {
	b.mu.Lock()
	ops := b.pending
	b.pending, b.timer = nil, nil
	b.mu.Unlock()
	e.dnsFlush(b, ops)
}

// dnsFlush sends one batch and hands each change its outcome.
func (e *Engine) dnsFlush(b *dnsBatcher, ops []*dnsChange) {
	finish := func(err error) {
		for _, c := range ops {
			if err != nil {
				c.err = err
			}
			close(c.done)
		}
	}
	var live []*dnsChange
	for _, c := range ops {
		if c.ctx.Err() == nil {
			live = append(live, c)
		}
	}
	if len(live) < 2 {
		finish(errAlone)
		return
	}
	var deletes []string
	var creates []CNAME
	seen := map[string]bool{}
	for _, c := range live {
		switch {
		case c.create != nil:
			creates = append(creates, *c.create)
		case !seen[c.del]:
			seen[c.del] = true
			deletes = append(deletes, c.del)
		}
	}
	// The batch is shared: it outlives any one org's cancellation, within
	// the reconcile timeout, at the first change's priority.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(live[0].ctx), e.cfg.ReconcileTimeout)
	defer cancel()
	// Fenced for every org in it, not only the first's (fence.go).
	var orgs []string
	for _, c := range live {
		orgs = append(orgs, fenceOrgs(c.ctx)...)
	}
	ctx = e.withFence(ctx, orgs...)
	var recs []plan.Record
	target := fmt.Sprintf("%d creates, %d deletes", len(creates), len(deletes))
	err := mutate(ctx, e.log, "cf.dns.batch", target, func(ctx context.Context) error {
		var err error
		recs, err = b.dns.Batch(ctx, deletes, creates)
		return err
	})
	if err != nil {
		e.log.Info("dns batch failed; each change is made alone", "changes", len(live), "err", err)
		finish(errAlone)
		return
	}
	i := 0
	for _, c := range live {
		if c.create != nil && i < len(recs) {
			c.rec = recs[i]
			i++
		}
	}
	finish(nil)
}
