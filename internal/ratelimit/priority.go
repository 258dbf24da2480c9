package ratelimit

import (
	"context"
	"sync"
)

// Priority orders callers waiting on one shared limiter.
type Priority int

const (
	// Low is work no org waits on to converge (the admin API's dry run,
	// /v1/plan): it gets a permit only when no Normal or High caller
	// waits, so an operator's reads delay a reconcile by at most the one
	// permit a Low caller may already be waiting for.
	Low Priority = -1
	// Normal is work that starts something new (creating an org); the
	// zero value, so a context without a priority is Normal.
	Normal Priority = 0
	// High is work that finishes what was started (a readiness poll of an
	// org already launched, a delete in progress): one cheap call that
	// turns spent budget into a Ready org, so it should not queue behind
	// hundreds of creations.
	High Priority = 1
)

// queue is a priority's index in Prioritized.queues.
func queue(p Priority) int { return int(p - Low) }

type priorityKey struct{}

// WithPriority marks the calls made with ctx.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityOf is the priority ctx carries (Normal when none).
func PriorityOf(ctx context.Context) Priority {
	p, _ := ctx.Value(priorityKey{}).(Priority)
	return p
}

// Prioritized hands an inner limiter's permits out by priority: waiters
// queue in one FIFO per priority and only the head of the queue (every
// High waiter before any Normal one, every Normal one before any Low one)
// waits on the inner limiter. The inner limiter
// alone decides how many calls pass and when, so the budget it enforces is
// unchanged; only the order changes.
type Prioritized struct {
	inner Limiter

	mu      sync.Mutex
	queues  [3][]*waiter // by queue(Priority)
	busy    bool         // a waiter holds the turn (is waiting on inner)
	highRun int          // turns given to High in a row while Normal waited
}

// NormalEvery is the share of turns Normal gets while High waiters queue
// too: every NormalEvery-th. Finishing work still goes first, but a fleet
// of polls that keeps the High queue full (a mass outage) cannot hold
// creations back for as long as it lasts.
const NormalEvery = 5

type waiter struct {
	turn    chan struct{} // closed when the waiter gets the turn
	granted bool
}

// NewPrioritized wraps inner.
func NewPrioritized(inner Limiter) *Prioritized { return &Prioritized{inner: inner} }

// Wait blocks until the caller, in priority order, got a permit from the
// inner limiter, or ctx ends.
func (p *Prioritized) Wait(ctx context.Context) error {
	pr := PriorityOf(ctx)
	if pr != High && pr != Low {
		pr = Normal
	}
	qi := queue(pr)
	w := &waiter{turn: make(chan struct{})}
	p.mu.Lock()
	p.queues[qi] = append(p.queues[qi], w)
	p.dispatchLocked()
	p.mu.Unlock()

	select {
	case <-w.turn:
	case <-ctx.Done():
		p.mu.Lock()
		if !w.granted {
			q := p.queues[qi]
			for i := range q {
				if q[i] == w {
					p.queues[qi] = append(q[:i:i], q[i+1:]...)
					break
				}
			}
			p.mu.Unlock()
			return ctx.Err()
		}
		p.mu.Unlock() // the turn came as ctx ended: pass it on below
	}
	err := p.inner.Wait(ctx)
	p.mu.Lock()
	p.busy = false
	p.dispatchLocked()
	p.mu.Unlock()
	return err
}

// dispatchLocked gives the turn to the first High waiter, else the first
// Normal one, else the first Low one, when nobody holds it; every
// NormalEvery-th turn goes to Normal while both wait.
func (p *Prioritized) dispatchLocked() {
	if p.busy {
		return
	}
	high, normal := len(p.queues[queue(High)]) > 0, len(p.queues[queue(Normal)]) > 0
	switch {
	case high && normal && p.highRun >= NormalEvery-1:
		p.highRun = 0
		p.grantLocked(Normal)
		return
	case high && normal:
		p.highRun++
	case !high:
		p.highRun = 0
	}
	for pr := High; pr >= Low; pr-- {
		if len(p.queues[queue(pr)]) > 0 {
			p.grantLocked(pr)
			return
		}
	}
}

// grantLocked gives the turn to pr's first waiter.
func (p *Prioritized) grantLocked(pr Priority) {
	q := p.queues[queue(pr)]
	w := q[0]
	q[0] = nil
	p.queues[queue(pr)] = q[1:]
	w.granted = true
	p.busy = true
	close(w.turn)
}

// Waiting is how many callers of each priority wait for their turn (not
// counting the one waiting on the inner limiter). For tests and metrics.
func (p *Prioritized) Waiting() (high, normal, low int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queues[queue(High)]), len(p.queues[queue(Normal)]), len(p.queues[queue(Low)])
}
