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

const benchEvents = 20000

// BenchmarkIngest measures full ingest (fetch, validate against the JSON
// Schema and semantic rules, apply to bbolt in batched transactions, ack
// after commit) beside raw consumption (fetch and ack the very same
// messages, no work) through the same fetch loop, in one run, and prints
// both rates and their ratio.
//
//	go test -run '^$' -bench BenchmarkIngest -benchtime 3x ./internal/ingest
func BenchmarkIngest(b *testing.B) {
	var rawTotal, ingTotal time.Duration
	runs := 0
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b)
		publishBench(b, e, benchEvents)
		b.StartTimer()

		raw := rawConsume(b, e, benchEvents)
		ing := ingestAll(b, e, benchEvents)
		rawTotal += raw
		ingTotal += ing
		runs++
	}
	rawRate := float64(benchEvents*runs) / rawTotal.Seconds()
	ingRate := float64(benchEvents*runs) / ingTotal.Seconds()
	b.ReportMetric(ingRate, "ingest_events/s")
	b.ReportMetric(rawRate, "raw_consume_ack_events/s")
	b.ReportMetric(ingRate/rawRate, "ratio")
	b.ReportMetric(0, "ns/op") // the per-op time mixes both halves; the rates above are the figures
	fmt.Printf("ingest: %d events x %d runs: full ingest %.0f events/s, raw consume+ack %.0f events/s, ratio %.2f\n",
		benchEvents, runs, ingRate, rawRate, ingRate/rawRate)
}

// publishBench puts n valid events of all three types on the stream.
func publishBench(b *testing.B, e *env, n int) {
	b.Helper()
	for i := 0; i < n; i++ {
		// Each org's life: created, slug updates, a health report, one
		// more update, deleted; 2000 orgs, interleaved in blocks.
		org := fmt.Sprintf("org-%d", (i/10)%2000)
		var data any
		switch i % 10 {
		case 7:
			data = events.HealthFailed{OrgID: org, Reason: "probe: 530", Observer: "bench"}
		case 9:
			data = events.Deleted{OrgID: org}
		default:
			data = events.Created{OrgID: org, Slug: org, Region: "eu-west-1"}
		}
		ev, _ := events.New(data)
		payload, err := e.v.Validate(ev)
		if err != nil {
			b.Fatal(err)
		}
		m := &nats.Msg{Subject: ev.NATSSubject(), Data: payload, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := e.js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish did not complete")
	}
}

func rawConsume(b *testing.B, e *env, n int) time.Duration {
	b.Helper()
	ctx := context.Background()
	cfg := ConsumerConfig(30 * time.Second)
	cfg.Durable = "raw-bench"
	cons, err := e.js.CreateOrUpdateConsumer(ctx, events.Stream, cfg)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for got := 0; got < n; {
		msgs, err := fetchBatch(ctx, cons, 1024, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				b.Fatal(err)
			}
		}
		got += len(msgs)
	}
	if err := e.nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func ingestAll(b *testing.B, e *env, n int) time.Duration {
	b.Helper()
	in := e.ingester(b, func(c *Config) { c.OnApplied = nil })
	start := time.Now()
	stop := run(b, in)
	for {
		st := in.Stats()
		if st.Applied+st.Stale+st.Ignored+st.DeadLettered >= uint64(n) {
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	d := time.Since(start)
	stop()
	if st := in.Stats(); st.DeadLettered != 0 {
		b.Fatalf("valid events dead-lettered: %+v", st)
	}
	return d
}
