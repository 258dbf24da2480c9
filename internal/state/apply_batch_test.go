package state

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Apply writes each org's record once per transaction, after its last fact
// (cache.go, flush). The file must hold exactly what one transaction per
// fact writes, whatever the mix of facts per org in a batch.
func TestBatchWritesEqualOneTxPerFact(t *testing.T) {
	var facts []Fact
	seq := uint64(0)
	for round := 0; round < 3; round++ {
		for i := 0; i < 40; i++ {
			org := fmt.Sprintf("org-%d", i%7)
			seq++
			switch (i + round) % 6 {
			case 0, 1, 2:
				facts = append(facts, created(seq, org, fmt.Sprintf("%s-%d", org, seq)))
			case 3, 4:
				facts = append(facts, health(seq, org))
			default:
				facts = append(facts, deleted(seq, org))
			}
		}
	}
	// One fixed clock for both, so changed_at cannot tell them apart.
	fixed := func() time.Time { return t0 }
	open := func() *Store {
		s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{MaxHealthReports: 3, Now: fixed})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	batched, single := open(), open()
	for i := 0; i < len(facts); i += 32 {
		if _, err := batched.Apply(facts[i:min(i+32, len(facts))]); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range facts {
		if _, err := single.Apply([]Fact{f}); err != nil {
			t.Fatal(err)
		}
	}
	dump := func(s *Store) map[string][]byte {
		m := map[string][]byte{}
		if err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketOrgs).ForEach(func(k, v []byte) error {
				m[string(k)] = bytes.Clone(v)
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	got, want := dump(batched), dump(single)
	if len(got) != 7 || len(got) != len(want) {
		t.Fatalf("%d records batched, %d one at a time", len(got), len(want))
	}
	for id, w := range want {
		if !bytes.Equal(got[id], w) {
			t.Errorf("org %s:\nbatched %s\nsingle  %s", id, got[id], w)
		}
	}
}
