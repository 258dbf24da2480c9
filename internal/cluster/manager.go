package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Key prefixes in the lease bucket.
const (
	partitionPrefix = "partition."
	replicaPrefix   = "replica."
)

// freeRoundsBeforeAnyone is how many rounds in a row a partition may stay
// free before a replica takes it beyond its share: a replica under its
// share should have taken it by then (availability over balance; the
// extra is given back once someone is under).
const freeRoundsBeforeAnyone = 3

// ErrFenced is what Hold returns (wrapped, with the partition and why) when
// this replica may not write for an org.
var ErrFenced = errors.New("fenced")

// Config configures a Manager.
type Config struct {
	KV         jetstream.KeyValue // the lease bucket (broker.EnsureLeaseBucket); its TTL must be TTL
	Replica    string             // this replica's id
	Partitions int                // default DefaultPartitions
	TTL        time.Duration      // the bucket's TTL (required)
	// Renew is the round interval: renewals, announcement, balance.
	// Default TTL/4.
	Renew time.Duration
	// Fence is how long after its last renewal was sent a lease lets
	// cloud writes through. Default TTL/2: one lost renewal is tolerated.
	Fence time.Duration
	// Margin is how long a write let through may take to take effect
	// after the fence closed (it is cancelled then). Default TTL/4. Fence
	// plus Margin must fit in the TTL: the server expires a lease one TTL
	// after it stored the renewal.
	Margin time.Duration
	// Conn, when set, serves this replica's liveness answer and asks
	// other replicas for theirs: a lease unrenewed for its holder's fence
	// plus margin whose holder does not answer (no responders: its
	// connection is gone) is taken over then, without waiting for the
	// TTL (takeover.go). nil: leases are taken only when they expire.
	Conn *nats.Conn
	// Holder names what this process holds exclusively, e.g. its host and
	// the data dir whose state file it has locked. Leases carry it; one
	// left by another process of this replica id with the same Holder is
	// taken over at once instead of after the TTL: that process held the
	// same lock, which this one now has, so it is gone. "" adopts nothing.
	Holder  string
	Clock   Clock
	Log     *slog.Logger
	Metrics Metrics
	// OnGained is told the partitions a round took (after the round, not
	// under any lock): their orgs may need work.
	OnGained func(partitions []int)
	// OnOwned is told how many partitions this replica holds, after each
	// round in which that changed (and 0 after ReleaseAll).
	OnOwned func(owned, total int)
}

// lease is one partition this replica holds.
type lease struct {
	p        int
	rev      uint64
	acquired time.Time
	renewed  time.Time // the send time of the last write known to have landed
	deadline time.Time // fence: renewed + Fence
	ctx      context.Context
	cancel   context.CancelCauseFunc
	timer    Timer
	inflight int
	drained  chan struct{} // closed when inflight drops to 0 (release waits)
}

type leaseValue struct {
	Replica     string    `json:"replica"`
	Holder      string    `json:"holder,omitempty"`
	Incarnation string    `json:"incarnation"`
	Acquired    time.Time `json:"acquired"`
	// TakeoverAfterMS is the holder's fence plus margin: once the lease
	// has gone unrenewed that long, as another replica observed it, and
	// the holder does not answer, its writes have stopped and landed, so
	// the lease may be taken over. 0 (older builds): only at expiry.
	TakeoverAfterMS int64 `json:"takeover_after_ms,omitempty"`
}

type memberValue struct {
	Replica     string    `json:"replica"`
	Incarnation string    `json:"incarnation"`
	Started     time.Time `json:"started"`
	Owned       int       `json:"owned"`
}

// entry is one key of the bucket as the last round saw it.
type entry struct {
	rev     uint64
	created time.Time // the server's timestamp of the last write (renewal)
	lease   leaseValue
	member  memberValue
}

// Manager holds this replica's leases.
type Manager struct {
	cfg         Config
	log         *slog.Logger
	incarnation string
	started     time.Time

	mu        sync.Mutex
	held      map[int]*lease
	lastOwned int // as last told to OnOwned (-1: never)
	memberRev uint64
	// the last round's view of the bucket
	seenAt     time.Time
	partitions map[int]entry    // partition -> holder
	members    map[string]entry // replica id -> announcement
	freeRounds map[int]int
	// seen is when this replica first observed each partition lease's
	// current revision (the watch or a round's read, whichever first);
	// alive is when each other incarnation last answered a probe.
	seen  map[int]seenLease
	alive map[string]time.Time
	gone  map[string]goneMark
	wake  chan struct{}
}

// New checks cfg and returns a Manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.KV == nil || cfg.Replica == "" || cfg.TTL <= 0 {
		return nil, errors.New("cluster: KV, Replica and TTL are required")
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Renew <= 0 {
		cfg.Renew = cfg.TTL / 4
	}
	if cfg.Fence <= 0 {
		cfg.Fence = cfg.TTL / 2
	}
	if cfg.Margin <= 0 {
		cfg.Margin = cfg.TTL / 4
	}
	if cfg.Renew >= cfg.Fence {
		return nil, fmt.Errorf("cluster: renew interval %s must be shorter than the fence %s", cfg.Renew, cfg.Fence)
	}
	if cfg.Fence+cfg.Margin > cfg.TTL {
		return nil, fmt.Errorf("cluster: fence %s plus margin %s must fit in the lease TTL %s", cfg.Fence, cfg.Margin, cfg.TTL)
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	return &Manager{
		cfg: cfg, log: cfg.Log.With("component", "cluster", "replica", cfg.Replica),
		incarnation: nuid.Next(), started: cfg.Clock.Now(),
		held: map[int]*lease{}, lastOwned: -1, partitions: map[int]entry{}, members: map[string]entry{}, freeRounds: map[int]int{},
		seen: map[int]seenLease{}, alive: map[string]time.Time{}, gone: map[string]goneMark{}, wake: make(chan struct{}, 1),
	}, nil
}

// Replica is this replica's id.
func (m *Manager) Replica() string { return m.cfg.Replica }

// Partitions is the partition count.
func (m *Manager) Partitions() int { return m.cfg.Partitions }

// TTL is the lease TTL.
func (m *Manager) TTL() time.Duration { return m.cfg.TTL }

// Run holds leases until ctx ends: a round at once, then one every Renew,
// and one as soon as another replica's lease may be taken over. At the end
// it gives every lease back (call it after the engine stopped writing), so
// other replicas take over at once instead of after the TTL.
func (m *Manager) Run(ctx context.Context) {
	m.log.Info("partition leases started", "partitions", m.cfg.Partitions, "lease_ttl", m.cfg.TTL,
		"renew_every", m.cfg.Renew, "fence", m.cfg.Fence, "fence_margin", m.cfg.Margin, "holder", m.cfg.Holder,
		"fast_takeover", m.cfg.Conn != nil)
	t := time.NewTicker(m.cfg.Renew)
	defer t.Stop()
	var bg sync.WaitGroup
	defer bg.Wait()
	bctx, stopBG := context.WithCancel(ctx)
	defer stopBG()
	if m.cfg.Conn != nil {
		if sub, err := m.serve(); err != nil {
			m.log.Warn("cannot answer liveness probes; other replicas take this one's leases only when they expire", "err", err)
		} else {
			defer func() { _ = sub.Unsubscribe() }()
		}
		bg.Go(func() { m.watch(bctx) })
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, m.cfg.Renew)
		m.Round(rctx)
		cancel()
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), m.cfg.Margin)
			m.ReleaseAll(rctx)
			cancel()
			return
		case <-t.C:
		case <-m.wake:
		}
	}
}

// Round renews the leases held, the announcement, reads the bucket and
// balances. Run calls it every Renew; tests call it directly.
func (m *Manager) Round(ctx context.Context) {
	m.renewAll(ctx)
	m.announce(ctx)
	if err := m.read(ctx); err != nil {
		m.log.Warn("cannot read the lease bucket; renewing only", "err", err)
		m.tellOwned()
		return
	}
	gained := m.balance(ctx)
	if len(gained) > 0 && m.cfg.OnGained != nil {
		m.cfg.OnGained(gained)
	}
	m.tellOwned()
}

func (m *Manager) tellOwned() {
	m.mu.Lock()
	n := len(m.held)
	changed := n != m.lastOwned
	m.lastOwned = n
	m.mu.Unlock()
	if changed && m.cfg.OnOwned != nil {
		m.cfg.OnOwned(n, m.cfg.Partitions)
	}
}

func partitionKey(p int) string   { return partitionPrefix + strconv.Itoa(p) }
func replicaKey(id string) string { return replicaPrefix + id }

func (m *Manager) leaseValue(acquired time.Time) []byte {
	v := leaseValue{Replica: m.cfg.Replica, Holder: m.cfg.Holder, Incarnation: m.incarnation, Acquired: acquired.UTC()}
	if m.cfg.Conn != nil { // only a holder that answers probes can be told apart from a dead one
		v.TakeoverAfterMS = (m.cfg.Fence + m.cfg.Margin).Milliseconds()
	}
	b, _ := json.Marshal(v)
	return b
}

// renewAll renews every lease held with Update(revision).
func (m *Manager) renewAll(ctx context.Context) {
	m.mu.Lock()
	ls := make([]*lease, 0, len(m.held))
	for _, l := range m.held {
		ls = append(ls, l)
	}
	m.mu.Unlock()
	parallel(len(ls), func(i int) { m.renew(ctx, ls[i]) })
	m.mu.Lock()
	n := len(m.held)
	m.mu.Unlock()
	m.cfg.Metrics.SetPartitionsOwned(n)
}

// renew renews one lease with Update(revision).
func (m *Manager) renew(ctx context.Context, l *lease) {
	sent := m.cfg.Clock.Now()
	rev, err := m.cfg.KV.Update(ctx, partitionKey(l.p), m.leaseValue(l.acquired), l.rev)
	switch {
	case err == nil:
		m.mu.Lock()
		if m.held[l.p] == l {
			l.rev = rev
			m.extend(l, sent)
		}
		m.mu.Unlock()
		m.cfg.Metrics.LeaseRenewal("ok")
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Expired and taken (or expired: a lease is never renewed back
		// from the dead), or an earlier renewal whose answer was lost
		// did land: then the lease is still ours under a newer revision.
		if e, gerr := m.cfg.KV.Get(ctx, partitionKey(l.p)); gerr == nil {
			var v leaseValue
			if json.Unmarshal(e.Value(), &v) == nil && v.Incarnation == m.incarnation {
				m.mu.Lock()
				if m.held[l.p] == l {
					l.rev = e.Revision() // the deadline stays that of the last write we know landed
				}
				m.mu.Unlock()
				m.cfg.Metrics.LeaseRenewal("failed")
				return
			}
		}
		m.cfg.Metrics.LeaseRenewal("lost")
		m.log.Warn("partition lease lost: it expired or another replica holds it; cloud writes for its orgs stopped", "partition", l.p)
		m.drop(l, fmt.Errorf("%w: lease of partition %d lost", ErrFenced, l.p))
	default:
		m.cfg.Metrics.LeaseRenewal("failed")
		m.mu.Lock()
		expired := m.held[l.p] == l && !m.cfg.Clock.Now().Before(l.renewed.Add(m.cfg.TTL))
		m.mu.Unlock()
		if expired {
			m.log.Warn("partition lease not renewed within its TTL; given up", "partition", l.p, "err", err)
			m.drop(l, fmt.Errorf("%w: lease of partition %d not renewed within its TTL", ErrFenced, l.p))
			return
		}
		m.log.Warn("partition lease renewal failed; retrying next round (cloud writes stop at the fence deadline)",
			"partition", l.p, "err", err)
	}
}

// parallel runs fn(0..n-1), at most 16 at a time: renewing or taking
// dozens of leases one after the other would, on a slow link, outlast the
// renew interval.
func parallel(n int, fn func(i int)) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

// extend moves l's fence deadline to sent+Fence and re-arms its timer;
// a lease whose fence had closed opens again. Called with m.mu held.
func (m *Manager) extend(l *lease, sent time.Time) {
	l.renewed = sent
	l.deadline = sent.Add(m.cfg.Fence)
	if l.ctx == nil || l.ctx.Err() != nil {
		l.ctx, l.cancel = context.WithCancelCause(context.Background())
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	p, cancel := l.p, l.cancel
	l.timer = m.cfg.Clock.AfterFunc(l.deadline.Sub(m.cfg.Clock.Now()), func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.held[p] == l && !m.cfg.Clock.Now().Before(l.deadline) {
			cancel(fmt.Errorf("%w: renew deadline of partition %d passed", ErrFenced, p))
		}
	})
}

// drop forgets l and stops its writes; it does not touch the bucket.
func (m *Manager) drop(l *lease, why error) {
	m.mu.Lock()
	m.forgetLocked(l, why)
	m.mu.Unlock()
}

// forgetLocked forgets l and cancels its writes in flight with why. Caller
// holds m.mu.
func (m *Manager) forgetLocked(l *lease, why error) {
	if m.held[l.p] == l {
		delete(m.held, l.p)
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	if l.cancel != nil {
		l.cancel(why)
	}
}

// announce keeps this replica's announcement alive (the balance counts the
// announced replicas).
func (m *Manager) announce(ctx context.Context) {
	m.mu.Lock()
	rev, owned := m.memberRev, len(m.held)
	m.mu.Unlock()
	b, _ := json.Marshal(memberValue{Replica: m.cfg.Replica, Incarnation: m.incarnation, Started: m.started.UTC(), Owned: owned})
	var err error
	if rev != 0 {
		rev, err = m.cfg.KV.Update(ctx, replicaKey(m.cfg.Replica), b, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if e, gerr := m.cfg.KV.Get(ctx, replicaKey(m.cfg.Replica)); gerr == nil {
				var v memberValue
				if json.Unmarshal(e.Value(), &v) == nil && v.Incarnation != m.incarnation {
					m.log.Error("another process announces this replica id: every replica needs its own --replica-id", "other_started", v.Started)
				}
			}
			rev = 0
		}
	}
	if rev == 0 {
		rev, err = m.cfg.KV.Put(ctx, replicaKey(m.cfg.Replica), b)
	}
	if err != nil {
		m.log.Warn("cannot announce this replica", "err", err)
		rev = 0
	}
	m.mu.Lock()
	m.memberRev = rev
	m.mu.Unlock()
}

// read takes a snapshot of the bucket: who holds which partition, who is
// announced.
func (m *Manager) read(ctx context.Context) error {
	w, err := m.cfg.KV.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watch lease bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	parts, members := map[int]entry{}, map[string]entry{}
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return fmt.Errorf("read lease bucket: %w", ctx.Err())
		}
		if e == nil {
			break
		}
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		k := e.Key()
		switch {
		case strings.HasPrefix(k, partitionPrefix):
			p, err := strconv.Atoi(strings.TrimPrefix(k, partitionPrefix))
			if err != nil || p < 0 || p >= m.cfg.Partitions {
				continue
			}
			x := entry{rev: e.Revision(), created: e.Created()}
			if json.Unmarshal(e.Value(), &x.lease) != nil {
				continue
			}
			parts[p] = x
		case strings.HasPrefix(k, replicaPrefix):
			x := entry{rev: e.Revision(), created: e.Created()}
			if json.Unmarshal(e.Value(), &x.member) != nil {
				continue
			}
			members[strings.TrimPrefix(k, replicaPrefix)] = x
		}
	}
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	m.partitions, m.members, m.seenAt = parts, members, now
	for p, e := range parts {
		m.sawLocked(p, e.rev, now) // stored before now: the read ended
	}
	m.mu.Unlock()
	return nil
}

// Share is replica id's fair share of n partitions among the sorted ids:
// n/len, one more for the first n%len.
func Share(ids []string, id string, n int) int {
	if len(ids) == 0 {
		return n
	}
	i := slices.Index(ids, id)
	if i < 0 {
		return 0
	}
	q := n / len(ids)
	if i < n%len(ids) {
		q++
	}
	return q
}

// balance takes free partitions up to this replica's share (and any left
// free for several rounds), adopts its own dead predecessor's (Holder),
// takes over every lease of a gone holder (takeover.go), and gives back
// extras, at most an eighth of the partitions a round, while another
// replica is under its share. It returns the partitions taken.
func (m *Manager) balance(ctx context.Context) []int {
	gone := m.goneHolders(ctx)
	m.mu.Lock()
	now := m.cfg.Clock.Now()
	m.markGoneLocked(gone, now)
	ids := make([]string, 0, len(m.members)+1)
	for id, e := range m.members {
		if !m.goneMemberLocked(e) {
			ids = append(ids, id)
		}
	}
	if !slices.Contains(ids, m.cfg.Replica) {
		ids = append(ids, m.cfg.Replica)
	}
	sort.Strings(ids)
	share := Share(ids, m.cfg.Replica, m.cfg.Partitions)
	owned := len(m.held)
	count := map[string]int{}
	var free, adopt []int
	orphaned := map[int]bool{}                          // a gone holder's: taken like a free one, by its revision
	start := Partition(m.cfg.Replica, m.cfg.Partitions) // replicas scan from different places: fewer lost races
	for i := range m.cfg.Partitions {
		p := (start + i) % m.cfg.Partitions
		e, taken := m.partitions[p]
		if !taken {
			if _, mine := m.held[p]; !mine {
				free = append(free, p)
				m.freeRounds[p]++
			}
			continue
		}
		if _, mine := m.held[p]; !mine && m.eligibleLocked(p, e, now) && m.goneHolderLocked(e.lease.Incarnation) {
			orphaned[p] = true
			free = append(free, p)
			m.freeRounds[p]++
			continue
		}
		delete(m.freeRounds, p)
		count[e.lease.Replica]++
		if _, mine := m.held[p]; !mine && m.cfg.Holder != "" && e.lease.Replica == m.cfg.Replica &&
			e.lease.Holder == m.cfg.Holder && e.lease.Incarnation != m.incarnation {
			adopt = append(adopt, p)
		}
	}
	under := false
	for _, id := range ids {
		if id != m.cfg.Replica && count[id] < Share(ids, id, m.cfg.Partitions) {
			under = true
		}
	}
	var extra []*lease
	if owned > share && under {
		// The highest partitions first, at most an eighth of them a
		// round: a newcomer gets its share within a few rounds, and a
		// replica flapping in and out moves little.
		ls := make([]*lease, 0, len(m.held))
		for _, l := range m.held {
			ls = append(ls, l)
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i].p > ls[j].p })
		extra = ls[:min(owned-share, max(1, m.cfg.Partitions/8))]
	}
	freeRounds := maps(m.freeRounds)
	m.mu.Unlock()

	var gained []int
	// What to take this round, then all at once: adoptions, free
	// partitions (a gone holder's included) up to the share, and any left
	// free for several rounds.
	type want struct {
		p   int
		how string
	}
	var wants []want
	for _, p := range adopt {
		wants = append(wants, want{p, "adopted"})
	}
	room := share - owned - len(adopt)
	for _, p := range free {
		if room > 0 {
			room--
		} else if freeRounds[p] < freeRoundsBeforeAnyone {
			continue
		}
		how := "free"
		if orphaned[p] {
			how = "holder-gone"
		}
		wants = append(wants, want{p, how})
	}
	var gmu sync.Mutex
	parallel(len(wants), func(i int) {
		if m.take(ctx, wants[i].p, wants[i].how) {
			gmu.Lock()
			gained = append(gained, wants[i].p)
			gmu.Unlock()
		}
	})
	sort.Ints(gained)
	owned += len(gained)
	if len(extra) > 0 && len(gained) == 0 {
		for _, l := range extra {
			m.log.Info("giving back a partition above this replica's share", "partition", l.p, "owned", owned, "share", share, "replicas", len(ids))
		}
		parallel(len(extra), func(i int) { m.release(ctx, extra[i]) })
	}
	m.mu.Lock()
	n := len(m.held)
	m.mu.Unlock()
	m.cfg.Metrics.SetPartitionsOwned(n)
	return gained
}

func maps(in map[int]int) map[int]int {
	out := make(map[int]int, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// take creates the lease of a free partition (how "free"), or overwrites
// by its revision our dead predecessor's ("adopted") or a gone holder's
// ("holder-gone").
func (m *Manager) take(ctx context.Context, p int, how string) bool {
	now := m.cfg.Clock.Now()
	var rev uint64
	var err error
	var from entry
	var unrenewed time.Duration
	if how != "free" {
		m.mu.Lock()
		from, unrenewed = m.partitions[p], now.Sub(m.seen[p].at)
		prev := from.rev
		m.mu.Unlock()
		rev, err = m.cfg.KV.Update(ctx, partitionKey(p), m.leaseValue(now), prev)
	} else {
		rev, err = m.cfg.KV.Create(ctx, partitionKey(p), m.leaseValue(now))
	}
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			m.log.Warn("cannot take partition lease", "partition", p, "err", err)
		}
		return false
	}
	l := &lease{p: p, rev: rev, acquired: now}
	m.mu.Lock()
	m.held[p] = l
	m.extend(l, now)
	delete(m.freeRounds, p)
	m.mu.Unlock()
	m.cfg.Metrics.LeaseTakeover(how)
	if how == "holder-gone" {
		m.log.Warn("partition lease taken over from a replica that is gone (no liveness answer, unrenewed past its fence and margin)",
			"partition", p, "from", from.lease.Replica, "unrenewed", unrenewed.Round(time.Millisecond))
		return true
	}
	m.log.Info("partition lease taken", "partition", p, "how", how)
	return true
}

// release stops writes for l's partition, waits (at most Margin) for the
// writes in flight to end, then deletes the lease by its revision, so the
// next replica takes it at once.
func (m *Manager) release(ctx context.Context, l *lease) {
	m.mu.Lock()
	m.forgetLocked(l, fmt.Errorf("%w: partition %d given back", ErrFenced, l.p))
	var wait chan struct{}
	if l.inflight > 0 {
		l.drained = make(chan struct{})
		wait = l.drained
	}
	m.mu.Unlock()
	if wait != nil {
		t := time.NewTimer(m.cfg.Margin)
		select {
		case <-wait:
		case <-t.C:
			// Not deleted: the lease expires with the TTL instead, long
			// after these writes were cancelled.
			m.log.Warn("writes still in flight when giving back a partition; leaving its lease to expire", "partition", l.p)
			t.Stop()
			return
		}
		t.Stop()
	}
	if err := m.cfg.KV.Delete(ctx, partitionKey(l.p), jetstream.LastRevision(l.rev)); err != nil {
		m.log.Warn("cannot delete the given-back lease; it expires with the TTL", "partition", l.p, "err", err)
	}
}

// ReleaseAll gives every lease back (shutdown, drain).
func (m *Manager) ReleaseAll(ctx context.Context) {
	m.mu.Lock()
	ls := make([]*lease, 0, len(m.held))
	for _, l := range m.held {
		ls = append(ls, l)
	}
	m.mu.Unlock()
	for _, l := range ls {
		m.release(ctx, l)
	}
	if len(ls) > 0 {
		m.log.Info("partition leases given back", "partitions", len(ls))
	}
	m.mu.Lock()
	rev := m.memberRev
	m.memberRev = 0
	m.mu.Unlock()
	if rev != 0 {
		_ = m.cfg.KV.Delete(ctx, replicaKey(m.cfg.Replica), jetstream.LastRevision(rev))
	}
	m.cfg.Metrics.SetPartitionsOwned(0)
	m.tellOwned()
}

// Owns reports whether this replica holds the lease of orgID's partition
// (whether or not its fence is open: Hold tells).
func (m *Manager) Owns(orgID string) bool {
	p := Partition(orgID, m.cfg.Partitions)
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.held[p]
	return ok
}

// OwnsPartition reports whether this replica holds partition p.
func (m *Manager) OwnsPartition(p int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.held[p]
	return ok
}

// Owned lists the partitions held, sorted.
func (m *Manager) Owned() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int, 0, len(m.held))
	for p := range m.held {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// Hold lets one cloud write for orgID through: it fails (ErrFenced) unless
// this replica holds the lease of the org's partition and its renew
// deadline has not passed. The context it returns is cancelled when the
// lease is lost, given back or its deadline passes without a renewal; call
// done when the write is over (giving a partition back waits for it).
func (m *Manager) Hold(ctx context.Context, orgID string) (context.Context, func(), error) {
	p := Partition(orgID, m.cfg.Partitions)
	m.mu.Lock()
	l, ok := m.held[p]
	if !ok {
		m.mu.Unlock()
		return ctx, func() {}, fmt.Errorf("%w: replica %s does not hold partition %d of org %s", ErrFenced, m.cfg.Replica, p, orgID)
	}
	now := m.cfg.Clock.Now()
	if !now.Before(l.deadline) || l.ctx.Err() != nil {
		age := now.Sub(l.renewed) // read under the lock: a renewal writes it
		m.mu.Unlock()
		return ctx, func() {}, fmt.Errorf("%w: lease of partition %d (org %s) last renewed %s ago, past its renew deadline; writes wait for a renewal",
			ErrFenced, p, orgID, age.Round(time.Millisecond))
	}
	l.inflight++
	fence := l.ctx
	m.mu.Unlock()
	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(fence, func() { cancel(context.Cause(fence)) })
	var once sync.Once
	return cctx, func() {
		once.Do(func() {
			stop()
			cancel(nil)
			m.mu.Lock()
			l.inflight--
			if l.inflight == 0 && l.drained != nil {
				close(l.drained)
				l.drained = nil
			}
			m.mu.Unlock()
		})
	}, nil
}
