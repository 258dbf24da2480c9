// Package broker holds tunnelward's NATS plumbing: the connection, the
// embedded nats-server, and the idempotent setup of the ORG_EVENTS and
// ORG_EVENTS_DLQ streams.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/secret"
)

// DuplicateWindow is how long the stream remembers event ids. It covers a
// publisher retrying for minutes through a broker restart, at the cost of
// memory for ids seen in that window.
const DuplicateWindow = 10 * time.Minute

// EventsStreamConfig is the contract of ORG_EVENTS: limits retention (replay
// needs the whole history), file storage, every subject under orgs. (invalid
// subjects are still captured so ingest can dead-letter them visibly).
func EventsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        events.Stream,
		Description: "tunnelward org lifecycle events (orgs.<org_id>.<event>): the full history, from which reconciler replay rebuilds the state file",
		Subjects:    []string{events.SubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  DuplicateWindow,
		DenyDelete:  true, // history is the source of truth for replay
	}
}

// DLQStreamConfig is the contract of ORG_EVENTS_DLQ.
func DLQStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        events.DLQStream,
		Description: "tunnelward dead letters: rejected events with reason, original subject and sequence in headers",
		Subjects:    []string{events.DLQPrefix + events.SubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  DuplicateWindow, // redelivered rejects are dead-lettered once
	}
}

// ConflictError reports an existing stream whose configuration contradicts
// the contract. It is never "fixed" by overwriting: an operator decides.
type ConflictError struct {
	Stream string
	Diffs  []string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stream %s exists with a conflicting configuration: %s; fix or remove it (nats stream edit/rm %s) — tunnelward does not overwrite it",
		e.Stream, strings.Join(e.Diffs, "; "), e.Stream)
}

// ownDescription reports whether a stream's description is one tunnelward
// wrote (or none): such a description follows the contract's, while one an
// operator set is kept. Streams created before the ORG_EVENTS description
// was completed carry a truncated one, fixed this way at start.
func ownDescription(d string) bool {
	return d == "" || strings.HasPrefix(d, "tunnelward ")
}

// StreamResult says what EnsureStream did.
type StreamResult struct {
	Stream   string
	Action   string   // created, unchanged, updated
	Updated  []string // fields raised to the contract (updated)
	Warnings []string // operator settings that weaken the contract
}

// EnsureStreams creates or updates ORG_EVENTS and ORG_EVENTS_DLQ. Whichever
// process starts first creates them; the other finds them in place. It
// neither sets nor checks the replica count (the server's default, R1, for
// a stream it creates): the publisher's way. The reconciler uses
// EnsureStreamsReplicated.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, log *slog.Logger) error {
	return EnsureStreamsReplicated(ctx, js, 0, log)
}

// EnsureStreamsReplicated is EnsureStreams with the replica count of the
// cluster (--stream-replicas): streams it creates get replicas copies, and
// an existing stream with another count is a *ReplicasError, never changed.
// replicas 0 neither sets nor checks it.
func EnsureStreamsReplicated(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) error {
	for _, cfg := range []jetstream.StreamConfig{EventsStreamConfig(), DLQStreamConfig()} {
		cfg.Replicas = replicas
		res, err := EnsureStream(ctx, js, cfg)
		if err != nil {
			return err
		}
		if log != nil {
			log.Info("stream ready", "stream", res.Stream, "action", res.Action, "updated", res.Updated)
			for _, w := range res.Warnings {
				log.Warn("stream config weakens the contract", "stream", res.Stream, "warning", w)
			}
		}
	}
	return nil
}

// EnsureStream makes one stream match want: created if missing, the
// duplicate window raised if shorter, a description tunnelward wrote
// brought up to date (an operator's is kept), a *ConflictError if subjects,
// retention or storage differ. Transient errors (server still starting,
// connection re-establishing) are retried until ctx ends.
func EnsureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (StreamResult, error) {
	res := StreamResult{Stream: want.Name}
	backoff := 100 * time.Millisecond
	for {
		// Each attempt has its own deadline (AttemptTimeout): a request
		// lost with its server (a cluster node killed, a leader being
		// elected) is tried again instead of waiting out ctx.
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		s, err := js.Stream(actx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(actx, want)
			if err == nil {
				cancel()
				res.Action = "created"
				return res, nil
			}
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				cancel()
				continue // the other side won the race; compare its config
			}
		}
		if err == nil {
			var r StreamResult
			r, err = reconcileStream(actx, js, s.CachedInfo().Config, want)
			if err == nil || !transient(err) || ctx.Err() != nil {
				cancel()
				return r, err
			}
			// The update's answer was lost: look again after the backoff.
		}
		cancel()
		if !transient(err) {
			return res, fmt.Errorf("ensure stream %s: %w", want.Name, err)
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("ensure stream %s: %w (last error: %v)", want.Name, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// AttemptTimeout bounds one JetStream API request's wait for its answer in
// the calls that retry (streams, the lease bucket, ingest's consumer) and
// in each read and write of the pools' placement records.
const AttemptTimeout = 3 * time.Second

// Transient reports whether a JetStream or NATS error is worth another
// attempt: no responders or no answer (a server starting, a leader being
// elected, a connection being re-established), or JetStream saying it is
// temporarily unavailable.
func Transient(err error) bool { return transient(err) }

// jsErrNoSuitablePeers is JetStream's "no suitable peers for placement".
const jsErrNoSuitablePeers jetstream.ErrorCode = 10005

func transient(err error) bool {
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrNoServers) {
		return true
	}
	// The server answered: only "temporarily unavailable" is worth
	// retrying, and "no suitable peers" while a JetStream cluster is still
	// forming (a replicated stream needs its peers to have joined).
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == jsErrNoSuitablePeers)
}

// ReplicasError reports an existing stream or KV bucket whose replica count
// is not the one configured (--stream-replicas). tunnelward never changes
// it: moving a stream between R1 and R3 is an operator's decision (and on
// a single server R3 is impossible).
type ReplicasError struct {
	Stream     string
	Have, Want int
}

func (e *ReplicasError) Error() string {
	return fmt.Sprintf("stream %s has %d replica(s) but --stream-replicas is %d: either start every reconciler with --stream-replicas %d, "+
		"or change the stream first (nats stream edit %s --replicas %d; a 3-node JetStream cluster is needed for 3) — tunnelward does not change it",
		e.Stream, e.Have, e.Want, e.Have, e.Stream, e.Want)
}

// CheckReplicas compares an existing stream's replica count with want (0:
// not checked). A count of 0 is the server's default, 1.
func CheckReplicas(stream string, have, want int) error {
	if want <= 0 {
		return nil
	}
	if have <= 0 {
		have = 1
	}
	if have != want {
		return &ReplicasError{Stream: stream, Have: have, Want: want}
	}
	return nil
}

func reconcileStream(ctx context.Context, js jetstream.JetStream, have, want jetstream.StreamConfig) (StreamResult, error) {
	res := StreamResult{Stream: want.Name, Action: "unchanged"}
	if err := CheckReplicas(want.Name, have.Replicas, want.Replicas); err != nil {
		return res, err
	}
	var diffs []string
	hs, ws := slices.Clone(have.Subjects), slices.Clone(want.Subjects)
	slices.Sort(hs)
	slices.Sort(ws)
	if !slices.Equal(hs, ws) {
		diffs = append(diffs, fmt.Sprintf("subjects are %v, want %v", have.Subjects, want.Subjects))
	}
	if have.Retention != want.Retention {
		diffs = append(diffs, fmt.Sprintf("retention is %s, want %s (replay needs the history)", have.Retention, want.Retention))
	}
	if have.Storage != want.Storage {
		diffs = append(diffs, fmt.Sprintf("storage is %s, want %s", have.Storage, want.Storage))
	}
	if len(diffs) > 0 {
		return res, &ConflictError{Stream: want.Name, Diffs: diffs}
	}
	if have.MaxAge > 0 || have.MaxMsgs > 0 || have.MaxBytes > 0 || have.MaxMsgsPerSubject > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("limits set (max_age=%s max_msgs=%d max_bytes=%d max_msgs_per_subject=%d): old events will be dropped and replay cannot rebuild orgs whose events are gone",
			have.MaxAge, have.MaxMsgs, have.MaxBytes, have.MaxMsgsPerSubject))
	}
	upd := have
	if have.Duplicates < want.Duplicates {
		upd.Duplicates = want.Duplicates
		res.Updated = append(res.Updated, fmt.Sprintf("duplicate_window %s -> %s", have.Duplicates, want.Duplicates))
	}
	if have.Description != want.Description && ownDescription(have.Description) {
		upd.Description = want.Description
		res.Updated = append(res.Updated, "description")
	}
	if len(res.Updated) > 0 {
		if _, err := js.UpdateStream(ctx, upd); err != nil {
			return res, fmt.Errorf("update stream %s (%s): %w", want.Name, strings.Join(res.Updated, ", "), err)
		}
		res.Action = "updated"
	}
	return res, nil
}

// Connect dials NATS and returns at once: when the server is unreachable
// it keeps retrying in the background (at start too), so callers bound
// their waits with ctx. extra adds options such as an nkey or TLS. The
// commands use Dial instead, which says why it cannot connect.
func Connect(url, creds, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := append(connOptions(url, creds, name, log), nats.RetryOnFailedConnect(true))
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, redactErr(fmt.Errorf("connect to nats %s: %w", secret.RedactURL(url), err), url)
	}
	return nc, nil
}

// Embedded is an in-process nats-server with JetStream.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts nats-server with JetStream on listen (host:port; port
// 0 picks a free one) storing under storeDir, and waits until it accepts
// clients.
func StartEmbedded(listen, storeDir string) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: bad listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded nats: bad port in %q", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// Fail fast and clearly on a taken port; the server itself would only
		// stay unready.
		l, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: cannot listen on %s (another nats-server or reconciler running? use --nats-listen or --nats-url): %w", listen, err)
		}
		_ = l.Close()
	}
	opts := &server.Options{
		ServerName: "tunnelward-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s (store %s) did not become ready within 15s: is the port in use, or the store locked by another server?", listen, storeDir)
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it, flushing JetStream to disk.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// redactErr hides the credentials of urls in err's text (a URL parse error
// quotes the raw URL) and keeps err for errors.Is and errors.As.
func redactErr(err error, urls string) error {
	if err == nil {
		return nil
	}
	return &redactedError{msg: secret.RedactURLsIn(err.Error(), urls), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
