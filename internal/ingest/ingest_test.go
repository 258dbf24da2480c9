package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/schemas"
)

func TestAllEventTypesReachState(t *testing.T) {
	e := newEnv(t)
	in := e.ingester(t, nil)
	run(t, in)

	e.publish(t, events.Created{OrgID: "acme", Slug: "acme", InstanceType: "t4g.small", Region: "eu-west-1"})
	waitFor(t, "acme present", func() bool { o, ok := e.org(t, "acme"); return ok && o.Desired.Presence == state.Present })
	hf, _ := e.publish(t, events.HealthFailed{OrgID: "acme", Reason: "530 from edge", Observer: "probe-1"})
	waitFor(t, "health report", func() bool { o, _ := e.org(t, "acme"); return len(o.HealthReports) == 1 })
	o, _ := e.org(t, "acme")
	if r := o.HealthReports[0]; r.EventID != hf.ID || r.Reason != "530 from edge" || r.Observer != "probe-1" || r.Seq != 2 {
		t.Fatalf("report: %+v", r)
	}
	del, ack := e.publish(t, events.Deleted{OrgID: "acme"})
	waitFor(t, "acme deleted", func() bool { o, _ := e.org(t, "acme"); return o.Desired.Presence == state.Deleted })

	o, _ = e.org(t, "acme")
	if o.Desired.Slug != "acme" || o.Desired.InstanceType != "t4g.small" || o.Desired.Region != "eu-west-1" || o.Desired.Generation != 1 {
		t.Fatalf("desired: %+v", o.Desired)
	}
	if o.LastSeq != ack.Sequence || o.LastEventID != del.ID {
		t.Fatalf("last seq/id %d/%s, want %d/%s", o.LastSeq, o.LastEventID, ack.Sequence, del.ID)
	}
	if len(o.HealthReports) != 0 {
		t.Fatalf("reports kept after delete: %+v", o.HealthReports)
	}
	waitFor(t, "all acked", func() bool { return e.consumerSettled(t) })
	e.mu.Lock()
	defer e.mu.Unlock()
	if strings.Join(e.notified, ",") != "acme,acme,acme" {
		t.Fatalf("engine notified of %v", e.notified)
	}
}

// org.created's pool and takeover reach Desired; a token rotation request
// sets Desired.TokenRotationSeq to its stream sequence and tells the engine;
// one for an org that does not exist is acked as ignored, changing nothing.
func TestPoolTakeoverAndRotationReachState(t *testing.T) {
	e := newEnv(t)
	in := e.ingester(t, nil)
	run(t, in)

	_, ack := e.publish(t, events.Created{OrgID: "acme", Slug: "acme", Pool: "eu-2",
		Takeover: &events.Takeover{Type: events.TakeoverA, Content: "203.0.113.10", RecordID: "372e67954025e0ba6aaa6d586b9e0b59"}})
	waitFor(t, "acme present", func() bool { o, ok := e.org(t, "acme"); return ok && o.LastSeq == ack.Sequence })
	o, _ := e.org(t, "acme")
	want := state.Takeover{Type: "A", Content: "203.0.113.10", RecordID: "372e67954025e0ba6aaa6d586b9e0b59"}
	if o.Desired.Pool != "eu-2" || o.Desired.Takeover == nil || *o.Desired.Takeover != want || o.Desired.TokenRotationSeq != 0 {
		t.Fatalf("desired: %+v takeover %+v", o.Desired, o.Desired.Takeover)
	}
	rot, ack := e.publish(t, events.TokenRotationRequested{OrgID: "acme", Reason: "leaked"})
	waitFor(t, "rotation applied", func() bool { o, _ := e.org(t, "acme"); return o.Desired.TokenRotationSeq == ack.Sequence })
	if o, _ := e.org(t, "acme"); o.LastSeq != ack.Sequence || o.LastEventID != rot.ID || o.Desired.Pool != "eu-2" {
		t.Fatalf("after rotation: %+v", o)
	}
	e.publish(t, events.TokenRotationRequested{OrgID: "nobody"})
	e.publish(t, events.Deleted{OrgID: "gone"})
	e.publish(t, events.TokenRotationRequested{OrgID: "gone"})
	waitFor(t, "all acked", func() bool { return e.consumerSettled(t) })
	if _, ok := e.org(t, "nobody"); ok {
		t.Fatal("a rotation request for an unknown org made a record")
	}
	if g, _ := e.org(t, "gone"); g.Desired.TokenRotationSeq != 0 {
		t.Fatalf("a rotation request changed a tombstone: %+v", g.Desired)
	}
	if st := in.Stats(); st.Ignored != 2 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if strings.Join(e.notified, ",") != "acme,acme,gone" {
		t.Fatalf("engine notified of %v", e.notified)
	}
}

func TestSameEventIDStoredOnce(t *testing.T) {
	e := newEnv(t)
	ev, err := events.New(events.HealthFailed{OrgID: "acme", Reason: "down", Observer: "p"})
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	first := e.publishEvent(t, ev)
	second := e.publishEvent(t, ev)
	if first.Duplicate || !second.Duplicate || second.Sequence != first.Sequence {
		t.Fatalf("first %+v second %+v", first, second)
	}
	run(t, e.ingester(t, nil))
	waitFor(t, "ingested", func() bool { return e.consumerSettled(t) })
	s, _ := e.js.Stream(context.Background(), events.Stream)
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2", info.State.Msgs)
	}
	if o, _ := e.org(t, "acme"); len(o.HealthReports) != 1 {
		t.Fatalf("reports: %+v", o.HealthReports)
	}
}

func TestDeleteBeforeCreateAndRecreate(t *testing.T) {
	e := newEnv(t)
	run(t, e.ingester(t, nil))
	// deleted before created: a tombstone, then the newer created wins.
	e.publish(t, events.Deleted{OrgID: "early"})
	e.publish(t, events.Created{OrgID: "early", Slug: "early"})
	// created, deleted, created again: generation 2.
	e.publish(t, events.Created{OrgID: "again", Slug: "again"})
	e.publish(t, events.Deleted{OrgID: "again"})
	_, last := e.publish(t, events.Created{OrgID: "again", Slug: "again-2"})
	waitFor(t, "again recreated", func() bool { o, _ := e.org(t, "again"); return o.LastSeq == last.Sequence })

	early, _ := e.org(t, "early")
	if early.Desired.Presence != state.Present || early.Desired.Generation != 1 {
		t.Fatalf("early: %+v", early.Desired)
	}
	again, _ := e.org(t, "again")
	if again.Desired.Presence != state.Present || again.Desired.Generation != 2 || again.Desired.Slug != "again-2" {
		t.Fatalf("again: %+v", again.Desired)
	}
}

// A crash after the bbolt commit but before the acks: the events come back
// and change nothing.
func TestRedeliveryAfterCommitBeforeAck(t *testing.T) {
	e := newEnv(t)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	e.publish(t, events.HealthFailed{OrgID: "acme", Reason: "down", Observer: "p"})
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme-renamed"})

	crashing := e.ingester(t, func(c *Config) { c.AckWait = time.Second })
	msgs, err := crashing.fetch(context.Background())
	if err != nil || len(msgs) != 3 {
		t.Fatalf("fetch: %d %v", len(msgs), err)
	}
	var facts []state.Fact
	for _, m := range msgs {
		md, _ := m.Metadata()
		ev, err := e.v.Decode(m.Subject(), m.Data())
		if err != nil {
			t.Fatal(err)
		}
		facts = append(facts, ToFact(ev, md.Sequence.Stream))
	}
	if _, err := e.store.Apply(facts); err != nil { // committed; the process dies before acking
		t.Fatal(err)
	}
	before, _ := e.org(t, "acme")

	restarted := e.ingester(t, func(c *Config) { c.AckWait = time.Second })
	run(t, restarted)
	waitFor(t, "redelivered events settled", func() bool { return restarted.Stats().Stale == 3 && e.consumerSettledAfterRedelivery(t) })
	after, _ := e.org(t, "acme")
	if st := restarted.Stats(); st.Applied != 0 {
		t.Fatalf("redelivery applied again: %+v", st)
	}
	if len(after.HealthReports) != 1 || after.LastSeq != before.LastSeq || after.Desired != before.Desired {
		t.Fatalf("state changed by redelivery:\nbefore %+v\nafter  %+v", before, after)
	}
}

func (e *env) consumerSettledAfterRedelivery(t *testing.T) bool {
	c, _ := e.js.Consumer(context.Background(), events.Stream, ConsumerName)
	info, err := c.Info(context.Background())
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

func TestInvalidEventsDeadLetteredValidOnesFlow(t *testing.T) {
	e := newEnv(t)
	in := e.ingester(t, func(c *Config) { c.BatchSize = 4 }) // several batches, mixed
	run(t, in)

	b, _ := fs.ReadFile(schemas.Examples, "examples/invalid/expectations.json")
	var exp map[string]struct{ Subject, Code, Field string }
	json.Unmarshal(b, &exp)
	type want struct{ subject, code, field string }
	wants := map[uint64]want{}
	i := 0
	for name, x := range exp {
		if strings.HasPrefix(name, "_") {
			continue
		}
		payload, err := fs.ReadFile(schemas.Examples, path.Join("examples/invalid", name))
		if err != nil {
			t.Fatal(err)
		}
		seq := e.publishRaw(t, x.Subject, payload)
		wants[seq] = want{x.Subject, x.Code, x.Field}
		// A valid event behind every invalid one still flows.
		org := fmt.Sprintf("valid-%d", i)
		e.publish(t, events.Created{OrgID: org, Slug: org})
		i++
	}
	big := `{"specversion":"1.0","id":"big","type":"org.deleted","source":"p","time":"2026-11-26T10:00:00Z","subject":"acme","data":{"org_id":"acme","reason":"` + strings.Repeat("x", events.MaxEventSize) + `"}}`
	wants[e.publishRaw(t, "orgs.acme.deleted", []byte(big))] = want{"orgs.acme.deleted", events.CodeTooLarge, ""}
	wants[e.publishRaw(t, "orgs.acme.deleted", []byte("{\"id\":\"\xff\"}"))] = want{"orgs.acme.deleted", events.CodeInvalidUTF8, ""}
	wants[e.publishRaw(t, "orgs.acme.created.extra", []byte(`{}`))] = want{"orgs.acme.created.extra", events.CodeUnknownType, "/type"}
	e.publish(t, events.Created{OrgID: "last", Slug: "last"})

	waitFor(t, "dead letters", func() bool { return in.Stats().DeadLettered == uint64(len(wants)) })
	waitFor(t, "last valid org", func() bool { _, ok := e.org(t, "last"); return ok })
	for j := 0; j < i; j++ {
		if _, ok := e.org(t, fmt.Sprintf("valid-%d", j)); !ok {
			t.Fatalf("valid-%d missing", j)
		}
	}
	if _, ok := e.org(t, "acme"); ok {
		t.Fatal("an invalid event reached state")
	}
	waitFor(t, "consumer settled", func() bool { return e.consumerSettled(t) })

	// Every dead letter carries its reason, the original subject and seq.
	dlq, err := e.js.OrderedConsumer(context.Background(), events.DLQStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < len(wants) {
		m, err := dlq.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("dlq read after %d: %v", got, err)
		}
		got++
		h := m.Headers()
		seq, _ := strconv.ParseUint(h.Get(HeaderOriginalSeq), 10, 64)
		w, ok := wants[seq]
		if !ok {
			t.Fatalf("dead letter for unexpected seq %d: %v", seq, h)
		}
		if h.Get(HeaderOriginalSubject) != w.subject || m.Subject() != "dlq."+w.subject || h.Get(HeaderCode) != w.code ||
			h.Get(HeaderField) != w.field || h.Get(HeaderReason) == "" || h.Get(HeaderOriginalStream) != events.Stream {
			t.Fatalf("seq %d: subject %s headers %v, want %+v", seq, m.Subject(), h, w)
		}
		if w.field != "" && !strings.Contains(h.Get(HeaderReason), w.field) {
			t.Fatalf("reason %q does not name field %s", h.Get(HeaderReason), w.field)
		}
	}
}

// An event on a subject of the wrong shape is dead-lettered naming the
// subject, not a field of a payload that is itself fine.
func TestWrongShapeSubjectDeadLetterNamesTheSubject(t *testing.T) {
	e := newEnv(t)
	in := e.ingester(t, nil)
	run(t, in)
	subjects := map[uint64]string{}
	for _, c := range []struct{ subject, org string }{{"orgs.foo2.renamed", "foo2"}, {"orgs.foo4.x.created", "foo4"}} {
		ev, err := events.New(events.Created{OrgID: c.org, Slug: c.org})
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		subjects[e.publishRaw(t, c.subject, b)] = c.subject
	}
	waitFor(t, "dead letters", func() bool { return in.Stats().DeadLettered == uint64(len(subjects)) })
	dlq, err := e.js.OrderedConsumer(context.Background(), events.DLQStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for range subjects {
		m, err := dlq.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		h := m.Headers()
		seq, _ := strconv.ParseUint(h.Get(HeaderOriginalSeq), 10, 64)
		subject := subjects[seq]
		if h.Get(HeaderCode) != events.CodeBadSubject || h.Get(HeaderField) != "subject" || h.Get(HeaderOriginalSubject) != subject {
			t.Fatalf("%s: headers %v, want code %s, field subject", subject, h, events.CodeBadSubject)
		}
		if r := h.Get(HeaderReason); !strings.Contains(r, subject) || !strings.Contains(r, "orgs.<org_id>.<created|deleted|health_failed|token_rotation_requested>") {
			t.Fatalf("%s: reason %q does not name the subject and the shape expected", subject, r)
		}
	}
}

// If the dead-letter publish fails, the event is nak'ed and retried, never
// dropped; once the DLQ is back it lands there.
func TestDeadLetterFailureNaks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, events.DLQStream); err != nil {
		t.Fatal(err)
	}
	in := e.ingester(t, nil)
	run(t, in)
	seq := e.publishRaw(t, "orgs.acme.created", []byte(`{"nope":true}`))
	e.publish(t, events.Created{OrgID: "fine", Slug: "fine"})
	waitFor(t, "valid event applied", func() bool { _, ok := e.org(t, "fine"); return ok })
	waitFor(t, "dlq publish retried", func() bool { return in.Stats().Nacked >= 2 })
	if in.Stats().DeadLettered != 0 {
		t.Fatal("dead-lettered without a DLQ stream")
	}
	s, _ := e.js.Stream(ctx, events.Stream)
	if _, err := s.GetMsg(ctx, seq); err != nil {
		t.Fatalf("invalid event gone from the stream: %v", err)
	}
	if err := e.startDLQ(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dead-lettered once the DLQ exists", func() bool { return in.Stats().DeadLettered == 1 })
	waitFor(t, "consumer settled", func() bool { return e.consumerSettledAfterRedelivery(t) })
}

func (e *env) startDLQ() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return brokerEnsure(ctx, e)
}

func TestRestartResumesFromDurableConsumer(t *testing.T) {
	e := newEnv(t)
	first := e.ingester(t, nil)
	stop := run(t, first)
	for _, id := range []string{"a", "b", "c"} {
		e.publish(t, events.Created{OrgID: id, Slug: id})
	}
	waitFor(t, "first three", func() bool { return first.Stats().Applied == 3 })
	stop()

	// Published while no reconciler runs; then the broker restarts too.
	e.publish(t, events.Created{OrgID: "d", Slug: "d"})
	e.publish(t, events.Deleted{OrgID: "a"})
	e.nc.Close()
	e.srv.Shutdown()
	e.startNATS(t)

	second := e.ingester(t, nil)
	run(t, second)
	waitFor(t, "the two new events", func() bool { return second.Stats().Applied == 2 })
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	if st := second.Stats(); st.Stale != 0 || st.Applied != 2 {
		t.Fatalf("second run re-read old events: %+v", st)
	}
	if a, _ := e.org(t, "a"); a.Desired.Presence != state.Deleted {
		t.Fatalf("a: %+v", a.Desired)
	}
	if _, ok := e.org(t, "d"); !ok {
		t.Fatal("d missing")
	}
}
