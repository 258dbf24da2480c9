package reconcile

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
)

// A tombstone's lookups from shared listings (issue 17). Before it may say
// Deleted, a tombstone looks for everything the org may still own: its
// tunnel by name and its records by ownership comment, wherever a crash
// left them unrecorded. Nothing new is created for an org once its
// tombstone is committed and the last pass of the live org has ended, so a
// tunnel listing and a DNS listing that both started after that moment
// (the tombstone's floor) see every leftover, crash orphans included, and
// answer those lookups for every tombstone whose floor they follow: one
// listing page answers for 1,000 tunnels or 5,000 records. The watches'
// listings serve when they are new enough; otherwise a tombstone asks for
// an early listing of both, one at a time (tombstones that follow its
// start wait for it), at most one per deleteGap; a tombstone the gap holds
// back comes back when it ends (its worker is free meanwhile) and then
// shares the next one. While fewer tombstones are being deleted than the
// listings have pages (two lookups each), a tombstone looks itself up.

// deleteShare is the share of the Cloudflare budget early listings for
// tombstones may take.
const deleteShare = 0.10

// deleteLister runs the early listings tombstones share.
type deleteLister struct {
	earlyLister
	mu      sync.Mutex // guards running
	running int        // tombstones in their cascade now
	// floors maps an org id to its tombstone floor: a time after the
	// tombstone was committed and after the live org's last pass ended
	// (noteApplied, notePassEnded), kept until its cascade is done.
	floors sync.Map
}

// noteApplied raises the org's floor to now: an event for it has just been
// committed (ingest's hook, or a start-up enqueue of a tombstone).
func (e *Engine) noteApplied(orgID string) {
	now := e.cfg.Now()
	for {
		old, loaded := e.tombs.floors.LoadOrStore(orgID, now)
		if !loaded || !old.(time.Time).Before(now) || e.tombs.floors.CompareAndSwap(orgID, old, now) {
			return
		}
	}
}

// notePassStarted forgets the floor of a live org whose pass starts (it
// is not a tombstone); notePassEnded raises it to now when a tombstone was
// committed while the pass ran (the pass may still have created something).
func (e *Engine) notePassStarted(orgID string) { e.tombs.floors.Delete(orgID) }

func (e *Engine) notePassEnded(orgID string) {
	if _, ok := e.tombs.floors.Load(orgID); ok {
		e.noteApplied(orgID)
	}
}

// tombstoneFloor is the org's floor; when none was noted (the tombstone
// was read some other way), now: the tombstone is committed (it was read)
// and no pass of the org runs beside this one.
func (e *Engine) tombstoneFloor(orgID string) time.Time {
	if t, ok := e.tombs.floors.Load(orgID); ok {
		return t.(time.Time)
	}
	now := e.cfg.Now()
	e.tombs.floors.Store(orgID, now)
	return now
}

// deleteGap is the least time between two early listings for tombstones.
func (e *Engine) deleteGap(pages int) time.Duration {
	w := e.watchConfig()
	w.defaults()
	return time.Duration(math.Ceil(float64(max(pages, 1)) / (w.CFPerSecond * deleteShare) * float64(time.Second)))
}

// listedForDelete returns a tunnel and DNS listing that both started after
// floor, or nil when the tombstone should look itself up, or how long to
// wait for the next early listing.
func (e *Engine) listedForDelete(ctx context.Context, floor time.Time) (*Inventory, time.Duration, error) {
	w := e.watchConfig()
	w.defaults()
	e.viewMu.Lock()
	inv := Inventory{Tunnels: e.view.inv.Tunnels, Records: e.view.inv.Records}
	e.viewMu.Unlock()
	// Calls of a listing of both (every pool's), against a tombstone's two
	// lookups in its own pool; the gap is paced by the busiest budget.
	tps, dps := tunnelPagesOf(inv, w, e.poolBudgets()), recordPagesOf(inv, w, e.poolBudgets())
	tp, dp := tps.total, dps.total
	l := &e.tombs
	l.mu.Lock()
	running := l.running
	l.mu.Unlock()
	if 2*running <= tp+dp {
		return nil, 0, nil // the lookups cost no more (and decode less)
	}
	fresh := func() *Inventory {
		e.viewMu.Lock()
		defer e.viewMu.Unlock()
		tat, tok := e.view.at[ListTunnels]
		dat, dok := e.view.at[ListDNS]
		if !tok || !dok || !tat.After(floor) || !dat.After(floor) {
			return nil
		}
		return &Inventory{Tunnels: e.view.inv.Tunnels, Records: e.view.inv.Records}
	}
	if inv := fresh(); inv != nil {
		return inv, 0, nil
	}
	wait, err := e.share(ctx, &l.earlyLister, func(started time.Time) bool { return started.After(floor) },
		e.deleteGap(tps.busiest+dps.busiest), ListTunnels, ListDNS)
	if err != nil || wait > 0 {
		return nil, wait, err
	}
	return fresh(), 0, nil // nil (look itself up) when a joined listing failed
}

// listedTunnelOf is the org's live tunnel in a listing, by its name.
func listedTunnelOf(inv *Inventory, orgID, pool string) *Tunnel {
	name := owner.TunnelName(orgID)
	for i := range inv.Tunnels {
		if t := inv.Tunnels[i]; t.Name == name && !t.Deleted && t.Pool == pool {
			return &t
		}
	}
	return nil
}

// listedRecordsOf are the records a listing shows with the org's
// ownership comment.
func listedRecordsOf(inv *Inventory, orgID, pool string) []plan.Record {
	var out []plan.Record
	for _, r := range inv.Records {
		if o, ok := owner.OrgFromDNSComment(r.Comment); ok && o == orgID && r.Pool == pool {
			out = append(out, r)
		}
	}
	return out
}
