package state

import (
	"sync"

	bolt "go.etcd.io/bbolt"
)

// orgCache keeps the last committed, decoded record of every org the
// process wrote or read for writing, so Apply does not decode JSON for
// each event (decoding was the largest CPU cost of ingest). The file stays
// the source of truth: entries are only added after a commit, and a
// process holds the file exclusively, so nothing changes it behind our back.
type orgCache struct {
	mu sync.Mutex
	m  map[string]Org
}

func (c *orgCache) get(id string) (Org, bool) {
	c.mu.Lock()
	o, ok := c.m[id]
	c.mu.Unlock()
	if !ok {
		return Org{}, false
	}
	return o.clone(), true
}

func (c *orgCache) putAll(orgs map[string]Org) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]Org, len(orgs))
	}
	for id, o := range orgs {
		c.m[id] = o.clone()
	}
}

// clone copies the slices, so a caller appending to or editing a record
// never changes the cached one.
func (o Org) clone() Org {
	o.HealthReports = append([]HealthReport(nil), o.HealthReports...)
	o.Conditions = append([]Condition(nil), o.Conditions...)
	o.Remediations = append([]Remediation(nil), o.Remediations...)
	return o
}

// txOrgs reads and writes records inside one write transaction: reads see
// the transaction's own writes, then the cache, then the file; written
// records reach the cache only once the transaction committed.
type txOrgs struct {
	s       *Store
	b       *bolt.Bucket
	written map[string]Org
}

func (s *Store) txOrgs(tx *bolt.Tx) *txOrgs {
	return &txOrgs{s: s, b: tx.Bucket(bucketOrgs), written: map[string]Org{}}
}

func (t *txOrgs) get(id string) (Org, bool, error) {
	if o, ok := t.written[id]; ok {
		return o.clone(), true, nil
	}
	if o, ok := t.s.cache.get(id); ok {
		return o, true, nil
	}
	return getOrg(t.b, id)
}

func (t *txOrgs) put(o Org) error {
	if err := putOrg(t.b, o); err != nil {
		return err
	}
	t.written[o.ID] = o.clone()
	return nil
}

// committed publishes the transaction's writes to the cache.
func (t *txOrgs) committed() { t.s.cache.putAll(t.written) }
