package ingest

import (
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
)

// Reason codes for the message headers (the body's codes are events.Code*).
const (
	CodeMissingMsgID  = "missing_msg_id"
	CodeMsgIDMismatch = "msg_id_mismatch"
)

// decodeMsg validates a stream message: the payload as events.Validator does,
// then the Nats-Msg-Id header, which must carry the event's id. Without it
// the stream cannot drop a publisher's retry, and a retried org.created that
// lands after an org.deleted would resurrect the org; so such a message is
// dead-lettered like any other contract breach, and replay skips it the same
// way. Body errors are reported first.
func decodeMsg(v *events.Validator, subject string, h nats.Header, payload []byte) (events.Event, error) {
	ev, err := v.Decode(subject, payload)
	if err != nil {
		return ev, err
	}
	switch id := h.Get(jetstream.MsgIDHeader); {
	case id == "":
		return events.Event{}, &events.ValidationError{Code: CodeMissingMsgID, Field: jetstream.MsgIDHeader,
			Detail: "header Nats-Msg-Id is missing; publish with Nats-Msg-Id = the event id so retries are deduplicated"}
	case id != ev.ID:
		return events.Event{}, &events.ValidationError{Code: CodeMsgIDMismatch, Field: jetstream.MsgIDHeader,
			Detail: "header Nats-Msg-Id " + quote(id) + " differs from the event id " + quote(ev.ID)}
	}
	return ev, nil
}

// quote bounds and escapes a header value for the dead-letter reason.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
