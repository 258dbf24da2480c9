package ratelimit

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// permits is an inner limiter that lets one waiter through per permit sent.
type permits chan struct{}

func (p permits) Wait(ctx context.Context) error {
	select {
	case <-p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// High waiters are granted before every Normal waiter that was already
// waiting; each class is first come, first served; a Normal waiter whose
// context ends leaves the queue without taking a permit. Order is observed
// by handing out one permit at a time, so nothing depends on timing.
func TestPrioritizedGrantsHighFirst(t *testing.T) {
	inner := make(permits)
	p := NewPrioritized(inner)
	var (
		mu      sync.Mutex
		granted []string
		errs    = map[string]error{}
		wg      sync.WaitGroup
	)
	start := func(ctx context.Context, name string, pr Priority) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.Wait(WithPriority(ctx, pr))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[name] = err
				return
			}
			granted = append(granted, name)
		}()
	}
	n := func() int { mu.Lock(); defer mu.Unlock(); return len(granted) + len(errs) }

	// n0 takes the turn and waits on the inner limiter: nobody queued.
	start(context.Background(), "n0", Normal)
	eventually(t, "n0 to hold the turn", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.busy })
	cancelN2Ctx, cancelN2 := context.WithCancel(context.Background())
	for i, w := range []struct {
		name string
		ctx  context.Context
		pr   Priority
	}{
		{"n1", context.Background(), Normal}, {"n2", cancelN2Ctx, Normal}, {"n3", context.Background(), Normal},
		{"h1", context.Background(), High}, {"h2", context.Background(), High},
	} {
		start(w.ctx, w.name, w.pr)
		eventually(t, w.name+" to queue", func() bool { h, n, l := p.Waiting(); return h+n+l == i+1 })
	}
	cancelN2()
	eventually(t, "n2 to leave the queue", func() bool { return n() == 1 })
	for i := 0; i < 5; i++ {
		inner <- struct{}{}
		eventually(t, "a grant", func() bool { return n() == i+2 })
	}
	wg.Wait()
	want := []string{"n0", "h1", "h2", "n1", "n3"}
	if len(granted) != len(want) {
		t.Fatalf("granted %v, want %v", granted, want)
	}
	for i := range want {
		if granted[i] != want[i] {
			t.Fatalf("granted %v, want %v", granted, want)
		}
	}
	if !errors.Is(errs["n2"], context.Canceled) || len(errs) != 1 {
		t.Fatalf("errors %v, want only n2 canceled", errs)
	}
}

// queued is one waiter of grantOrder.
type queued struct {
	name string
	pr   Priority
}

// grantOrder has a Normal waiter named first take the turn and wait on the
// inner limiter, queues the others in order behind it, then hands out one
// permit at a time: the order of the grants, nothing left to timing.
func grantOrder(t *testing.T, first string, others []queued) []string {
	t.Helper()
	inner := make(permits)
	p := NewPrioritized(inner)
	var (
		mu      sync.Mutex
		granted []string
		wg      sync.WaitGroup
	)
	start := func(name string, pr Priority) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Wait(WithPriority(context.Background(), pr)); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			granted = append(granted, name)
			mu.Unlock()
		}()
	}
	n := func() int { mu.Lock(); defer mu.Unlock(); return len(granted) }
	start(first, Normal)
	eventually(t, first+" to hold the turn", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.busy })
	for i, w := range others {
		start(w.name, w.pr)
		eventually(t, w.name+" to queue", func() bool { h, n, l := p.Waiting(); return h+n+l == i+1 })
	}
	for i := range len(others) + 1 { // first's permit, then one per waiter
		inner <- struct{}{}
		eventually(t, "a grant", func() bool { return n() == i+1 })
	}
	wg.Wait()
	return granted
}

// Low waiters (the admin API's plan) get a permit only when no Normal or
// High waiter is queued, whatever the arrival order; among themselves
// first come, first served.
func TestPrioritizedGrantsLowLast(t *testing.T) {
	granted := grantOrder(t, "n0", []queued{{"l1", Low}, {"l2", Low}, {"n1", Normal}, {"h1", High}, {"n2", Normal}})
	want := []string{"n0", "h1", "n1", "n2", "l1", "l2"}
	if !slices.Equal(granted, want) {
		t.Fatalf("granted %v, want %v", granted, want)
	}
}

// A permit is never lost: every waiter of a larger mixed crowd gets one,
// and no more permits are taken than waiters served.
func TestPrioritizedServesEveryone(t *testing.T) {
	inner := make(permits, 200)
	for range 200 {
		inner <- struct{}{}
	}
	p := NewPrioritized(inner)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Wait(WithPriority(context.Background(), Priority(i%3-1))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(inner) != 0 {
		t.Fatalf("%d permits left over after 200 waiters", len(inner))
	}
}

// While High waiters keep queueing, Normal still gets every NormalEvery-th
// turn: creations are slowed by a fleet of polls, never stopped by it.
func TestPrioritizedNormalNotStarved(t *testing.T) {
	var others []queued
	for _, n := range []string{"n1", "n2", "n3"} {
		others = append(others, queued{n, Normal})
	}
	for _, h := range []string{"ha", "hb", "hc", "hd", "he", "hf", "hg", "hh", "hi", "hj"} {
		others = append(others, queued{h, High})
	}
	granted := grantOrder(t, "n0", others)
	want := []string{"n0", "ha", "hb", "hc", "hd", "n1", "he", "hf", "hg", "hh", "n2", "hi", "hj", "n3"}
	if !slices.Equal(granted, want) {
		t.Fatalf("granted %v, want %v", granted, want)
	}
}
