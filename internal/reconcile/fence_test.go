package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// testFence owns the orgs in owned; fenced orgs are owned but their lease
// is past its renew deadline.
type testFence struct {
	mu     sync.Mutex
	owned  map[string]bool
	fenced map[string]bool
	holds  int
}

func (f *testFence) Owns(org string) bool { f.mu.Lock(); defer f.mu.Unlock(); return f.owned[org] }

func (f *testFence) Hold(ctx context.Context, org string) (context.Context, func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.owned[org] || f.fenced[org] {
		return ctx, func() {}, fmt.Errorf("test fence: %s", org)
	}
	f.holds++
	return ctx, func() {}, nil
}

// Only owned orgs are reconciled; a write past the renew deadline is
// refused before it reaches the cloud; gaining the partition queues the
// org; the status names the replica.
func TestFenceGatesReconcileAndWrites(t *testing.T) {
	t.Parallel()
	f := &testFence{owned: map[string]bool{"acme": true}, fenced: map[string]bool{}}
	fe := newFakeEngineWith(t, func(c *Config) { c.Fence = f; c.Replica = "r1" })
	fe.apply(created("acme", "acme"), created("globex", "globex"))

	fe.pass("globex")
	if n := len(fe.cloud.calls); n != 0 {
		t.Fatalf("an org of another replica caused calls: %v", fe.cloud.calls)
	}
	fe.pass("acme")
	if fe.cloud.calls["tunnel.create"] != 1 || f.holds == 0 {
		t.Fatalf("owned org: calls %v, holds %d", fe.cloud.calls, f.holds)
	}
	if r := fe.org("acme").Observed.Replica; r != "r1" {
		t.Fatalf("observed.replica %q, want r1", r)
	}

	f.mu.Lock()
	f.owned["globex"], f.fenced["globex"] = true, true
	f.mu.Unlock()
	_, err := fe.e.Reconcile(context.Background(), "globex")
	if !errors.Is(err, ErrNotOwner) {
		t.Fatalf("write past the deadline: %v, want ErrNotOwner", err)
	}
	if fe.cloud.calls["tunnel.create"] != 1 {
		t.Fatalf("a fenced write reached the cloud: %v", fe.cloud.calls)
	}

	f.mu.Lock()
	f.fenced["globex"] = false
	f.mu.Unlock()
	for fe.e.Queue().Len() > 0 { // drain what the passes left
		k, _ := fe.e.Queue().Get()
		fe.e.Queue().Done(k)
	}
	fe.e.PartitionsGained()
	if fe.e.Queue().Len() != 2 {
		t.Fatalf("queue after gaining: %d, want acme (not Ready) and globex", fe.e.Queue().Len())
	}
	fe.pass("globex")
	if o := fe.org("globex"); o.Observed.TunnelID == "" || o.Observed.Replica != "r1" {
		t.Fatalf("globex after gaining: %+v", o.Observed)
	}
}

// partitionFence is a testFence that also says which partitions it holds.
type partitionFence struct {
	testFence
	partitions []int
}

func (f *partitionFence) Owned() []int { f.mu.Lock(); defer f.mu.Unlock(); return f.partitions }

// A replica that holds no partition (just started, or all moved away)
// neither sweeps nor watches: nothing there is its to act on, and the calls
// would wait at a one-partition share of the budget.
func TestOwningNothingListsNothing(t *testing.T) {
	t.Parallel()
	f := &partitionFence{testFence: testFence{owned: map[string]bool{}, fenced: map[string]bool{}}}
	fe := newFakeEngineWith(t, func(c *Config) { c.Fence = f })
	fe.apply(created("acme", "acme"))
	ctx := context.Background()
	if _, err := fe.e.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, l := range Listings {
		if _, err := fe.e.Watch(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if len(fe.cloud.calls) != 0 {
		t.Fatalf("owning nothing, the sweep and watches called %v", fe.cloud.calls)
	}
	f.mu.Lock()
	f.partitions, f.owned["acme"] = []int{3}, true
	f.mu.Unlock()
	if _, err := fe.e.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if fe.cloud.calls["tunnels.list"] == 0 {
		t.Fatalf("owning a partition, the sweep listed nothing: %v", fe.cloud.calls)
	}
}
