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

// Low waiters (the admin API's plan) get a permit only when no Normal or
// High waiter is queued, whatever the arrival order; among themselves
// first come, first served.
func TestPrioritizedGrantsLowLast(t *testing.T) {
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

	start("n0", Normal)
	eventually(t, "n0 to hold the turn", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.busy })
	for i, w := range []struct {
		name string
		pr   Priority
	}{{"l1", Low}, {"l2", Low}, {"n1", Normal}, {"h1", High}, {"n2", Normal}} {
		start(w.name, w.pr)
		eventually(t, w.name+" to queue", func() bool { h, n, l := p.Waiting(); return h+n+l == i+1 })
	}
	if h, nn, l := p.Waiting(); h != 1 || nn != 2 || l != 2 {
		t.Fatalf("waiting high %d normal %d low %d, want 1 2 2", h, nn, l)
	}
	for i := range 6 {
		inner <- struct{}{}
		eventually(t, "a grant", func() bool { return n() == i+1 })
	}
	wg.Wait()
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
	start("n0", Normal)
	eventually(t, "n0 to hold the turn", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.busy })
	var names []string
	for i := 1; i <= 3; i++ {
		names = append(names, "n"+string(rune('0'+i)))
	}
	for i := 1; i <= 10; i++ {
		names = append(names, "h"+string(rune('a'+i-1)))
	}
	for i, name := range names {
		pr := Normal
		if name[0] == 'h' {
			pr = High
		}
		start(name, pr)
		eventually(t, name+" to queue", func() bool { h, n, l := p.Waiting(); return h+n+l == i+1 })
	}
	for i := range len(names) + 1 { // n0's permit, then one per name
		inner <- struct{}{}
		eventually(t, "a grant", func() bool { return n() == i+1 })
	}
	wg.Wait()
	want := []string{"n0", "ha", "hb", "hc", "hd", "n1", "he", "hf", "hg", "hh", "n2", "hi", "hj", "n3"}
	if !slices.Equal(granted, want) {
		t.Fatalf("granted %v, want %v", granted, want)
	}
}
