package ingest

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// An existing deployment's shared consumer "reconciler" is taken over by
// the replica's own consumer at its position: nothing is delivered twice
// into the same file beyond what it lacks, nothing is skipped, and the old
// consumer is gone. The new one carries an InactiveThreshold.
func TestReplicaConsumerTakesOverLegacyPosition(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stop := run(t, e.ingester(t, nil)) // the shared consumer of earlier builds
	_, ack1 := e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	_, ack2 := e.publish(t, events.Created{OrgID: "globex", Slug: "globex"})
	waitFor(t, "the legacy consumer to settle", func() bool { return e.consumerSettled(t) })
	stop()

	in := e.ingester(t, func(c *Config) { c.Consumer = ConsumerFor("r1") })
	ctx := context.Background()
	if _, err := e.js.Consumer(ctx, events.Stream, ConsumerName); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("legacy consumer still there: %v", err)
	}
	c, err := e.js.Consumer(ctx, events.Stream, "reconciler-r1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	if cfg.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || cfg.OptStartSeq != ack2.Sequence+1 {
		t.Fatalf("new consumer starts at %v/%d, want by start sequence %d (after %d and %d)", cfg.DeliverPolicy, cfg.OptStartSeq, ack2.Sequence+1, ack1.Sequence, ack2.Sequence)
	}
	if cfg.InactiveThreshold != DefaultInactiveThreshold {
		t.Fatalf("inactive threshold %s, want %s", cfg.InactiveThreshold, DefaultInactiveThreshold)
	}
	run(t, in)
	e.publish(t, events.Created{OrgID: "hooli", Slug: "hooli"})
	waitFor(t, "the new consumer to apply the next event", func() bool { _, ok := e.org(t, "hooli"); return ok })
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer != 1 {
		t.Fatalf("new consumer delivered %d events, want only the new one", info.Delivered.Consumer)
	}
}

// A replica whose consumer does not exist yet, beside another replica's,
// starts from the beginning into its empty file: every replica holds
// every org.
func TestSecondReplicaConsumerReadsEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run(t, e.ingester(t, func(c *Config) { c.Consumer = ConsumerFor("a") }))
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	waitFor(t, "replica a applies", func() bool { _, ok := e.org(t, "acme"); return ok })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{"reconciler-a"} {
		if _, err := e.js.Consumer(ctx, events.Stream, name); err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
	}
	// Replica b has its own file: a second env on the same server.
	b := &env{js: e.js, v: e.v}
	b.store = openStore(t)
	in := b.ingester(t, func(c *Config) { c.Consumer = ConsumerFor("b") })
	run(t, in)
	waitFor(t, "replica b applies the earlier event", func() bool { _, ok := b.org(t, "acme"); return ok })
}

func openStore(t *testing.T) *state.Store {
	t.Helper()
	s, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
