package cluster

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Fast takeover of a dead replica's leases.
//
// The bucket's TTL has to outlast a NATS leader election of the lease
// bucket (nats-server waits 4 to 9 s for a dead leader), or an election
// would expire every lease at once; waiting for the TTL then makes
// failover slower than a replica's death needs. So a lease is also taken
// over before it expires when two things hold:
//
//   - It has gone unrenewed, since this replica first observed its
//     revision, for longer than its holder's fence plus margin (the lease
//     value says how long: TakeoverAfterMS). The holder's fence closes
//     Fence after it sent that renewal, which was before the revision was
//     stored, which was before anyone observed it; its writes are
//     cancelled then and land within Margin. This part alone makes the
//     takeover safe, whatever the probe says: only durations on the
//     holder's and the taker's monotonic clocks count, never a comparison
//     of two clocks' readings (as for expiry).
//   - NATS answers "no responders" to a request on the holder
//     incarnation's liveness subject, which it does only once the holder's
//     connection is gone (a killed process's socket is closed by its
//     kernel). A live holder that merely cannot renew (an election)
//     answers, and keeps its leases until they expire; one cut off without
//     its socket closing gets the request and cannot answer, the probe
//     times out, and its leases wait for the TTL too.
//
// The takeover is an Update on the observed revision: it fails if the
// holder renewed meanwhile; when it succeeds, the holder's next renewal
// fails and drops the lease.

// aliveSubject is where an incarnation answers liveness probes.
func aliveSubject(incarnation string) string { return "tunnelward.alive." + incarnation }

// probeTimeout bounds a liveness probe: "no responders" comes back at
// once; a holder that does not answer in time is taken to be alive.
const probeTimeout = 500 * time.Millisecond

type seenLease struct {
	rev uint64
	at  time.Time // this replica's clock when it first observed rev
}

// sawLocked records that revision rev of partition p's lease was observed
// at (or before) at. Caller holds m.mu.
func (m *Manager) sawLocked(p int, rev uint64, at time.Time) {
	if s, ok := m.seen[p]; !ok || rev > s.rev {
		m.seen[p] = seenLease{rev: rev, at: at}
	}
}

// serve answers this incarnation's liveness probes until unsubscribed.
func (m *Manager) serve() (*nats.Subscription, error) {
	return m.cfg.Conn.Subscribe(aliveSubject(m.incarnation), func(msg *nats.Msg) { _ = msg.Respond(nil) })
}

// watch observes the partition leases' revisions as they are stored, so
// that a lease's age is known to within the watch's latency rather than a
// round; it also wakes Run when a lease may be taken over. Errors restart
// it after a pause; without it rounds still record what they read.
func (m *Manager) watch(ctx context.Context) {
	tick := time.NewTicker(max(m.cfg.Renew/10, 10*time.Millisecond))
	defer tick.Stop()
	for ctx.Err() == nil {
		w, err := m.cfg.KV.Watch(ctx, partitionPrefix+"*", jetstream.MetaOnly())
		if err != nil {
			m.log.Debug("cannot watch the lease bucket; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(m.cfg.Renew):
			}
			continue
		}
	updates:
		for {
			select {
			case <-ctx.Done():
				_ = w.Stop()
				return
			case e, ok := <-w.Updates():
				if !ok {
					break updates
				}
				if e == nil {
					continue
				}
				p, err := strconv.Atoi(strings.TrimPrefix(e.Key(), partitionPrefix))
				if err != nil {
					continue
				}
				m.mu.Lock()
				m.sawLocked(p, e.Revision(), m.cfg.Clock.Now())
				m.mu.Unlock()
			case <-tick.C:
				if m.takeoverDue() {
					select {
					case m.wake <- struct{}{}:
					default:
					}
				}
			}
		}
	}
}

// eligibleLocked reports whether e, partition p's lease as last read, may
// be taken over if its holder is gone. Caller holds m.mu.
func (m *Manager) eligibleLocked(p int, e entry, now time.Time) bool {
	if e.lease.Incarnation == m.incarnation || e.lease.TakeoverAfterMS <= 0 {
		return false
	}
	s, ok := m.seen[p]
	return ok && s.rev == e.rev && !now.Before(s.at.Add(time.Duration(e.lease.TakeoverAfterMS)*time.Millisecond))
}

// takeoverDue reports whether some lease is eligible for takeover and its
// holder has not answered a probe within the last round.
func (m *Manager) takeoverDue() bool {
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	probe, gone := m.candidatesLocked(now)
	return len(probe) > 0 || gone
}

// candidatesLocked looks at the other replicas' leases eligible for
// takeover: probe lists the holders to ask (not known gone, no answer
// within the last round), gone says whether one is a known gone holder's.
// Caller holds m.mu.
func (m *Manager) candidatesLocked(now time.Time) (probe []string, gone bool) {
	for p, e := range m.partitions {
		if _, mine := m.held[p]; mine || !m.eligibleLocked(p, e, now) {
			continue
		}
		inc := e.lease.Incarnation
		if _, known := m.gone[inc]; known {
			gone = true
			continue
		}
		if t, ok := m.alive[inc]; ok && now.Sub(t) < m.cfg.Renew {
			continue
		}
		if !slices.Contains(probe, inc) {
			probe = append(probe, inc)
		}
	}
	return probe, gone
}

// goneMark remembers an incarnation found gone: its leases may be taken
// over and its announcement (left until the TTL expires it) no longer
// counts in the shares, unless it is renewed after all.
type goneMark struct {
	at        time.Time
	memberRev uint64 // its announcement's revision when found gone (0: none)
}

// markGoneLocked records the incarnations found gone and forgets marks
// older than the TTL (by then their leases and announcement expired).
// Caller holds m.mu.
func (m *Manager) markGoneLocked(gone map[string]bool, now time.Time) {
	for inc, g := range m.gone {
		if now.Sub(g.at) > m.cfg.TTL {
			delete(m.gone, inc)
		}
	}
	for inc := range gone {
		g := goneMark{at: now}
		for _, e := range m.members {
			if e.member.Incarnation == inc {
				g.memberRev = e.rev
			}
		}
		m.gone[inc] = g
	}
}

// goneHolderLocked reports whether incarnation inc was found gone.
func (m *Manager) goneHolderLocked(inc string) bool {
	_, ok := m.gone[inc]
	return ok
}

// goneMemberLocked reports whether announcement e is a gone
// incarnation's, not renewed since.
func (m *Manager) goneMemberLocked(e entry) bool {
	g, ok := m.gone[e.member.Incarnation]
	return ok && g.memberRev == e.rev
}

// goneHolders probes the holders of the leases eligible for takeover and
// returns the incarnations that are gone (no responders).
func (m *Manager) goneHolders(ctx context.Context) map[string]bool {
	if m.cfg.Conn == nil {
		return nil
	}
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	for inc, t := range m.alive {
		if now.Sub(t) > m.cfg.TTL {
			delete(m.alive, inc)
		}
	}
	incs, _ := m.candidatesLocked(now)
	m.mu.Unlock()
	gone := map[string]bool{}
	var mu sync.Mutex
	parallel(len(incs), func(i int) {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		_, err := m.cfg.Conn.RequestWithContext(pctx, aliveSubject(incs[i]), nil)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			m.mu.Lock()
			m.alive[incs[i]] = m.cfg.Clock.Now()
			m.mu.Unlock()
		case errors.Is(err, nats.ErrNoResponders):
			gone[incs[i]] = true
		default:
			// No answer in time, or our own connection is down: not proof
			// of anything; the lease expires with the TTL if need be.
		}
	})
	return gone
}
