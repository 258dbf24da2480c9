package reconcile

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/state"
)

// memLedger is the shared placement records in memory, with the
// compare-and-swap the KV bucket gives (internal/cluster tests the bucket
// itself). before, when set, runs inside a Write before its check: another
// replica's write landing between this one's read and write.
type memLedger struct {
	mu     sync.Mutex
	recs   map[string]map[string]string
	revs   map[string]uint64
	next   uint64
	before func(l *memLedger, key string)
	writes int
}

func newMemLedger() *memLedger {
	return &memLedger{recs: map[string]map[string]string{}, revs: map[string]uint64{}}
}

func (l *memLedger) Read(_ context.Context, key string) (map[string]string, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.recs[key]), l.revs[key], nil
}

func (l *memLedger) Write(_ context.Context, key string, placed map[string]string, rev uint64) (uint64, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.before; f != nil {
		l.before = nil
		f(l, key)
	}
	l.writes++
	if l.revs[key] != rev {
		return 0, false, nil
	}
	l.next++
	l.recs[key], l.revs[key] = maps.Clone(placed), l.next
	return l.next, true, nil
}

// put writes key's record as another replica would. Caller holds mu.
func (l *memLedger) put(key string, placed map[string]string) {
	l.next++
	l.recs[key], l.revs[key] = placed, l.next
}

func (l *memLedger) get(key string) map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.recs[key])
}

// twoPools serves pool p1 (account a1, one tunnel) and p2 (account a2,
// five) on two fake Cloudflare accounts; instances on the engine's own.
// t1, when set, is p1's tunnel surface instead of a1.
type twoPools struct {
	a1, a2 *fakeCloud
	t1     TunnelAPI
}

func newTwoPools() *twoPools {
	p := &twoPools{a1: newFakeCloud(), a2: newFakeCloud()}
	p.a2.seq = 5000 // ids distinct from a1's
	return p
}

func (p *twoPools) engine(t *testing.T, f Fence, l PlacementLedger) *fakeEngine {
	t.Helper()
	fe := newFakeEngineWith(t, func(c *Config) { c.Fence, c.Placements = f, l })
	c := fe.e.clouds
	c.DefaultPool, c.PoolOrder = "p1", []string{"p1", "p2"}
	var t1 TunnelAPI = p.a1
	if p.t1 != nil {
		t1 = p.t1
	}
	c.Pools = map[string]PoolClouds{
		"p1": {Tunnels: t1, DNS: p.a1, ZoneName: "one.test", Limits: PoolLimits{Account: "a1", MaxTunnels: 1}},
		"p2": {Tunnels: p.a2, DNS: p.a2, ZoneName: "two.test", Limits: PoolLimits{Account: "a2", MaxTunnels: 5}},
	}
	e, err := New(fe.e.cfg, c, fe.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	fe.e = e
	return fe
}

// tunnelsOf lists the live tunnels' org ids in one fake account.
func tunnelsOf(f *fakeCloud) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, tn := range f.tunnels {
		if org, ok := owner.OrgFromTunnelName(tn.Name); ok && !tn.Deleted {
			out = append(out, org)
		}
	}
	slices.Sort(out)
	return out
}

func owning(orgs ...string) *testFence {
	f := &testFence{owned: map[string]bool{}, fenced: map[string]bool{}}
	for _, o := range orgs {
		f.owned[o] = true
	}
	return f
}

// Two replicas, each with its own state file and its own orgs, place into
// pools whose limits they share: the second sees the first's placement in
// the shared records and goes to the next pool; with both full an org
// waits, and a delete on the other replica frees the place it then takes.
func TestReplicasShareThePoolCounts(t *testing.T) {
	t.Parallel()
	pools, ledger := newTwoPools(), newMemLedger()
	r1 := pools.engine(t, owning("acme"), ledger)
	r2 := pools.engine(t, owning("globex", "initech"), ledger)
	both := func(facts ...state.Fact) { r1.apply(facts...); r2.apply(facts...) }
	both(created("acme", "acme"), created("globex", "globex"))

	r1.pass("acme")
	r2.pass("globex")
	if got := tunnelsOf(pools.a1); !slices.Equal(got, []string{"acme"}) {
		t.Fatalf("account a1 (one tunnel) holds %v; want only acme: the second replica overfilled it", got)
	}
	if got := tunnelsOf(pools.a2); !slices.Equal(got, []string{"globex"}) {
		t.Fatalf("account a2 holds %v, want globex", got)
	}
	if p := r2.org("globex").Observed.Pool; p != "p2" {
		t.Fatalf("globex placed in %q, want p2", p)
	}
	want := map[string]string{"acme": "p1"}
	if got := ledger.get("account.a1"); !maps.Equal(got, want) {
		t.Fatalf("record account.a1 = %v, want %v", got, want)
	}
	// Both replicas count the other's orgs.
	for _, fe := range []*fakeEngine{r1, r2} {
		if err := fe.e.ledgerTick(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		if u := fe.e.Pools(); u[0].Tunnels != 1 || u[1].Tunnels != 1 {
			t.Fatalf("pool usage on one replica %+v, want 1 and 1", u)
		}
	}

	// p2 filled by the other replica's records: initech finds no room.
	ledger.mu.Lock()
	rec := maps.Clone(ledger.recs["account.a2"])
	for _, o := range []string{"x1", "x2", "x3", "x4"} {
		rec[o] = "p2"
	}
	ledger.put("account.a2", rec)
	ledger.mu.Unlock()
	both(created("initech", "initech"))
	if _, err := r2.e.Reconcile(context.Background(), "initech"); err == nil {
		t.Fatal("initech placed with every pool full")
	}
	if r := failedReason(r2.org("initech")); r != ReasonPoolFull {
		t.Fatalf("initech with every pool full: Failed reason %q, want PoolFull", r)
	}
	if len(tunnelsOf(pools.a1))+len(tunnelsOf(pools.a2)) != 2 {
		t.Fatalf("a tunnel was made for an org with no room: a1 %v, a2 %v", tunnelsOf(pools.a1), tunnelsOf(pools.a2))
	}

	// acme is deleted on its replica: its place is released in the shared
	// record, and the other replica's next refresh queues initech, which
	// then takes it.
	both(deleted("acme"))
	r1.deleteToEnd("acme")
	if got := ledger.get("account.a1"); len(got) != 0 {
		t.Fatalf("record account.a1 after acme's delete = %v, want empty", got)
	}
	if err := r2.e.ledgerTick(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if r2.e.Queue().Len() == 0 {
		t.Fatal("room appeared but the waiting org was not queued")
	}
	r2.pass("initech")
	if p := r2.org("initech").Observed.Pool; p != "p1" {
		t.Fatalf("initech placed in %q, want p1 (the freed place)", p)
	}
}

// Another replica takes a pool's last place between this one's read and
// its write: the write fails on the revision, the records are read again,
// and the org goes to the next pool. A second placement of the same org
// (a restart) finds it in the records and stays there.
func TestPlacementLosesTheRaceAndChoosesAgain(t *testing.T) {
	t.Parallel()
	pools, ledger := newTwoPools(), newMemLedger()
	ledger.before = func(l *memLedger, key string) {
		if key == "account.a1" {
			l.put(key, map[string]string{"other": "p1"})
		}
	}
	fe := pools.engine(t, owning("acme"), ledger)
	fe.apply(created("acme", "acme"))
	fe.pass("acme")
	if p := fe.org("acme").Observed.Pool; p != "p2" {
		t.Fatalf("acme placed in %q, want p2 (p1's one place went to another replica first)", p)
	}
	if got := tunnelsOf(pools.a1); len(got) != 0 {
		t.Fatalf("account a1 holds %v: the lost write still created there", got)
	}
	if ledger.writes != 2 {
		t.Fatalf("%d ledger writes, want 2 (the one that lost, the one in p2)", ledger.writes)
	}

	// A restart on a state file that lost the placement (crash before the
	// commit): the records still say p2.
	if err := fe.store.Update("acme", func(o *state.Org) error { o.Observed.Pool = ""; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := fe.restart().ledgerPlace(context.Background(), fe.org("acme"))
	if err != nil || got != "p2" {
		t.Fatalf("placing acme again: %q, %v; want p2 from the records", got, err)
	}
}

// A replica's first round records the placements of its state file that
// the records lack (a placement from before them), and later drops the
// entries of its own orgs deleted to the end (a release that was lost);
// other replicas' orgs, and orgs its state file does not know, are left.
func TestPlacementRecordsBackfilledAndCollected(t *testing.T) {
	t.Parallel()
	pools, ledger := newTwoPools(), newMemLedger()
	fe := pools.engine(t, owning("acme", "ghost", "unknown"), nil) // before the records
	fe.apply(created("acme", "acme"), created("ghost", "ghost"))
	fe.pass("acme")
	fe.pass("ghost")
	if p := fe.org("acme").Observed.Pool; p != "p1" {
		t.Fatalf("acme in %q, want p1", p)
	}
	fe.apply(deleted("ghost"))
	fe.deleteToEnd("ghost")
	ledger.mu.Lock()
	ledger.put("account.a2", map[string]string{"ghost": "p2", "theirs": "p2", "unknown": "p2"})
	ledger.mu.Unlock()

	fe.e.cfg.Placements = ledger
	e := fe.restart()
	if _, err := e.EnqueueAll(false); err != nil {
		t.Fatal(err)
	}
	if err := e.ledgerTick(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if got := ledger.get("account.a1"); !maps.Equal(got, map[string]string{"acme": "p1"}) {
		t.Fatalf("record account.a1 = %v, want acme recorded from the state file", got)
	}
	if got := ledger.get("account.a2"); !maps.Equal(got, map[string]string{"theirs": "p2", "unknown": "p2"}) {
		t.Fatalf("record account.a2 = %v, want ghost (this replica's, deleted) gone and the rest kept", got)
	}
}

// A state file whose placement is an older generation's (the org was
// deleted and re-created while another replica owned it) follows the
// shared records: the org is built in the pool they name.
func TestStalePlacementFollowsTheRecords(t *testing.T) {
	t.Parallel()
	pools, ledger := newTwoPools(), newMemLedger()
	ledger.mu.Lock()
	ledger.put("account.a2", map[string]string{"acme": "p2"})
	ledger.mu.Unlock()
	fe := pools.engine(t, owning("acme"), ledger)
	fe.apply(created("acme", "acme"))
	if err := fe.store.Update("acme", func(o *state.Org) error { o.Observed.Pool = "p1"; return nil }); err != nil {
		t.Fatal(err)
	}
	fe.pass("acme")
	if p := fe.org("acme").Observed.Pool; p != "p2" {
		t.Fatalf("acme's pool %q, want p2 from the records", p)
	}
	if a1, a2 := tunnelsOf(pools.a1), tunnelsOf(pools.a2); len(a1) != 0 || !slices.Equal(a2, []string{"acme"}) {
		t.Fatalf("tunnels a1 %v, a2 %v; want acme's in a2 only", a1, a2)
	}
	if got := ledger.get("account.a1"); len(got) != 0 {
		t.Fatalf("record account.a1 = %v: the stale pool was recorded too", got)
	}
}

// deleteToEnd runs passes of a deleted org, a minute apart, until its
// cascade is done.
func (fe *fakeEngine) deleteToEnd(org string) {
	fe.t.Helper()
	for range 10 {
		if fe.org(org).Observed.DeleteDone {
			return
		}
		fe.pass(org)
		fe.now = fe.now.Add(time.Minute)
	}
	fe.t.Fatalf("%s not deleted: %+v", org, fe.org(org).Conditions)
}

// recreating re-creates an org from inside its delete's cascade (the
// tunnel's delete, in pool p1): an org.created applied meanwhile.
type recreating struct {
	fe    *fakeEngine // set once the engine is built
	org   string
	armed bool
}

func recreateOnDelete(pools *twoPools, org string) *recreating {
	rc := &recreating{org: org}
	pools.t1 = onTunnelDelete{pools.a1, func() {
		if rc.armed {
			rc.armed = false
			rc.fe.apply(created(rc.org, rc.org))
		}
	}}
	return rc
}

// deleteUntilRecreated runs passes of the deleted org until its tunnel's
// delete has re-created it.
func (rc *recreating) deleteUntilRecreated() {
	rc.fe.t.Helper()
	rc.armed = true
	for range 10 {
		rc.fe.pass(rc.org)
		rc.fe.now = rc.fe.now.Add(time.Minute)
		if !rc.armed {
			return
		}
	}
	rc.fe.t.Fatalf("%s's tunnel was never deleted", rc.org)
}

// onTunnelDelete runs hook as a tunnel is deleted: an event applied while
// a delete's cascade is in hand.
type onTunnelDelete struct {
	*fakeCloud
	hook func()
}

func (o onTunnelDelete) DeleteTunnel(ctx context.Context, id string) error {
	if o.hook != nil {
		o.hook()
	}
	return o.fakeCloud.DeleteTunnel(ctx, id)
}

// An org re-created while its delete's cascade runs keeps its place: the
// cascade ends without recording the delete, so the place is not given
// back (nor the waiting orgs woken to take it) under the org about to be
// built in it again.
func TestRecreatedDuringDeleteKeepsItsPlace(t *testing.T) {
	t.Parallel()
	pools, ledger := newTwoPools(), newMemLedger()
	rc := recreateOnDelete(pools, "acme")
	fe := pools.engine(t, owning("acme", "waiter"), ledger)
	rc.fe = fe
	fe.apply(created("acme", "acme"), createdInPool("waiter", "waiter", "p1"))
	fe.pass("acme")
	if _, err := fe.e.Reconcile(context.Background(), "waiter"); err == nil || failedReason(fe.org("waiter")) != ReasonPoolFull {
		t.Fatalf("waiter asked for the full p1: %v, reason %q; want PoolFull", err, failedReason(fe.org("waiter")))
	}

	fe.apply(deleted("acme"))
	rc.deleteUntilRecreated()
	if got := ledger.get("account.a1"); !maps.Equal(got, map[string]string{"acme": "p1"}) {
		t.Fatalf("record account.a1 = %v after acme's re-create mid-delete; want acme kept in p1", got)
	}
	if fe.e.Queue().Len() != 0 {
		t.Fatalf("%d orgs queued: the waiting org was woken for a place that was not given back", fe.e.Queue().Len())
	}
	if _, err := fe.e.Reconcile(context.Background(), "waiter"); err == nil {
		t.Fatal("waiter placed in acme's place")
	}
	for range 10 {
		fe.pass("acme")
		fe.now = fe.now.Add(time.Minute)
	}
	if got := tunnelsOf(pools.a1); !slices.Equal(got, []string{"acme"}) {
		t.Fatalf("account a1 (one tunnel) holds %v; want acme rebuilt there alone", got)
	}
	if p := fe.org("waiter").Observed.Pool; p != "" {
		t.Fatalf("waiter placed in %q with p1 full", p)
	}
}

// The shared records place an org in a pool of its account this replica
// does not serve (another replica's configuration has it): the org's
// place is written down and it fails naming the pool, and that pool's
// orgs count against the account's tunnels for the pools served here.
func TestRecordsNameAPoolNotServedHere(t *testing.T) {
	t.Parallel()
	pools, ledger := newTwoPools(), newMemLedger()
	ledger.mu.Lock()
	ledger.put("account.a1", map[string]string{"acme": "p3", "other": "p3"})
	ledger.mu.Unlock()
	fe := pools.engine(t, owning("acme", "globex"), ledger)
	fe.apply(created("acme", "acme"), created("globex", "globex"))

	if _, err := fe.e.Reconcile(context.Background(), "acme"); err == nil {
		t.Fatal("acme built with its recorded pool p3 not served here")
	}
	if r := failedReason(fe.org("acme")); r != ReasonPoolNotServed {
		t.Fatalf("acme: Failed reason %q, want PoolNotServed", r)
	}
	if p := fe.org("acme").Observed.Pool; p != "p3" {
		t.Fatalf("acme's pool %q, want p3 written down from the records", p)
	}

	// a1 allows one tunnel and holds two in p3: globex goes to p2.
	fe.pass("globex")
	if p := fe.org("globex").Observed.Pool; p != "p2" {
		t.Fatalf("globex placed in %q, want p2 (account a1's tunnels are taken by p3's orgs)", p)
	}
	if a1, a2 := tunnelsOf(pools.a1), tunnelsOf(pools.a2); len(a1) != 0 || !slices.Equal(a2, []string{"globex"}) {
		t.Fatalf("tunnels a1 %v, a2 %v; want globex's in a2 only", a1, a2)
	}
}

// The collection of lost releases checks each org again on the read its
// removal is made on: an org re-created and placed from the records
// between the collection's first look and its write keeps its entry.
func TestCollectionSparesAnOrgRecreatedMeanwhile(t *testing.T) {
	t.Parallel()
	pools, ledger := newTwoPools(), newMemLedger()
	fe := pools.engine(t, owning("acme"), ledger)
	fe.apply(created("acme", "acme"))
	fe.pass("acme")
	fe.apply(deleted("acme"))
	fe.deleteToEnd("acme")
	// Its release was lost: the entry is back, as a crash would leave it.
	ledger.mu.Lock()
	ledger.put("account.a1", map[string]string{"acme": "p1"})
	ledger.before = func(l *memLedger, key string) {
		// Between the collection's look and its write: acme is
		// re-created and a worker confirms the recorded place.
		fe.apply(created("acme", "acme"))
		l.put(key, map[string]string{"acme": "p1"})
	}
	ledger.mu.Unlock()
	if err := fe.e.ledgerTick(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if got := ledger.get("account.a1"); !maps.Equal(got, map[string]string{"acme": "p1"}) {
		t.Fatalf("record account.a1 = %v; want acme's entry kept (re-created, placed there)", got)
	}
	if ledger.before != nil {
		t.Fatal("the collection wrote nothing: the test did not race it")
	}
}

// A state file whose placement is an older generation's (the org was
// deleted and re-created on another replica, which gave the place back)
// and that the records do not have: it is not recorded at start, and the
// org is placed anew within the limits, not in its old full pool.
func TestOlderGenerationsPlacementIsPlacedAnew(t *testing.T) {
	t.Parallel()
	pools, ledger := newTwoPools(), newMemLedger()
	ledger.mu.Lock()
	ledger.put("account.a1", map[string]string{"other": "p1"}) // a1's one tunnel
	ledger.mu.Unlock()
	fe := pools.engine(t, owning("acme"), ledger)
	fe.apply(created("acme", "acme"), deleted("acme"), created("acme", "acme"))
	if g := fe.org("acme").Desired.Generation; g != 2 {
		t.Fatalf("acme's generation %d, want 2", g)
	}
	// This file last saw generation 1 placed in p1.
	if err := fe.store.Update("acme", func(o *state.Org) error {
		o.Observed.Pool, o.Observed.PoolGeneration = "p1", 1
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A restart: the start's backfill leaves it out.
	if err := fe.restart().ledgerTick(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if got := ledger.get("account.a1"); !maps.Equal(got, map[string]string{"other": "p1"}) {
		t.Fatalf("record account.a1 = %v after the start; the older generation's placement was recorded", got)
	}

	fe.pass("acme")
	o := fe.org("acme")
	if o.Observed.Pool != "p2" || o.Observed.PoolGeneration != 2 {
		t.Fatalf("acme placed in %q for generation %d, want p2 for 2", o.Observed.Pool, o.Observed.PoolGeneration)
	}
	if got := ledger.get("account.a2"); !maps.Equal(got, map[string]string{"acme": "p2"}) {
		t.Fatalf("record account.a2 = %v, want acme", got)
	}
	if a1, a2 := tunnelsOf(pools.a1), tunnelsOf(pools.a2); len(a1) != 0 || !slices.Equal(a2, []string{"acme"}) {
		t.Fatalf("tunnels a1 %v, a2 %v; want acme's in a2 only", a1, a2)
	}
}

// An org waiting for room that is deleted no longer counts as waiting
// (the status's POOLS line and /v1/cluster report the waiting orgs).
func TestDeletedOrgStopsWaitingForRoom(t *testing.T) {
	t.Parallel()
	pools := newTwoPools()
	fe := pools.engine(t, nil, nil)
	fe.apply(created("acme", "acme"), createdInPool("waiter", "waiter", "p1"))
	fe.pass("acme")
	if _, err := fe.e.Reconcile(context.Background(), "waiter"); err == nil {
		t.Fatal("waiter placed in the full p1")
	}
	if w := fe.e.Pools()[0].Waiting; w != 1 {
		t.Fatalf("%d orgs waiting, want 1", w)
	}
	fe.apply(deleted("waiter"))
	fe.deleteToEnd("waiter")
	if w := fe.e.Pools()[0].Waiting; w != 0 {
		t.Fatalf("%d orgs waiting after the waiting one was deleted, want 0", w)
	}
}
