package controller

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/workqueue"
)

// fake is a Reconciler scripted per key: each call pops the next answer.
type fake struct {
	mu      sync.Mutex
	answers map[string][]answer
	calls   map[string]int
	running map[string]int
	maxPar  int // most calls of one key at once (must stay 1)
	gate    chan struct{}
}

type answer struct {
	res Result
	err error
}

func (f *fake) Reconcile(ctx context.Context, key string) (Result, error) {
	f.mu.Lock()
	f.running[key]++
	if f.running[key] > f.maxPar {
		f.maxPar = f.running[key]
	}
	f.calls[key]++
	var a answer
	if q := f.answers[key]; len(q) > 0 {
		a, f.answers[key] = q[0], q[1:]
	}
	f.mu.Unlock()
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	f.running[key]--
	f.mu.Unlock()
	return a.res, a.err
}

func (f *fake) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[key]
}

func newFake() *fake {
	return &fake{answers: map[string][]answer{}, calls: map[string]int{}, running: map[string]int{}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func run(t *testing.T, f *fake, workers int) (*Controller, *[]string) {
	t.Helper()
	q := workqueue.New(workqueue.Config{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})
	var mu sync.Mutex
	var results []string
	c := New(Config{Workers: workers, Observe: func(r string, _ time.Duration) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	}}, f, q)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, &results
}

// Errors are retried with backoff until the reconciler succeeds; a
// terminal error is not retried; a requeue comes back by itself.
func TestRetryTerminalRequeue(t *testing.T) {
	f := newFake()
	f.answers["flaky"] = []answer{{err: errors.New("boom")}, {err: errors.New("boom")}, {}}
	f.answers["bad"] = []answer{{err: Terminal(errors.New("no slug"))}}
	f.answers["boot"] = []answer{{res: Result{RequeueAfter: 10 * time.Millisecond}}, {}}
	c, _ := run(t, f, 2)
	for _, k := range []string{"flaky", "bad", "boot"} {
		c.Queue().Add(k)
	}
	waitFor(t, "flaky retried to success", func() bool { return f.count("flaky") == 3 })
	waitFor(t, "boot requeued once", func() bool { return f.count("boot") == 2 })
	waitFor(t, "queue idle", func() bool { return c.Queue().Len() == 0 && c.Queue().Waiting() == 0 })
	if n := f.count("bad"); n != 1 {
		t.Fatalf("terminal key reconciled %d times, want 1", n)
	}
	if n := f.count("flaky"); n != 3 {
		t.Fatalf("flaky key reconciled %d times after success, want 3", n)
	}
}

// Never two workers on one key, however often it is queued meanwhile;
// queued again while running, it runs once more afterwards.
func TestOneWorkerPerKey(t *testing.T) {
	f := newFake()
	f.gate = make(chan struct{})
	c, _ := run(t, f, 4)
	c.Queue().Add("acme")
	waitFor(t, "first call running", func() bool { return f.count("acme") == 1 })
	for range 10 {
		c.Queue().Add("acme")
	}
	close(f.gate)
	waitFor(t, "second call", func() bool { return f.count("acme") == 2 })
	waitFor(t, "queue idle", func() bool { return c.Queue().Len() == 0 })
	if f.count("acme") != 2 || f.maxPar != 1 || c.Overlaps() != 0 {
		t.Fatalf("calls %d, most at once %d, overlaps %d; want 2, 1, 0", f.count("acme"), f.maxPar, c.Overlaps())
	}
}
