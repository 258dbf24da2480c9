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

// rewindIfBehind guards against a lost or restored state file and returns
// the consumer configuration New creates or updates the durable consumer
// with. Acks follow commits, so a current file has applied everything the
// consumer acked. If the consumer's ack floor is beyond the file's
// applied-through mark (state.AppliedThrough), the file was replaced by an
// older copy (a restored backup): the events acked since would never be
// applied again, silently. So the consumer is deleted and recreated to
// deliver from mark+1 (mark 0: from the first event); events up to the mark
// are in the file, and redelivered ones after it that are too are stale
// no-ops.
//
// A file without the mark (written by an older build) gives no such
// evidence; then only the empty-file rule applies: a file holding no org
// at all under a consumer that already acked events was deleted, emptied
// or replaced, and ingest rebuilds desired state from the whole stream
// (otherwise the sweep would collect every org's resources as orphans).
// Observed resource ids are not in the stream: the engine finds the
// resources again by name and tags.
//
// The mark is a high-water mark: an event below it that was still
// outstanding when the backup was taken (redelivered after a crash, a
// deferred health report) is not recovered by this; `reconciler replay`
// rebuilds from the whole stream.
func rewindIfBehind(ctx context.Context, js jetstream.JetStream, store *state.Store, base jetstream.ConsumerConfig, log *slog.Logger) (jetstream.ConsumerConfig, error) {
	ccfg := base
	ConsumerName := base.Durable
	cons, err := js.Consumer(ctx, events.Stream, ConsumerName)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return ccfg, nil
	}
	if err != nil {
		return ccfg, fmt.Errorf("ingest: look up durable consumer %s: %w", ConsumerName, err)
	}
	info := cons.CachedInfo()
	if info.Config.DeliverPolicy == jetstream.DeliverByStartSequencePolicy {
		// Left by an earlier rewind; a deliver policy cannot be updated.
		ccfg.DeliverPolicy, ccfg.OptStartSeq = info.Config.DeliverPolicy, info.Config.OptStartSeq
	}
	floor := info.AckFloor.Stream
	if floor == 0 {
		return ccfg, nil // nothing acked, so nothing was ever committed: deliveries resume from the start anyway
	}
	through, known, err := store.AppliedThrough()
	if err != nil {
		// An unreadable store fails every commit anyway; the loop reports it.
		log.Warn("cannot read the state file's applied-through mark; not checking the consumer", "state", store.Path(), "err", err)
		return ccfg, nil
	}
	var start uint64 // first seq to deliver again
	switch {
	case known && floor > through:
		start = through + 1
		log.Warn("state file is behind the durable consumer (restored from an older backup?): events acked after it was written were never applied to it; recreating the consumer to deliver them again",
			"state", store.Path(), "consumer", ConsumerName, "applied_through_seq", through, "ack_floor_seq", floor,
			"delivered_seq", info.Delivered.Stream, "redeliver_from_seq", start)
	case known:
		return ccfg, nil
	default:
		empty := true
		err := store.ForEach(func(state.Org) error { empty = false; return errStop })
		if err != nil && !errors.Is(err, errStop) {
			log.Warn("cannot tell whether the state file is empty; not checking the consumer", "state", store.Path(), "err", err)
			return ccfg, nil
		}
		if !empty {
			return ccfg, nil // an older build's file: no mark to compare, and no evidence it is behind
		}
		start = 1
		log.Warn("state file holds no org but the durable consumer already consumed events: rebuilding desired state from the whole stream",
			"state", store.Path(), "consumer", ConsumerName, "ack_floor_seq", floor, "delivered_seq", info.Delivered.Stream)
	}
	if err := js.DeleteConsumer(ctx, events.Stream, ConsumerName); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return ccfg, fmt.Errorf("ingest: reset durable consumer %s to redeliver from seq %d into the state file %s: %w", ConsumerName, start, store.Path(), err)
	}
	ccfg = base
	ccfg.DeliverPolicy, ccfg.OptStartSeq = jetstream.DeliverAllPolicy, 0
	if start > 1 {
		ccfg.DeliverPolicy, ccfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	return ccfg, nil
}
