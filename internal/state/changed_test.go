package state

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeClock is the store's clock in tests: it moves only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time                 { return c.t }
func (c *fakeClock) tick(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }

// ChangedAt is when the record last changed, on the store's clock; the
// event's own time stays in UpdatedAt, which only events move.
func TestChangedAtStampsEveryChange(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)}
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check := func(step string, changed, event time.Time) {
		t.Helper()
		o := mustGet(t, s, "acme")
		if !o.ChangedAt.Equal(changed) || !o.UpdatedAt.Equal(event) {
			t.Errorf("%s: changed_at %s updated_at %s, want %s and %s", step, o.ChangedAt, o.UpdatedAt, changed, event)
		}
	}

	// An event published long before it is applied.
	ingested := clock.tick(time.Minute)
	c1 := created(1, "acme", "acme")
	if _, err := s.Apply([]Fact{c1}); err != nil {
		t.Fatal(err)
	}
	check("created applied", ingested, c1.Time)

	// The engine records a resource.
	engine := clock.tick(time.Minute)
	if err := s.Update("acme", func(o *Org) error { o.Observed.TunnelID = "t-1"; return nil }); err != nil {
		t.Fatal(err)
	}
	check("engine write", engine, c1.Time)

	// Rewriting the same values changes nothing, and the engine cannot set
	// the stamp itself.
	clock.tick(time.Minute)
	if err := s.Update("acme", func(o *Org) error {
		o.Observed.TunnelID = "t-1"
		o.ChangedAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("same values rewritten", engine, c1.Time)

	// A redelivered event is stale: not a change.
	clock.tick(time.Minute)
	if _, err := s.Apply([]Fact{c1}); err != nil {
		t.Fatal(err)
	}
	check("redelivery", engine, c1.Time)

	// A health report, then the engine marking it handled: both changes.
	reported := clock.tick(time.Minute)
	h := health(2, "acme")
	if _, err := s.Apply([]Fact{h}); err != nil {
		t.Fatal(err)
	}
	check("health report", reported, h.Time)
	handled := clock.tick(time.Minute)
	if err := s.Update("acme", func(o *Org) error { o.HealthReports[0].Handled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	check("report handled", handled, h.Time)

	// The JSON keeps updated_at and adds changed_at.
	o := mustGet(t, s, "acme")
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"updated_at":"` + h.Time.Format(time.RFC3339Nano) + `"`, `"changed_at":"` + handled.Format(time.RFC3339Nano) + `"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("record JSON lacks %s: %s", want, b)
		}
	}
}

// Records written before changed_at existed decode with a zero ChangedAt
// and gain one at their next change.
func TestChangedAtAbsentInOldRecords(t *testing.T) {
	var o Org
	if err := json.Unmarshal([]byte(`{"id":"acme","desired":{"presence":"present","slug":"acme","generation":1},"last_seq":1,"last_event_id":"e","updated_at":"2026-11-26T10:00:00Z","observed":{}}`), &o); err != nil {
		t.Fatal(err)
	}
	if !o.ChangedAt.IsZero() {
		t.Fatalf("changed_at %s from a record without one", o.ChangedAt)
	}
	b, _ := json.Marshal(o)
	if strings.Contains(string(b), "changed_at") {
		t.Fatalf("a zero changed_at is written: %s", b)
	}
}
