package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/events"
)

// With the default number of deferrals, a health report outlasts the ack
// wait after which the created it waits for (delivered to a process that
// died) is redelivered. With the old fixed 5 attempts the report was acked
// as ignored before the created came back: the random-kill runs lost one.
func TestHealthReportOutlastsAckWait(t *testing.T) {
	e := newEnv(t)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	crashed := e.ingester(t, func(c *Config) { c.AckWait = 2 * time.Second })
	if msgs, err := crashed.fetch(context.Background()); err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %d %v", len(msgs), err)
	} // ... and the process dies before committing.
	e.publish(t, events.HealthFailed{OrgID: "acme", Reason: "down", Observer: "p"})

	in := e.ingester(t, func(c *Config) { c.AckWait = 2 * time.Second; c.DeferDelay = 200 * time.Millisecond })
	run(t, in)
	waitFor(t, "report recorded", func() bool { o, _ := e.org(t, "acme"); return len(o.HealthReports) == 1 })
	if st := in.Stats(); st.Ignored != 0 {
		t.Fatalf("report dropped: %+v", st)
	}
}
