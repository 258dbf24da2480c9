package state

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{MaxHealthReports: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func created(seq uint64, org, slug string) Fact {
	return Fact{Seq: seq, EventID: "e" + string(rune('a'+seq%26)), Type: FactCreated, OrgID: org, Slug: slug, Time: t0.Add(time.Duration(seq) * time.Second)}
}
func deleted(seq uint64, org string) Fact {
	return Fact{Seq: seq, EventID: "d", Type: FactDeleted, OrgID: org, Time: t0}
}
func health(seq uint64, org string) Fact {
	return Fact{Seq: seq, EventID: "h" + string(rune('a'+seq%26)), Type: FactHealthFailed, OrgID: org, Reason: "530", Observer: "probe", Time: t0}
}

func mustGet(t *testing.T, s *Store, id string) Org {
	t.Helper()
	o, ok, err := s.Get(id)
	if err != nil || !ok {
		t.Fatalf("get %s: ok=%v err=%v", id, ok, err)
	}
	return o
}

func TestApplySemantics(t *testing.T) {
	s := openTemp(t)
	out, err := s.Apply([]Fact{
		created(1, "acme", "acme"),
		created(1, "acme", "other"), // same seq again: a redelivery
		deleted(2, "ghost"),         // deleted before created
		created(3, "acme", "acme2"), // update on present
		health(4, "nobody"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{ResultApplied, ResultStale, ResultApplied, ResultApplied, ResultIgnoredUnknown}
	for i, w := range want {
		if out[i].Result != w {
			t.Fatalf("outcome %d: %+v, want %s", i, out[i], w)
		}
	}
	a := mustGet(t, s, "acme")
	if a.Desired.Presence != Present || a.Desired.Slug != "acme2" || a.Desired.Generation != 1 || a.LastSeq != 3 {
		t.Fatalf("acme: %+v", a)
	}
	if _, ok, _ := s.Get("nobody"); ok {
		t.Fatal("health_failed for an unknown org created a record")
	}
	// An older created behind the tombstone stays ignored; a newer one
	// re-creates with generation 1 (nothing existed before).
	out, _ = s.Apply([]Fact{created(1, "ghost", "ghost")})
	if out[0].Result != ResultStale || mustGet(t, s, "ghost").Desired.Presence != Deleted {
		t.Fatalf("older created applied over tombstone: %+v", out)
	}
	s.Apply([]Fact{created(5, "ghost", "ghost")})
	if g := mustGet(t, s, "ghost"); g.Desired.Presence != Present || g.Desired.Generation != 1 {
		t.Fatalf("ghost: %+v", g.Desired)
	}

	// delete then re-create bumps the generation and keeps Observed.
	if err := s.Update("acme", func(o *Org) error { o.Observed.TunnelID = "t-1"; o.Observed.DeleteDone = true; return nil }); err != nil {
		t.Fatal(err)
	}
	s.Apply([]Fact{health(6, "acme"), deleted(7, "acme"), health(8, "acme"), created(9, "acme", "acme")})
	a = mustGet(t, s, "acme")
	if a.Desired.Presence != Present || a.Desired.Generation != 2 || a.LastSeq != 9 {
		t.Fatalf("re-created acme: %+v", a)
	}
	if a.Observed.TunnelID != "t-1" || a.Observed.DeleteDone || len(a.HealthReports) != 0 {
		t.Fatalf("re-created acme observed/reports: %+v %+v", a.Observed, a.HealthReports)
	}
}

func TestHealthReportsCapped(t *testing.T) {
	s := openTemp(t)
	facts := []Fact{created(1, "acme", "acme")}
	for i := uint64(2); i <= 6; i++ {
		facts = append(facts, health(i, "acme"))
	}
	if _, err := s.Apply(facts); err != nil {
		t.Fatal(err)
	}
	a := mustGet(t, s, "acme")
	if len(a.HealthReports) != 3 || a.HealthReports[0].Seq != 4 || a.HealthReports[2].Seq != 6 {
		t.Fatalf("reports: %+v", a.HealthReports)
	}
}

func TestUpdateCannotChangeDesired(t *testing.T) {
	s := openTemp(t)
	s.Apply([]Fact{created(1, "acme", "acme"), health(2, "acme")})
	err := s.Update("acme", func(o *Org) error {
		o.Desired.Presence, o.Desired.Slug, o.LastSeq, o.LastEventID = Deleted, "evil", 99, "x"
		o.HealthReports[0].Handled = true
		o.HealthReports[0].Reason = "rewritten"
		o.HealthReports = append(o.HealthReports, HealthReport{EventID: "fake"})
		o.Observed.InstanceID = "i-1"
		o.LastError = "boom"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a := mustGet(t, s, "acme")
	if a.Desired.Presence != Present || a.Desired.Slug != "acme" || a.LastSeq != 2 || a.LastEventID != "hc" {
		t.Fatalf("desired changed by Update: %+v", a)
	}
	if len(a.HealthReports) != 1 || !a.HealthReports[0].Handled || a.HealthReports[0].Reason != "530" {
		t.Fatalf("health reports: %+v", a.HealthReports)
	}
	if a.Observed.InstanceID != "i-1" || a.LastError != "boom" {
		t.Fatalf("engine fields not written: %+v", a)
	}
	if err := s.Update("nope", func(*Org) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown org: %v", err)
	}
	// An error from fn writes nothing.
	s.Update("acme", func(o *Org) error { o.LastError = "half"; return errors.New("stop") })
	if mustGet(t, s, "acme").LastError != "boom" {
		t.Fatal("failed Update half-applied")
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	s := openTemp(t)
	_, err := s.Apply([]Fact{created(1, "acme", "acme"), {Seq: 2, OrgID: "acme", Type: "bogus"}})
	if err == nil {
		t.Fatal("bogus fact accepted")
	}
	if _, ok, _ := s.Get("acme"); ok {
		t.Fatal("first fact committed although the batch failed")
	}
}

func TestListSorted(t *testing.T) {
	s := openTemp(t)
	s.Apply([]Fact{created(1, "zeta", "z"), created(2, "alpha", "a"), created(3, "mid", "m")})
	l, err := s.List()
	if err != nil || len(l) != 3 || l[0].ID != "alpha" || l[2].ID != "zeta" {
		t.Fatalf("list: %v %v", l, err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Apply([]Fact{created(1, "acme", "acme")})

	_, err = Open(path, Options{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("locked: %v", err)
	}
	s.Close()

	// Future schema version.
	db, _ := bolt.Open(path, 0o600, nil)
	db.Update(func(tx *bolt.Tx) error {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], SchemaVersion+1)
		return tx.Bucket(bucketMeta).Put(keyVersion, b[:])
	})
	db.Close()
	_, err = Open(path, Options{})
	if !errors.Is(err, ErrFutureVersion) || !strings.Contains(err.Error(), "reconciler replay") || !strings.Contains(err.Error(), path) {
		t.Fatalf("future: %v", err)
	}

	for name, content := range map[string][]byte{
		"garbage":   []byte(strings.Repeat("not a bolt file ", 1000)),
		"truncated": nil, // filled below
		"tiny":      []byte("x"),
	} {
		p := filepath.Join(dir, name+".db")
		if name == "truncated" {
			good := filepath.Join(dir, "good.db")
			g, err := Open(good, Options{})
			if err != nil {
				t.Fatal(err)
			}
			g.Apply([]Fact{created(1, "acme", "acme")})
			g.Close()
			b, _ := os.ReadFile(good)
			content = b[:len(b)/3]
		}
		os.WriteFile(p, content, 0o600)
		_, err := Open(p, Options{})
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "replay") {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestMigrateFromVersion0(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close() // an empty bbolt file: version 0
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, _ = bolt.Open(path, 0o600, nil)
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keyVersion)); v != SchemaVersion {
			t.Fatalf("version %d", v)
		}
		return nil
	})
}

// Redelivery can hand events over out of stream order; the result must be
// what in-order application gives.
func TestApplyOutOfOrderMatchesInOrder(t *testing.T) {
	seqs := []Fact{
		created(1, "acme", "acme"),
		health(2, "acme"),
		created(3, "acme", "acme-2"),
		health(4, "acme"),
		health(5, "acme"),
	}
	inOrder := openTemp(t)
	if _, err := inOrder.Apply(seqs); err != nil {
		t.Fatal(err)
	}
	want := mustGet(t, inOrder, "acme")
	for _, order := range [][]int{{0, 3, 2, 1, 4}, {0, 4, 3, 1, 2}, {0, 1, 3, 4, 2}} {
		s := openTemp(t)
		for _, i := range order { // one at a time, as separate batches
			if _, err := s.Apply([]Fact{seqs[i]}); err != nil {
				t.Fatal(err)
			}
		}
		for _, i := range order { // and every one redelivered once more
			if out, _ := s.Apply([]Fact{seqs[i]}); out[0].Result != ResultStale {
				t.Fatalf("order %v: redelivery of seq %d: %+v", order, seqs[i].Seq, out[0])
			}
		}
		got := mustGet(t, s, "acme")
		if got.Desired != want.Desired || got.LastSeq != want.LastSeq || got.DesiredSeq != 3 || len(got.HealthReports) != 3 {
			t.Fatalf("order %v:\ngot  %+v\nwant %+v", order, got, want)
		}
		for i := range want.HealthReports {
			if got.HealthReports[i] != want.HealthReports[i] {
				t.Fatalf("order %v: report %d: %+v, want %+v", order, i, got.HealthReports[i], want.HealthReports[i])
			}
		}
	}
	// A report of an older generation arriving after the re-create is dropped,
	// and a delete clears the reports.
	s := openTemp(t)
	s.Apply([]Fact{created(1, "acme", "acme"), health(2, "acme"), deleted(4, "acme")})
	if a := mustGet(t, s, "acme"); len(a.HealthReports) != 0 {
		t.Fatalf("reports kept on a tombstone: %+v", a.HealthReports)
	}
	s.Apply([]Fact{created(5, "acme", "acme")})
	if out, _ := s.Apply([]Fact{health(3, "acme")}); out[0].Result != ResultStale {
		t.Fatalf("report of generation 1 applied to generation 2: %+v", out[0])
	}
}

// The applied-through mark: absent on a new file, advanced in Apply's
// transaction to the highest seq (stale facts included), advanced without
// facts by ApplyThrough, never lowered, untouched by a failed Apply, kept
// across reopen.
func TestAppliedThroughMark(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := func(seq uint64, known bool) {
		t.Helper()
		got, k, err := s.AppliedThrough()
		if err != nil || got != seq || k != known {
			t.Fatalf("AppliedThrough = %d known=%v err=%v, want %d known=%v", got, k, err, seq, known)
		}
	}
	want(0, false)
	if _, err := s.Apply([]Fact{created(3, "acme", "acme"), created(2, "beta", "b")}); err != nil {
		t.Fatal(err)
	}
	want(3, true)
	if out, err := s.Apply([]Fact{created(1, "acme", "acme"), created(5, "acme", "x"), created(4, "acme", "y")}); err != nil || out[2].Result != ResultStale {
		t.Fatalf("%+v %v", out, err)
	}
	want(5, true) // seq 4 was stale; the mark is the batch's highest
	if _, err := s.ApplyThrough(nil, 7); err != nil {
		t.Fatal(err)
	}
	want(7, true)
	if _, err := s.ApplyThrough([]Fact{created(6, "gamma", "g")}, 6); err != nil { // a late redelivery
		t.Fatal(err)
	}
	want(7, true)
	if _, err := s.Apply([]Fact{created(9, "acme", "acme"), {Seq: 10, OrgID: "acme", Type: "bogus"}}); err == nil {
		t.Fatal("bogus fact applied")
	}
	want(7, true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want(7, true)
}
