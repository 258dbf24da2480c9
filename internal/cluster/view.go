package cluster

import (
	"sort"
	"time"
)

// View is the cluster as this replica saw it at its last round: GET
// /v1/cluster and `reconciler status` show it.
type View struct {
	// Replica is the replica answering.
	Replica string `json:"replica"`
	// AsOf is when the lease bucket was last read (every renew interval).
	AsOf            time.Time `json:"as_of"`
	PartitionsTotal int       `json:"partitions_total"`
	LeaseTTL        string    `json:"lease_ttl"`
	// Replicas are the announced replicas and any replica holding a lease,
	// sorted by id.
	Replicas []ReplicaView `json:"replicas"`
	// Free lists the partitions nobody holds (taken within a round or two).
	Free []int `json:"free"`
}

// ReplicaView is one replica and its partitions.
type ReplicaView struct {
	ID   string `json:"id"`
	Self bool   `json:"self,omitempty"`
	// Announced: its announcement is alive (false for a replica whose
	// leases outlive it until they expire).
	Announced bool `json:"announced"`
	// Share is its fair share of the partitions among the announced.
	Share      int         `json:"share"`
	Partitions []int       `json:"partitions"`
	Leases     []LeaseView `json:"leases"`
}

// LeaseView is one lease: its age is the time since its last renewal (by
// the NATS server's timestamp); a lease older than the TTL has expired.
type LeaseView struct {
	Partition   int     `json:"partition"`
	AgeSeconds  float64 `json:"age_seconds"`
	HeldSeconds float64 `json:"held_seconds"`
}

// View returns the last round's view of the cluster.
func (m *Manager) View() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	now, local := time.Now(), m.cfg.Clock.Now() // server timestamps against the wall clock; acquired against ours
	v := View{Replica: m.cfg.Replica, AsOf: m.seenAt, PartitionsTotal: m.cfg.Partitions, LeaseTTL: m.cfg.TTL.String(),
		Replicas: []ReplicaView{}, Free: []int{}}
	by := map[string]*ReplicaView{}
	get := func(id string) *ReplicaView {
		if r, ok := by[id]; ok {
			return r
		}
		r := &ReplicaView{ID: id, Self: id == m.cfg.Replica, Partitions: []int{}, Leases: []LeaseView{}}
		by[id] = r
		return r
	}
	get(m.cfg.Replica).Announced = m.memberRev != 0
	var ids []string
	for id := range m.members {
		get(id).Announced = true
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for id, r := range by {
		r.Share = Share(ids, id, m.cfg.Partitions)
	}
	for p := range m.cfg.Partitions {
		if l, mine := m.held[p]; mine { // our own leases as of now, not as of the last reading
			r := get(m.cfg.Replica)
			r.Partitions = append(r.Partitions, p)
			r.Leases = append(r.Leases, LeaseView{Partition: p,
				AgeSeconds:  local.Sub(l.renewed).Round(time.Millisecond).Seconds(),
				HeldSeconds: local.Sub(l.acquired).Round(time.Second).Seconds()})
			continue
		}
		e, ok := m.partitions[p]
		if ok && e.lease.Replica == m.cfg.Replica && e.lease.Incarnation == m.incarnation {
			ok = false // ours until lately: lost or given back since the reading
		}
		if !ok {
			v.Free = append(v.Free, p)
			continue
		}
		r := get(e.lease.Replica)
		r.Partitions = append(r.Partitions, p)
		r.Leases = append(r.Leases, LeaseView{Partition: p,
			AgeSeconds:  now.Sub(e.created).Round(time.Millisecond).Seconds(),
			HeldSeconds: local.Sub(e.lease.Acquired).Round(time.Second).Seconds()})
	}
	for _, r := range by {
		v.Replicas = append(v.Replicas, *r)
	}
	sort.Slice(v.Replicas, func(i, j int) bool { return v.Replicas[i].ID < v.Replicas[j].ID })
	return v
}

// Owner says which partition orgID is in and which replica held its lease
// at the last round ("" when free).
func (m *Manager) Owner(orgID string) (partition int, replica string) {
	p := Partition(orgID, m.cfg.Partitions)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.held[p]; ok {
		return p, m.cfg.Replica
	}
	return p, m.partitions[p].lease.Replica
}
