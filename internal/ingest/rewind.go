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

var errStop = errors.New("stop")

// rewindIfStoreEmpty guards against a lost state file. If the state file
// holds no org at all while the durable consumer has already acked events
// (acks follow commits), the file was deleted, emptied or replaced: the events the
// consumer acked would never be applied again, desired state would stay
// empty, and the sweep would then collect every org's resources as
// orphans. So the consumer is deleted and recreated from the first event,
// and ingest rebuilds desired state from the stream (replay for repair).
// Observed resource ids are not in the stream: the engine finds the
// resources again by name and tags. It returns whether it rewound.
func rewindIfStoreEmpty(ctx context.Context, js jetstream.JetStream, store *state.Store, log *slog.Logger) (bool, error) {
	empty := true
	err := store.ForEach(func(state.Org) error { empty = false; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		// An unreadable store fails every commit anyway; the loop reports it.
		log.Warn("cannot tell whether the state file is empty; not checking the consumer", "state", store.Path(), "err", err)
		return false, nil
	}
	if !empty {
		return false, nil
	}
	cons, err := js.Consumer(ctx, events.Stream, ConsumerName)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ingest: look up durable consumer %s: %w", ConsumerName, err)
	}
	info := cons.CachedInfo()
	if info.AckFloor.Stream == 0 {
		return false, nil // nothing acked, so nothing was ever committed: deliveries resume from the start anyway
	}
	log.Warn("state file holds no org but the durable consumer already consumed events: rebuilding desired state from the whole stream",
		"state", store.Path(), "consumer", ConsumerName, "ack_floor_seq", info.AckFloor.Stream, "delivered_seq", info.Delivered.Stream)
	if err := js.DeleteConsumer(ctx, events.Stream, ConsumerName); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, fmt.Errorf("ingest: reset durable consumer %s to rebuild the empty state file %s: %w", ConsumerName, store.Path(), err)
	}
	return true, nil
}
