package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Resizable is a token bucket whose rate and burst change while callers
// wait (a replica's share of a budget follows the partitions it owns). A
// plain *rate.Limiter keeps the delay a waiter reserved at the old rate:
// a replica that reserved calls at a one-partition share would wait that
// long after taking half the partitions. Resizable's Wait reserves again
// whenever the limiter is resized, so every waiter is paced by the rate in
// force.
type Resizable struct {
	*rate.Limiter
	mu      sync.Mutex
	resized chan struct{} // closed and replaced by Resize
}

// NewResizable returns a bucket of r tokens per second and size burst.
func NewResizable(r rate.Limit, burst int) *Resizable {
	return &Resizable{Limiter: rate.NewLimiter(r, burst), resized: make(chan struct{})}
}

// Resize sets the rate and burst and wakes every waiter to reserve again.
func (l *Resizable) Resize(r rate.Limit, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Limiter.SetBurst(burst)
	l.Limiter.SetLimit(r)
	close(l.resized)
	l.resized = make(chan struct{})
}

// Wait blocks until one token is available at the rate in force, or ctx
// ends. A reservation made before a Resize is cancelled (its tokens given
// back as far as the limiter can) and made again.
func (l *Resizable) Wait(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err // an ended call spends no token (rate.Limiter's Wait does the same)
		}
		l.mu.Lock()
		resized := l.resized
		r := l.Limiter.Reserve()
		l.mu.Unlock()
		if !r.OK() {
			return fmt.Errorf("rate limiter: burst %d admits no call", l.Burst())
		}
		d := r.Delay()
		if d == 0 {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			r.Cancel()
			return fmt.Errorf("rate limiter: would wait %s, past the context's deadline: %w", d.Round(time.Millisecond), context.DeadlineExceeded)
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			t.Stop()
			r.Cancel()
			return ctx.Err()
		case <-resized:
			t.Stop()
			r.Cancel()
		}
	}
}
