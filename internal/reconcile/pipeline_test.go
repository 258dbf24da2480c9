package reconcile

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/state"
)

// pipeline runs the real event path in front of the engine: an embedded
// nats-server, the ORG_EVENTS stream, ingest into the harness's bbolt, and
// ingest's OnApplied feeding the engine's queue.
type pipeline struct {
	*harness
	js jetstream.JetStream
	v  *events.Validator
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	h := newHarness(t, harnessOpts{})
	srv, err := broker.StartEmbedded("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := broker.Connect(srv.ClientURL(), "", "reconcile-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.EnsureStreams(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	// AckWait 2 s, as in the cluster tests: under load a fetch can give up
	// (MaxWait) just as the server delivers into it, and the event is then
	// redelivered only after the ack wait (default 30 s, longer than these
	// tests wait). Seen once in a loaded full run: the health report of
	// TestPipelineLifecycleOverNATS never reached bbolt within 5 s.
	in, err := ingest.New(context.Background(), ingest.Config{JS: js, Store: h.store, Validator: v, Log: h.eng.log,
		MaxWait: 100 * time.Millisecond, RetryDelay: 50 * time.Millisecond, AckWait: 2 * time.Second, OnApplied: h.eng.OnApplied})
	if err != nil {
		t.Fatal(err)
	}
	ictx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = in.Run(ictx) }()
	t.Cleanup(func() { stop(); <-done })
	h.start()
	return &pipeline{harness: h, js: js, v: v}
}

func (p *pipeline) publish(data any) events.Event {
	p.t.Helper()
	ev, err := events.New(data)
	if err != nil {
		p.t.Fatal(err)
	}
	p.publishEvent(ev)
	return ev
}

func (p *pipeline) publishEvent(ev events.Event) {
	p.t.Helper()
	if _, err := broker.PublishEvent(context.Background(), p.js, p.v, ev); err != nil {
		p.t.Fatal(err)
	}
}

func TestPipelineLifecycleOverNATS(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	ev := p.publish(events.Created{OrgID: "acme", Slug: "acme"})
	p.waitReady("acme")
	p.requireOneEach("acme")
	before := p.org("acme")

	// The same event again (a publisher retry) and a health report.
	p.sim.ResetCalls()
	p.publishEvent(ev)
	p.publish(events.HealthFailed{OrgID: "acme", Reason: "http 502", Observer: "uptime"})
	p.waitFor("false alarm", 5*time.Second, func() bool { return len(remediations(p.org("acme"), ActFalseAlarm)) == 1 })
	if m := mutations(p.sim.Calls()); m != 0 {
		t.Fatalf("duplicate event and false alarm made %d writes: %v", m, p.sim.Calls())
	}
	if after := p.org("acme"); after.Desired != before.Desired || after.Observed.InstanceID != before.Observed.InstanceID {
		t.Fatalf("duplicate changed the org: %+v -> %+v", before, after)
	}

	// /v1/orgs/{id} shows desired, observed, conditions and history; never the token.
	tok, err := p.cf.Token(context.Background(), before.Observed.TunnelID)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.New(p.store, p.eng.log).Handler())
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL + "/v1/orgs/acme")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`"desired"`, `"observed"`, `"conditions"`, `"Ready"`, `"remediations"`, before.Observed.TunnelID} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("/v1/orgs/acme lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(string(body), tok.Reveal()) {
		t.Fatal("/v1/orgs/acme shows the tunnel token")
	}

	p.publish(events.Deleted{OrgID: "acme"})
	p.waitDeleted("acme")
	p.waitFor("nothing left", 5*time.Second, func() bool { return len(p.invariants()) == 0 && len(p.world().instances) == 0 })
	if o := p.org("acme"); !IsTrue(o, state.CondDeleted) {
		t.Fatalf("not Deleted: %+v", o.Conditions)
	}
}
