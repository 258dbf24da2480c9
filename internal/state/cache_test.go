package state

import (
	"path/filepath"
	"testing"
)

// The cache never leaks uncommitted writes or caller edits, and a reopened
// file (empty cache) reads the same records.
func TestCacheFollowsCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{MaxHealthReports: 2})
	if err != nil {
		t.Fatal(err)
	}
	s.Apply([]Fact{created(1, "acme", "acme"), health(2, "acme")})
	// A failing batch leaves the cache as the file: the org keeps one report.
	if _, err := s.Apply([]Fact{health(3, "acme"), {Seq: 4, OrgID: "acme", Type: "bogus"}}); err == nil {
		t.Fatal("bogus fact accepted")
	}
	s.Apply([]Fact{health(5, "acme")})
	o := mustGet(t, s, "acme")
	if len(o.HealthReports) != 2 || o.HealthReports[0].Seq != 2 || o.HealthReports[1].Seq != 5 {
		t.Fatalf("reports after failed batch: %+v", o.HealthReports)
	}
	// An Update whose fn fails leaves nothing behind in the cache.
	s.Update("acme", func(o *Org) error { o.Observed.TunnelID = "ghost"; return errBoom })
	s.Update("acme", func(o *Org) error { o.LastError = "real"; return nil })
	s.Apply([]Fact{health(6, "acme")}) // served from the cache
	o = mustGet(t, s, "acme")
	if o.Observed.TunnelID != "" || o.LastError != "real" || len(o.HealthReports) != 2 || o.HealthReports[1].Seq != 6 {
		t.Fatalf("after updates: %+v", o)
	}
	s.Close()
	s, err = Open(path, Options{MaxHealthReports: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r := mustGet(t, s, "acme"); r.LastError != "real" || r.LastSeq != 6 || r.HealthReports[0].Seq != 5 {
		t.Fatalf("reopened: %+v", r)
	}
}

var errBoom = errorString("boom")

type errorString string

func (e errorString) Error() string { return string(e) }

// Concurrent writers (the engine's Updates beside ingest's Applies) never
// lose each other's writes through the cache.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Apply([]Fact{created(1, "acme", "acme")}); err != nil {
		t.Fatal(err)
	}
	const writers = 50
	done := make(chan error, writers+1)
	for i := 0; i < writers; i++ {
		go func() {
			done <- s.Update("acme", func(o *Org) error {
				o.Remediations = append(o.Remediations, Remediation{Action: "probe"})
				return nil
			})
		}()
	}
	go func() {
		_, err := s.Apply([]Fact{created(2, "acme", "acme2")})
		done <- err
	}()
	for i := 0; i < writers+1; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	o := mustGet(t, s, "acme")
	if len(o.Remediations) != writers {
		t.Errorf("remediations = %d, want %d: concurrent updates were lost", len(o.Remediations), writers)
	}
	if o.Desired.Slug != "acme2" {
		t.Errorf("slug = %q, want acme2: the applied event was lost behind an update", o.Desired.Slug)
	}
}
