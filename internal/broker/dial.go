package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tunnelward/tunnelward/internal/secret"
)

// Reason is why a NATS server could not be used, for the caller's hint.
type Reason int

const (
	ReasonOther   Reason = iota // anything else (the error text says what)
	ReasonRefused               // nothing listens at the address
	ReasonNoHost                // the host name does not resolve
	ReasonTimeout               // no answer in time (firewall, wrong address)
	ReasonAuth                  // the server refused the credentials
	ReasonTLS                   // the TLS handshake or the certificate failed
)

// ConnectError says which NATS server(s) could not be used and why. Its
// text never holds a password or token of the URL.
type ConnectError struct {
	URL    string // as configured, credentials redacted
	Reason Reason
	// Causes are what the dialer or the client reported, one per address
	// that failed (credentials redacted).
	Causes []string
	err    error
}

func (e *ConnectError) Error() string {
	why := strings.Join(e.Causes, "; ")
	switch e.Reason {
	case ReasonAuth:
		return fmt.Sprintf("NATS at %s refused the connection's credentials: %s", e.URL, why)
	case ReasonTLS:
		return fmt.Sprintf("TLS with NATS at %s failed: %s", e.URL, why)
	}
	return fmt.Sprintf("cannot reach NATS at %s: %s", e.URL, why)
}

func (e *ConnectError) Unwrap() error { return e.err }

// Retryable reports whether trying again can help: the server may come up
// (refused, no such host yet, timeout, a connection cut while starting);
// refused credentials, a bad certificate or a bad URL stay as they are.
func (e *ConnectError) Retryable() bool {
	switch e.Reason {
	case ReasonRefused, ReasonNoHost, ReasonTimeout:
		return true
	case ReasonOther:
		var op *net.OpError
		return errors.Is(e.err, nats.ErrNoServers) || errors.Is(e.err, io.EOF) ||
			errors.Is(e.err, syscall.ECONNRESET) || errors.As(e.err, &op)
	}
	return false
}

// Retry is one failed start-up attempt that will be retried.
type Retry struct {
	Attempt int
	Err     *ConnectError
	Wait    time.Duration // until the next attempt
	Elapsed time.Duration // since the first attempt
}

// DialOptions configure Dial.
type DialOptions struct {
	Creds string // user credentials file, optional
	Name  string // client name the server shows
	// Log receives the connection's later life: disconnects, failed
	// reconnects (with backoff), reconnects.
	Log *slog.Logger
	// OnRetry is told of each failed attempt before Dial waits and tries
	// again, so the caller can say what is wrong and that it keeps trying.
	OnRetry func(Retry)
	Extra   []nats.Option // nkey, TLS, ...
}

// Dial connects to NATS (url: one server or a comma-separated list). A
// server that is down or unreachable is retried with backoff (500 ms
// doubling to 5 s) until ctx ends; refused credentials, a failed TLS
// handshake or a bad URL fail at once. The error is a *ConnectError naming
// the URL (redacted) and what each address answered. Once connected, the
// connection reconnects by itself forever, logging to o.Log.
func Dial(ctx context.Context, url string, o DialOptions) (*nats.Conn, error) {
	start := time.Now()
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		timeout := dialTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = max(min(timeout, time.Until(dl)), 100*time.Millisecond)
		}
		rec := &recordingDialer{d: net.Dialer{Timeout: timeout}}
		opts := append(connOptions(url, o.Creds, o.Name, o.Log), nats.SetCustomDialer(rec), nats.Timeout(timeout))
		nc, err := nats.Connect(url, append(opts, o.Extra...)...)
		if err == nil {
			return nc, nil
		}
		ce := newConnectError(url, err, rec.failures())
		if !ce.Retryable() {
			return nil, ce
		}
		left := time.Duration(1<<62 - 1)
		if dl, ok := ctx.Deadline(); ok {
			left = time.Until(dl)
		}
		if ctx.Err() != nil || left < 200*time.Millisecond {
			return nil, &gaveUpError{ce: ce, attempts: attempt, took: time.Since(start), ctx: ctx.Err()}
		}
		// The last attempt goes just before the end, not after it.
		wait = min(wait, left-100*time.Millisecond)
		if o.OnRetry != nil {
			o.OnRetry(Retry{Attempt: attempt, Err: ce, Wait: wait, Elapsed: time.Since(start)})
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, &gaveUpError{ce: ce, attempts: attempt, took: time.Since(start), ctx: ctx.Err()}
		case <-t.C:
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// dialTimeout bounds one TCP connect (nats.go's default).
const dialTimeout = 2 * time.Second

// gaveUpError is the last ConnectError when Dial's time ran out.
type gaveUpError struct {
	ce       *ConnectError
	attempts int
	took     time.Duration
	ctx      error
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("%v (gave up after %d attempts in %s)", e.ce, e.attempts, e.took.Round(100*time.Millisecond))
}

func (e *gaveUpError) Unwrap() []error { return []error{e.ce, e.ctx} }

// connOptions are the options of every tunnelward connection: a name,
// reconnecting forever, and logged disconnects and reconnects.
func connOptions(url, creds, name string, log *slog.Logger) []nats.Option {
	rl := &reconnectLog{log: log, url: secret.RedactURL(url), now: time.Now}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if log != nil && err != nil {
				log.Warn("nats disconnected; reconnecting until the server is back", "url", rl.url, "err", err)
			}
			rl.reset()
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { rl.failed(err) }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			if log != nil {
				log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			}
			rl.reset()
		}),
	}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	return opts
}

// reconnectLog says that reconnecting goes on while the server stays away,
// without a line per attempt (nats.go retries every 250 ms to 1.25 s): the
// first failure, then after 2 s, 4 s, ... at most once a minute.
type reconnectLog struct {
	log *slog.Logger
	url string
	now func() time.Time

	mu       sync.Mutex
	failures int
	since    time.Time
	next     time.Time
	every    time.Duration
}

func (r *reconnectLog) failed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.failures == 0 {
		r.since, r.next, r.every = now, now, time.Second
	}
	r.failures++
	if now.Before(r.next) {
		return
	}
	r.every = min(2*r.every, time.Minute)
	r.next = now.Add(r.every)
	if r.log != nil {
		r.log.Warn("nats still unreachable; reconnecting until the server is back",
			"url", r.url, "err", secret.RedactURLsIn(err.Error(), r.url), "failed_attempts", r.failures,
			"down_for", now.Sub(r.since).Round(time.Second), "next_log_in", r.every)
	}
}

func (r *reconnectLog) reset() {
	r.mu.Lock()
	r.failures = 0
	r.mu.Unlock()
}

// recordingDialer dials TCP and keeps the last failure per address: for a
// refused connection nats.go reports only "no servers available".
type recordingDialer struct {
	d    net.Dialer
	mu   sync.Mutex
	errs map[string]error
	keys []string // addresses in the order they first failed
}

func (r *recordingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := r.d.Dial(network, address)
	if err != nil {
		r.mu.Lock()
		if r.errs == nil {
			r.errs = map[string]error{}
		}
		if _, seen := r.errs[address]; !seen {
			r.keys = append(r.keys, address)
		}
		r.errs[address] = err
		r.mu.Unlock()
	}
	return c, err
}

func (r *recordingDialer) failures() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]error, 0, len(r.keys))
	for _, k := range r.keys {
		out = append(out, r.errs[k])
	}
	return out
}

// newConnectError explains err from nats.Connect with the dial failures
// seen during the attempt.
func newConnectError(url string, err error, dialErrs []error) *ConnectError {
	causes := []error{err} // a server answered: its error is the news
	if len(dialErrs) > 0 && (errors.Is(err, nats.ErrNoServers) || isDialError(err)) {
		// Nothing answered: what each address said is the news.
		causes = dialErrs
		err = errors.Join(append([]error{err}, dialErrs...)...)
	}
	ce := &ConnectError{URL: secret.RedactURL(url), Reason: classify(causes[0]), err: err}
	for _, c := range causes {
		if text := secret.RedactURLsIn(c.Error(), url); !slices.Contains(ce.Causes, text) {
			ce.Causes = append(ce.Causes, text)
		}
		if classify(c) != ce.Reason {
			ce.Reason = ReasonOther // mixed: the texts say it all
		}
	}
	return ce
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// classify names the reason behind one error.
func classify(err error) Reason {
	var dnsErr *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	var recordErr tls.RecordHeaderError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return ReasonNoHost
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return ReasonAuth
	case errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted),
		errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &certErr),
		errors.As(err, &verifyErr), errors.As(err, &recordErr):
		return ReasonTLS
	case errors.As(err, &netErr) && netErr.Timeout():
		return ReasonTimeout
	}
	return ReasonOther
}
