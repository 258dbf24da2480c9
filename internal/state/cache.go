package state

import (
	"container/list"
	"sort"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// orgCache keeps the last committed, decoded records of the orgs written
// most recently (an LRU of Options.CacheRecords), so Apply does not decode
// JSON for each event of a hot org (decoding was the largest CPU cost of
// ingest). The file stays the source of truth: entries are only added after
// a commit, under the store's write lock, and a process holds the file
// exclusively, so nothing changes it behind our back; an evicted record is
// read from the file again. Bounded because a long-running reconciler
// writes every org sooner or later: unbounded, 100,000 orgs held ~150 MB.
type orgCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*list.Element // values are *cacheEntry
	lru list.List                // front: most recently used
}

type cacheEntry struct {
	id  string
	org Org
}

// DefaultCacheRecords is Options.CacheRecords' default: a few thousand
// records (a few MB) cover the orgs a burst of events touches.
const DefaultCacheRecords = 4096

func (c *orgCache) get(id string) (Org, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[id]
	if !ok {
		return Org{}, false
	}
	c.lru.MoveToFront(el)
	return el.Value.(*cacheEntry).org.clone(), true
}

func (c *orgCache) putAll(orgs map[string]Org) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max < 0 {
		return // caching off
	}
	if c.m == nil {
		c.m = make(map[string]*list.Element, min(len(orgs), c.max))
	}
	for id, o := range orgs {
		if el, ok := c.m[id]; ok {
			el.Value.(*cacheEntry).org = o.clone()
			c.lru.MoveToFront(el)
			continue
		}
		c.m[id] = c.lru.PushFront(&cacheEntry{id: id, org: o.clone()})
	}
	for c.lru.Len() > c.max {
		el := c.lru.Back()
		delete(c.m, el.Value.(*cacheEntry).id)
		c.lru.Remove(el)
	}
}

// len is the number of cached records.
func (c *orgCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// clone copies the slices, the takeover and the rotation, so a caller appending to or
// editing a record never changes the cached one.
func (o Org) clone() Org {
	if o.Desired.Takeover != nil {
		t := *o.Desired.Takeover
		o.Desired.Takeover = &t
	}
	if o.Observed.Rotation != nil {
		r := *o.Observed.Rotation
		r.Old = append([]string(nil), r.Old...)
		o.Observed.Rotation = &r
	}
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
	b := tx.Bucket(bucketOrgs)
	// Records are written in key order (flush) and mostly rewritten in
	// place: bbolt's default split at half a page left the leaves of such a
	// file about half full (177 MB for 100,000 Ready orgs' 116 MB).
	b.FillPercent = orgsFillPercent
	return &txOrgs{s: s, b: b, written: map[string]Org{}}
}

// orgsFillPercent is how full bbolt fills a leaf before it splits it.
const orgsFillPercent = 0.9

func (t *txOrgs) get(id string) (Org, bool, error) {
	if o, ok := t.written[id]; ok {
		return o.clone(), true, nil
	}
	if o, ok := t.s.cache.get(id); ok {
		return o, true, nil
	}
	return getOrg(t.b, id)
}

// put makes o the transaction's version of the record. It is encoded and
// written to the bucket once, by flush, however many facts of the batch
// changed it: JSON encoding is most of Apply's CPU.
func (t *txOrgs) put(o Org) error {
	t.written[o.ID] = o.clone()
	return nil
}

// flush writes every record put in the transaction, in key order (bbolt's
// cheapest insert order). It runs inside the transaction, before commit.
func (t *txOrgs) flush() error {
	ids := make([]string, 0, len(t.written))
	for id := range t.written {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if err := putOrg(t.b, t.written[id]); err != nil {
			return err
		}
	}
	return nil
}

// committed publishes the transaction's writes to the cache.
func (t *txOrgs) committed() {
	t.s.cache.putAll(t.written)
	t.s.afterCommit()
}
