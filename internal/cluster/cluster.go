// Package cluster decides which replica reconciles which org. Orgs hash
// into a fixed number of partitions (Partition: FNV-1a 32 of the org id
// modulo the count, nats-server's partition() subject mapping). A replica
// owns a partition through a lease in a NATS KV bucket whose TTL is the
// lease TTL: taken with Create, renewed with Update(revision) every quarter
// of the TTL, given back with a revision-checked Delete; a dead replica's
// leases expire with the bucket's TTL. Replicas announce themselves in the
// same bucket and balance to a fair share: each takes free partitions up
// to its share and gives back extras (an eighth of the partitions a round
// at most) while another replica is under its own.
//
// Fencing: a replica writes to the clouds for an org only through Hold,
// which fails once the lease of the org's partition is gone or its renew
// deadline has passed (the send time of the last successful write, on this
// process's monotonic clock, plus the TTL minus a margin), and cancels a
// write in flight at that moment. The server cannot expire a lease before
// its holder's deadline (the server stamps the write after it was sent), so
// two replicas never write for one org at the same time, as long as a write
// takes effect within the margin after it was let through.
//
// Nothing here is consensus of our own: the KV bucket's compare-and-swap
// (JetStream's expected-last-subject-sequence, replicated by Raft on a
// cluster) decides every ownership change.
package cluster

import (
	"hash/fnv"
	"time"
)

// DefaultPartitions is the partition count. It is fixed: changing it moves
// almost every org to another partition. 64 is well above any replica count
// this is meant for, so shares stay even (64 over 3 is 22/21/21).
const DefaultPartitions = 64

// Partition is the partition of an org: FNV-1a 32 of the org id modulo n,
// the same function as nats-server's partition(n, ...) subject mapping
// (server/subject_transform.go, getHashPartition), so a subject transform
// can route an org's events the same way later.
func Partition(orgID string, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(orgID))
	return int(h.Sum32() % uint32(n))
}

// Clock is the manager's time: Now for deadlines (time.Now carries the
// monotonic reading, so deadlines do not move with the wall clock), and
// AfterFunc for the fence timer. Tests inject a fake.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is what Clock.AfterFunc returns.
type Timer interface{ Stop() bool }

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Metrics is what the manager reports (*metrics.Metrics satisfies it).
type Metrics interface {
	SetPartitionsOwned(n int)
	// LeaseRenewal counts renewals by result: ok, failed (no answer; the
	// lease may still be ours), lost (someone else's now, or expired).
	LeaseRenewal(result string)
	// LeaseTakeover counts partitions taken: free (expired or given back)
	// or adopted (this replica id's own, left by a crashed predecessor).
	LeaseTakeover(how string)
}

type noMetrics struct{}

func (noMetrics) SetPartitionsOwned(int) {}
func (noMetrics) LeaseRenewal(string)    {}
func (noMetrics) LeaseTakeover(string)   {}
