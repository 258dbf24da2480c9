package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Orphan is an owned resource whose org is absent or a finished tombstone.
type Orphan struct {
	Kind      string    `json:"kind"` // tunnel, dns_record, instance, parameter
	ID        string    `json:"id"`
	Region    string    `json:"region,omitempty"` // AWS region of an instance or parameter
	Pool      string    `json:"pool,omitempty"`   // Cloudflare pool of a tunnel or record
	Name      string    `json:"name,omitempty"`
	OrgID     string    `json:"org_id"`
	FirstSeen time.Time `json:"first_seen"`
	Collected bool      `json:"collected"`
	Error     string    `json:"error,omitempty"`
}

// SweepReport is what one sweep found and did.
type SweepReport struct {
	At        time.Time     `json:"at"`
	Took      time.Duration `json:"took"`
	Tunnels   int           `json:"tunnels"`
	Records   int           `json:"dns_records"`
	Instances int           `json:"instances"`
	Params    int           `json:"parameters"`
	Requeued  []string      `json:"requeued"`
	Drift     []string      `json:"drift,omitempty"` // "org: change" lines
	Orphans   []Orphan      `json:"orphans"`
}

// LastSweep returns the report of the newest finished sweep.
func (e *Engine) LastSweep() SweepReport {
	e.sweepMu.Lock()
	defer e.sweepMu.Unlock()
	return e.lastSweep
}

// Inventory is every owned resource, listed with paginated calls.
type Inventory struct {
	Tunnels   []Tunnel
	Records   []plan.Record
	Instances []Instance
	Params    []Param
}

// Listing names one of the four listings of owned resources. Each runs on
// its own watch interval (watch.go); the full sweep runs them all.
type Listing string

const (
	ListTunnels   Listing = "tunnels"
	ListDNS       Listing = "dns_records"
	ListInstances Listing = "instances"
	ListParams    Listing = "parameters"
)

// Listings are the four, in the order they are shown.
var Listings = []Listing{ListTunnels, ListDNS, ListInstances, ListParams}

// invView is the inventory view: the newest result of each listing and when
// that listing started (a listing that started before an org's last
// observation says nothing new about that org).
type invView struct {
	inv Inventory
	at  map[Listing]time.Time
}

// List reads the inventory: four listings (the AWS ones in every served
// region), cost in pages, not orgs.
func (e *Engine) List(ctx context.Context) (Inventory, error) {
	return e.list(ctx, Listings...)
}

// list runs the named listings at once; the others stay empty.
func (e *Engine) list(ctx context.Context, which ...Listing) (Inventory, error) {
	var (
		inv  Inventory
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	do := func(what string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("list %s: %w", what, err))
				mu.Unlock()
			}
		}()
	}
	want := func(l Listing) bool { return slices.Contains(which, l) }
	pools := e.poolNames()
	for _, name := range pools {
		cf, _ := e.poolClouds(name)
		where := ""
		if len(pools) > 1 {
			where = " in pool " + name
		}
		if want(ListTunnels) {
			do("tunnels"+where, func() error {
				ts, err := cf.Tunnels.ListTunnels(ctx)
				return gather(&mu, &inv.Tunnels, ts, err, func(t *Tunnel) { t.Pool = name })
			})
		}
		if want(ListDNS) {
			do("dns records"+where, func() error {
				rs, err := cf.DNS.ListRecords(ctx)
				return gather(&mu, &inv.Records, rs, err, func(r *plan.Record) { r.Pool = name })
			})
		}
	}
	for _, region := range e.clouds.served() {
		aw, _ := e.regionClouds(region)
		where := ""
		if region != "" {
			where = " in " + region
		}
		if want(ListInstances) {
			do("instances"+where, func() error {
				ins, err := aw.Instances.ManagedInstances(ctx)
				return gather(&mu, &inv.Instances, ins, err, func(in *Instance) { in.Region = region })
			})
		}
		if want(ListParams) {
			do("parameters"+where, func() error {
				ps, err := aw.Params.ListParams(ctx, e.cfg.ParamPrefix)
				return gather(&mu, &inv.Params, ps, err, func(p *Param) { p.Region = region })
			})
		}
	}
	wg.Wait()
	return inv, errors.Join(errs...)
}

// gather tags what one of list's calls returned with where it was listed
// (a pool, a region) and adds it to the inventory under mu.
func gather[T any](mu *sync.Mutex, into *[]T, items []T, err error, tag func(*T)) error {
	for i := range items {
		tag(&items[i])
	}
	mu.Lock()
	*into = append(*into, items...)
	mu.Unlock()
	return err
}

// remember puts fresh listings into the engine's inventory view.
func (e *Engine) remember(inv Inventory, at time.Time, which ...Listing) invView {
	e.viewMu.Lock()
	defer e.viewMu.Unlock()
	if e.view.at == nil {
		e.view.at = map[Listing]time.Time{}
	}
	for _, l := range which {
		switch l {
		case ListTunnels:
			e.view.inv.Tunnels = inv.Tunnels
		case ListDNS:
			e.view.inv.Records = inv.Records
		case ListInstances:
			e.view.inv.Instances = inv.Instances
		case ListParams:
			e.view.inv.Params = inv.Params
		}
		e.view.at[l] = at
	}
	return invView{inv: e.view.inv, at: maps.Clone(e.view.at)}
}

// ObservedFrom builds an org's plan input from an inventory. Ingress is not
// listed (one GET per tunnel), so it is left unknown. Callers comparing many
// orgs with one inventory index it once (indexInventory, observedFrom).
func (e *Engine) ObservedFrom(inv Inventory, org state.Org) plan.Observed {
	return e.observedFrom(indexInventory(inv), org)
}

// Sweep lists every owned resource, compares each org with bbolt through
// plan.Compute, requeues the orgs that drifted or are not ready, records
// tunnel status without per-org calls, and collects orphans after their
// grace period (only reports them when GC is off).
func (e *Engine) Sweep(ctx context.Context) (rep SweepReport, err error) {
	start := time.Now()
	defer func() { e.cfg.Metrics.SweepDone(time.Since(start), err) }()
	now := e.cfg.Now()
	rep = SweepReport{At: now, Requeued: []string{}, Orphans: []Orphan{}}
	if e.ownsNothing() {
		return rep, nil // PartitionsGained asks for one when there is something to do
	}
	// Watches that come due while the sweep lists wait for it (watchTurn):
	// its listing is their run, and a second one of the same pages would
	// hold them twice (at 100,000 orgs, and starve the sweep of its budget).
	listed := e.sweepListing.start(&e.viewMu)
	inv, err := e.List(ctx)
	if err != nil {
		e.sweepListing.end(&e.viewMu, listed) // the watches list on their own
		return rep, fmt.Errorf("sweep: %w", err)
	}
	rep.Tunnels, rep.Records, rep.Instances, rep.Params = len(inv.Tunnels), len(inv.Records), len(inv.Instances), len(inv.Params)
	e.viewMu.Lock()
	for _, l := range Listings {
		// The sweep's listing is every watch's run: their next is an
		// interval after it.
		e.slots[l] = watchSlot{start: now, iv: e.slots[l].iv}
		e.cfg.Metrics.Listing(string(l), "sweep")
	}
	e.viewMu.Unlock()
	v := e.remember(inv, now, Listings...)
	// Waiting watches go on with the sweep's pages in the view (their
	// schedule is computed from them).
	e.sweepListing.end(&e.viewMu, listed)
	live, err := e.inventoryPass(v, now, true, &rep)
	if err != nil {
		return rep, fmt.Errorf("sweep: list orgs: %w", err)
	}
	e.orphans(ctx, inv, live, now, &rep)
	rep.Took = time.Since(start)
	e.sweepMu.Lock()
	e.lastSweep = rep
	e.sweepMu.Unlock()
	e.log.Info("sweep done", "tunnels", rep.Tunnels, "dns_records", rep.Records, "instances", rep.Instances,
		"parameters", rep.Params, "requeued", len(rep.Requeued), "orphans", len(rep.Orphans), "took", rep.Took.Round(time.Millisecond))
	return rep, nil
}

// inventoryPass compares every org with the inventory view through
// plan.Compute: a Ready org whose resources drifted or whose tunnel is not
// healthy turns Ready=false at once, with a reason naming what was seen
// (driftReason), and is queued; repair is a normal pass. It recounts the
// condition gauges on the way (the orgs are read anyway). full is the
// sweep's pass: it also requeues every org that is not Ready (the safety
// net) and counts each change as drift; a watch's pass queues only what it
// newly found. It returns the orgs that may own resources, with their AWS
// region, for the orphan check.
func (e *Engine) inventoryPass(v invView, now time.Time, full bool, rep *SweepReport) (map[string]liveOrg, error) {
	e.passMu.Lock()
	defer e.passMu.Unlock()
	// Read bbolt after listing: anything listed was made for an org that
	// was already recorded, so a fresh org is never mistaken for an orphan.
	// Records are streamed (100,000 decoded at once cost ~180 MB of RSS);
	// writes wait until the read transaction ends (a write that grows the
	// file cannot remap it under an open read), and each org's status is
	// recorded before it is requeued, as a worker may pick it up at once.
	e.loadBook() // Desired reads it for orgs not placed: not inside the read below
	ix := indexInventory(v.inv)
	live := map[string]liveOrg{} // orgs that may own resources -> where
	byTunnel := map[string]int{}
	var notReadySince time.Time // oldest among present orgs that are not Ready
	pastMaxAge := 0
	type statusUpdate struct {
		orgID, status  string
		statusKnown    bool
		reason, msg    string
		listedAt       time.Time // the oldest listing the finding rests on
		changes        []plan.Change
		wasReady, full bool
	}
	var updates []statusUpdate
	var requeue []string
	stamps := map[string]time.Time{}     // org -> when its token was put (tokenSinceStamps)
	maxAgePlaces := e.maxAgeFreePlaces() // max-age rotations this pass may queue
	err := e.store.ForEach(func(org state.Org) error {
		if org.Desired.Presence == state.Deleted {
			e.confirmed.Delete(org.ID)
			if !org.Observed.DeleteDone {
				live[org.ID] = e.liveOrg(org)
				if full && e.owns(org.ID) {
					requeue = append(requeue, org.ID)
				}
			}
			return nil
		}
		live[org.ID] = e.liveOrg(org)
		if !e.owns(org.ID) {
			return nil // another replica's: its own passes look at it
		}
		if since, ok := notReadySinceOf(org); ok && (notReadySince.IsZero() || since.Before(notReadySince)) {
			notReadySince = since
		}
		if e.Desired(org).Hostname == "" {
			return nil
		}
		if _, _, err := e.regionFor(org); err != nil {
			return nil // Failed (RegionNotServed) until its event or the served regions change
		}
		ob, listedAt, tunnelFresh := e.viewedFrom(ix, v, org)
		region := e.orgRegion(org)
		if _, _, err := e.planPool(org); err != nil {
			return nil // Failed (PoolFull, PoolNotServed) until room appears or its pool is served
		}
		p := e.withPlacement(plan.Compute(e.Desired(org), ob), org, region)
		if full {
			for _, c := range p.Changes {
				rep.Drift = append(rep.Drift, org.ID+": "+c.String())
				e.cfg.Metrics.DriftFound(string(c.Resource))
			}
		}
		status := org.Observed.TunnelStatus
		if tunnelFresh {
			status = ""
			if ob.Tunnel != nil {
				status = ob.Tunnel.Status
			}
		}
		if status != "" {
			byTunnel[status]++
		} else {
			byTunnel["missing"]++
		}
		ready := IsTrue(org, state.CondReady)
		reason, msg := "", ""
		if ready {
			// A conflict withholds creations, so what is left in the plan
			// is still news (a region conflict leaves the org Ready where it is).
			pr := pendingRemediation(org)
			reason, msg = driftReason(p, status, replacing(pr != nil && pr.Action == ActReplace, ob))
		}
		if reason == "" && p.Empty() && len(p.Conflicts) == 0 && listedAll(v, org.Observed.ObservedAt) {
			// Every listing saw the org as recorded: that is a look at it,
			// kept in memory (a bbolt write per org per watch would cost more
			// than the watch) and shown as its observed-at (Seen).
			e.confirmed.Store(org.ID, listedAt)
		}
		if reason != "" || (tunnelFresh && status != org.Observed.TunnelStatus) {
			updates = append(updates, statusUpdate{orgID: org.ID, status: status, statusKnown: tunnelFresh,
				reason: reason, msg: msg, listedAt: listedAt, changes: p.Changes, wasReady: ready, full: full})
		}
		if full && e.cfg.TokenMaxAge > 0 && org.Observed.TokenSince.IsZero() && org.Observed.ParamTunnelID != "" &&
			len(stamps) < maxTokenSinceStamps {
			if i, ok := ix.param[paramKey{region, owner.ParamName(e.cfg.ParamPrefix, org.ID)}]; ok {
				stamps[org.ID] = ix.inv.Params[i].Modified
			}
		}
		if e.pastMaxAge(org, now) {
			pastMaxAge++
		}
		if reason == "" && (org.Observed.Rotation != nil || e.rotationWant(org, now) != "") {
			// A token rotation asked for, due, or in flight (after a
			// restart): a pass runs it. One due by the max age alone is
			// queued only while places are left (the rest at a later pass).
			queue := !e.polling(org.ID)
			if queue && org.Observed.Rotation == nil && !rotationAsked(org) && !e.maxAgeHolds(org.ID) {
				queue = maxAgePlaces > 0
				maxAgePlaces--
			}
			if queue {
				requeue = append(requeue, org.ID)
			}
			return nil
		}
		switch {
		case reason != "":
			e.clearPoll(org.ID) // drift: the next look must be a full one
		case !full:
			return nil // a watch queues only what it newly found
		case !p.Empty():
			e.clearPoll(org.ID)
		case p.Ready && ready && len(p.Conflicts) == 0:
			return nil
		case p.Empty() && ready && conflictShown(org, p.Conflicts):
			return nil // a Ready org whose status already shows its conflict
		case e.polling(org.ID):
			return nil // its readiness poll is already scheduled
		}
		e.log.Info("inventory pass requeues org", "org_id", org.ID, "changes", len(p.Changes), "conflicts", len(p.Conflicts),
			"tunnel_status", status, "reason", reason, "full_sweep", full)
		requeue = append(requeue, org.ID)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, u := range updates {
		flipped := false
		if err := e.store.Update(u.orgID, func(o *state.Org) error {
			flipped = false
			if o.Observed.ObservedAt.After(u.listedAt) {
				return nil // a pass looked since the listing: its word is newer
			}
			if u.statusKnown {
				o.Observed.TunnelStatus = u.status
			}
			o.Observed.ObservedAt = now
			if u.reason != "" && IsTrue(*o, state.CondReady) {
				setCondition(o, state.CondReady, false, u.reason, u.msg, now)
				flipped = true
			}
			return nil
		}); err != nil {
			e.log.Warn("inventory pass: record status", "org_id", u.orgID, "err", err)
			continue
		}
		if flipped {
			e.log.Info("listing found an org not ready", "org_id", u.orgID, "reason", u.reason, "detail", u.msg)
			if !u.full {
				for _, c := range u.changes {
					e.cfg.Metrics.DriftFound(string(c.Resource))
				}
			}
		}
	}
	if full {
		e.stampTokenSince(stamps, now)
		e.pruneMaxAgeSlots()
	}
	for _, id := range requeue {
		e.queue.Add(id)
		rep.Requeued = append(rep.Requeued, id)
	}
	e.cfg.Metrics.SetTunnelsByStatus(byTunnel)
	e.cfg.Metrics.SetTokensPastMaxAge(pastMaxAge)
	e.cfg.Metrics.SetNotReadySince(notReadySince)
	return live, nil
}

// maxTokenSinceStamps bounds the records one sweep writes for
// stampTokenSince: a large fleet from before TokenSince is stamped over
// several sweeps, not in one burst of writes.
const maxTokenSinceStamps = 1000

// stampTokenSince records when the tokens of orgs from before TokenSince
// was kept were put (their parameter's last write, as listed; now when the
// listing does not say), so --token-max-age counts them too: a converged
// org has no token step to set it.
func (e *Engine) stampTokenSince(stamps map[string]time.Time, now time.Time) {
	for _, id := range sortedKeys(stamps) {
		since := stamps[id]
		if since.IsZero() || since.After(now) {
			since = now
		}
		err := e.store.Update(id, func(o *state.Org) error {
			if o.Observed.TokenSince.IsZero() && o.Observed.ParamTunnelID != "" {
				o.Observed.TokenSince = since.UTC()
			}
			return nil
		})
		if err != nil {
			e.log.Warn("inventory pass: record when the token was put", "org_id", id, "err", err)
		}
	}
}

// viewedFrom is observedFrom over the view, for one org: a listing that
// started before the org's last observation (or has not run yet) counts as
// not looked at, so a stale page never reports a resource created since as
// missing. The recorded tunnel stands in for a stale tunnel listing.
// listedAt is the oldest listing the observation rests on.
func (e *Engine) viewedFrom(ix *invIndex, v invView, org state.Org) (ob plan.Observed, listedAt time.Time, tunnelFresh bool) {
	ob = e.observedFrom(ix, org)
	seen := org.Observed.ObservedAt
	fresh := func(l Listing) bool {
		at, ok := v.at[l]
		if ok && !at.Before(seen) {
			if listedAt.IsZero() || at.Before(listedAt) {
				listedAt = at
			}
			return true
		}
		return false
	}
	if tunnelFresh = fresh(ListTunnels); !tunnelFresh {
		ob.Tunnel = nil
		if id := org.Observed.TunnelID; id != "" {
			ob.Tunnel = &plan.Tunnel{ID: id, Status: org.Observed.TunnelStatus}
		}
	}
	if !fresh(ListDNS) {
		ob.Records, ob.RecordsKnown = nil, false
	}
	if !fresh(ListInstances) {
		ob.Instances, ob.InstanceKnown = nil, false
	}
	if !fresh(ListParams) {
		ob.Param, ob.ParamKnown = nil, false
	}
	if listedAt.IsZero() {
		listedAt = seen
	}
	return ob, listedAt, tunnelFresh
}

// listedAll reports whether every listing of the view ran after seen.
func listedAll(v invView, seen time.Time) bool {
	for _, l := range Listings {
		if at, ok := v.at[l]; !ok || at.Before(seen) {
			return false
		}
	}
	return true
}

// Seen is o as the status shows it: its observed-at is the later of the
// last pass's look and the oldest listing of the last inventory pass that
// saw every resource of the org as recorded, so a Ready org the watches
// keep confirming shows a fresh observed-at without a write per watch.
func (e *Engine) Seen(o state.Org) state.Org {
	if v, ok := e.confirmed.Load(o.ID); ok {
		if at := v.(time.Time); at.After(o.Observed.ObservedAt) && o.Desired.Presence != state.Deleted {
			o.Observed.ObservedAt = at
		}
	}
	return o
}

// conflictShown reports whether the org's status shows the plan's first
// conflict (a pass after a restart must record one it does not).
func conflictShown(o state.Org, cs []plan.Conflict) bool {
	c, ok := Condition(o, state.CondConflict)
	return len(cs) > 0 && ok && c.Status && c.Message == cs[0].Reason
}

// notReadySinceOf is since when a present org has not been Ready: its
// Ready condition's transition, or its last event's time while the engine
// has not written a Ready condition yet. ok is false for a Ready org.
func notReadySinceOf(org state.Org) (since time.Time, ok bool) {
	c, found := Condition(org, state.CondReady)
	switch {
	case found && c.Status:
		return time.Time{}, false
	case found:
		return c.LastTransitionTime, true
	}
	return org.UpdatedAt, true
}

func (e *Engine) polling(orgID string) bool {
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	_, ok := e.polls[orgID]
	return ok
}

// orphans finds owned resources of orgs that may not own any, ages them and
// collects the ones past the grace period.
func (e *Engine) orphans(ctx context.Context, inv Inventory, live map[string]liveOrg, now time.Time, rep *SweepReport) {
	found := findOrphans(e.cfg.ParamPrefix, inv, live, e.tunnelHome)
	e.orphanMu.Lock()
	seen := map[string]time.Time{}
	for i := range found {
		k := found[i].Kind + "/" + found[i].Region + "/" + found[i].ID
		first, ok := e.orphanSeen[k]
		if !ok {
			first = now
		}
		seen[k] = first
		found[i].FirstSeen = first
	}
	e.orphanSeen = seen // forget what is gone
	e.orphanMu.Unlock()
	sort.Slice(found, func(i, j int) bool { return found[i].Kind+found[i].ID < found[j].Kind+found[j].ID })

	for i := range found {
		o := &found[i]
		log := e.log.With("org_id", o.OrgID, "orphan", true, "kind", o.Kind, "resource", o.ID)
		if now.Sub(o.FirstSeen) < e.cfg.OrphanGrace {
			log.Info("orphan found; within grace period", "first_seen", o.FirstSeen)
			continue
		}
		if !e.owns(o.OrgID) {
			continue // the replica owning the org id's partition collects it
		}
		if !e.cfg.GC {
			log.Warn("orphan found; gc disabled, only reported", "first_seen", o.FirstSeen)
			continue
		}
		// Re-check the org right before deleting: it may have been created
		// since the listing (an AWS resource in another region than the
		// org's is still the org's leftover).
		org, ok, err := e.store.Get(o.OrgID)
		if err != nil || (ok && !(org.Desired.Presence == state.Deleted && org.Observed.DeleteDone) &&
			e.liveOrg(org).holds(*o, e.tunnelHome)) {
			continue
		}
		if err := e.collect(ctx, log, *o); err != nil {
			o.Error = err.Error()
			continue
		}
		o.Collected = true
		e.cfg.Metrics.OrphanCollected(o.Kind)
		e.orphanMu.Lock()
		delete(e.orphanSeen, o.Kind+"/"+o.Region+"/"+o.ID)
		e.orphanMu.Unlock()
	}
	rep.Orphans = found
}

// collect deletes one orphan (owned by construction: it carries our marker).
func (e *Engine) collect(ctx context.Context, log *slog.Logger, o Orphan) error {
	// Collected by the replica that owns the org id's partition, fenced
	// like the org's own writes (fence.go).
	ctx = e.withFence(ctx, o.OrgID)
	var err error
	aw, ok := e.regionClouds(o.Region)
	if !ok && (o.Kind == "instance" || o.Kind == "parameter") {
		return fmt.Errorf("collect orphan %s %s of org %s: region %s not served", o.Kind, o.ID, o.OrgID, o.Region)
	}
	cf, served := e.poolClouds(o.Pool)
	if !served && (o.Kind == "tunnel" || o.Kind == "dns_record") {
		return fmt.Errorf("collect orphan %s %s of org %s: Cloudflare pool %s not served", o.Kind, o.ID, o.OrgID, o.Pool)
	}
	switch o.Kind {
	case "tunnel":
		err = e.deleteTunnel(ctx, log, o.ID, cf)
	case "dns_record":
		err = e.deleteRecord(ctx, log, "", o.ID, cf)
	case "instance":
		err = e.terminateInstances(ctx, log, "", []string{o.ID}, aw)
	case "parameter":
		err = e.deleteToken(ctx, log, "", o.ID, aw)
	default:
		return fmt.Errorf("unknown orphan kind %q", o.Kind)
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("collect orphan %s %s of org %s: %w", o.Kind, o.ID, o.OrgID, err)
	}
	return nil
}

// findOrphans lists the owned resources of orgs that may not own any:
// live maps each org that may own resources to its AWS region, and an
// instance or parameter in any other region is not the org's.
//
// Tunnels are an account's: pools in one account each list all of them, so
// a tunnel is the org's when it is in its pool's account (home), and is
// reported once.
func findOrphans(prefix string, inv Inventory, live map[string]liveOrg, home func(pool string) string) []Orphan {
	var found []Orphan
	add := func(o Orphan) {
		if !live[o.OrgID].holds(o, home) {
			found = append(found, o)
		}
	}
	tunnels := map[string]bool{}
	for _, t := range inv.Tunnels {
		if org, ok := owner.OrgFromTunnelName(t.Name); ok && !t.Deleted && !tunnels[t.ID] {
			tunnels[t.ID] = true
			add(Orphan{Kind: "tunnel", ID: t.ID, Name: t.Name, OrgID: org, Pool: t.Pool})
		}
	}
	for _, r := range inv.Records {
		if org, ok := owner.OrgFromDNSComment(r.Comment); ok {
			add(Orphan{Kind: "dns_record", ID: r.ID, Name: r.Name, OrgID: org, Pool: r.Pool})
		}
	}
	for _, in := range inv.Instances {
		if in.OrgID != "" && in.State != "terminated" && in.State != "shutting-down" {
			add(Orphan{Kind: "instance", ID: in.ID, OrgID: in.OrgID, Region: in.Region})
		}
	}
	for _, p := range inv.Params {
		if org, ok := owner.OrgFromParamName(prefix, p.Name); ok {
			add(Orphan{Kind: "parameter", ID: p.Name, Name: p.Name, OrgID: org, Region: p.Region})
		}
	}
	return found
}

// liveOrg is where an org that may own resources has them: its AWS region
// and Cloudflare pool ("" when not placed, or not known to this replica:
// then its resources in any pool are its own).
type liveOrg struct {
	Region, Pool string
	known        bool
}

func (e *Engine) liveOrg(org state.Org) liveOrg {
	return liveOrg{Region: e.orgRegion(org), Pool: e.PoolOf(org), known: true}
}

// inPool reports whether a DNS record in pool's zone may be the org's.
func (lo liveOrg) inPool(pool string) bool { return lo.known && (lo.Pool == "" || lo.Pool == pool) }

// inAccount reports whether a tunnel listed in pool may be the org's: it
// is in the account of the org's pool.
func (lo liveOrg) inAccount(home func(string) string, pool string) bool {
	return lo.known && (lo.Pool == "" || home(lo.Pool) == home(pool))
}

// holds reports whether the resource o was found as may be the org's: in
// its region (AWS), its pool's zone (a record) or its pool's account (a
// tunnel).
func (lo liveOrg) holds(o Orphan, home func(string) string) bool {
	switch o.Kind {
	case "instance", "parameter":
		return lo.known && lo.Region == o.Region
	case "dns_record":
		return lo.inPool(o.Pool)
	case "tunnel":
		return lo.inAccount(home, o.Pool)
	}
	return false
}

// tunnelHome is the Cloudflare account that holds a pool's tunnels (each
// pool its own when the account is not known).
func (e *Engine) tunnelHome(pool string) string {
	if pc, ok := e.poolClouds(pool); ok && pc.Limits.Account != "" {
		return "account " + pc.Limits.Account
	}
	return "pool " + pool
}
