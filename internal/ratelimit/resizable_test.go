package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// A waiter that reserved at a slow rate is paced by the new rate once the
// limiter is resized, not by the delay it reserved (a plain rate.Limiter
// would keep it waiting ten minutes here).
func TestResizeWakesWaiters(t *testing.T) {
	l := NewResizable(rate.Every(10*time.Minute), 1)
	if err := l.Wait(context.Background()); err != nil { // the burst
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Wait(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("the second call did not wait for the slow rate: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	l.Resize(rate.Limit(1000), 1)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter still waits for the rate it reserved at before the resize")
	}
}

// Shrinking re-reserves too: a waiter is then paced by the smaller rate.
func TestResizeDownRepacesWaiters(t *testing.T) {
	l := NewResizable(rate.Limit(1000), 1)
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.Resize(rate.Every(10*time.Minute), 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := l.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after shrinking, a call with a 1 s deadline: %v, want it refused (the wait is minutes)", err)
	}
}

// A call whose context has ended gets no token, even when one is free.
func TestResizableWaitEndedContextSpendsNoToken(t *testing.T) {
	l := NewResizable(1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx); err == nil {
		t.Fatal("Wait with an ended context returned nil")
	}
	if got := l.Tokens(); got < 0.99 {
		t.Fatalf("%.2f tokens left after an ended call, want the 1 token unspent", got)
	}
}
