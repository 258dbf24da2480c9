package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/state"
)

// An org's tunnel and DNS record live in one Cloudflare pool (an account and
// a zone in it): the one org.created named (data.pool), else the one the
// placement policy picks among those with room. The placement is committed
// to bbolt before the org's first Cloudflare write and stays while the org
// has resources, like its AWS region. Owned resources of an org found in
// another pool are orphans.

// Reasons of the Failed condition placement sets.
const (
	ReasonPoolFull      = "PoolFull"
	ReasonPoolNotServed = "PoolNotServed"
)

// poolWarnAt is the share of a limit at which a pool is reported as
// filling (a log line; the gauges show it all along).
const poolWarnAt = 0.8

// poolBook is the engine's count of placements: which pool holds each org
// that may own Cloudflare resources, loaded from bbolt once and kept with
// every placement and finished delete. Placement reserves in the book
// before it commits, under one lock, so concurrent creations never
// overfill a pool.
type poolBook struct {
	once    sync.Once
	mu      sync.Mutex
	placed  map[string]string // org id -> pool
	count   map[string]int    // pool -> orgs placed in it
	waiting map[string]bool   // orgs Failed with PoolFull, retried when room appears
	warned  map[string]bool   // pool/resource already reported as filling

	// With a PlacementLedger (ledger.go): the last read of each group's
	// record, which counts for its pools once started; present is the
	// live orgs' placements of this state file, recorded there at start.
	ledger    map[string]*ledgerGroup
	present   map[string]string
	startTurn chan struct{} // one ledgerStart at a time (a turn, see take)
	started   bool
	placeTurn chan struct{} // one placement at a time in this process
}

// take waits for the turn of a one-place channel, or for ctx: what holds
// it makes NATS requests, and a worker waiting behind one across an
// outage must still stop with its reconcile.
func take(ctx context.Context, turn chan struct{}) (release func(), err error) {
	select {
	case turn <- struct{}{}:
		return func() { <-turn }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// set records org's placement. Caller holds mu.
func (b *poolBook) set(org, pool string) {
	if old, ok := b.placed[org]; ok {
		if old == pool {
			return
		}
		b.count[old]--
	}
	b.placed[org] = pool
	b.count[pool]++
}

// unset forgets org's placement, reporting whether it had one. Caller
// holds mu.
func (b *poolBook) unset(org string) bool {
	old, ok := b.placed[org]
	if ok {
		delete(b.placed, org)
		b.count[old]--
	}
	return ok
}

// PoolOf is the pool an org is placed in, "" when it is not placed yet.
// Records from before pools name none: an org with a Cloudflare resource
// there is in the default pool.
func (e *Engine) PoolOf(org state.Org) string {
	ob := org.Observed
	switch {
	case ob.Pool != "":
		return ob.Pool
	case ob.TunnelID != "" || ob.DNSRecordID != "":
		return e.clouds.DefaultPool
	}
	return ""
}

// poolClouds returns a served pool's surfaces; "" is the default pool.
func (e *Engine) poolClouds(name string) (PoolClouds, bool) {
	if name == "" {
		name = e.clouds.DefaultPool
	}
	if pc, ok := e.clouds.Pools[name]; ok {
		pc.Name = name
		return pc, true
	}
	if name == e.clouds.DefaultPool {
		return PoolClouds{Name: name, Tunnels: e.clouds.Tunnels, DNS: e.clouds.DNS, ZoneName: e.cfg.ZoneName}, true
	}
	return PoolClouds{}, false
}

// poolOrder lists the served pools in fill order, the default first
// (New computes it once: the clouds do not change).
func poolOrder(c Clouds) []string {
	if len(c.Pools) == 0 {
		return []string{c.DefaultPool}
	}
	out := slices.Clone(c.PoolOrder)
	for _, n := range sortedKeys(c.Pools) {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if i := slices.Index(out, c.DefaultPool); i > 0 {
		out = append([]string{out[i]}, slices.Delete(out, i, i+1)...)
	}
	return out
}

// poolNames lists the served pools in fill order, the default first.
func (e *Engine) poolNames() []string { return e.poolList }

// cfOf returns the surfaces of the pool an org is placed in (the default
// pool while it is not placed: it owns nothing yet).
func (e *Engine) cfOf(org state.Org) (PoolClouds, error) { return e.poolFor(org.ID, e.PoolOf(org)) }

// poolFor returns the surfaces of the pool that holds orgID's resources
// ("" the default); a pool that is no longer served is an error naming it.
func (e *Engine) poolFor(orgID, name string) (PoolClouds, error) {
	pc, ok := e.poolClouds(name)
	if !ok {
		return pc, &TerminalError{Reason: ReasonPoolNotServed, Err: fmt.Errorf(
			"org %s has its tunnel and DNS record in Cloudflare pool %s, which this reconciler no longer serves (it serves %s); add the pool back to manage them",
			orgID, name, strings.Join(e.poolNames(), ", "))}
	}
	return pc, nil
}

// zoneOf is the zone an org's hostname is in: its pool's, or for an org not
// placed yet the pool placement would choose now (the default's when none
// has room: it is not built until one has).
func (e *Engine) zoneOf(org state.Org) string {
	name := e.PoolOf(org)
	if name == "" {
		e.loadBook()
		e.pools.mu.Lock()
		name, _ = e.choosePool(org)
		e.pools.mu.Unlock()
	}
	if pc, ok := e.poolClouds(name); ok {
		return pc.ZoneName
	}
	return e.cfg.ZoneName
}

// loadBook counts the placements in bbolt once, unless EnqueueAll's read
// at start did (initBook). It is called before the orgs are read (Reconcile,
// the inventory pass, the dry run), never inside a read.
func (e *Engine) loadBook() {
	e.pools.once.Do(func() {
		var b bookLoad
		err := e.store.ForEach(func(o state.Org) error {
			if !o.Observed.DeleteDone {
				e.countPlacement(&b, o)
			}
			return nil
		})
		if err != nil {
			e.log.Warn("count pool placements", "err", err)
		}
		e.initBook(b)
	})
}

// bookLoad is what a read of the state file gives the book: every org's
// placement, and the live orgs' in pools the ledger records.
type bookLoad struct{ placed, present map[string]string }

func (e *Engine) countPlacement(b *bookLoad, o state.Org) {
	p := e.PoolOf(o)
	if p == "" {
		return
	}
	if b.placed == nil {
		b.placed, b.present = map[string]string{}, map[string]string{}
	}
	b.placed[o.ID] = p
	// A placement known to be an older generation's is not recorded for
	// the cluster: the org's owner places it (place).
	if _, ok := e.poolGroup[p]; ok && o.Desired.Presence != state.Deleted && !stalePool(o) {
		b.present[o.ID] = p
	}
}

func (e *Engine) initBook(b bookLoad) {
	e.pools.mu.Lock()
	e.pools.placed, e.pools.count = map[string]string{}, map[string]int{}
	for id, p := range b.placed {
		e.pools.set(id, p)
	}
	e.pools.present = b.present
	e.pools.ledger = map[string]*ledgerGroup{}
	e.pools.waiting, e.pools.warned = map[string]bool{}, map[string]bool{}
	e.pools.mu.Unlock()
	e.reportPools()
}

// poolUse is one pool's use against its limits. Tunnels are the account's:
// pools in one account share them.
type poolUse struct{ tunnels, records int }

// usage is the placements by pool and by account: the shared records' for
// the pools they keep once this replica's own are in them (ledger.go),
// else the book's own count. Caller holds pools.mu.
func (e *Engine) usage() (byPool map[string]int, byAccount map[string]int) {
	byPool, byAccount = make(map[string]int, len(e.poolList)), map[string]int{}
	for _, name := range e.poolNames() {
		byPool[name] = e.pools.count[name]
		if key, ok := e.poolGroup[name]; ok && e.pools.started {
			if g := e.pools.ledger[key]; g != nil {
				byPool[name] = g.count[name]
			}
		}
		pc, _ := e.poolClouds(name)
		if a := pc.Limits.Account; a != "" {
			byAccount[a] += byPool[name]
		}
	}
	if e.pools.started {
		// An account's record holds its orgs in every pool, also those of
		// pools only other replicas serve (their configuration differs, in
		// a rolling change): all of them hold the account's tunnels.
		for a, n := range byAccount {
			if g := e.pools.ledger[accountKey(a)]; g != nil {
				byAccount[a] = max(n, len(g.orgs))
			}
		}
	}
	return byPool, byAccount
}

// room says whether pool name can take one more org. Caller holds pools.mu.
func (e *Engine) room(name string, byPool, byAccount map[string]int) (poolUse, bool) {
	pc, ok := e.poolClouds(name)
	if !ok {
		return poolUse{}, false
	}
	tunnels := byPool[name]
	if a := pc.Limits.Account; a != "" {
		tunnels = byAccount[a]
	}
	u := poolUse{tunnels: tunnels, records: byPool[name]}
	l := pc.Limits
	return u, (l.MaxTunnels <= 0 || u.tunnels < l.MaxTunnels) && (l.MaxRecords <= 0 || u.records < l.MaxRecords)
}

// free is the smallest fraction of a pool's limits left (1 when unlimited).
func free(u poolUse, l PoolLimits) float64 {
	f := 1.0
	if l.MaxTunnels > 0 {
		f = min(f, 1-float64(u.tunnels)/float64(l.MaxTunnels))
	}
	if l.MaxRecords > 0 {
		f = min(f, 1-float64(u.records)/float64(l.MaxRecords))
	}
	return f
}

// choosePool picks the pool for an org not placed yet: the one it names,
// else by policy among the pools with room. "" with the reason when none
// can take it. Caller holds pools.mu.
func (e *Engine) choosePool(org state.Org) (string, error) {
	byPool, byAccount := e.usage()
	if want := org.Desired.Pool; want != "" {
		if _, ok := e.poolClouds(want); !ok {
			return "", &TerminalError{Reason: ReasonPoolNotServed, Err: fmt.Errorf(
				"org %s asks for Cloudflare pool %s, which this reconciler does not serve (it serves %s); nothing was created",
				org.ID, want, strings.Join(e.poolNames(), ", "))}
		}
		if _, ok := e.room(want, byPool, byAccount); !ok {
			return "", &TerminalError{Reason: ReasonPoolFull, Err: fmt.Errorf(
				"org %s asks for Cloudflare pool %s, which is full (%s); nothing was created, and the org is built when the pool has room",
				org.ID, want, e.describeUse(want, byPool, byAccount))}
		}
		return want, nil
	}
	best, bestFree, bestUsed := "", -1.0, 0
	var full []string
	for _, name := range e.poolNames() {
		u, ok := e.room(name, byPool, byAccount)
		if !ok {
			full = append(full, name+" ("+e.describeUse(name, byPool, byAccount)+")")
			continue
		}
		if e.cfg.Placement != PlaceLeastUsed {
			return name, nil
		}
		// Most room left as a fraction of its limits; among equals (pools
		// without limits) the one holding fewest orgs.
		pc, _ := e.poolClouds(name)
		if f := free(u, pc.Limits); f > bestFree || (f == bestFree && u.records < bestUsed) {
			best, bestFree, bestUsed = name, f, u.records
		}
	}
	if best != "" {
		return best, nil
	}
	return "", &TerminalError{Reason: ReasonPoolFull, Err: fmt.Errorf(
		"org %s: every Cloudflare pool is full: %s; nothing was created, and the org is built when a pool has room (an org deleted, a pool added or its limits raised)",
		org.ID, strings.Join(full, ", "))}
}

// describeUse words a pool's use against its limits. Caller holds pools.mu.
func (e *Engine) describeUse(name string, byPool, byAccount map[string]int) string {
	pc, _ := e.poolClouds(name)
	u, _ := e.room(name, byPool, byAccount)
	var parts []string
	if l := pc.Limits.MaxTunnels; l > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d tunnels in its account", u.tunnels, l))
	}
	if l := pc.Limits.MaxRecords; l > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d DNS records in zone %s", u.records, l, pc.ZoneName))
	}
	if len(parts) == 0 {
		return "no limits"
	}
	return strings.Join(parts, ", ")
}

// place returns the pool of an org about to be written to Cloudflare,
// placing it first when it is not placed: chosen and reserved under the
// book's lock, then committed to bbolt before any Cloudflare write, so a
// crash after a write can never lose where it happened. An org that asks
// for another pool than the one it is in stays where it is (poolConflict).
func (e *Engine) place(ctx context.Context, log *slog.Logger, org *state.Org) (PoolClouds, error) {
	e.loadBook()
	shared := e.sharedPlacements()
	name := e.PoolOf(*org)
	if name != "" && shared {
		live := org.Desired.Presence != state.Deleted
		// An org placed before is reconciled even when the shared records
		// cannot be read now (ledgerLoop records it later), unless its
		// placement is an older generation's: then only they can say.
		if err := e.ledgerStart(ctx); err != nil {
			if live && stalePool(*org) {
				return PoolClouds{}, fmt.Errorf("org %s: this state file places it in Cloudflare pool %s for generation %d; read the shared placement records to place generation %d: %w",
					org.ID, name, org.Observed.PoolGeneration, org.Desired.Generation, err)
			}
			shared = false
		}
		if shared && live {
			recorded, err := e.ledgerOverrides(log, org, &name)
			if err != nil {
				return PoolClouds{}, err
			}
			if !recorded && stalePool(*org) {
				// Another replica deleted that generation and gave its
				// place back: this one is placed anew, within the limits.
				log.Info("this state file's Cloudflare pool is an older generation's, and the shared records have none for the org; placing it anew",
					"state_file_pool", name, "pool_generation", org.Observed.PoolGeneration, "generation", org.Desired.Generation)
				name = ""
			}
		}
	}
	if name != "" {
		e.pools.mu.Lock()
		e.pools.set(org.ID, name) // counted even when written to bbolt after the count
		e.pools.mu.Unlock()
		pc, err := e.cfOf(*org)
		if err == nil && shared && org.Desired.Presence != state.Deleted {
			err = e.ledgerEnsure(ctx, map[string]string{org.ID: name})
		}
		if err == nil && org.Observed.Pool == "" {
			// A record from before pools: its pool is written down now.
			err = e.commitPool(org, e.clouds.DefaultPool)
		}
		return pc, err
	}
	var err error
	if shared {
		if err := e.ledgerStart(ctx); err != nil {
			return PoolClouds{}, fmt.Errorf("org %s: place in a Cloudflare pool: %w", org.ID, err)
		}
		// Chosen on the shared records and written there with a
		// compare-and-swap, so other replicas' placements count too.
		if release, terr := take(ctx, e.pools.placeTurn); terr != nil {
			err = fmt.Errorf("org %s: wait for this process's placement in hand: %w", org.ID, terr)
		} else {
			name, err = e.ledgerPlace(ctx, *org)
			release()
		}
		e.pools.mu.Lock()
	} else {
		e.pools.mu.Lock()
		name, err = e.choosePool(*org)
	}
	if err != nil {
		var term *TerminalError
		if errors.As(err, &term) && term.Reason == ReasonPoolFull {
			e.pools.waiting[org.ID] = true
		} else {
			delete(e.pools.waiting, org.ID) // now failing for another reason
		}
		e.pools.mu.Unlock()
		return PoolClouds{}, err
	}
	e.pools.set(org.ID, name)
	delete(e.pools.waiting, org.ID)
	e.pools.mu.Unlock()
	if err := e.commitPool(org, name); err != nil {
		e.pools.mu.Lock()
		e.pools.unset(org.ID)
		e.pools.mu.Unlock()
		e.wakeIfRoom() // the place reserved is free again
		return PoolClouds{}, err
	}
	log.Info("org placed in Cloudflare pool", "pool", name)
	e.reportPools()
	// The shared records can name a pool this replica does not serve (one
	// placed by a replica with another configuration): it is written down,
	// where the org's resources may be, and the org fails naming it.
	return e.poolFor(org.ID, name)
}

// ledgerOverrides follows the shared records when they place a live org
// elsewhere than this state file says: the file's placement is an older
// generation's (deleted and re-created while another replica owned it),
// the records' the one its resources were built by. The placement is then
// the current generation's. recorded is false when the records do not
// have the org.
func (e *Engine) ledgerOverrides(log *slog.Logger, org *state.Org, name *string) (recorded bool, err error) {
	e.pools.mu.Lock()
	have, ok := e.ledgerFind(org.ID)
	e.pools.mu.Unlock()
	gen := org.Desired.Generation
	if !ok || (have == *name && org.Observed.PoolGeneration == gen) {
		return ok, nil
	}
	if have != *name {
		log.Warn("this state file places the org in an older generation's Cloudflare pool; following the shared placement records",
			"pool", have, "state_file_pool", *name)
	}
	err = e.store.Update(org.ID, func(o *state.Org) error {
		o.Observed.Pool, o.Observed.PoolGeneration = have, gen
		return nil
	})
	if err != nil {
		return true, fmt.Errorf("org %s: record Cloudflare pool %s: %w", org.ID, have, err)
	}
	org.Observed.Pool, org.Observed.PoolGeneration, *name = have, gen, have
	return true, nil
}

func (e *Engine) commitPool(org *state.Org, name string) error {
	err := e.store.Update(org.ID, func(o *state.Org) error {
		if o.Observed.Pool == "" || stalePool(*o) {
			o.Observed.Pool, o.Observed.PoolGeneration = name, o.Desired.Generation
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("org %s: record Cloudflare pool %s: %w", org.ID, name, err)
	}
	org.Observed.Pool, org.Observed.PoolGeneration = name, org.Desired.Generation
	return nil
}

// stalePool reports whether o's placement is known to be an older
// generation's: with several replicas, a state file that did not see the
// org deleted and re-created on another (records from before the
// generation was kept are trusted, as before).
func stalePool(o state.Org) bool {
	g := o.Observed.PoolGeneration
	return o.Observed.Pool != "" && g != 0 && g < o.Desired.Generation
}

// releasePlacement frees an org's place once its delete cascade is done,
// and queues the orgs waiting for room. A release the shared records miss
// (NATS away) is collected later (ledgerGC).
func (e *Engine) releasePlacement(ctx context.Context, orgID string) {
	e.loadBook()
	if e.sharedPlacements() {
		if err := e.ledgerRelease(ctx, nil, orgID); err != nil {
			e.log.Warn("release placement from the shared records; removed later", "org_id", orgID, "err", err)
		}
	}
	e.pools.mu.Lock()
	delete(e.pools.waiting, orgID) // deleted while it waited for room
	had := e.pools.unset(orgID)
	var wake []string
	if had {
		for id := range e.pools.waiting {
			wake = append(wake, id)
		}
		clear(e.pools.waiting)
	}
	e.pools.mu.Unlock()
	if !had {
		return
	}
	e.reportPools()
	for _, id := range wake {
		e.queue.Add(id)
	}
}

// poolConflict says why a later event's pool is not followed, "" when the
// org is where it asks to be (or names no pool).
func (e *Engine) poolConflict(org state.Org) string {
	have, want := e.PoolOf(org), org.Desired.Pool
	if have == "" || want == "" || have == want {
		return ""
	}
	if e.sharedPlacements() && stalePool(org) {
		return "" // an older generation's: the shared records decide (place)
	}
	return fmt.Sprintf("org asks for Cloudflare pool %s but its tunnel and DNS record are in %s; an org's pool is fixed while it exists (delete and re-create the org to move it)", want, have)
}

// PoolUsage is one pool's use against its limits (status, /v1/cluster).
type PoolUsage struct {
	Pool       string `json:"pool"`
	Zone       string `json:"zone"`
	Tunnels    int    `json:"tunnels"`
	MaxTunnels int    `json:"max_tunnels,omitempty"`
	Records    int    `json:"dns_records"`
	MaxRecords int    `json:"max_dns_records,omitempty"`
	Waiting    int    `json:"waiting,omitempty"` // orgs Failed with PoolFull (all pools)
}

// Pools reports every served pool's use, in fill order.
func (e *Engine) Pools() []PoolUsage {
	e.loadBook()
	return e.poolUsage()
}

func (e *Engine) poolUsage() []PoolUsage {
	e.pools.mu.Lock()
	defer e.pools.mu.Unlock()
	byPool, byAccount := e.usage()
	var out []PoolUsage
	for _, name := range e.poolNames() {
		pc, _ := e.poolClouds(name)
		u, _ := e.room(name, byPool, byAccount)
		out = append(out, PoolUsage{Pool: name, Zone: pc.ZoneName, Tunnels: u.tunnels, MaxTunnels: pc.Limits.MaxTunnels,
			Records: u.records, MaxRecords: pc.Limits.MaxRecords, Waiting: len(e.pools.waiting)})
	}
	return out
}

// reportPools sets the pool gauges and logs a pool that crossed poolWarnAt
// of a limit, once per crossing, well before placement refuses it.
func (e *Engine) reportPools() {
	for _, u := range e.poolUsage() {
		e.cfg.Metrics.SetPool(u.Pool, "tunnels", u.Tunnels, u.MaxTunnels)
		e.cfg.Metrics.SetPool(u.Pool, "dns_records", u.Records, u.MaxRecords)
		for _, r := range []struct {
			what        string
			used, limit int
		}{{"tunnels", u.Tunnels, u.MaxTunnels}, {"dns_records", u.Records, u.MaxRecords}} {
			key := u.Pool + "/" + r.what
			filling := r.limit > 0 && float64(r.used) >= poolWarnAt*float64(r.limit)
			e.pools.mu.Lock()
			was := e.pools.warned[key]
			e.pools.warned[key] = filling
			e.pools.mu.Unlock()
			if filling && !was {
				e.log.Warn("Cloudflare pool is filling: add a pool or raise its limits before placement refuses new orgs",
					"pool", u.Pool, "resource", r.what, "used", r.used, "limit", r.limit)
			}
		}
	}
}

// planPool is the pool a reconcile of org would use, without placing it:
// the one it is in, else the one placement would choose now. A tombstone
// not placed owns nothing: the default pool.
func (e *Engine) planPool(org state.Org) (string, PoolClouds, error) {
	name := e.PoolOf(org)
	if name == "" && org.Desired.Presence != state.Deleted {
		e.loadBook()
		e.pools.mu.Lock()
		n, err := e.choosePool(org)
		e.pools.mu.Unlock()
		if err != nil {
			return org.Desired.Pool, PoolClouds{}, err
		}
		name = n
	}
	pc, err := e.poolFor(org.ID, name)
	if err != nil {
		return name, pc, err
	}
	return pc.Name, pc, nil
}

// deletePool is where a tombstone's Cloudflare resources are: its pool, or
// for one this replica never placed (placed by another replica before a
// takeover), the pool the shared listings show a record of it in (a zone
// is one pool's), else its tunnel (an account's: any pool of the account
// lists it); the default pool when they show nothing.
func (e *Engine) deletePool(org state.Org, listed *Inventory) (PoolClouds, error) {
	if e.PoolOf(org) == "" && listed != nil {
		for _, r := range listed.Records {
			if o, ok := owner.OrgFromDNSComment(r.Comment); ok && o == org.ID {
				return e.poolFor(org.ID, r.Pool)
			}
		}
		name := owner.TunnelName(org.ID)
		for _, t := range listed.Tunnels {
			if t.Name == name && !t.Deleted {
				return e.poolFor(org.ID, t.Pool)
			}
		}
	}
	return e.cfOf(org)
}
