package ingest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// A batch whose bbolt transaction fails is neither acked nor dead-lettered:
// readiness names the failure, shutdown gives the events back, and the next
// run applies them all, in order.
func TestFailedCommitLosesNothing(t *testing.T) {
	e := newEnv(t)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	e.publish(t, events.HealthFailed{OrgID: "acme", Reason: "down", Observer: "p"})
	e.publish(t, events.Created{OrgID: "beta", Slug: "beta"})

	// A store whose file is gone from under it: every Apply fails.
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	broken := e.ingester(t, nil)
	stop := run(t, broken)
	waitFor(t, "readiness names the failed commit", func() bool {
		err := broken.Check(context.Background())
		return err != nil && strings.Contains(err.Error(), "apply")
	})
	stop()
	if st := broken.Stats(); st.Applied != 0 || st.DeadLettered != 0 || st.Nacked == 0 {
		t.Fatalf("stats of the failing run: %+v", st)
	}

	var err error
	if e.store, err = state.Open(e.dbPath, state.Options{}); err != nil {
		t.Fatal(err)
	}
	again := e.ingester(t, nil)
	run(t, again)
	waitFor(t, "all three applied", func() bool { return again.Stats().Applied == 3 })
	waitFor(t, "settled", func() bool { return e.consumerSettledAfterRedelivery(t) })
	if a, _ := e.org(t, "acme"); len(a.HealthReports) != 1 || a.LastSeq != 2 {
		t.Fatalf("acme: %+v", a)
	}
	if _, ok := e.org(t, "beta"); !ok {
		t.Fatal("beta missing")
	}
}

// JetStream redelivers an unacked event after newer ones: a created that
// was in flight to a crashed process arrives after the org's next health
// report. The report is deferred until the org exists, not dropped.
func TestHealthReportWaitsForLateCreated(t *testing.T) {
	e := newEnv(t)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	crashed := e.ingester(t, func(c *Config) { c.AckWait = time.Second })
	if msgs, err := crashed.fetch(context.Background()); err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %d %v", len(msgs), err)
	} // ... and the process dies before committing.
	e.publish(t, events.HealthFailed{OrgID: "acme", Reason: "down", Observer: "p"})

	in := e.ingester(t, func(c *Config) { c.AckWait = time.Second; c.DeferAttempts = 1000 })
	run(t, in)
	waitFor(t, "report recorded", func() bool { o, _ := e.org(t, "acme"); return len(o.HealthReports) == 1 })
	waitFor(t, "both counted", func() bool { return in.Stats().Applied == 2 }) // counters follow the commit
	if st := in.Stats(); st.Deferred == 0 || st.Ignored != 0 {
		t.Fatalf("the report did not wait for the created: %+v", st)
	}
	waitFor(t, "settled", func() bool { return e.consumerSettledAfterRedelivery(t) })
}
