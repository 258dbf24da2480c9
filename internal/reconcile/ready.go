package reconcile

import (
	"context"
	"math"
	"sync"
	"time"
)

// Readiness from a shared listing (issue 17): an org that only waits for
// its tunnel to connect takes the tunnel's status from a tunnel listing
// that started after its last step, not from a GET of its own. One listing
// page answers for up to 1,000 tunnels, so every org waiting at the time
// shares it. A listing the drift watch made serves as well; when none is
// new enough, a poll asks for an early one, at most one per readyGap. While
// fewer orgs wait than the listing has pages, a GET per org is cheaper and
// is used.

// readyShare is the share of the Cloudflare budget early tunnel listings
// for readiness may take while orgs wait.
const readyShare = 0.10

// readyLister runs the early tunnel listings: one at a time, shared by
// every poll that needs one while it runs.
type readyLister struct {
	earlyLister
	mu sync.Mutex // guards the index
	// index of the view's tunnel listing by id, rebuilt when a newer
	// listing lands.
	indexAt time.Time
	index   map[string]Tunnel
}

// readyGap is the least time between two early tunnel listings: the
// interval at which their pages stay within readyShare of the budget, and
// never longer than the poll interval (a listing is only asked for while at
// least as many orgs wait as it has pages, so at that rate it costs no more
// than the GETs it replaces).
func (e *Engine) readyGap(pages int) time.Duration {
	w := e.watchConfig()
	w.defaults()
	budget := time.Duration(math.Ceil(float64(max(pages, 1)) / (w.CFPerSecond * readyShare) * float64(time.Second)))
	return min(e.cfg.PollInterval, budget)
}

// tunnelPages is how many pages the tunnel listing takes now.
func (e *Engine) tunnelPages() int {
	w := e.watchConfig()
	w.defaults()
	e.viewMu.Lock()
	inv := Inventory{Tunnels: e.view.inv.Tunnels}
	e.viewMu.Unlock()
	return tunnelPagesOf(inv, w, e.poolBudgets()).busiest
}

// listedTunnel returns the tunnel id as the newest tunnel listing shows it
// (nil when the listing has no live tunnel of that id) and when that
// listing started, if it started after the org's last step (need) and
// after the listing the org read last time (prev). Otherwise it starts an
// early listing when the gap allows (or joins the one running), else it
// says how long to wait. ok is false when no listing answers (use a GET:
// fewer orgs wait than the listing has pages).
func (e *Engine) listedTunnel(ctx context.Context, id string, need, prev time.Time) (t *Tunnel, at time.Time, wait time.Duration, ok bool, err error) {
	pages := e.tunnelPages()
	e.pollMu.Lock()
	waiting := len(e.polls)
	e.pollMu.Unlock()
	if waiting < pages {
		return nil, time.Time{}, 0, false, nil
	}
	fresh := func() (*Tunnel, time.Time, bool) {
		e.viewMu.Lock()
		at, listed := e.view.at[ListTunnels]
		ts := e.view.inv.Tunnels
		e.viewMu.Unlock()
		if !listed || at.Before(need) || !at.After(prev) {
			return nil, at, false
		}
		e.ready.mu.Lock()
		defer e.ready.mu.Unlock()
		if !e.ready.indexAt.Equal(at) || e.ready.index == nil {
			e.ready.index = make(map[string]Tunnel, len(ts))
			for _, t := range ts {
				e.ready.index[t.ID] = t
			}
			e.ready.indexAt = at
		}
		if t, found := e.ready.index[id]; found && !t.Deleted {
			return &t, at, true
		}
		return nil, at, true
	}
	if t, at, ok := fresh(); ok {
		return t, at, 0, true, nil
	}
	wait, err = e.share(ctx, &e.ready.earlyLister, func(started time.Time) bool {
		return !started.Before(need) && started.After(prev)
	}, e.readyGap(pages), ListTunnels)
	if err != nil || wait > 0 {
		return nil, time.Time{}, wait, true, err
	}
	if t, at, ok := fresh(); ok {
		return t, at, 0, true, nil
	}
	return nil, time.Time{}, e.cfg.PollInterval, true, nil
}
