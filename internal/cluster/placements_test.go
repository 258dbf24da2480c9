package cluster

import (
	"context"
	"fmt"
	stdmaps "maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
)

// placementsOn returns n handles on one embedded server's placement
// bucket, each over its own connection (a replica each).
func placementsOn(t *testing.T, n int) []*Placements {
	t.Helper()
	_, ncs := startKVs(t, time.Minute, n)
	var out []*Placements
	for _, nc := range ncs {
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		kv, err := broker.EnsurePlacementBucket(ctx, js, 1)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, NewPlacements(kv, nc))
	}
	return out
}

// The records are a compare-and-swap on the key's revision: a write on a
// stale revision (or a create of an existing key) fails without changing
// anything, and many replicas adding orgs at once with read-retry loops
// lose none.
func TestPlacementsCompareAndSwap(t *testing.T) {
	t.Parallel()
	ps := placementsOn(t, 2)
	a, b := ps[0], ps[1]
	ctx := context.Background()

	got, rev, err := a.Read(ctx, "account.a1")
	if err != nil || got != nil || rev != 0 {
		t.Fatalf("empty bucket: %v, %d, %v", got, rev, err)
	}
	rev1, ok, err := a.Write(ctx, "account.a1", map[string]string{"acme": "p1"}, 0)
	if err != nil || !ok {
		t.Fatalf("first create: ok=%v err=%v", ok, err)
	}
	if _, ok, err := b.Write(ctx, "account.a1", map[string]string{"globex": "p1"}, 0); err != nil || ok {
		t.Fatalf("second create of the key: ok=%v err=%v, want refused", ok, err)
	}
	rev2, ok, err := b.Write(ctx, "account.a1", map[string]string{"acme": "p1", "globex": "p1"}, rev1)
	if err != nil || !ok {
		t.Fatalf("update on the current revision: ok=%v err=%v", ok, err)
	}
	if _, ok, err := a.Write(ctx, "account.a1", map[string]string{"acme": "p1", "initech": "p1"}, rev1); err != nil || ok {
		t.Fatalf("update on a stale revision: ok=%v err=%v, want refused", ok, err)
	}
	got, rev, err = a.Read(ctx, "account.a1")
	if want := map[string]string{"acme": "p1", "globex": "p1"}; err != nil || rev != rev2 || !stdmaps.Equal(got, want) {
		t.Fatalf("read: %v rev %d err %v; want %v rev %d", got, rev, err, want, rev2)
	}

	// A key the bucket cannot hold as is (a pool name is [a-z0-9-], but an
	// account id comes from the operator's file) still round-trips.
	if _, ok, err := a.Write(ctx, "pool.odd name+", map[string]string{"x": "odd"}, 0); err != nil || !ok {
		t.Fatalf("odd key: ok=%v err=%v", ok, err)
	}
	if got, _, err := b.Read(ctx, "pool.odd name+"); err != nil || got["x"] != "odd" {
		t.Fatalf("odd key read: %v %v", got, err)
	}

	// Eight writers add 25 orgs each to one key at once.
	var wg sync.WaitGroup
	for w := range 8 {
		p := ps[w%2]
		wg.Go(func() {
			for i := range 25 {
				org := fmt.Sprintf("w%d-%d", w, i)
				for {
					cur, rev, err := p.Read(ctx, "account.busy")
					if err != nil {
						t.Error(err)
						return
					}
					next := stdmaps.Clone(cur)
					if next == nil {
						next = map[string]string{}
					}
					next[org] = "p"
					if _, ok, err := p.Write(ctx, "account.busy", next, rev); err != nil {
						t.Error(err)
						return
					} else if ok {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	got, _, err = a.Read(ctx, "account.busy")
	if err != nil || len(got) != 200 {
		t.Fatalf("after 8 writers x 25 orgs: %d recorded (err %v), want 200", len(got), err)
	}
}

// A record too large for the server's payload limit is refused with an
// error that says what to change, before anything is sent.
func TestPlacementsRecordTooLarge(t *testing.T) {
	t.Parallel()
	p := placementsOn(t, 1)[0]
	big := map[string]string{}
	for i := range 30000 {
		big[fmt.Sprintf("org-with-a-longish-id-%06d", i)] = "pool-one"
	}
	_, ok, err := p.Write(context.Background(), "account.a1", big, 0)
	if err == nil || ok || !strings.Contains(err.Error(), "max_payload") || !strings.Contains(err.Error(), "30000 orgs") {
		t.Fatalf("oversized record: ok=%v err=%v", ok, err)
	}
}
