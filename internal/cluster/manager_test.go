package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
)

func TestPartitionIsNATSPartitionMapping(t *testing.T) {
	t.Parallel()
	tr, err := server.NewSubjectTransform("orgs.*.created", "p.{{partition(64,1)}}")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		org := "org-" + strconv.Itoa(i*7919)
		got, err := tr.Match("orgs." + org + ".created")
		if err != nil {
			t.Fatal(err)
		}
		if want := "p." + strconv.Itoa(Partition(org, 64)); got != want {
			t.Fatalf("org %s: nats-server maps to %s, Partition says %s", org, got, want)
		}
	}
}

func TestShareSumsToAll(t *testing.T) {
	t.Parallel()
	for n := 1; n <= 7; n++ {
		var ids []string
		for i := range n {
			ids = append(ids, fmt.Sprint("r", i))
		}
		sum := 0
		for _, id := range ids {
			s := Share(ids, id, 64)
			if s < 64/n || s > 64/n+1 {
				t.Fatalf("%d replicas: share %d", n, s)
			}
			sum += s
		}
		if sum != 64 {
			t.Fatalf("%d replicas: shares sum to %d", n, sum)
		}
	}
}

// fakeClock moves only when told; AfterFunc fires on Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

func startKV(t *testing.T, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	kvs, _ := startKVs(t, ttl, 1)
	return kvs[0]
}

// startKVs starts one embedded server and returns n handles on its lease
// bucket, each over its own connection (a replica each).
func startKVs(t *testing.T, ttl time.Duration, n int) ([]jetstream.KeyValue, []*nats.Conn) {
	t.Helper()
	e, err := broker.StartEmbedded("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	var kvs []jetstream.KeyValue
	var ncs []*nats.Conn
	for range n {
		nc, err := broker.Connect(e.ClientURL(), "", "test", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		kv, err := broker.EnsureLeaseBucket(ctx, js, 1, ttl)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		kvs, ncs = append(kvs, kv), append(ncs, nc)
	}
	return kvs, ncs
}

func newManager(t *testing.T, kv jetstream.KeyValue, id string, clk Clock, ttl time.Duration, gained func([]int)) *Manager {
	t.Helper()
	m, err := New(Config{KV: kv, Replica: id, Partitions: 8, TTL: ttl, Clock: clk, OnGained: gained})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func round(t *testing.T, ms ...*Manager) {
	t.Helper()
	for _, m := range ms {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m.Round(ctx)
		cancel()
	}
}

func total(ms ...*Manager) (n int) {
	for _, m := range ms {
		n += len(m.Owned())
	}
	return n
}

// One replica takes every partition; a second one joining gets its share
// as the first gives extras back, one a round; no partition is ever held
// by both.
func TestBalanceAndHandOver(t *testing.T) {
	t.Parallel()
	kv := startKV(t, time.Minute)
	clk := &fakeClock{now: time.Unix(1000, 0)}
	var gotA []int
	a := newManager(t, kv, "a", clk, time.Minute, func(p []int) { gotA = append(gotA, p...) })
	round(t, a)
	if n := len(a.Owned()); n != 8 || len(gotA) != 8 {
		t.Fatalf("a alone owns %d partitions (gained %v), want all 8", n, gotA)
	}
	b := newManager(t, kv, "b", clk, time.Minute, nil)
	for i := 0; i < 20 && len(b.Owned()) < 4; i++ {
		round(t, b, a)
		for p := range 8 {
			if a.OwnsPartition(p) && b.OwnsPartition(p) {
				t.Fatalf("partition %d held by both", p)
			}
		}
	}
	if len(a.Owned()) != 4 || len(b.Owned()) != 4 {
		t.Fatalf("after balancing a owns %v, b owns %v; want 4 each", a.Owned(), b.Owned())
	}
	round(t, b) // the view is the last round's reading
	v := b.View()
	if len(v.Replicas) != 2 || len(v.Replicas[0].Partitions)+len(v.Replicas[1].Partitions) != 8 || len(v.Free) != 0 {
		t.Fatalf("view: %+v", v)
	}
	// b stops gracefully: a takes everything back at its next round.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.ReleaseAll(ctx)
	round(t, a)
	if len(a.Owned()) != 8 {
		t.Fatalf("a owns %v after b gave back, want all", a.Owned())
	}
}

// The fence: Hold fails once the renew deadline passed without a renewal,
// and a write in flight is cancelled at that moment; a renewal opens it
// again.
func TestHoldFencesAtRenewDeadline(t *testing.T) {
	t.Parallel()
	const ttl = time.Minute
	kv := startKV(t, ttl)
	clk := &fakeClock{now: time.Unix(1000, 0)}
	a := newManager(t, kv, "a", clk, ttl, nil)
	round(t, a)
	org := "acme"
	wctx, done, err := a.Hold(context.Background(), org)
	if err != nil {
		t.Fatalf("hold: %v", err)
	}
	clk.Advance(ttl/2 - time.Millisecond) // the default fence
	if wctx.Err() != nil {
		t.Fatal("write cancelled before the deadline")
	}
	clk.Advance(time.Millisecond)
	select { // context.AfterFunc cancels from its own goroutine
	case <-wctx.Done():
	case <-time.After(5 * time.Second):
	}
	if !errors.Is(context.Cause(wctx), ErrFenced) {
		t.Fatalf("write in flight at the deadline not cancelled: %v", context.Cause(wctx))
	}
	done()
	if _, _, err := a.Hold(context.Background(), org); !errors.Is(err, ErrFenced) {
		t.Fatalf("hold after the deadline: %v", err)
	}
	round(t, a) // renews (the server's TTL, on its own clock, has not passed)
	_, done, err = a.Hold(context.Background(), org)
	if err != nil {
		t.Fatalf("hold after renewal: %v", err)
	}
	done()
	// Another replica's partition: not held, fenced.
	b := newManager(t, kv, "b", clk, ttl, nil)
	round(t, b)
	if len(b.Owned()) != 0 {
		t.Fatalf("b took %v while a holds all", b.Owned())
	}
	if _, _, err := b.Hold(context.Background(), org); !errors.Is(err, ErrFenced) {
		t.Fatalf("b may write for a's org: %v", err)
	}
}

// A dead replica's leases expire with the bucket's TTL (the real server's
// clock) and another replica takes them.
func TestExpiredLeasesAreTakenOver(t *testing.T) {
	t.Parallel()
	const ttl = 1500 * time.Millisecond
	kv := startKV(t, ttl)
	a := newManager(t, kv, "a", realClock{}, ttl, nil)
	round(t, a)
	b := newManager(t, kv, "b", realClock{}, ttl, nil)
	round(t, b)
	if len(b.Owned()) != 0 {
		t.Fatalf("b took %v from a live a", b.Owned())
	}
	// a dies: no more rounds. b takes all within a few TTLs.
	deadline := time.Now().Add(10 * ttl)
	for len(b.Owned()) < 8 && time.Now().Before(deadline) {
		time.Sleep(ttl / 4) // the round interval
		round(t, b)
	}
	if len(b.Owned()) != 8 {
		t.Fatalf("b owns %v after a's leases expired", b.Owned())
	}
	// a comes back from a pause: its renewals fail, it stops.
	round(t, a)
	if len(a.Owned()) != 0 {
		t.Fatalf("a still thinks it owns %v", a.Owned())
	}
}

// A restarted process with the same Holder (host and locked data dir)
// takes its dead predecessor's leases at once instead of waiting for them
// to expire; one with another Holder waits.
func TestAdoptOwnLeases(t *testing.T) {
	t.Parallel()
	kv := startKV(t, time.Minute)
	clk := &fakeClock{now: time.Unix(1000, 0)}
	old, err := New(Config{KV: kv, Replica: "a", Partitions: 8, TTL: time.Minute, Clock: clk, Holder: "host1:/data"})
	if err != nil {
		t.Fatal(err)
	}
	round(t, old)
	elsewhere, err := New(Config{KV: kv, Replica: "a", Partitions: 8, TTL: time.Minute, Clock: clk, Holder: "host2:/data"})
	if err != nil {
		t.Fatal(err)
	}
	round(t, elsewhere)
	if n := len(elsewhere.Owned()); n != 0 {
		t.Fatalf("a process with another holder took %d of the live leases", n)
	}
	m, err := New(Config{KV: kv, Replica: "a", Partitions: 8, TTL: time.Minute, Clock: clk, Holder: "host1:/data"})
	if err != nil {
		t.Fatal(err)
	}
	round(t, m)
	if len(m.Owned()) != 8 {
		t.Fatalf("restarted replica owns %v, want its predecessor's 8", m.Owned())
	}
	// Were the predecessor alive after all (it cannot be: the lock), its
	// renewals would fail and its writes stop.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	old.renewAll(ctx)
	if len(old.Owned()) != 0 {
		t.Fatalf("the predecessor still renews %v", old.Owned())
	}
}

// A dead replica's leases are taken over once they have gone unrenewed
// for its fence plus margin and it does not answer its liveness probe,
// long before the bucket's TTL expires them; a live replica that merely
// has not renewed (a NATS election) keeps them.
func TestGoneHolderTakenOverBeforeExpiry(t *testing.T) {
	t.Parallel()
	const ttl = time.Minute // expiry plays no part: the server's clock is real
	kvs, ncs := startKVs(t, ttl, 2)
	clk := &fakeClock{now: time.Unix(1000, 0)}
	mk := func(i int, id string) *Manager {
		m, err := New(Config{KV: kvs[i], Conn: ncs[i], Replica: id, Partitions: 8, TTL: ttl, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := mk(0, "a"), mk(1, "b")
	sub, err := a.serve()
	if err != nil {
		t.Fatal(err)
	}
	round(t, a)
	round(t, b) // b observes a's leases now
	if len(a.Owned()) != 8 || len(b.Owned()) != 0 {
		t.Fatalf("a owns %v, b %v; want 8 and 0", a.Owned(), b.Owned())
	}
	takeover := a.cfg.Fence + a.cfg.Margin
	clk.Advance(takeover - time.Millisecond)
	round(t, b)
	if len(b.Owned()) != 0 || b.takeoverDue() {
		t.Fatalf("b took %v (or wants to) before a's leases were unrenewed past fence + margin", b.Owned())
	}
	// Unrenewed long enough, but a answers: it keeps them.
	clk.Advance(time.Millisecond)
	if !b.takeoverDue() {
		t.Fatal("b does not see a's leases as due for a probe")
	}
	round(t, b)
	if len(b.Owned()) != 0 || b.takeoverDue() {
		t.Fatalf("b took %v from a replica that answers", b.Owned())
	}
	// a renews (and gives one partition back to b, above its share): the
	// clock of the takeover starts again.
	round(t, a)
	round(t, b)
	aHeld := a.Owned()
	clk.Advance(takeover - time.Millisecond)
	_ = sub.Unsubscribe() // a is gone: no one answers for it
	ncs[0].Close()
	// The server drops a's interest on its own time: wait until it says
	// so, as b's probe will ask it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, err := ncs[1].Request(aliveSubject(a.incarnation), nil, time.Second)
		if errors.Is(err, nats.ErrNoResponders) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's liveness subject still answered after its connection closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	round(t, b)
	for _, p := range aHeld {
		if b.OwnsPartition(p) {
			t.Fatalf("b took a's partition %d before a's last renewal was fence + margin old", p)
		}
	}
	clk.Advance(a.cfg.Renew) // past the alive answer's round, past fence + margin
	round(t, b)
	if len(b.Owned()) != 8 {
		t.Fatalf("b owns %v after a was gone past its fence + margin, want all 8", b.Owned())
	}
	v := b.View()
	for _, r := range v.Replicas {
		if r.ID == "a" && len(r.Partitions) != 0 {
			t.Fatalf("the view still gives a %v", r.Partitions)
		}
	}
}

// A lease that does not state its holder's fence (an older build, or a
// holder without liveness answers) is never taken over early: it waits
// for the TTL, however long its holder has been silent.
func TestLeaseWithoutFenceWaitsForExpiry(t *testing.T) {
	t.Parallel()
	const ttl = time.Minute
	kvs, ncs := startKVs(t, ttl, 2)
	clk := &fakeClock{now: time.Unix(1000, 0)}
	old, err := New(Config{KV: kvs[0], Replica: "old", Partitions: 8, TTL: ttl, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{KV: kvs[1], Conn: ncs[1], Replica: "b", Partitions: 8, TTL: ttl, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	round(t, old)
	round(t, b)
	ncs[0].Close()
	clk.Advance(ttl - time.Millisecond) // the server's TTL is real time: not passed
	round(t, b)
	if n := len(b.Owned()); n != 0 || b.takeoverDue() {
		t.Fatalf("b took %d leases that do not state their holder's fence", n)
	}
}
