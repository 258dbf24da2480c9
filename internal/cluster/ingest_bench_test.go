package cluster_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/state"
)

// BenchmarkClusterIngest is issue 14's ingest figure: on the 3-node
// JetStream cluster with R3 streams, two replicas each ingest the whole
// event stream into their own bbolt (as every replica does) at the same
// time, beside a raw fetch + ack of the same stream on the same cluster.
//
//	go test -run '^$' -bench ClusterIngest -benchtime 1x ./internal/cluster
func BenchmarkClusterIngest(b *testing.B) {
	const n = 50_000
	srvs := startJSCluster(b)
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.ClientURL())
	}
	ctx := context.Background()
	nc, err := nats.Connect(urls[0]+","+urls[1]+","+urls[2], nats.Name("bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if err := broker.EnsureStreamsReplicated(ctx, js, 3, nil); err != nil {
		b.Fatal(err)
	}
	v, err := events.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		org := fmt.Sprintf("org-%d", (i/10)%2000)
		var data any = events.Created{OrgID: org, Slug: org}
		if i%10 == 9 {
			data = events.Deleted{OrgID: org}
		}
		ev, _ := events.New(data)
		payload, err := v.Validate(ev)
		if err != nil {
			b.Fatal(err)
		}
		m := &nats.Msg{Subject: ev.NATSSubject(), Data: payload, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("publish did not complete")
	}
	b.ResetTimer()

	// Raw: fetch and ack every message, as fast as the cluster answers.
	cfg := ingest.ConsumerConfig(30 * time.Second)
	cfg.Durable = "raw-bench"
	cons, err := js.CreateOrUpdateConsumer(ctx, events.Stream, cfg)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for got := 0; got < n; {
		batch, err := cons.Fetch(1024, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				b.Fatal(err)
			}
			got++
		}
		if err := batch.Error(); err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	raw := time.Since(start)

	// Two replicas ingesting at once, each through its own connection,
	// consumer and state file.
	took := make([]time.Duration, 2)
	var wg sync.WaitGroup
	for i := range took {
		rnc, err := nats.Connect(urls[i]+","+urls[(i+1)%3]+","+urls[(i+2)%3], nats.Name(fmt.Sprintf("replica-%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(rnc.Close)
		rjs, _ := jetstream.New(rnc)
		st, err := state.Open(filepath.Join(b.TempDir(), "state.db"), state.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		in, err := ingest.New(ctx, ingest.Config{Consumer: ingest.ConsumerFor(fmt.Sprint("r", i)), JS: rjs, Store: st, Validator: v,
			MaxWait: 200 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			t0 := time.Now()
			done := make(chan error, 1)
			go func() { done <- in.Run(rctx) }()
			for {
				s := in.Stats()
				if s.Applied+s.Stale+s.Ignored+s.DeadLettered >= n {
					break
				}
				time.Sleep(time.Millisecond)
			}
			took[i] = time.Since(t0)
			cancel()
			<-done
		})
	}
	wg.Wait()
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	b.ReportMetric(rate(raw), "raw_consume_ack_events/s")
	b.ReportMetric(rate(took[0]), "ingest_replica1_events/s")
	b.ReportMetric(rate(took[1]), "ingest_replica2_events/s")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d events on R3: raw fetch+ack %.0f events/s; two replicas ingesting at once %.0f and %.0f events/s each (%.2f and %.2f of raw)",
		n, rate(raw), rate(took[0]), rate(took[1]), rate(took[0])/rate(raw), rate(took[1])/rate(raw))
}
