// Package apicall is the one layer that retries cloud API calls. Provider
// SDK retries are switched off (cloudflare option.WithMaxRetries(0), aws
// NopRetryer), so every function run through Caller.Do is exactly one HTTP
// attempt: it waits on the provider's shared rate limiter, runs under a
// per-attempt timeout, is observed once, and is retried only when retrying
// can help (429/throttling, 5xx, timeouts, connection errors), with capped
// exponential backoff and full jitter, honouring Retry-After.
package apicall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tunnelward/tunnelward/internal/ratelimit"
)

// Observer is called once per HTTP attempt; status is 0 when no response
// came back. Metrics hang off it without the clients changing.
type Observer func(provider, op string, status int, dur time.Duration, throttled bool)

// Class is what a failed attempt means for retrying.
type Class int

const (
	Permanent Class = iota // retrying cannot help (4xx other than throttling, bad input)
	Retryable              // 5xx, timeouts, connection errors
	Throttled              // 429 or a provider's throttling code
)

// Attempt is what the transport saw of one HTTP attempt.
type Attempt struct {
	Sent       bool // a request reached the transport
	Status     int  // response status, 0 when none
	RetryAfter time.Duration
	// Gated is when the attempt passed the Retry-After gate and the
	// limiter: a request is on its way from then on.
	Gated time.Time

	caller *Caller // paused by the transport the moment a 429 comes back
}

// AttemptFrom is the attempt a request's context belongs to (nil outside
// Do): what a transport wrapping the client's can learn of it.
func AttemptFrom(ctx context.Context) *Attempt {
	a, _ := ctx.Value(attemptKey{}).(*Attempt)
	return a
}

// saw records an attempt's answer. A 429 with a Retry-After pauses every
// call of the Caller at once, before the SDK has even decoded the answer:
// requests passing the gate meanwhile would be sent inside the pause.
func (a *Attempt) saw(resp *http.Response) {
	a.Status = resp.StatusCode
	a.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if a.caller != nil && a.Status == http.StatusTooManyRequests && a.RetryAfter > 0 {
		a.caller.block(a.RetryAfter)
	}
}

// Classifier decides the class of a failed attempt. err is non-nil.
type Classifier func(err error, a Attempt) Class

// Policy bounds retrying. Zero values take the defaults.
type Policy struct {
	MaxAttempts   int           // attempts per call including the first; default 5
	BaseDelay     time.Duration // first backoff cap; default 200ms
	MaxDelay      time.Duration // backoff cap; default 10s
	MaxRetryAfter time.Duration // longest Retry-After waited in-call; default 30s
	CallTimeout   time.Duration // per attempt; default 30s
}

func (p Policy) withDefaults() Policy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 5
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 200 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 10 * time.Second
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = 30 * time.Second
	}
	if p.CallTimeout <= 0 {
		p.CallTimeout = 30 * time.Second
	}
	return p
}

// Caller runs one provider's calls. One Caller per provider, shared by all
// workers, so the limiter and the Retry-After gate are shared too.
type Caller struct {
	provider string
	policy   Policy
	limit    func(op string) ratelimit.Limiter
	classify Classifier
	observe  Observer

	mu           sync.Mutex
	blockedUntil time.Time // a Retry-After seen by any worker pauses all of them
}

// Options configures a Caller.
type Options struct {
	Provider string // "cloudflare", "ec2", "ssm"
	Policy   Policy
	// Limit returns the limiter for an operation; nil means unlimited.
	Limit    func(op string) ratelimit.Limiter
	Classify Classifier // nil means ClassifyHTTP
	Observe  Observer   // optional
}

// New builds a Caller.
func New(o Options) *Caller {
	if o.Classify == nil {
		o.Classify = ClassifyHTTP
	}
	return &Caller{provider: o.Provider, policy: o.Policy.withDefaults(), limit: o.Limit, classify: o.Classify, observe: o.Observe}
}

// Provider names the provider this Caller is for.
func (c *Caller) Provider() string { return c.provider }

type attemptKey struct{}

// Transport wraps base (nil: http.DefaultTransport) so each attempt records
// its status and Retry-After for Do. Give the SDK an http.Client using it.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper{base}
}

type roundTripper struct{ base http.RoundTripper }

func (t roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	a, _ := r.Context().Value(attemptKey{}).(*Attempt)
	if a != nil {
		a.Sent = true
	}
	resp, err := t.base.RoundTrip(r)
	if a != nil && resp != nil {
		a.saw(resp)
	}
	return resp, err
}

// Doer is an HTTP client as the AWS SDK takes it (aws.HTTPClient).
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// WrapDoer records each attempt's status and Retry-After like Transport,
// for SDKs whose HTTP client must stay theirs (the AWS SDK's buildable
// client honours AWS_CA_BUNDLE and its transport settings).
func WrapDoer(d Doer) Doer { return doer{d} }

type doer struct{ d Doer }

func (w doer) Do(r *http.Request) (*http.Response, error) {
	a, _ := r.Context().Value(attemptKey{}).(*Attempt)
	if a != nil {
		a.Sent = true
	}
	r, err := detachBody(r)
	if err != nil {
		return nil, err
	}
	resp, err := w.d.Do(r)
	if a != nil && resp != nil {
		a.saw(resp)
	}
	return resp, err
}

// detachBody gives the transport its own copy of the request body. smithy
// (the AWS SDK) closes the request's body stream once the response headers
// are in, while net/http's write loop may still be doing its final read of
// it (checking for bytes past Content-Length); that read then fails, the
// transport closes the connection, and the response body being read breaks
// with "use of closed network connection" (aws-sdk-go-v2#2737). The bodies
// are small query/JSON documents, so buffering them costs nothing.
func detachBody(r *http.Request) (*http.Request, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return r, nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.ContentLength = int64(len(b))
	return r, nil
}

// Do runs fn (one HTTP attempt per call) until it succeeds, fails for good,
// runs out of attempts, or ctx ends. op names the operation (e.g.
// "tunnel.create"), resource what it acted on (e.g. "tw-acme"); both go into
// the error, so neither may be a secret.
func (c *Caller) Do(ctx context.Context, op, resource string, fn func(ctx context.Context) error) error {
	var last *Error
	for n := 1; ; n++ {
		if err := c.waitTurn(ctx, op); err != nil {
			return c.fail(op, resource, n-1, last, err)
		}
		a := &Attempt{Gated: time.Now(), caller: c}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, attemptKey{}, a), c.policy.CallTimeout)
		start := time.Now()
		err := fn(actx)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		dur := time.Since(start)
		if err == nil {
			if c.observe != nil {
				c.observe(c.provider, op, okStatus(a.Status), dur, false)
			}
			return nil
		}
		class := c.classify(err, *a)
		if timedOut {
			class = Retryable // our per-attempt timeout, not the caller's
		}
		if ctx.Err() != nil {
			class = Permanent
		}
		if c.observe != nil {
			c.observe(c.provider, op, a.Status, dur, class == Throttled)
		}
		last = &Error{Provider: c.provider, Op: op, Resource: resource, Attempts: n, Status: a.Status,
			Throttled: class == Throttled, RetryAfter: a.RetryAfter, Err: err}
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			// The caller's context ended while the attempt ran: that, not
			// the attempt's answer, is why no more are made.
			return c.fail(op, resource, n, last, ctx.Err())
		}
		if class == Permanent || n >= c.policy.MaxAttempts {
			return last
		}
		var wait time.Duration
		switch {
		case class == Throttled && a.RetryAfter > c.policy.MaxRetryAfter:
			// Waiting that long inside a call would hold a worker; hand
			// the delay back so the caller can requeue after it.
			c.block(a.RetryAfter)
			return last
		case class == Throttled && a.RetryAfter > 0:
			c.block(a.RetryAfter)
			wait = 0 // waitTurn waits for the gate
		default:
			wait = c.backoff(n)
		}
		if err := sleep(ctx, wait); err != nil {
			return c.fail(op, resource, n, last, err)
		}
	}
}

func okStatus(s int) int {
	if s == 0 {
		return http.StatusOK
	}
	return s
}

// backoff is full jitter: uniform in [0, min(MaxDelay, BaseDelay·2^(n-1))].
func (c *Caller) backoff(n int) time.Duration {
	d := c.policy.BaseDelay
	for i := 1; i < n && d < c.policy.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, c.policy.MaxDelay)
	return time.Duration(rand.Int64N(int64(d) + 1))
}

func (c *Caller) block(d time.Duration) {
	until := time.Now().Add(d)
	c.mu.Lock()
	if until.After(c.blockedUntil) {
		c.blockedUntil = until
	}
	c.mu.Unlock()
}

// BlockedFor is how long calls are paused by a Retry-After (0 when not).
func (c *Caller) BlockedFor() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(0, time.Until(c.blockedUntil))
}

func (c *Caller) waitTurn(ctx context.Context, op string) error {
	for {
		// Look again after each wait: a 429 that came back while this call
		// slept (a request already on the wire) extends the pause, and
		// waking at the first deadline would send inside the second.
		for d := c.BlockedFor(); d > 0; d = c.BlockedFor() {
			if err := sleep(ctx, d); err != nil {
				return err
			}
		}
		if c.limit != nil {
			if l := c.limit(op); l != nil {
				if err := l.Wait(ctx); err != nil {
					return fmt.Errorf("waiting for %s rate limiter: %w", c.provider, err)
				}
			}
		}
		// A 429 may have come back while this call waited on the
		// limiter: its token is spent, but the pause comes first.
		if c.BlockedFor() == 0 {
			return nil
		}
	}
}

func (c *Caller) fail(op, resource string, attempts int, last *Error, err error) error {
	e := &Error{Provider: c.provider, Op: op, Resource: resource, Attempts: attempts, Err: err}
	if last != nil {
		e.Status, e.Throttled, e.RetryAfter = last.Status, last.Throttled, last.RetryAfter
		e.Err = fmt.Errorf("%w (last attempt: %w)", err, last.Err)
	}
	return e
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ClassifyHTTP is the provider-neutral rule: 429 throttled; 408 and 5xx
// retryable; a request sent without a response (connection refused/reset,
// timeout) retryable; a response whose body broke off mid-read retryable
// (the SDKs report it as a decode error under a 2xx status); everything
// else permanent.
func ClassifyHTTP(err error, a Attempt) Class {
	switch {
	case a.Status == http.StatusTooManyRequests:
		return Throttled
	case a.Status == http.StatusRequestTimeout || a.Status >= 500:
		return Retryable
	case a.Status == 0 && a.Sent:
		return Retryable
	case a.Status == 0 && errors.Is(err, context.DeadlineExceeded):
		return Retryable
	case a.Status != 0 && brokenConn(err):
		// The outcome is as unknown as when no response came at all, and
		// every step we run is safe to repeat (ClientToken, find-by-name,
		// overwrite, not-found on delete). The AWS SDK retries these too.
		return Retryable
	}
	return Permanent
}

// brokenConn reports a connection that failed while a response was read:
// closed, reset or cut short.
func brokenConn(err error) bool {
	var op *net.OpError
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.As(err, &op)
}

// MaxPause bounds the pause one Retry-After sets. Cloudflare's are at most
// its 5-minute window; a larger value (a proxy's, a date far ahead, a
// number past time.Duration) would stop every call of a pool for hours.
const MaxPause = 10 * time.Minute

// ParseRetryAfter reads a Retry-After header (delta seconds or HTTP date),
// at most MaxPause.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case math.IsNaN(s) || s <= 0:
			return 0
		case s >= MaxPause.Seconds():
			return MaxPause
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(MaxPause, max(0, t.Sub(now)))
	}
	return 0
}

// Error is a failed call: which provider, operation and resource, after how
// many attempts, and the last cause. Kind, when set by the provider package,
// is a sentinel (not found, conflict, exists) matched with errors.Is.
type Error struct {
	Provider   string
	Op         string
	Resource   string
	Attempts   int
	Status     int
	Throttled  bool
	RetryAfter time.Duration
	Kind       error
	Err        error
}

func (e *Error) Error() string {
	msg := e.Provider + " " + e.Op
	if e.Resource != "" {
		msg += " " + e.Resource
	}
	if e.Kind != nil {
		msg += ": " + e.Kind.Error()
	}
	if e.Attempts > 1 {
		msg += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	return msg + ": " + e.Err.Error()
}

// Unwrap exposes both the sentinel kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Kind != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Err}
}

// StatusOf is the HTTP status of the last attempt behind err, 0 if none.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// RetryAfterOf is the Retry-After the provider asked for, so a caller that
// got a throttled error can requeue after it.
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) && e.Throttled {
		return e.RetryAfter
	}
	return 0
}

// WithKind marks err (an *Error from Do) with a sentinel kind and returns it.
func WithKind(err error, kind error) error {
	var e *Error
	if errors.As(err, &e) {
		e.Kind = kind
		return err
	}
	return fmt.Errorf("%w: %w", kind, err)
}
