package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
)

// PublishEvent validates ev exactly as ingest will and publishes it to
// ORG_EVENTS with Nats-Msg-Id = event id, so a retried publish is stored
// once. It waits for the stream's ack; PubAck.Duplicate reports a dropped
// duplicate. Brief unavailability (no responders while the server or
// stream comes up) is retried until ctx ends.
func PublishEvent(ctx context.Context, js jetstream.JetStream, v *events.Validator, ev events.Event) (*jetstream.PubAck, error) {
	payload, err := v.Validate(ev)
	if err != nil {
		return nil, err
	}
	return PublishPayload(ctx, js, ev.NATSSubject(), ev.ID, payload)
}

// publishAttempt bounds one publish attempt's wait for the stream's ack.
const publishAttempt = 2 * time.Second

// PublishPayload publishes an already validated payload.
func PublishPayload(ctx context.Context, js jetstream.JetStream, subject, id string, payload []byte) (*jetstream.PubAck, error) {
	msg := &nats.Msg{Subject: subject, Data: payload, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	backoff := 100 * time.Millisecond
	for {
		// Each attempt has its own deadline: a request sent just as its
		// server died (a cluster node, the stream's leader) gets no ack,
		// and waiting for one until ctx ends would never try the new
		// leader. The message id makes the retry safe.
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		ack, err := js.PublishMsg(actx, msg, jetstream.WithExpectStream(events.Stream))
		cancel()
		if err == nil {
			return ack, nil
		}
		if !transient(err) {
			return nil, fmt.Errorf("publish %s (id %s): %w", subject, id, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("publish %s (id %s): gave up: %w (last error: %v)", subject, id, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}
