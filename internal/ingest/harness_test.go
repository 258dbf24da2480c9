package ingest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// env is one test's world: a real embedded nats-server with the streams, a
// bbolt file and a validator.
type env struct {
	t        *testing.T
	natsDir  string
	srv      *broker.Embedded
	nc       *nats.Conn
	js       jetstream.JetStream
	store    *state.Store
	dbPath   string
	v        *events.Validator
	mu       sync.Mutex
	notified []string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{natsDir: t.TempDir(), dbPath: filepath.Join(t.TempDir(), "state.db")}
	e.startNATS(t)
	var err error
	if e.v, err = events.NewValidator(); err != nil {
		t.Fatal(err)
	}
	if e.store, err = state.Open(e.dbPath, state.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if e.store != nil {
			e.store.Close()
		}
	})
	return e
}

func (e *env) startNATS(t testing.TB) {
	t.Helper()
	srv, err := broker.StartEmbedded("127.0.0.1:0", e.natsDir)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	t.Cleanup(srv.Shutdown)
	if e.nc, err = broker.Connect(srv.ClientURL(), "", "test", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.EnsureStreams(ctx, e.js, nil); err != nil {
		t.Fatal(err)
	}
}

func (e *env) ingester(t testing.TB, mod func(*Config)) *Ingester {
	t.Helper()
	cfg := Config{JS: e.js, Store: e.store, Validator: e.v, MaxWait: 200 * time.Millisecond, RetryDelay: 100 * time.Millisecond, DeferDelay: 50 * time.Millisecond,
		OnApplied: func(id string) { e.mu.Lock(); e.notified = append(e.notified, id); e.mu.Unlock() }}
	if mod != nil {
		mod(&cfg)
	}
	in, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// run starts in and returns a stop function that cancels it and waits.
func run(t testing.TB, in *Ingester) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) publish(t testing.TB, data any) (events.Event, *jetstream.PubAck) {
	t.Helper()
	ev, err := events.New(data)
	if err != nil {
		t.Fatal(err)
	}
	return ev, e.publishEvent(t, ev)
}

func (e *env) publishEvent(t testing.TB, ev events.Event) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := broker.PublishEvent(ctx, e.js, e.v, ev)
	if err != nil {
		t.Fatal(err)
	}
	return ack
}

// publishRaw bypasses validation, as a broken or hostile publisher would.
func (e *env) publishRaw(t testing.TB, subject string, payload []byte) uint64 {
	t.Helper()
	ack, err := e.js.Publish(context.Background(), subject, payload)
	if err != nil {
		t.Fatalf("raw publish %s: %v", subject, err)
	}
	return ack.Sequence
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) org(t testing.TB, id string) (state.Org, bool) {
	t.Helper()
	o, ok, err := e.store.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return o, ok
}

// consumerSettled reports whether the durable consumer has nothing pending
// and nothing unacked.
func (e *env) consumerSettled(t testing.TB) bool {
	c, err := e.js.Consumer(context.Background(), events.Stream, ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
}

func brokerEnsure(ctx context.Context, e *env) error { return broker.EnsureStreams(ctx, e.js, nil) }
