package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// ConsumerFor is the durable consumer of a replica: every replica reads
// every event through its own, into its own state file, so any replica can
// take over any org without a replay.
func ConsumerFor(replicaID string) string { return ConsumerName + "-" + replicaID }

// takeOverLegacy keeps an existing deployment's position when its
// reconciler first runs with a per-replica consumer name: the shared
// consumer of earlier builds (ConsumerName) fed this state file, so the new
// consumer starts after its ack floor (acks follow commits: everything up
// to the floor is in the file), bounded by the file's own applied-through
// mark (a fresh file beside an old consumer starts from the beginning),
// and the old consumer is removed. It returns the first stream sequence
// the new consumer delivers (0: not a take-over; the consumer's own
// configuration decides).
func takeOverLegacy(ctx context.Context, js jetstream.JetStream, store *state.Store, name string, log *slog.Logger) (uint64, error) {
	if name == ConsumerName {
		return 0, nil
	}
	if _, err := js.Consumer(ctx, events.Stream, name); err == nil {
		return 0, nil // ours exists: it knows its position
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, fmt.Errorf("ingest: look up durable consumer %s: %w", name, err)
	}
	old, err := js.Consumer(ctx, events.Stream, ConsumerName)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ingest: look up the earlier shared consumer %s: %w", ConsumerName, err)
	}
	floor := old.CachedInfo().AckFloor.Stream
	through, known, err := store.AppliedThrough()
	if err != nil {
		return 0, fmt.Errorf("ingest: read the state file's applied-through mark to take over consumer %s: %w", ConsumerName, err)
	}
	start := floor + 1
	if known && through < floor {
		start = through + 1 // the file is behind the old consumer: deliver what it lacks
	}
	if !known {
		empty := true
		if err := store.ForEach(func(state.Org) error { empty = false; return errStop }); err != nil && !errors.Is(err, errStop) {
			return 0, fmt.Errorf("ingest: read the state file to take over consumer %s: %w", ConsumerName, err)
		}
		if empty {
			start = 1
		}
	}
	if err := js.DeleteConsumer(ctx, events.Stream, ConsumerName); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, fmt.Errorf("ingest: remove the earlier shared consumer %s (taken over by %s): %w", ConsumerName, name, err)
	}
	log.Warn("durable consumer renamed for replicas: the earlier shared consumer's position is taken over and it is removed",
		"old_consumer", ConsumerName, "consumer", name, "old_ack_floor_seq", floor, "applied_through_seq", through, "deliver_from_seq", start)
	return start, nil
}
