package reconcile

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/state"
)

// The orgs-by-condition gauge moves with each status write: no sweep or
// watch runs in this test, yet the gauge says Ready 1 the moment the pass
// marks the org Ready, 0 the moment a listing finds its record gone, and
// counts the tombstone once the cascade is done.
func TestConditionGaugeFollowsEachChange(t *testing.T) {
	m := &condRecorder{}
	fe := newFakeEngineWith(t, func(c *Config) { c.Metrics = m })
	if err := fe.e.CountConditions(); err != nil {
		t.Fatal(err)
	}
	gauge := func(want map[string]int) {
		t.Helper()
		got := m.last()
		for c, n := range want {
			if got[c] != n {
				t.Fatalf("gauge %v, want %s=%d", got, c, n)
			}
		}
		if !maps.Equal(fe.e.ConditionCounts(), got) {
			t.Fatalf("engine counts %v, gauge %v", fe.e.ConditionCounts(), got)
		}
	}
	gauge(map[string]int{state.CondReady: 0})

	fe.apply(created("acme", "acme"), created("beta", "beta"))
	fe.pass("acme")
	fe.pass("beta")
	gauge(map[string]int{state.CondReady: 0, state.CondProvisioning: 2})
	fe.now = fe.now.Add(90 * time.Second)
	fe.cloud.setStatus("acme", "healthy")
	fe.cloud.setStatus("beta", "healthy")
	fe.pass("acme")
	gauge(map[string]int{state.CondReady: 1, state.CondProvisioning: 1})
	fe.pass("beta")
	gauge(map[string]int{state.CondReady: 2, state.CondProvisioning: 0})

	// Out of band: acme's record deleted; the DNS watch flips it at once.
	fe.now = fe.now.Add(time.Minute)
	fe.cloud.mu.Lock()
	for id, r := range fe.cloud.records {
		if r.Name == "acme.example.test" {
			delete(fe.cloud.records, id)
		}
	}
	fe.cloud.mu.Unlock()
	if _, err := fe.e.Watch(context.Background(), ListDNS); err != nil {
		t.Fatal(err)
	}
	if c, _ := Condition(fe.org("acme"), state.CondReady); c.Status || c.Reason != "DNSRecordMissing" {
		t.Fatalf("acme Ready %+v, want false DNSRecordMissing", c)
	}
	gauge(map[string]int{state.CondReady: 1})

	fe.apply(deleted("beta"))
	fe.pass("beta")
	gauge(map[string]int{state.CondReady: 0, state.CondDeleted: 1})

	// A second engine on the same file starts from a full count.
	m2 := &condRecorder{}
	fe.e.cfg.Metrics = m2
	if err := fe.restart().CountConditions(); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(nonZero(m2.last()), nonZero(m.last())) {
		t.Fatalf("recount %v, running count %v", m2.last(), m.last())
	}
}

// Observed-at follows the watches: each listing that sees a Ready org as
// recorded is a look at it, so Seen shows the oldest of the four listings'
// times, while the bbolt record is not rewritten per watch. A drifted org
// shows the time of the listing that found it.
func TestSeenFollowsTheWatches(t *testing.T) {
	fe := newFakeEngine(t)
	fe.apply(created("acme", "acme"))
	fe.pass("acme")
	fe.now = fe.now.Add(90 * time.Second)
	fe.cloud.setStatus("acme", "healthy")
	fe.pass("acme")
	readyAt := fe.now
	if got := fe.e.Seen(fe.org("acme")).Observed.ObservedAt; !got.Equal(readyAt) {
		t.Fatalf("observed-at %v, want the pass's %v", got, readyAt)
	}
	ctx := context.Background()
	var times []time.Time
	for _, l := range Listings {
		fe.now = fe.now.Add(10 * time.Second)
		times = append(times, fe.now)
		if _, err := fe.e.Watch(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	o := fe.org("acme")
	if !o.Observed.ObservedAt.Equal(readyAt) {
		t.Fatalf("bbolt observed-at %v moved from %v: a watch wrote a clean org", o.Observed.ObservedAt, readyAt)
	}
	if got := fe.e.Seen(o).Observed.ObservedAt; !got.Equal(times[0]) {
		t.Fatalf("seen %v, want the oldest listing's %v", got, times[0])
	}
	// The tunnel listing again: the oldest is now the second listing's.
	fe.now = fe.now.Add(10 * time.Second)
	if _, err := fe.e.Watch(ctx, ListTunnels); err != nil {
		t.Fatal(err)
	}
	if got := fe.e.Seen(fe.org("acme")).Observed.ObservedAt; !got.Equal(times[1]) {
		t.Fatalf("seen %v, want %v", got, times[1])
	}
	// The instance terminated out of band: the instance watch finds it,
	// and the org shows that look, not the older confirmation.
	fe.now = fe.now.Add(10 * time.Second)
	fe.cloud.mu.Lock()
	for _, in := range fe.cloud.insts {
		in.State = "terminated"
	}
	fe.cloud.mu.Unlock()
	if _, err := fe.e.Watch(ctx, ListInstances); err != nil {
		t.Fatal(err)
	}
	o = fe.e.Seen(fe.org("acme"))
	if c, _ := Condition(o, state.CondReady); c.Status || c.Reason != "InstanceGone" || !o.Observed.ObservedAt.Equal(fe.now) {
		t.Fatalf("Ready %+v observed-at %v, want false InstanceGone at %v", c, o.Observed.ObservedAt, fe.now)
	}
}

func nonZero(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
