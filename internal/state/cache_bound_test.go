package state

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// The record cache holds at most CacheRecords records; evicted records are
// read back from the file, so applying to them loses nothing.
func TestCacheIsBounded(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{CacheRecords: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var facts []Fact
	for i := range 10 {
		facts = append(facts, created(uint64(i+1), fmt.Sprintf("org-%02d", i), "a"))
	}
	if _, err := s.Apply(facts); err != nil {
		t.Fatal(err)
	}
	if n := s.cache.len(); n != 3 {
		t.Fatalf("cache holds %d records after writing 10, want 3", n)
	}
	// Every org, cached or evicted, takes a second event on top of the first.
	facts = facts[:0]
	for i := range 10 {
		facts = append(facts, created(uint64(100+i), fmt.Sprintf("org-%02d", i), fmt.Sprintf("b%d", i)), health(uint64(200+i), fmt.Sprintf("org-%02d", i)))
	}
	if _, err := s.Apply(facts); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		o := mustGet(t, s, fmt.Sprintf("org-%02d", i))
		if o.Desired.Slug != fmt.Sprintf("b%d", i) || len(o.HealthReports) != 1 || o.LastSeq != uint64(200+i) {
			t.Fatalf("org-%02d after the second batch: %+v", i, o)
		}
	}
	if n := s.cache.len(); n != 3 {
		t.Fatalf("cache holds %d records, want 3", n)
	}
}

// With a cache far smaller than the orgs written, concurrent writers to
// many orgs still lose nothing: every record is read from the cache or the
// file, never a stale copy.
func TestConcurrentWritersSmallCache(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{CacheRecords: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const orgs, writers = 8, 10
	var facts []Fact
	for i := range orgs {
		facts = append(facts, created(uint64(i+1), fmt.Sprintf("org-%d", i), "a"))
	}
	if _, err := s.Apply(facts); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, orgs*writers+orgs)
	for i := range orgs {
		id := fmt.Sprintf("org-%d", i)
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Update(id, func(o *Org) error {
					o.Remediations = append(o.Remediations, Remediation{Action: "probe"})
					return nil
				})
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Apply([]Fact{created(uint64(100+i), id, "b")})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range orgs {
		o := mustGet(t, s, fmt.Sprintf("org-%d", i))
		if len(o.Remediations) != writers || o.Desired.Slug != "b" {
			t.Errorf("org-%d: %d remediations (want %d), slug %q (want b): a write was lost", i, len(o.Remediations), writers, o.Desired.Slug)
		}
	}
}

// ForEach and Open leave the records readable after dropping the map's
// resident pages, and writes after it land.
func TestReadsAfterDropResident(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var facts []Fact
	for i := range 2000 {
		facts = append(facts, created(uint64(i+1), fmt.Sprintf("org-%04d", i), "a"))
	}
	if _, err := s.Apply(facts); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := dropAfterBytes
	dropAfterBytes = 4096 // drop many times within each pass
	t.Cleanup(func() { dropAfterBytes = old })
	for pass := range 2 {
		n := 0
		if err := s.ForEach(func(o Org) error {
			if o.ID != fmt.Sprintf("org-%04d", n) || o.Desired.Slug != "a" {
				return fmt.Errorf("record %d is %+v", n, o)
			}
			n++
			return nil
		}); err != nil || n != 2000 {
			t.Fatalf("pass %d: %d records, %v", pass, n, err)
		}
		if err := s.Update("org-1234", func(o *Org) error { o.LastError = fmt.Sprint("pass ", pass); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if o := mustGet(t, s, "org-1234"); o.LastError != "pass 1" {
		t.Fatalf("org-1234: %+v", o)
	}
}
