package state

import (
	"encoding/json"
	"strings"
	"testing"
)

func rotation(seq uint64, org string) Fact {
	return Fact{Seq: seq, EventID: "r" + string(rune('a'+seq%26)), Type: FactTokenRotationRequested, OrgID: org, Reason: "leak", Time: t0}
}

// org.created's pool and takeover land in Desired like its region: set by
// every applied created (an update replaces them, a later created without
// them clears them), never by a stale one, kept on the tombstone.
func TestCreatedSetsPoolAndTakeover(t *testing.T) {
	s := openTemp(t)
	c1 := created(1, "acme", "acme")
	c1.Region, c1.Pool = "eu-west-1", "eu-2"
	c1.Takeover = &Takeover{Type: "A", Content: "203.0.113.10", RecordID: "372e67954025e0ba6aaa6d586b9e0b59"}
	if _, err := s.Apply([]Fact{c1}); err != nil {
		t.Fatal(err)
	}
	c1.Takeover.Content = "changed after apply" // the store keeps its own copy
	a := mustGet(t, s, "acme")
	want := Takeover{Type: "A", Content: "203.0.113.10", RecordID: "372e67954025e0ba6aaa6d586b9e0b59"}
	if a.Desired.Pool != "eu-2" || a.Desired.Region != "eu-west-1" || a.Desired.Takeover == nil || *a.Desired.Takeover != want {
		t.Fatalf("desired: %+v takeover %+v", a.Desired, a.Desired.Takeover)
	}
	// A record read is a copy: editing it changes neither the store nor
	// the next read.
	a.Desired.Takeover.Content = "edited"
	if got := mustGet(t, s, "acme").Desired.Takeover.Content; got != "203.0.113.10" {
		t.Fatalf("editing a read record changed the store: %q", got)
	}
	// The record's JSON names the members as the event does.
	b, _ := json.Marshal(mustGet(t, s, "acme").Desired)
	for _, w := range []string{`"pool":"eu-2"`, `"takeover":{"type":"A","content":"203.0.113.10","record_id":"372e67954025e0ba6aaa6d586b9e0b59"}`} {
		if !strings.Contains(string(b), w) {
			t.Fatalf("desired JSON %s lacks %s", b, w)
		}
	}
	// The engine cannot change them (Update restores Desired).
	if err := s.Update("acme", func(o *Org) error {
		o.Desired.Pool = "other"
		o.Desired.Takeover.Type = "CNAME"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if a := mustGet(t, s, "acme"); a.Desired.Pool != "eu-2" || *a.Desired.Takeover != want {
		t.Fatalf("Update changed desired: %+v %+v", a.Desired, a.Desired.Takeover)
	}

	// A stale created (an older seq arriving late) changes nothing.
	old := created(1, "acme", "acme")
	if out, _ := s.Apply([]Fact{old}); out[0].Result != ResultStale || mustGet(t, s, "acme").Desired.Takeover == nil {
		t.Fatalf("stale created: %+v", out)
	}
	// An update without them clears them: desired is what the newest
	// created says.
	c2 := created(2, "acme", "acme")
	c2.Region = "eu-west-1"
	s.Apply([]Fact{c2})
	if a := mustGet(t, s, "acme"); a.Desired.Pool != "" || a.Desired.Takeover != nil || a.Desired.Region != "eu-west-1" {
		t.Fatalf("update without pool/takeover: %+v", a.Desired)
	}
	// Kept on the tombstone (the engine finds what to clean through them).
	c3 := created(3, "acme", "acme")
	c3.Pool, c3.Takeover = "eu-3", &Takeover{Type: "CNAME", Content: "old-lb.example.com"}
	s.Apply([]Fact{c3, deleted(4, "acme")})
	if a := mustGet(t, s, "acme"); a.Desired.Presence != Deleted || a.Desired.Pool != "eu-3" || a.Desired.Takeover == nil || a.Desired.Takeover.Content != "old-lb.example.com" {
		t.Fatalf("tombstone: %+v", a.Desired)
	}
}

func TestDesiredEqual(t *testing.T) {
	a := Desired{Presence: Present, Slug: "a", Takeover: &Takeover{Type: "A", Content: "192.0.2.1"}}
	b := a
	b.Takeover = &Takeover{Type: "A", Content: "192.0.2.1"}
	if !a.Equal(b) || a == b {
		t.Fatalf("equal by value: Equal %v, == %v", a.Equal(b), a == b)
	}
	for _, c := range []Desired{
		{Presence: Present, Slug: "a"},
		{Presence: Present, Slug: "a", Takeover: &Takeover{Type: "A", Content: "192.0.2.2"}},
		{Presence: Present, Slug: "b", Takeover: &Takeover{Type: "A", Content: "192.0.2.1"}},
	} {
		if a.Equal(c) || c.Equal(a) {
			t.Fatalf("%+v equals %+v", c, a)
		}
	}
	if !(Desired{}).Equal(Desired{}) {
		t.Fatal("zero values differ")
	}
}

// A token rotation request sets Desired.TokenRotationSeq to its stream
// sequence, only forward: a redelivered or late older request changes
// nothing. For an org never created or deleted it is ignored (no record
// made, no error), as a health report is.
func TestTokenRotationSeq(t *testing.T) {
	s := openTemp(t)
	out, err := s.Apply([]Fact{
		rotation(1, "ghost"), // never created
		created(2, "acme", "acme"),
		rotation(3, "acme"),
		rotation(3, "acme"), // redelivery
		deleted(4, "gone"),
		rotation(5, "gone"), // tombstone
		rotation(6, "acme"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{ResultIgnoredUnknown, ResultApplied, ResultApplied, ResultStale, ResultApplied, ResultIgnoredDeleted, ResultApplied}
	for i, w := range want {
		if out[i].Result != w {
			t.Fatalf("outcome %d: %+v, want %s", i, out[i], w)
		}
	}
	if _, ok, _ := s.Get("ghost"); ok {
		t.Fatal("a rotation request for an unknown org made a record")
	}
	if g := mustGet(t, s, "gone"); g.Desired.TokenRotationSeq != 0 || g.LastSeq != 4 {
		t.Fatalf("tombstone changed: %+v", g)
	}
	a := mustGet(t, s, "acme")
	if a.Desired.TokenRotationSeq != 6 || a.LastSeq != 6 || a.LastEventID != rotation(6, "acme").EventID {
		t.Fatalf("acme: seq %d last %d %s", a.Desired.TokenRotationSeq, a.LastSeq, a.LastEventID)
	}
	// A late older request (redelivered after a newer one) does not move
	// the seq back, and neither does a created of the same generation.
	out, _ = s.Apply([]Fact{rotation(5, "acme"), rotation(3, "acme")})
	if out[0].Result != ResultStale || out[1].Result != ResultStale || mustGet(t, s, "acme").Desired.TokenRotationSeq != 6 {
		t.Fatalf("late older request: %+v, seq %d", out, mustGet(t, s, "acme").Desired.TokenRotationSeq)
	}
	s.Apply([]Fact{created(7, "acme", "acme-2")})
	if a := mustGet(t, s, "acme"); a.Desired.TokenRotationSeq != 6 || a.Desired.Slug != "acme-2" {
		t.Fatalf("update of the same generation: %+v", a.Desired)
	}
	// The engine cannot change it.
	s.Update("acme", func(o *Org) error { o.Desired.TokenRotationSeq = 0; o.Observed.TokenRotatedSeq = 6; return nil })
	if a := mustGet(t, s, "acme"); a.Desired.TokenRotationSeq != 6 || a.Observed.TokenRotatedSeq != 6 {
		t.Fatalf("after Update: desired %d observed %d", a.Desired.TokenRotationSeq, a.Observed.TokenRotatedSeq)
	}
	// Deleted: ignored from then on; re-created: a new generation starts
	// with no request, and a request of the old generation arriving late
	// is stale.
	s.Apply([]Fact{deleted(8, "acme")})
	if out, _ := s.Apply([]Fact{rotation(9, "acme")}); out[0].Result != ResultIgnoredDeleted {
		t.Fatalf("request on tombstone: %+v", out)
	}
	s.Apply([]Fact{created(10, "acme", "acme")})
	a = mustGet(t, s, "acme")
	if a.Desired.Generation != 2 || a.Desired.TokenRotationSeq != 0 {
		t.Fatalf("re-created: %+v", a.Desired)
	}
	if out, _ := s.Apply([]Fact{rotation(6, "acme")}); out[0].Result != ResultStale || mustGet(t, s, "acme").Desired.TokenRotationSeq != 0 {
		t.Fatalf("old generation's request applied to the new one: %+v", out)
	}
	if out, _ := s.Apply([]Fact{rotation(11, "acme")}); out[0].Result != ResultApplied || mustGet(t, s, "acme").Desired.TokenRotationSeq != 11 {
		t.Fatalf("new generation's request: %+v", out)
	}
}

// Rotation requests and updates applied in any arrival order (each then
// redelivered) end where stream order ends, as the other events do; so
// does a request that overtook a late deleted and re-create.
func TestTokenRotationOutOfOrderMatchesInOrder(t *testing.T) {
	seqs := []Fact{created(1, "acme", "acme"), rotation(2, "acme"), created(3, "acme", "acme-2"), rotation(4, "acme"), health(5, "acme")}
	inOrder := openTemp(t)
	if _, err := inOrder.Apply(seqs); err != nil {
		t.Fatal(err)
	}
	want := mustGet(t, inOrder, "acme")
	if want.Desired.TokenRotationSeq != 4 {
		t.Fatalf("in order: %+v", want.Desired)
	}
	perms := [][]int{{0, 3, 1, 2, 4}, {0, 4, 3, 2, 1}, {0, 2, 3, 1, 4}, {0, 1, 4, 3, 2}}
	for _, order := range perms {
		s := openTemp(t)
		for _, i := range order {
			if _, err := s.Apply([]Fact{seqs[i]}); err != nil {
				t.Fatal(err)
			}
		}
		for _, i := range order {
			if out, _ := s.Apply([]Fact{seqs[i]}); out[0].Result != ResultStale {
				t.Fatalf("order %v: redelivery of seq %d: %+v", order, seqs[i].Seq, out[0])
			}
		}
		if got := mustGet(t, s, "acme"); !got.Desired.Equal(want.Desired) || got.LastSeq != want.LastSeq {
			t.Fatalf("order %v:\ngot  %+v\nwant %+v", order, got.Desired, want.Desired)
		}
	}

	// Stream order: created 1, deleted 2, created 4, rotation 5. The
	// rotation arrives before the redelivered deleted and created.
	s := openTemp(t)
	for _, f := range []Fact{created(1, "acme", "acme"), rotation(5, "acme"), deleted(2, "acme"), created(4, "acme", "acme")} {
		if _, err := s.Apply([]Fact{f}); err != nil {
			t.Fatal(err)
		}
	}
	if a := mustGet(t, s, "acme"); a.Desired.Presence != Present || a.Desired.Generation != 2 || a.Desired.TokenRotationSeq != 5 {
		t.Fatalf("request before the late re-create: %+v", a.Desired)
	}
	// Stream order: created 1, deleted 2, rotation 3 (ignored: a
	// tombstone), created 4. Here the rotation arrives first and is
	// applied to generation 1; the re-create at 4 drops it.
	s = openTemp(t)
	for _, f := range []Fact{created(1, "acme", "acme"), rotation(3, "acme"), deleted(2, "acme"), created(4, "acme", "acme")} {
		if _, err := s.Apply([]Fact{f}); err != nil {
			t.Fatal(err)
		}
	}
	if a := mustGet(t, s, "acme"); a.Desired.Generation != 2 || a.Desired.TokenRotationSeq != 0 {
		t.Fatalf("old generation's request kept: %+v", a.Desired)
	}
}
