package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
)

// Run's three stages (fetch, validate, commit+ack) each hold a batch. A
// stop in the middle of a stream must still commit and ack every batch
// fetched, and a restart must apply the rest: each event applied exactly
// once, every org ending at its last event.
func TestStopMidStreamLosesNothing(t *testing.T) {
	const n, orgs = 3000, 30
	e := newEnv(t)
	last := map[string]uint64{} // org -> stream seq of its last event
	var futures []jetstream.PubAckFuture
	for i := 0; i < n; i++ {
		org := fmt.Sprintf("org-%d", i%orgs)
		ev, err := events.New(events.Created{OrgID: org, Slug: fmt.Sprintf("%s-%d", org, i)})
		if err != nil {
			t.Fatal(err)
		}
		payload, err := e.v.Validate(ev)
		if err != nil {
			t.Fatal(err)
		}
		m := &nats.Msg{Subject: ev.NATSSubject(), Data: payload, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		f, err := e.js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			last[fmt.Sprintf("org-%d", i%orgs)] = ack.Sequence
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("publish not acknowledged")
		}
	}

	// Small batches keep every stage busy when the stop comes (from the
	// committer itself, so it lands mid-stream however fast this machine
	// is); a short ack wait brings back quickly anything a stopping fetch
	// left on the server.
	small := func(c *Config) { c.BatchSize, c.AckWait, c.OnApplied = 64, 2*time.Second, nil }
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	first := e.ingester(t, func(c *Config) {
		small(c)
		c.OnApplied = func(string) {
			if calls++; calls == 100 {
				cancel()
			}
		}
	})
	if err := first.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if a := first.Stats().Applied; a == 0 || a >= n {
		t.Fatalf("first run applied %d of %d events; the test needs a stop mid-stream", a, n)
	}
	// Everything the first run fetched was committed and acked before Run
	// returned; only a wait-for-one fetch cut short by the stop can leave a
	// message delivered to nobody (it comes back after the ack wait). Run
	// flushed the acks to the server, which applies them to the consumer
	// asynchronously: look for up to half the ack wait, well before an
	// unacked message would be taken back and so hidden.
	var pending int
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		info, err := first.cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if pending = info.NumAckPending; pending <= 1 || time.Now().After(deadline) {
			break
		}
	}
	if pending > 1 {
		t.Fatalf("after a graceful stop: %d events fetched but not acked", pending)
	}

	second := e.ingester(t, small)
	run(t, second)
	waitFor(t, "every event", func() bool { return first.Stats().Applied+second.Stats().Applied >= n })
	waitFor(t, "the consumer to settle", func() bool {
		info, err := second.cons.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	s1, s2 := first.Stats(), second.Stats()
	if s1.Applied+s2.Applied != n || s1.DeadLettered+s2.DeadLettered != 0 || s1.Nacked+s2.Nacked != 0 {
		t.Fatalf("want each of %d events applied once: first %+v, second %+v", n, s1, s2)
	}
	for org, seq := range last {
		o, ok := e.org(t, org)
		if !ok || o.LastSeq != seq || o.DesiredSeq != seq {
			t.Fatalf("%s: last seq %d (desired %d), want %d", org, o.LastSeq, o.DesiredSeq, seq)
		}
	}
}
