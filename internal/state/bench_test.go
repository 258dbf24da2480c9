package state

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkApply is the bbolt cost per event when events for 2000 orgs are
// applied in transactions of 256 and 1024 facts (commit and fsync included).
//
//	go test -run '^$' -bench BenchmarkApply ./internal/state
func BenchmarkApply(b *testing.B) {
	for _, batch := range []int{256, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			seq := uint64(0)
			facts := make([]Fact, 0, batch)
			for b.Loop() {
				seq++
				org := fmt.Sprintf("org-%d", seq%2000)
				facts = append(facts, Fact{Seq: seq, EventID: fmt.Sprint(seq), Type: FactCreated, OrgID: org, Slug: org, Region: "eu-west-1"})
				if len(facts) == batch {
					if _, err := s.Apply(facts); err != nil {
						b.Fatal(err)
					}
					facts = facts[:0]
				}
			}
		})
	}
}
