package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
)

// statusSource feeds the admin status page what bbolt does not hold: the
// newest dead letters, read from ORG_EVENTS_DLQ over the daemon's own NATS
// connection (a stream info and one message get per letter shown), and
// each provider's API calls over the last 5 minutes from the metrics.
type statusSource struct {
	js jetstream.JetStream
	m  *metrics.Metrics
}

var _ admin.StatusSource = statusSource{}

func (s statusSource) DeadLetters(ctx context.Context, n int) (admin.DeadLetters, error) {
	st, err := s.js.Stream(ctx, events.DLQStream)
	if err != nil {
		return admin.DeadLetters{}, fmt.Errorf("stream %s: %w", events.DLQStream, err)
	}
	info := st.CachedInfo()
	out := admin.DeadLetters{Total: info.State.Msgs}
	// Newest first. Removed letters (nats stream rmm, once handled) leave
	// gaps; a long run of them is not worth a request per sequence.
	for seq, tries := info.State.LastSeq, 0; seq > 0 && seq >= info.State.FirstSeq && len(out.Recent) < n && tries < 4*n; seq, tries = seq-1, tries+1 {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("stream %s message %d: %w", events.DLQStream, seq, err)
		}
		out.Recent = append(out.Recent, admin.DeadLetter{Seq: m.Sequence, At: m.Time,
			Subject: m.Header.Get(ingest.HeaderOriginalSubject), Code: m.Header.Get(ingest.HeaderCode),
			Reason: m.Header.Get(ingest.HeaderReason), Field: m.Header.Get(ingest.HeaderField)})
	}
	return out, nil
}

// budgetNotes say, per provider, what the page's figures are measured
// against.
var budgetNotes = map[string]string{
	"cloudflare": fmt.Sprintf("per Cloudflare user: the dashboard and other tokens of the user count too; tunnelward's limiter stops at %d",
		ratelimit.DefaultCloudflare.Requests),
	"ec2": "token buckets per action and region; throttled calls are retried with backoff",
	"ssm": "40 requests/s per account and region; throttled calls are retried with backoff",
}

func (s statusSource) APIBudgets() []admin.APIBudget {
	recent := map[string]metrics.Recent{}
	for _, r := range s.m.RecentAPICalls() {
		recent[r.Provider] = r
	}
	var out []admin.APIBudget
	add := func(p string) {
		r := recent[p]
		b := admin.APIBudget{Provider: p, Window: metrics.RecentWindow, Requests: r.Requests, Throttled: r.Throttled,
			Failed: r.Failed, Note: budgetNotes[p]}
		if p == "cloudflare" {
			b.Limit = ratelimit.CloudflareLimit // per metrics.RecentWindow, the same 5 minutes
		}
		out = append(out, b)
		delete(recent, p)
	}
	for _, p := range []string{"cloudflare", "ec2", "ssm"} {
		add(p)
	}
	for _, r := range s.m.RecentAPICalls() { // any other, in name order
		if _, ok := recent[r.Provider]; ok {
			add(r.Provider)
		}
	}
	return out
}
