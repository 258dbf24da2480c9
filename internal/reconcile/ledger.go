package reconcile

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/tunnelward/tunnelward/internal/crashpoint"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Replicas each keep their own state file, and an org's observed state
// (its pool included) is written by its owner only, so no replica's own
// count of placements is the pool's. The ledger is the count they share:
// one record per group of pools that share a limit (an account's pools
// share its tunnels), mapping every org placed there to its pool. A
// placement is a compare-and-swap of its group's record against the
// revision the choice was made on, so two replicas placing at once never
// both take a pool's last place: the second write fails, reads again and
// chooses again. Pools without limits are not recorded (nothing to
// exceed); their counts stay each replica's own.

// PlacementLedger stores the shared placement records (internal/cluster:
// the NATS KV bucket tunnelward-placements). nil in Config: this process
// places alone and its own count is the truth (tests, the bench).
type PlacementLedger interface {
	// Read returns the placements recorded under key (org id -> pool) and
	// the revision a Write must name (0: no record yet).
	Read(ctx context.Context, key string) (map[string]string, uint64, error)
	// Write replaces key's record if its revision is still rev (0: only if
	// there is none). ok is false when another write came first.
	Write(ctx context.Context, key string, placed map[string]string, rev uint64) (newRev uint64, ok bool, err error)
}

// ledgerRefresh is how often the ledger is read again while the engine
// runs: placements and releases by other replicas show in the pool gauges,
// and orgs waiting for room are retried when some appears. Every
// placement reads it fresh anyway.
const ledgerRefresh = 5 * time.Second

// ledgerGCEvery is how many refreshes apart the records are checked for
// entries of this replica's orgs that no longer hold a place (a release
// lost to a crash or a NATS outage).
const ledgerGCEvery = 12

// maxLedgerConflicts bounds one placement's compare-and-swap retries; past
// it the reconcile fails and is retried with backoff.
const maxLedgerConflicts = 20

// ledgerGroup is the last read of one group's record.
type ledgerGroup struct {
	orgs  map[string]string // org id -> pool
	rev   uint64
	count map[string]int // pool -> orgs
}

func newLedgerGroup(orgs map[string]string, rev uint64) *ledgerGroup {
	g := &ledgerGroup{orgs: orgs, rev: rev, count: map[string]int{}}
	for _, p := range orgs {
		g.count[p]++
	}
	return g
}

// ledgerGroups maps each limited pool to its record's key, once (New):
// "account.<id>" for pools naming their account (they share its tunnels),
// else "pool.<name>"; keys lists those keys in a stable order. Empty
// without a ledger.
func ledgerGroups(c Clouds, ledger PlacementLedger) (byPool map[string]string, keys []string) {
	out := map[string]string{}
	if ledger == nil {
		return out, nil
	}
	limited := map[string]bool{}
	key := func(name string, l PoolLimits) string {
		if l.Account != "" {
			return accountKey(l.Account)
		}
		return "pool." + name
	}
	for name, pc := range c.Pools {
		if pc.Limits.MaxTunnels > 0 || pc.Limits.MaxRecords > 0 {
			limited[key(name, pc.Limits)] = true
		}
	}
	for name, pc := range c.Pools {
		if k := key(name, pc.Limits); limited[k] {
			out[name] = k
		}
	}
	return out, sortedKeys(limited)
}

// accountKey is the record of the pools in Cloudflare account id.
func accountKey(id string) string { return "account." + id }

// sharedPlacements reports whether placements go through the ledger: one
// is configured and some pool has limits to keep.
func (e *Engine) sharedPlacements() bool { return len(e.ledgerKeys) > 0 }

// readLedger reads every group's record into the book.
func (e *Engine) readLedger(ctx context.Context) error {
	for _, k := range e.ledgerKeys {
		orgs, rev, err := e.cfg.Placements.Read(ctx, k)
		if err != nil {
			return fmt.Errorf("read placement record %s: %w", k, err)
		}
		if orgs == nil {
			orgs = map[string]string{}
		}
		e.pools.mu.Lock()
		e.pools.ledger[k] = newLedgerGroup(orgs, rev)
		e.pools.mu.Unlock()
	}
	return nil
}

// ledgerFind is the pool the ledger records org in (the first record in
// key order, should a race have left two). Caller holds pools.mu.
func (e *Engine) ledgerFind(org string) (string, bool) {
	_, p, ok := e.ledgerFindKey(org)
	return p, ok
}

// ledgerFindKey is ledgerFind with the key of the record.
func (e *Engine) ledgerFindKey(org string) (key, pool string, ok bool) {
	for _, k := range e.ledgerKeys {
		if g := e.pools.ledger[k]; g != nil {
			if p, ok := g.orgs[org]; ok {
				return k, p, true
			}
		}
	}
	return "", "", false
}

// ledgerCommit applies change to key's record as last read and writes it
// on that revision; ok is false when another write came first (read
// again). In a reconcile the write is fenced like a cloud write: a replica
// that lost the org mid-placement cannot record a second place for it.
func (e *Engine) ledgerCommit(ctx context.Context, key string, change func(map[string]string)) (bool, error) {
	e.pools.mu.Lock()
	g := e.pools.ledger[key]
	if g == nil {
		g = newLedgerGroup(map[string]string{}, 0)
	}
	next, rev := maps.Clone(g.orgs), g.rev
	e.pools.mu.Unlock()
	change(next)
	ctx, done, err := holdFence(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	crashpoint.Hit("placements.write.before")
	newRev, ok, err := e.cfg.Placements.Write(ctx, key, next, rev)
	crashpoint.Hit("placements.write.after")
	if err != nil || !ok {
		return ok, err
	}
	e.pools.mu.Lock()
	e.pools.ledger[key] = newLedgerGroup(next, newRev)
	e.pools.mu.Unlock()
	return true, nil
}

// ledgerPlace records a new placement of org: read every record, take the
// pool the ledger already has for it (an earlier incarnation or replica
// placed it) or choose one on what was read, and compare-and-swap it in.
// Returns the pool; a full one is choosePool's TerminalError.
func (e *Engine) ledgerPlace(ctx context.Context, org state.Org) (string, error) {
	e.loadBook()
	for range maxLedgerConflicts {
		if err := e.readLedger(ctx); err != nil {
			return "", fmt.Errorf("org %s: place in a Cloudflare pool: %w", org.ID, err)
		}
		e.pools.mu.Lock()
		if key, p, ok := e.ledgerFindKey(org.ID); ok {
			e.pools.mu.Unlock()
			// Taken as found, with a write of the same record: a removal
			// made on the revision read (ledgerGC's, of an entry it saw as
			// an earlier generation's) then fails and looks again, and one
			// that came first makes this write fail and the org choose anew.
			ok, err := e.ledgerCommit(ctx, key, func(m map[string]string) { m[org.ID] = p })
			if err != nil {
				return "", fmt.Errorf("org %s: confirm placement in Cloudflare pool %s: %w", org.ID, p, err)
			}
			if ok {
				return p, nil
			}
			continue
		}
		name, err := e.choosePool(org)
		e.pools.mu.Unlock()
		if err != nil {
			return "", err
		}
		key, ok := e.poolGroup[name]
		if !ok {
			return name, nil // no limits: nothing shared to count against
		}
		ok, err = e.ledgerCommit(ctx, key, func(m map[string]string) { m[org.ID] = name })
		if err != nil {
			return "", fmt.Errorf("org %s: record placement in Cloudflare pool %s: %w", org.ID, name, err)
		}
		if ok {
			return name, nil
		}
	}
	return "", fmt.Errorf("org %s: place in a Cloudflare pool: the placement records kept changing under %d tries (other replicas placing); retried", org.ID, maxLedgerConflicts)
}

// ledgerEnsure records orgs already placed (their resources may exist, so
// whatever the limits) that the ledger does not have at all: a placement
// from before the ledger, or one whose write was lost. placed maps org ->
// pool.
func (e *Engine) ledgerEnsure(ctx context.Context, placed map[string]string) error {
	return e.ledgerEdit(ctx, "record the placements of "+someOrgs(sortedKeys(placed)), func() map[string]func(map[string]string) {
		byKey := map[string]map[string]string{}
		for org, p := range placed {
			key, ok := e.poolGroup[p]
			if !ok {
				continue
			}
			if _, ok := e.ledgerFind(org); ok {
				continue // recorded (elsewhere: ledgerOverrides follows it)
			}
			if byKey[key] == nil {
				byKey[key] = map[string]string{}
			}
			byKey[key][org] = p
		}
		edits := map[string]func(map[string]string){}
		for key, add := range byKey {
			edits[key] = func(m map[string]string) { maps.Copy(m, add) }
		}
		return edits
	})
}

// ledgerRelease removes orgs from every record that has them; still, when
// set, is asked again on each read the removal is made on (under
// pools.mu), and an org it turns down keeps its entry.
func (e *Engine) ledgerRelease(ctx context.Context, still func(org string) bool, orgs ...string) error {
	if err := e.readLedger(ctx); err != nil {
		return err
	}
	return e.ledgerEdit(ctx, "release the placements of "+someOrgs(orgs), func() map[string]func(map[string]string) {
		edits := map[string]func(map[string]string){}
		for k, g := range e.pools.ledger {
			var drop []string
			for _, org := range orgs {
				if _, ok := g.orgs[org]; ok && (still == nil || still(org)) {
					drop = append(drop, org)
				}
			}
			if len(drop) > 0 {
				edits[k] = func(m map[string]string) {
					for _, org := range drop {
						delete(m, org)
					}
				}
			}
		}
		return edits
	})
}

// someOrgs names orgs for a message, the first ten of a long list.
func someOrgs(orgs []string) string {
	if len(orgs) <= 10 {
		return strings.Join(orgs, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(orgs[:10], ", "), len(orgs)-10)
}

// ledgerEdit changes the records until no write loses: edits, called
// under pools.mu on the last read, gives each record's change; a write
// that loses reads the records again and the edits are made anew.
func (e *Engine) ledgerEdit(ctx context.Context, what string, edits func() map[string]func(map[string]string)) error {
	for i := 0; ; i++ {
		e.pools.mu.Lock()
		todo := edits()
		e.pools.mu.Unlock()
		conflict := false
		for _, key := range sortedKeys(todo) {
			ok, err := e.ledgerCommit(ctx, key, todo[key])
			if err != nil {
				return fmt.Errorf("%s in %s: %w", what, key, err)
			}
			conflict = conflict || !ok
		}
		if !conflict {
			return nil
		}
		if i == maxLedgerConflicts {
			return fmt.Errorf("%s: the records kept changing under %d tries", what, i)
		}
		if err := e.readLedger(ctx); err != nil {
			return err
		}
	}
}

// ledgerStart records the placements of this state file's live orgs that
// the ledger lacks (placed before the ledger, or a write lost), once; until
// it has, counts are this replica's own and placement waits for it. Orgs
// being deleted are left out: their places go with their cascade.
func (e *Engine) ledgerStart(ctx context.Context) error {
	release, err := take(ctx, e.pools.startTurn)
	if err != nil {
		return fmt.Errorf("wait for the start of the placement records: %w", err)
	}
	defer release()
	if e.pools.started {
		return nil
	}
	if err := e.readLedger(ctx); err != nil {
		return err
	}
	e.pools.mu.Lock()
	present := e.pools.present
	e.pools.mu.Unlock()
	if err := e.ledgerEnsure(ctx, present); err != nil {
		return fmt.Errorf("record the placements of this state file in the shared records: %w", err)
	}
	e.pools.mu.Lock()
	e.pools.started, e.pools.present = true, nil
	e.pools.mu.Unlock()
	e.reportPools()
	return nil
}

// ledgerLoop keeps the book's copy of the records fresh while the engine
// runs, wakes orgs waiting for room when some appears, and now and then
// drops entries of this replica's orgs that no longer hold a place.
func (e *Engine) ledgerLoop(ctx context.Context) {
	t := time.NewTicker(ledgerRefresh)
	defer t.Stop()
	for n := 0; ; n++ {
		if err := e.ledgerTick(ctx, n%ledgerGCEvery == ledgerGCEvery-1); err != nil && ctx.Err() == nil {
			e.log.Warn("placement records", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ledgerTick is one round of ledgerLoop.
func (e *Engine) ledgerTick(ctx context.Context, gc bool) error {
	e.loadBook()
	if err := e.ledgerStart(ctx); err != nil {
		return err
	}
	if err := e.readLedger(ctx); err != nil {
		return err
	}
	if gc {
		if err := e.ledgerGC(ctx); err != nil {
			return err
		}
	}
	e.reportPools()
	e.wakeIfRoom()
	return nil
}

// ledgerGC removes the entries of orgs this replica owns whose cascade is
// done (a release lost to a crash or a NATS outage). An org this state file
// does not know yet (its ingest behind another replica's) is left alone.
func (e *Engine) ledgerGC(ctx context.Context) error {
	e.pools.mu.Lock()
	entries := map[string]bool{}
	for _, g := range e.pools.ledger {
		for org := range g.orgs {
			if e.owns(org) {
				entries[org] = true
			}
		}
	}
	e.pools.mu.Unlock()
	gone := func(org string) bool {
		o, ok, err := e.store.Get(org)
		return err == nil && ok && o.Desired.Presence == state.Deleted && o.Observed.DeleteDone
	}
	var stale []string
	for _, org := range sortedKeys(entries) {
		if gone(org) {
			stale = append(stale, org)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	// Fenced like the orgs' own writes, and each org checked again on the
	// read its removal is made on: one re-created (or taken by another
	// replica) since keeps its place.
	if err := e.ledgerRelease(e.withFence(ctx, stale...), gone, stale...); err != nil {
		return err
	}
	e.log.Info("placement records: entries of deleted orgs removed", "count", len(stale), "org_ids", someOrgs(stale))
	return nil
}

// wakeIfRoom queues the orgs waiting for a pool when any pool has room.
func (e *Engine) wakeIfRoom() {
	e.pools.mu.Lock()
	if len(e.pools.waiting) == 0 {
		e.pools.mu.Unlock()
		return
	}
	byPool, byAccount := e.usage()
	room := false
	for _, name := range e.poolNames() {
		if _, ok := e.room(name, byPool, byAccount); ok {
			room = true
			break
		}
	}
	var wake []string
	if room {
		wake = sortedKeys(e.pools.waiting)
		clear(e.pools.waiting)
	}
	e.pools.mu.Unlock()
	for _, id := range wake {
		e.queue.Add(id)
	}
}
