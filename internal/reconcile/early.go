package reconcile

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/ratelimit"
)

// earlyLister runs listings on demand, ahead of the watches' schedule, for
// callers that need one newer than some moment (readiness polls, ready.go;
// tombstones, tombstone.go): one at a time, shared by every caller the
// running one is new enough for, and at most one per gap so their pages
// stay within a share of the budget.
type earlyLister struct {
	mu        sync.Mutex
	inflight  chan struct{} // closed when the running listing is remembered
	startedAt time.Time     // start of the running (or last) listing
}

// share makes sure a listing of which that fits (judged by its start
// time) has been remembered in the view, or says how long to wait for the
// next one the gap allows. It joins the running listing when that one
// fits (the caller then reads the view: a joined listing that failed left
// nothing new there), else starts one when the gap allows; an error is
// that listing's own.
func (e *Engine) share(ctx context.Context, l *earlyLister, fits func(started time.Time) bool, gap time.Duration, which ...Listing) (time.Duration, error) {
	now := e.cfg.Now()
	l.mu.Lock()
	if ch := l.inflight; ch != nil && fits(l.startedAt) {
		l.mu.Unlock()
		select {
		case <-ch:
			return 0, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if l.inflight != nil || (!l.startedAt.IsZero() && now.Sub(l.startedAt) < gap) {
		wait := gap - now.Sub(l.startedAt)
		l.mu.Unlock()
		return max(wait, time.Millisecond), nil
	}
	ch := make(chan struct{})
	l.inflight, l.startedAt = ch, now
	l.mu.Unlock()
	err := e.early(ctx, now, which...)
	l.mu.Lock()
	l.inflight = nil
	l.mu.Unlock()
	close(ch)
	if err != nil {
		return 0, fmt.Errorf("early listing of %v: %w", which, err)
	}
	return 0, nil
}

// early runs one early listing of which, starting at now, as a watch run
// would (the inventory pass included): each listing either takes the
// watch's run of the current slot or is counted as an extra one.
func (e *Engine) early(ctx context.Context, now time.Time, which ...Listing) error {
	by := make(map[Listing]string, len(which))
	for _, l := range which {
		if by[l] = e.claimSlot(l, now); by[l] == "early" {
			// It does a watch's work: it goes ahead as the watch would.
			ctx = ratelimit.WithPriority(ctx, ratelimit.High)
		}
	}
	_, _, err := e.listPass(ctx, now, by)
	return err
}
