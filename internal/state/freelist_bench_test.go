package state

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkFreelistSync weighs Options.SyncFreelist: the cost per event of
// applying to 100,000 orgs in transactions of 1024 (the freelist is written
// at every commit when synced), and the time to open the resulting file
// (without a synced freelist bbolt walks every page at open). Reported as
// ns/event and open-ms.
//
//	go test -run '^$' -bench BenchmarkFreelistSync -benchtime 200x ./internal/state
func BenchmarkFreelistSync(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "state.db")
			s, err := Open(path, Options{SyncFreelist: sync})
			if err != nil {
				b.Fatal(err)
			}
			const orgs, batch = 100000, 1024
			seq := uint64(0)
			apply := func() {
				facts := make([]Fact, 0, batch)
				for range batch {
					seq++
					org := fmt.Sprintf("org-%06d", (seq*7919)%orgs) // spread over the file
					facts = append(facts, Fact{Seq: seq, EventID: fmt.Sprint(seq), Type: FactCreated, OrgID: org, Slug: org, Region: "eu-west-1"})
				}
				if _, err := s.Apply(facts); err != nil {
					b.Fatal(err)
				}
			}
			for range orgs / batch * 2 { // every org exists, some rewritten: free pages exist
				apply()
			}
			b.ResetTimer()
			for b.Loop() {
				apply()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/event")
			b.ReportMetric(0, "ns/op")
			s.Close()
			t0 := time.Now()
			s, err = Open(path, Options{SyncFreelist: sync})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(time.Since(t0).Milliseconds()), "open-ms")
			s.Close()
		})
	}
}
