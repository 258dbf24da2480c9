package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/state"
)

// natsEnv is an embedded nats-server with tunnelward's streams.
type natsEnv struct {
	dir string
	srv *broker.Embedded
	nc  *nats.Conn
	js  jetstream.JetStream
	v   *events.Validator
}

func newNATS(ctx context.Context) (*natsEnv, error) {
	dir, err := os.MkdirTemp("", "tunnelward-bench-nats-")
	if err != nil {
		return nil, err
	}
	e := &natsEnv{dir: dir}
	if e.srv, err = broker.StartEmbedded("127.0.0.1:0", filepath.Join(dir, "nats")); err != nil {
		e.close()
		return nil, err
	}
	if e.nc, err = broker.Connect(e.srv.ClientURL(), "", "tunnelward-bench", nil); err != nil {
		e.close()
		return nil, err
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		e.close()
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := broker.EnsureStreams(cctx, e.js, nil); err != nil {
		e.close()
		return nil, err
	}
	if e.v, err = events.NewValidator(); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *natsEnv) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.srv != nil {
		e.srv.Shutdown()
	}
	_ = os.RemoveAll(e.dir)
}

// publish puts n events on ORG_EVENTS, asynchronously, each with its
// Nats-Msg-Id, in internal/ingest's benchmark mix: each org's life is ten
// events in a block (created, slug/option updates, one health report, one
// more update, deleted), cycling over orgs orgs. Every event is one ingest
// applies: none is a health report for an org not created yet (ingest
// defers those for seconds, which would measure the deferral, not ingest).
// validate runs the publisher's validation on each event (the figure's
// events are then exactly what a real publisher sends); replay's million
// events skip it to keep the setup short: they are built valid.
func (e *natsEnv) publish(ctx context.Context, n, orgs int, validate bool) error {
	for i := 0; i < n; i++ {
		org := fmt.Sprintf("org-%d", (i/10)%orgs)
		var data any
		switch i % 10 {
		case 7:
			data = events.HealthFailed{OrgID: org, Reason: "probe: 530", Observer: "bench"}
		case 9:
			data = events.Deleted{OrgID: org}
		default:
			data = events.Created{OrgID: org, Slug: org, Region: "eu-west-1"}
		}
		ev, err := events.New(data)
		if err != nil {
			return err
		}
		var payload []byte
		if validate {
			payload, err = e.v.Validate(ev)
		} else {
			payload, err = ev.MarshalJSON()
		}
		if err != nil {
			return err
		}
		m := &nats.Msg{Subject: ev.NATSSubject(), Data: payload, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		// A loaded machine acks slowly; wait for room in the async window
		// rather than fail after the default 200 ms stall.
		if _, err := e.js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			return fmt.Errorf("publish event %d: %w", i, err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Minute):
		return errors.New("publishing did not complete in 5 minutes")
	}
}

// rawConsume fetches and acks n messages through a fresh durable consumer
// with ingest's own consumer configuration and fetch pattern (up to 1024
// available at once, else wait for one), doing no work: the bound of what
// ingest can reach on this server.
func (e *natsEnv) rawConsume(ctx context.Context, name string, n int) (time.Duration, error) {
	cfg := ingest.ConsumerConfig(30 * time.Second)
	cfg.Durable = name
	cons, err := e.js.CreateOrUpdateConsumer(ctx, events.Stream, cfg)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for got := 0; got < n; {
		b, err := cons.FetchNoWait(1024)
		if err != nil {
			return 0, err
		}
		k := 0
		for m := range b.Messages() {
			if err := m.Ack(); err != nil {
				return 0, err
			}
			k++
		}
		if k == 0 {
			b, err = cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return 0, err
			}
			for m := range b.Messages() {
				if err := m.Ack(); err != nil {
					return 0, err
				}
				k++
			}
		}
		got += k
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	if err := e.nc.Flush(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func benchIngest(ctx context.Context, o Options) ([]Row, error) {
	n := pick(o, 2_000, 20_000, 100_000)
	e, err := newNATS(ctx)
	if err != nil {
		return nil, err
	}
	defer e.close()
	if err := e.publish(ctx, n, 2000, true); err != nil {
		return nil, err
	}
	raw1, err := e.rawConsume(ctx, "bench-raw-1", n)
	if err != nil {
		return nil, fmt.Errorf("raw consume: %w", err)
	}

	st, err := state.Open(filepath.Join(e.dir, "state.db"), state.Options{})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	in, err := ingest.New(ctx, ingest.Config{JS: e.js, Store: st, Validator: e.v, MaxWait: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- in.Run(rctx) }()
	deadline := time.After(5 * time.Minute)
	for {
		s := in.Stats()
		if s.Applied+s.Stale+s.Ignored+s.DeadLettered >= uint64(n) {
			break
		}
		select {
		case <-deadline:
			cancel()
			return nil, fmt.Errorf("ingest settled %d of %d events in 5 minutes", s.Applied+s.Stale+s.Ignored+s.DeadLettered, n)
		case <-time.After(200 * time.Microsecond):
		}
	}
	took := time.Since(start)
	cancel()
	<-done
	if s := in.Stats(); s.DeadLettered != 0 {
		return nil, fmt.Errorf("valid events dead-lettered: %+v", s)
	}
	// Raw again after ingest, so neither side alone had a cold page cache;
	// the faster raw run is the bound.
	raw2, err := e.rawConsume(ctx, "bench-raw-2", n)
	if err != nil {
		return nil, fmt.Errorf("raw consume: %w", err)
	}
	raw := min(raw1, raw2)
	ingRate, rawRate := float64(n)/took.Seconds(), float64(n)/raw.Seconds()
	ratio := ingRate / rawRate
	return []Row{{
		Figure:   "1 ingest: events/s validated+committed+acked",
		Measured: fmt.Sprintf("%s ev/s (ratio %.2f)", thousands(ingRate), ratio),
		Bound:    fmt.Sprintf("raw JetStream fetch+ack %s ev/s", thousands(rawRate)),
		Goal:     "ratio >= 0.5",
		Met:      met(ratio >= 0.5),
		Note: fmt.Sprintf("ingest: %d events (per org: created, updates, health_failed, deleted; 2000 orgs) on an embedded nats-server, file store; the real ingest.Ingester, batches of 1024 per bbolt tx; raw = same consumer config and fetch pattern, ack only, better of runs before and after ingest (%s, %s)",
			n, secs(raw1), secs(raw2)),
	}}, nil
}
