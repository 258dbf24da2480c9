package ingest

import (
	"os"
	"testing"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// A lost state file (deleted, emptied) under a consumer that already acked
// events: ingest rebuilds desired state from the whole stream instead of
// starting empty (which would let the sweep collect every org as an orphan).
func TestEmptyStoreRebuildsFromStream(t *testing.T) {
	e := newEnv(t)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	e.publish(t, events.Created{OrgID: "beta", Slug: "beta"})
	e.publish(t, events.Deleted{OrgID: "beta"})
	first := e.ingester(t, nil)
	stop := run(t, first)
	waitFor(t, "applied", func() bool { return first.Stats().Applied == 3 })
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	stop()

	e.store.Close()
	if err := os.Remove(e.dbPath); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.store, err = state.Open(e.dbPath, state.Options{}); err != nil {
		t.Fatal(err)
	}
	again := e.ingester(t, nil)
	run(t, again)
	waitFor(t, "rebuilt", func() bool { b, _ := e.org(t, "beta"); return b.LastSeq == 3 })
	if a, ok := e.org(t, "acme"); !ok || a.Desired.Presence != state.Present || a.LastSeq != 1 {
		t.Fatalf("acme after rebuild: %+v", a)
	}
	if b, _ := e.org(t, "beta"); b.Desired.Presence != state.Deleted {
		t.Fatalf("beta after rebuild: %+v", b)
	}
}
