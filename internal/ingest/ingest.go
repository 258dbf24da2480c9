// Package ingest turns events in ORG_EVENTS into desired state: a durable
// pull consumer fetches batches, each event is validated, the valid ones are
// applied to bbolt in one transaction, and only after it commits are they
// acked. Invalid events go to ORG_EVENTS_DLQ and are terminated; if the
// dead-letter publish fails they are nak'ed, never dropped.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/crashpoint"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// ConsumerName is the durable consumer ingest reads through when
// Config.Consumer is empty, and the one every reconciler shared before
// replicas (a daemon now reads through ConsumerFor its replica id and takes
// over this one's position: consumer.go).
const ConsumerName = "reconciler"

// DefaultInactiveThreshold is how long the server keeps a replica's
// durable consumer without a fetch before it removes it (a replica taken
// out of service). A replica back after longer gets a new consumer that
// resumes from its state file's applied-through mark.
const DefaultInactiveThreshold = 72 * time.Hour

// Dead-letter headers.
const (
	HeaderReason          = "Tw-Dlq-Reason" // human-readable: what is wrong, naming the field
	HeaderCode            = "Tw-Dlq-Code"   // machine-readable reason code (events.Code*)
	HeaderField           = "Tw-Dlq-Field"  // the offending field, if any: a JSON pointer, "subject" (the NATS subject) or "Nats-Msg-Id"
	HeaderOriginalSubject = "Tw-Dlq-Original-Subject"
	HeaderOriginalStream  = "Tw-Dlq-Original-Stream"
	HeaderOriginalSeq     = "Tw-Dlq-Original-Seq"
	HeaderOriginalMsgID   = "Tw-Dlq-Original-Msg-Id"
)

// Config configures an Ingester.
type Config struct {
	// Consumer is the durable consumer's name: ConsumerFor(replica id) in
	// the daemon, ConsumerName when empty.
	Consumer string
	// InactiveThreshold: the server removes the consumer after this long
	// without a fetch (default DefaultInactiveThreshold; < 0: never).
	InactiveThreshold time.Duration
	JS                jetstream.JetStream
	Store             *state.Store
	Validator         *events.Validator
	Log               *slog.Logger
	// BatchSize is the most events fetched and committed in one bbolt
	// transaction (default 1024). Big batches amortise bbolt's page
	// rewrites and fsync; when idle a batch is whatever has arrived.
	BatchSize int
	// MaxWait is how long one fetch waits for the first event (default 1 s);
	// it bounds how long shutdown waits for an idle fetch.
	MaxWait time.Duration
	// AckWait is the consumer's ack deadline (default 30 s).
	AckWait time.Duration
	// RetryDelay is the pause after a failed fetch or commit (default 1 s).
	RetryDelay time.Duration
	// DeferAttempts and DeferDelay: a health_failed or
	// token_rotation_requested for an org not known (yet) is asked for
	// again after DeferDelay until it was delivered DeferAttempts times
	// (defaults: 2 s, and enough attempts to outlast AckWait plus three),
	// then acked as ignored.
	DeferAttempts int
	DeferDelay    time.Duration
	// OnApplied receives each org id whose record an event changed, after
	// the commit. It must not block for long: ingest waits for it. nil: none.
	OnApplied func(orgID string)
	// Metrics counts events by type and result and dead letters by reason
	// (*metrics.Metrics satisfies it); nil counts nothing.
	Metrics Metrics
}

// Metrics is what ingest reports for metrics.
type Metrics interface {
	IngestedEvent(typ, result string)
	DeadLetter(reason string)
}

type noMetrics struct{}

func (noMetrics) IngestedEvent(string, string) {}
func (noMetrics) DeadLetter(string)            {}

// Ingest results beside state's (applied, stale, ignored_unknown,
// ignored_deleted), for the events_ingested metric.
const (
	resultDeferred = "deferred" // health report or rotation request for an org not known yet, asked for again later
	resultInvalid  = "invalid"  // dead-lettered
)

// Stats are counters since start.
type Stats struct {
	Batches      uint64 `json:"batches"`
	Applied      uint64 `json:"applied"`
	Stale        uint64 `json:"stale"`
	Ignored      uint64 `json:"ignored"`
	DeadLettered uint64 `json:"dead_lettered"`
	Deferred     uint64 `json:"deferred"`
	Nacked       uint64 `json:"nacked"`
}

// Ingester runs the consume-validate-apply-ack loop.
type Ingester struct {
	cfg  Config
	log  *slog.Logger
	cons jetstream.Consumer

	batches, applied, stale, ignored, dead, nacked, deferred atomic.Uint64

	mu        sync.Mutex
	running   bool
	fetchErr  error
	commitErr error
}

// ConsumerConfig is the durable consumer's configuration.
func ConsumerConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "tunnelward ingest: events -> bbolt desired state",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		// Unlimited: an event that cannot be dead-lettered is retried, never dropped.
		MaxDeliver:    -1,
		MaxAckPending: 8192, // room for the batch being fetched beside the one being committed
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// New creates or updates the durable consumer and returns an Ingester.
func New(ctx context.Context, cfg Config) (*Ingester, error) {
	if cfg.JS == nil || cfg.Store == nil || cfg.Validator == nil {
		return nil, errors.New("ingest: JS, Store and Validator are required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1024
	}
	if cfg.Consumer == "" {
		cfg.Consumer = ConsumerName
	}
	if cfg.InactiveThreshold == 0 {
		cfg.InactiveThreshold = DefaultInactiveThreshold
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = time.Second
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if cfg.DeferDelay <= 0 {
		cfg.DeferDelay = 2 * time.Second
	}
	if cfg.DeferAttempts <= 0 {
		// The created a report waits for was delivered to a process that
		// died; JetStream redelivers it only after AckWait. Waiting less
		// than that drops the report (found by the random-kill runs).
		cfg.DeferAttempts = int((cfg.AckWait+cfg.DeferDelay-1)/cfg.DeferDelay) + 3
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	base := ConsumerConfig(cfg.AckWait)
	base.Durable = cfg.Consumer
	if cfg.InactiveThreshold > 0 {
		base.InactiveThreshold = cfg.InactiveThreshold
	}
	// Each attempt has its own deadline and a lost answer (a server
	// killed, a leader being elected) is tried again until ctx ends: the
	// steps are idempotent (an existing consumer of ours is kept).
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, broker.AttemptTimeout)
		cons, err := consumerFor(actx, cfg, base, log)
		cancel()
		if err == nil {
			return &Ingester{cfg: cfg, log: log.With("component", "ingest"), cons: cons}, nil
		}
		if !broker.Transient(err) || ctx.Err() != nil {
			return nil, err
		}
		log.Warn("ingest: JetStream did not answer; trying again", "consumer", cfg.Consumer, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// consumerFor takes over the earlier shared consumer if there is one,
// rewinds when the state file is behind, and creates or updates this
// process's durable consumer.
func consumerFor(ctx context.Context, cfg Config, base jetstream.ConsumerConfig, log *slog.Logger) (jetstream.Consumer, error) {
	start, err := takeOverLegacy(ctx, cfg.JS, cfg.Store, cfg.Consumer, log)
	if err != nil {
		return nil, err
	}
	if start > 1 {
		base.DeliverPolicy, base.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	ccfg, err := rewindIfBehind(ctx, cfg.JS, cfg.Store, base, log)
	if err != nil {
		return nil, err
	}
	cons, err := cfg.JS.CreateOrUpdateConsumer(ctx, events.Stream, ccfg)
	if err != nil {
		return nil, fmt.Errorf("ingest: create or update durable consumer %s on %s (an existing consumer with another deliver/ack policy must be removed by an operator: nats consumer rm %s %s): %w",
			cfg.Consumer, events.Stream, events.Stream, cfg.Consumer, err)
	}
	return cons, nil
}

// Stats returns the counters.
func (in *Ingester) Stats() Stats {
	return Stats{
		Batches: in.batches.Load(), Applied: in.applied.Load(), Stale: in.stale.Load(),
		Ignored: in.ignored.Load(), DeadLettered: in.dead.Load(), Nacked: in.nacked.Load(), Deferred: in.deferred.Load(),
	}
}

// Check is a readiness check: ingest is running and its last fetch and
// commit succeeded.
func (in *Ingester) Check(context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.running {
		return errors.New("ingest loop is not running")
	}
	if in.commitErr != nil {
		return in.commitErr
	}
	return in.fetchErr
}

func (in *Ingester) setErr(field *error, err error) {
	in.mu.Lock()
	*field = err
	in.mu.Unlock()
}

// Run consumes until ctx is cancelled. Three stages overlap, each one batch
// apart: a fetcher keeps the next fetch in flight, a preparer validates the
// batch fetched before, and the committer commits and acks the one before
// that, so network round trips, validation and the bbolt commit (fsync) run
// side by side. When ctx ends, fetching stops; batches already fetched are
// still validated, committed and acked (that is what a graceful stop
// means); then Run flushes the acks and returns nil.
func (in *Ingester) Run(ctx context.Context) error {
	in.mu.Lock()
	in.running = true
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.running = false
		in.mu.Unlock()
	}()
	fetched := make(chan []jetstream.Msg, 1)
	batches := make(chan *batch, 1)
	go func() {
		defer close(batches)
		for msgs := range fetched { // the committer drains until close, so the send never blocks forever
			batches <- in.prepare(msgs)
		}
	}()
	go func() {
		defer close(fetched)
		for ctx.Err() == nil {
			msgs, err := in.fetch(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				in.setErr(&in.fetchErr, fmt.Errorf("fetch from %s/%s: %w", events.Stream, in.cfg.Consumer, err))
				in.log.Warn("fetch failed; retrying", "err", err)
				sleep(ctx, in.cfg.RetryDelay)
				continue
			}
			in.setErr(&in.fetchErr, nil)
			if len(msgs) > 0 {
				fetched <- msgs // the preparer drains until close
			}
		}
	}()
	aborted := false
	for b := range batches {
		if aborted {
			// An earlier batch was given back uncommitted; committing a
			// later one would let it overtake the earlier events.
			for _, it := range b.items {
				in.nak(it.msg)
			}
			continue
		}
		aborted = !in.commitUntilDone(ctx, b)
	}
	if err := in.cfg.JS.Conn().FlushTimeout(5 * time.Second); err != nil {
		in.log.Warn("flushing acks at shutdown", "err", err)
	}
	return nil
}

// commitUntilDone retries a batch whose transaction failed (disk
// full, I/O error) instead of nak'ing it, so later events never overtake
// it; the ack deadline is extended meanwhile. Only at shutdown are the
// events nak'ed, for redelivery after the restart; then it returns false.
func (in *Ingester) commitUntilDone(ctx context.Context, b *batch) (committed bool) {
	delay := in.cfg.RetryDelay
	for {
		err := in.commit(context.WithoutCancel(ctx), b)
		in.setErr(&in.commitErr, err)
		if err == nil {
			return true
		}
		in.log.Error("batch not committed; retrying", "err", err, "events", len(b.items), "retry_in", delay)
		for _, it := range b.items {
			_ = it.msg.InProgress()
		}
		sleep(ctx, delay)
		if ctx.Err() != nil {
			for _, it := range b.items {
				in.nak(it.msg)
			}
			return false
		}
		delay = min(delay*2, 30*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// fetch returns what is available now, or waits up to MaxWait for the first
// event and then takes whatever else is available: low latency when idle,
// full batches under load.
func (in *Ingester) fetch(ctx context.Context) ([]jetstream.Msg, error) {
	return fetchBatch(ctx, in.cons, in.cfg.BatchSize, in.cfg.MaxWait)
}

func fetchBatch(ctx context.Context, cons jetstream.Consumer, size int, maxWait time.Duration) ([]jetstream.Msg, error) {
	msgs, err := collect(cons.FetchNoWait(size))
	if err != nil || len(msgs) > 0 {
		return msgs, err
	}
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	first, err := collect(cons.Fetch(1, jetstream.FetchContext(wctx)))
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !errors.Is(err, nats.ErrTimeout) {
		return first, err
	}
	if len(first) == 0 || size == 1 {
		return first, nil
	}
	rest, err := collect(cons.FetchNoWait(size - 1))
	return append(first, rest...), err
}

func collect(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var out []jetstream.Msg
	for m := range b.Messages() {
		out = append(out, m)
	}
	return out, b.Error()
}

type item struct {
	msg       jetstream.Msg
	seq       uint64
	delivered uint64 // deliveries of this message so far, this one included
	ev        events.Event
	verr      *events.ValidationError
}

// batch is a fetched batch, decoded and validated, ready to commit.
type batch struct {
	items   []item
	through uint64 // highest stream seq in the batch, valid or not: the store's applied-through mark
	facts   []state.Fact
	valid   []int // indexes into items of the events behind facts
}

// Process validates, applies, acks and dead-letters one batch. It returns an
// error only if the bbolt transaction failed; then nothing of the batch was
// acked, termed or dead-lettered, and the caller retries it.
func (in *Ingester) Process(ctx context.Context, msgs []jetstream.Msg) error {
	return in.commit(ctx, in.prepare(msgs))
}

// prepare decodes and validates a batch (no I/O). Validation is the CPU
// cost of ingest, so a big batch is validated on all cores.
func (in *Ingester) prepare(msgs []jetstream.Msg) *batch {
	items := make([]item, len(msgs))
	workers := min(runtime.GOMAXPROCS(0), len(msgs)/64+1)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for i := w; i < len(msgs); i += workers {
				items[i] = in.decode(msgs[i])
			}
		})
	}
	wg.Wait()
	b := &batch{items: make([]item, 0, len(msgs)), facts: make([]state.Fact, 0, len(msgs))}
	for _, it := range items {
		if it.msg == nil {
			continue // no metadata: nak'ed
		}
		b.through = max(b.through, it.seq)
		if it.verr == nil {
			b.facts = append(b.facts, ToFact(it.ev, it.seq))
			b.valid = append(b.valid, len(b.items))
		}
		b.items = append(b.items, it)
	}
	return b
}

func (in *Ingester) decode(m jetstream.Msg) item {
	md, err := m.Metadata()
	if err != nil {
		// Not a JetStream message: cannot happen on a pull consumer.
		in.log.Error("message without JetStream metadata; nak", "subject", m.Subject(), "err", err)
		in.nak(m)
		return item{}
	}
	it := item{msg: m, seq: md.Sequence.Stream, delivered: md.NumDelivered}
	ev, err := decodeMsg(in.cfg.Validator, m.Subject(), m.Headers(), m.Data())
	if err != nil {
		if !errors.As(err, &it.verr) {
			it.verr = &events.ValidationError{Code: events.CodeSchema, Detail: err.Error()}
		}
		return it
	}
	it.ev = ev
	return it
}

// commit applies the batch's facts in one transaction, then acks them and
// dead-letters the invalid events. The same transaction advances the
// store's applied-through mark over the whole batch, invalid events
// included (they change nothing in the file, whether or not the
// dead-letter publish then succeeds), so the consumer's ack floor never
// passes the mark of a file that is current (see rewind.go).
func (in *Ingester) commit(ctx context.Context, b *batch) error {
	in.batches.Add(1)
	if len(b.facts) > 0 {
		crashpoint.Hit("ingest.commit.before")
		outcomes, err := in.cfg.Store.ApplyThrough(b.facts, b.through)
		crashpoint.Hit("ingest.commit.after")
		if err != nil {
			// Nothing acked, nothing dead-lettered: the caller retries the
			// whole batch.
			return err
		}
		in.settle(b.items, b.valid, outcomes)
	} else if b.through > 0 {
		// Only invalid events: record the mark before terming them.
		if _, err := in.cfg.Store.ApplyThrough(nil, b.through); err != nil {
			return err
		}
	}
	for _, it := range b.items {
		if it.verr != nil {
			in.deadLetter(ctx, it)
		}
	}
	return nil
}

// settle acks the committed events, counts and logs their outcomes and
// tells the engine which orgs changed.
func (in *Ingester) settle(items []item, valid []int, outcomes []state.Outcome) {
	notified := map[string]bool{}
	// Checked once: building the per-event debug line's arguments costs
	// allocations even when the line is dropped.
	debug := in.log.Enabled(context.Background(), slog.LevelDebug)
	for k, i := range valid {
		it, oc := items[i], outcomes[k]
		if oc.Result == state.ResultIgnoredUnknown && it.delivered < uint64(in.cfg.DeferAttempts) && in.earlierPending(it.seq) {
			// A redelivered created may still be on its way behind this
			// report (JetStream redelivers after newer messages): ask for
			// this one again later instead of dropping it.
			in.deferred.Add(1)
			in.cfg.Metrics.IngestedEvent(it.ev.Type, resultDeferred)
			in.log.Debug("event deferred: org not known yet", "org_id", oc.OrgID, "event_id", it.ev.ID, "seq", it.seq, "delivered", it.delivered)
			if err := it.msg.NakWithDelay(in.cfg.DeferDelay); err != nil {
				in.log.Warn("nak failed; the event will be redelivered after the ack wait", "org_id", oc.OrgID, "seq", it.seq, "err", err)
			}
			continue
		}
		// Counted when committed (what the counters say), before the
		// ack's round trip.
		in.cfg.Metrics.IngestedEvent(it.ev.Type, string(oc.Result))
		switch oc.Result {
		case state.ResultApplied:
			in.applied.Add(1)
		case state.ResultStale:
			in.stale.Add(1)
		default:
			in.ignored.Add(1)
		}
		// Ack after commit. A lost ack means a redelivery, which
		// the seq check turns into a no-op.
		crashpoint.Hit("ingest.ack.before")
		err := it.msg.Ack()
		crashpoint.Hit("ingest.ack.after")
		if err != nil {
			in.log.Warn("ack failed; the event will be redelivered and skipped as stale", "org_id", oc.OrgID, "seq", it.seq, "err", err)
		}
		if debug {
			in.log.Debug("event", "org_id", oc.OrgID, "seq", it.seq, "event_id", it.ev.ID, "type", it.ev.Type, "result", oc.Result, "detail", oc.Detail)
		}
		if oc.Result == state.ResultIgnoredUnknown || oc.Result == state.ResultIgnoredDeleted {
			in.log.Warn("event ignored", "org_id", oc.OrgID, "seq", it.seq, "event_id", it.ev.ID, "type", it.ev.Type, "detail", oc.Detail)
		}
		if oc.Changed() && !notified[oc.OrgID] && in.cfg.OnApplied != nil {
			notified[oc.OrgID] = true
			in.cfg.OnApplied(oc.OrgID)
		}
	}
}

// nak gives an uncommitted event back. The delay outlives the pull
// request a stopping fetcher may leave on the server (it expires after
// MaxWait), so the event is not delivered into it and stranded until the
// ack wait ends while newer events overtake it.
func (in *Ingester) nak(m jetstream.Msg) {
	in.nacked.Add(1)
	if err := m.NakWithDelay(in.cfg.MaxWait + 250*time.Millisecond); err != nil {
		in.log.Warn("nak failed; the event will be redelivered after the ack wait", "subject", m.Subject(), "err", err)
	}
}

// deadLetter publishes the original payload to ORG_EVENTS_DLQ and terms the
// message; if the publish fails the message is nak'ed (with a delay, so a
// down DLQ does not spin) and stays in the stream.
func (in *Ingester) deadLetter(ctx context.Context, it item) {
	subj := it.msg.Subject()
	h := nats.Header{}
	h.Set(HeaderReason, it.verr.Error())
	h.Set(HeaderCode, it.verr.Code)
	if it.verr.Field != "" {
		h.Set(HeaderField, it.verr.Field)
	}
	h.Set(HeaderOriginalSubject, subj)
	h.Set(HeaderOriginalStream, events.Stream)
	h.Set(HeaderOriginalSeq, strconv.FormatUint(it.seq, 10))
	if id := it.msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		h.Set(HeaderOriginalMsgID, id)
	}
	dlq := &nats.Msg{Subject: events.DLQPrefix + subj, Header: h, Data: it.msg.Data()}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The msg id makes a redelivered reject land in the DLQ once.
	crashpoint.Hit("ingest.dlq.before")
	_, err := in.cfg.JS.PublishMsg(pctx, dlq, jetstream.WithMsgID(fmt.Sprintf("dlq-%s-%d", events.Stream, it.seq)), jetstream.WithExpectStream(events.DLQStream))
	if err != nil {
		in.nacked.Add(1)
		in.log.Error("dead-letter publish failed; nak so the event is retried, not dropped", "subject", subj, "seq", it.seq, "reason", it.verr.Error(), "err", err)
		if err := it.msg.NakWithDelay(in.cfg.RetryDelay); err != nil {
			in.log.Warn("nak failed", "subject", subj, "seq", it.seq, "err", err)
		}
		return
	}
	in.dead.Add(1)
	in.cfg.Metrics.IngestedEvent(eventType(subj), resultInvalid)
	in.cfg.Metrics.DeadLetter(it.verr.Code)
	in.log.Warn("event dead-lettered", "org_id", subjectOrg(subj), "event_id", it.msg.Headers().Get(jetstream.MsgIDHeader),
		"subject", subj, "seq", it.seq, "code", it.verr.Code, "field", it.verr.Field, "reason", it.verr.Error())
	crashpoint.Hit("ingest.term.before")
	if err := it.msg.Term(); err != nil {
		in.log.Warn("term failed; the event will be redelivered and dead-lettered again (deduplicated)", "subject", subj, "seq", it.seq, "err", err)
	}
}

// subjectOrg is the org token of an event subject (orgs.<org>.<event>),
// for log lines about an event that failed validation; "" if none.
func subjectOrg(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) == 3 && parts[0] == "orgs" {
		return parts[1]
	}
	return ""
}

// eventType names an invalid event's type for the metric from its subject
// (orgs.<org>.<event>), the one part that is bounded: anything else is
// "unknown" (the metric caps label values too).
func eventType(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) == 3 && parts[0] == "orgs" {
		switch parts[2] {
		case "created", "deleted", "health_failed", "token_rotation_requested":
			return "org." + parts[2]
		}
	}
	return "unknown"
}

// ToFact converts a validated event at a stream sequence into a state fact.
func ToFact(ev events.Event, seq uint64) state.Fact {
	f := state.Fact{Seq: seq, EventID: ev.ID, OrgID: ev.OrgID(), Time: ev.Time}
	switch {
	case ev.Created != nil:
		f.Type, f.Slug, f.InstanceType, f.Region, f.Pool = state.FactCreated, ev.Created.Slug, ev.Created.InstanceType, ev.Created.Region, ev.Created.Pool
		if t := ev.Created.Takeover; t != nil {
			f.Takeover = &state.Takeover{Type: t.Type, Content: t.Content, RecordID: t.RecordID}
		}
	case ev.Deleted != nil:
		f.Type = state.FactDeleted
	case ev.HealthFailed != nil:
		f.Type, f.Reason, f.Observer = state.FactHealthFailed, ev.HealthFailed.Reason, ev.HealthFailed.Observer
	case ev.TokenRotationRequested != nil:
		f.Type, f.Reason = state.FactTokenRotationRequested, ev.TokenRotationRequested.Reason
	}
	return f
}
