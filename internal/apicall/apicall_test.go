package apicall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/ratelimit"
)

// server answers with the statuses in script, one per request, then 200.
type server struct {
	mu     sync.Mutex
	script []func(w http.ResponseWriter, r *http.Request)
	times  []time.Time
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	var f func(w http.ResponseWriter, r *http.Request)
	if len(s.script) > 0 {
		f, s.script = s.script[0], s.script[1:]
	}
	s.mu.Unlock()
	if f != nil {
		f(w, r)
		return
	}
	io.WriteString(w, "ok")
}

func (s *server) hits() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.times) }

func status(code int, retryAfter string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		io.WriteString(w, `{"errors":[{"code":1000,"message":"nope"}]}`)
	}
}

type obs struct {
	mu  sync.Mutex
	log []string
}

func (o *obs) observe(provider, op string, st int, _ time.Duration, throttled bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.log = append(o.log, fmt.Sprintf("%s/%s/%d/%v", provider, op, st, throttled))
}

const apiSecret = "cf-api-secret-value"

func get(client *http.Client, url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+apiSecret)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 400 {
			return fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return nil
	}
}

func setup(t *testing.T, p Policy, script ...func(w http.ResponseWriter, r *http.Request)) (*server, *httptest.Server, *Caller, *obs, *http.Client) {
	s := &server{script: script}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	o := &obs{}
	c := New(Options{Provider: "cloudflare", Policy: p, Observe: o.observe})
	return s, ts, c, o, &http.Client{Transport: Transport(nil)}
}

func fast() Policy {
	return Policy{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, CallTimeout: 2 * time.Second}
}

func TestRetries5xxThenSucceeds(t *testing.T) {
	s, ts, c, o, hc := setup(t, fast(), status(503, ""), status(500, ""))
	if err := c.Do(context.Background(), "tunnel.get", "t1", get(hc, ts.URL)); err != nil {
		t.Fatal(err)
	}
	if s.hits() != 3 {
		t.Fatalf("hits = %d, want 3", s.hits())
	}
	want := "[cloudflare/tunnel.get/503/false cloudflare/tunnel.get/500/false cloudflare/tunnel.get/200/false]"
	if fmt.Sprint(o.log) != want {
		t.Fatalf("observed %v", o.log)
	}
}

func TestNever4xx(t *testing.T) {
	for _, code := range []int{400, 401, 403, 404, 409} {
		s, ts, c, o, hc := setup(t, fast(), status(code, ""))
		err := c.Do(context.Background(), "tunnel.create", "tw-acme", get(hc, ts.URL))
		if err == nil || s.hits() != 1 || len(o.log) != 1 {
			t.Fatalf("%d: err=%v hits=%d observed=%v", code, err, s.hits(), o.log)
		}
		if StatusOf(err) != code {
			t.Fatalf("StatusOf = %d, want %d", StatusOf(err), code)
		}
		if !strings.Contains(err.Error(), "cloudflare tunnel.create tw-acme") || strings.Contains(err.Error(), apiSecret) {
			t.Fatalf("error text %q", err)
		}
	}
}

func TestAttemptCap(t *testing.T) {
	var script []func(http.ResponseWriter, *http.Request)
	for range 10 {
		script = append(script, status(502, ""))
	}
	s, ts, c, _, hc := setup(t, fast(), script...)
	err := c.Do(context.Background(), "dns.list", "", get(hc, ts.URL))
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 4 || s.hits() != 4 {
		t.Fatalf("err=%v hits=%d", err, s.hits())
	}
	if !strings.Contains(err.Error(), "after 4 attempts") {
		t.Fatalf("error text %q", err)
	}
}

// TestRetryAfterHonoured: the second request arrives no earlier than the
// Retry-After the first one was given (a lower bound, not a timing race).
func TestRetryAfterHonoured(t *testing.T) {
	s, ts, c, o, hc := setup(t, fast(), status(429, "1"))
	if err := c.Do(context.Background(), "tunnel.list", "", get(hc, ts.URL)); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	gap := s.times[1].Sub(s.times[0])
	s.mu.Unlock()
	if gap < time.Second {
		t.Fatalf("retried after %v, Retry-After was 1s", gap)
	}
	if o.log[0] != "cloudflare/tunnel.list/429/true" {
		t.Fatalf("observed %v", o.log)
	}
}

// A pause extended while a call waits (a second 429 came back from a
// request already on the wire) is waited out in full: the call looks at the
// gate again when it wakes instead of going at the first deadline.
func TestPauseExtendedWhileWaiting(t *testing.T) {
	s, ts, c, _, hc := setup(t, fast())
	c.block(100 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- c.Do(context.Background(), "tunnel.get", "t1", get(hc, ts.URL)) }()
	time.Sleep(20 * time.Millisecond)               // let the call start waiting on the first pause (power only)
	until := time.Now().Add(400 * time.Millisecond) // before block: the real pause ends no earlier
	c.block(400 * time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.sentOnceAfter(t, until, "the extended pause")
}

// sentOnceAfter fails unless exactly one request came, not before until.
func (s *server) sentOnceAfter(t *testing.T, until time.Time, what string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.times) != 1 || s.times[0].Before(until) {
		t.Fatalf("request at %v, %s ended at %v", s.times, what, until)
	}
}

// heldLimiter holds Wait until released: a call is inside the limiter.
type heldLimiter struct {
	entered chan struct{}
	release chan struct{}
}

func (l *heldLimiter) Wait(ctx context.Context) error {
	select {
	case l.entered <- struct{}{}:
	default:
	}
	select {
	case <-l.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A 429 that comes back while a call waits on the limiter pauses it too:
// the call looks at the gate again after the limiter lets it go.
func TestPauseSetWhileInTheLimiter(t *testing.T) {
	s := &server{}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	l := &heldLimiter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	c := New(Options{Provider: "cloudflare", Policy: fast(), Limit: func(string) ratelimit.Limiter { return l }})
	hc := &http.Client{Transport: Transport(nil)}
	done := make(chan error, 1)
	go func() { done <- c.Do(context.Background(), "tunnel.get", "t1", get(hc, ts.URL)) }()
	<-l.entered
	until := time.Now().Add(300 * time.Millisecond) // before block: the pause ends no earlier
	c.block(300 * time.Millisecond)
	close(l.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.sentOnceAfter(t, until, "the pause set while it was in the limiter")
}

// The transport pauses the Caller the moment a 429 with a Retry-After
// comes back, before the SDK decodes the answer: another worker's call
// passing the gate meanwhile waits too.
func TestTransportPausesOnA429(t *testing.T) {
	gotAnswer := make(chan struct{})
	proceed := make(chan struct{})
	ts429 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status(429, "1")(w, r)
	}))
	t.Cleanup(ts429.Close)
	c := New(Options{Provider: "cloudflare", Policy: Policy{MaxAttempts: 1, CallTimeout: 2 * time.Second}})
	hc := &http.Client{Transport: Transport(nil)}
	first := make(chan error, 1)
	go func() {
		first <- c.Do(context.Background(), "tunnel.list", "", func(ctx context.Context) error {
			resp, err := hc.Do(mustReq(ctx, ts429.URL))
			if err != nil {
				return err
			}
			resp.Body.Close()
			close(gotAnswer) // the SDK would decode now; Do has not seen the 429 yet
			<-proceed
			return fmt.Errorf("status %d", resp.StatusCode)
		})
	}()
	<-gotAnswer
	if d := c.BlockedFor(); d <= 0 || d > time.Second {
		t.Fatalf("paused for %v right after the 429 came back, want up to its Retry-After of 1s", d)
	}
	close(proceed)
	<-first
}

func mustReq(ctx context.Context, url string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	return req
}

// A Retry-After longer than the in-call cap is handed back, not slept on,
// and pauses the provider for everyone.
func TestLongRetryAfterHandedBack(t *testing.T) {
	p := fast()
	p.MaxRetryAfter = 100 * time.Millisecond
	s, ts, c, _, hc := setup(t, p, status(429, "120"))
	err := c.Do(context.Background(), "tunnel.list", "", get(hc, ts.URL))
	if err == nil || s.hits() != 1 {
		t.Fatalf("err=%v hits=%d", err, s.hits())
	}
	if ra := RetryAfterOf(err); ra != 120*time.Second {
		t.Fatalf("RetryAfterOf = %v", ra)
	}
	if c.BlockedFor() < 100*time.Second {
		t.Fatalf("provider not paused: %v", c.BlockedFor())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Do(ctx, "tunnel.get", "x", get(hc, ts.URL)); err == nil || s.hits() != 1 {
		t.Fatalf("call went out during the pause: err=%v hits=%d", err, s.hits())
	}
}

func TestPerAttemptTimeoutRetried(t *testing.T) {
	p := fast()
	p.CallTimeout = 50 * time.Millisecond
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	s, ts, c, o, hc := setup(t, p, hang)
	if err := c.Do(context.Background(), "ssm.GetParameter", "/p", get(hc, ts.URL)); err != nil {
		t.Fatal(err)
	}
	if s.hits() != 2 || o.log[0] != "cloudflare/ssm.GetParameter/0/false" {
		t.Fatalf("hits=%d observed=%v", s.hits(), o.log)
	}
}

func TestConnectionErrorRetried(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close()
	c := New(Options{Provider: "ec2", Policy: fast()})
	err := c.Do(context.Background(), "DescribeInstances", "", get(&http.Client{Transport: Transport(nil)}, url))
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 4 {
		t.Fatalf("err=%v", err)
	}
}

func TestNotSentIsPermanent(t *testing.T) {
	c := New(Options{Provider: "ssm", Policy: fast()})
	var n int
	err := c.Do(context.Background(), "PutParameter", "/p", func(ctx context.Context) error { n++; return errors.New("validation: name empty") })
	if err == nil || n != 1 {
		t.Fatalf("err=%v n=%d", err, n)
	}
}

func TestCallerContextEnds(t *testing.T) {
	var script []func(http.ResponseWriter, *http.Request)
	for range 10 {
		script = append(script, status(500, ""))
	}
	p := fast()
	p.MaxAttempts = 100
	p.BaseDelay, p.MaxDelay = 50*time.Millisecond, 50*time.Millisecond
	_, ts, c, _, hc := setup(t, p, script...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := c.Do(ctx, "op", "r", get(hc, ts.URL))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err=%v", err)
	}
}

type countLimiter struct{ n atomic.Int64 }

func (l *countLimiter) Wait(ctx context.Context) error { l.n.Add(1); return ctx.Err() }

func TestLimiterPerAttempt(t *testing.T) {
	s := &server{script: []func(http.ResponseWriter, *http.Request){status(500, ""), status(500, "")}}
	ts := httptest.NewServer(s)
	defer ts.Close()
	lim := &countLimiter{}
	var ops []string
	c := New(Options{Provider: "ec2", Policy: fast(), Limit: func(op string) ratelimit.Limiter { ops = append(ops, op); return lim }})
	if err := c.Do(context.Background(), "RunInstances", "acme", get(&http.Client{Transport: Transport(nil)}, ts.URL)); err != nil {
		t.Fatal(err)
	}
	if lim.n.Load() != 3 || ops[0] != "RunInstances" {
		t.Fatalf("limiter waits %d (ops %v), want one per attempt (3)", lim.n.Load(), ops)
	}
}

var errNotFound = errors.New("not found")

func TestWithKind(t *testing.T) {
	_, ts, c, _, hc := setup(t, fast(), status(404, ""))
	err := WithKind(c.Do(context.Background(), "tunnel.get", "t9", get(hc, ts.URL)), errNotFound)
	if !errors.Is(err, errNotFound) || !strings.Contains(err.Error(), "tunnel.get t9: not found") {
		t.Fatalf("err=%v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "5": 5 * time.Second, "0": 0, "-3": 0, "junk": 0, "1.5": 1500 * time.Millisecond,
		"Thu, 26 Nov 2026 10:00:30 GMT": 30 * time.Second, "Thu, 26 Nov 2026 09:00:00 GMT": 0,
		// Bounded: a pause of a day, or past time.Duration, is MaxPause.
		"86400": MaxPause, "1e10": MaxPause, "1e400": MaxPause, "Inf": MaxPause, "NaN": 0, "-Inf": 0,
		"Fri, 27 Nov 2026 10:00:00 GMT": MaxPause,
	} {
		if got := ParseRetryAfter(v, now); got != want {
			t.Errorf("%q: %v, want %v", v, got, want)
		}
	}
}

// A 200 whose body breaks off mid-read (the connection closed under the
// reader) is retried like a lost response, not reported as a decode failure.
func TestBodyCutShortRetried(t *testing.T) {
	cut := func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n<DescribeInstancesResponse>")
		buf.Flush()
		conn.Close()
	}
	s, ts, c, o, hc := setup(t, fast(), cut)
	read := func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err != nil {
			return fmt.Errorf("failed to decode response body, %w", err)
		}
		return nil
	}
	if err := c.Do(context.Background(), "DescribeInstances", "", read); err != nil {
		t.Fatalf("a body cut short was not retried: %v", err)
	}
	if s.hits() != 2 || len(o.log) != 2 || o.log[0] != "cloudflare/DescribeInstances/200/false" {
		t.Fatalf("hits=%d observed=%v", s.hits(), o.log)
	}
	// A decode failure of a complete body stays permanent.
	if got := ClassifyHTTP(errors.New("failed to decode response body, XML syntax error"), Attempt{Status: 200, Sent: true}); got != Permanent {
		t.Fatalf("a malformed complete body classified %v", got)
	}
}

// closingBody fails every read once closed, as smithy's request stream does.
type closingBody struct {
	r      *strings.Reader
	closed atomic.Bool
}

func (b *closingBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errors.New("read on closed request stream")
	}
	return b.r.Read(p)
}
func (b *closingBody) Close() error { b.closed.Store(true); return nil }

type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// The AWS SDK closes its request stream once the response headers are in,
// while net/http may still read it (aws-sdk-go-v2#2737): the body the
// transport reads must not be that stream.
func TestWrapDoerDetachesRequestBody(t *testing.T) {
	orig := &closingBody{r: strings.NewReader("Action=DescribeInstances&Version=2016-11-15")}
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/", orig)
	req.ContentLength = int64(orig.r.Len())
	var got string
	d := WrapDoer(doerFunc(func(r *http.Request) (*http.Response, error) {
		orig.Close() // the SDK closes its stream mid-request
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		got = string(b)
		if r.ContentLength != int64(len(b)) {
			t.Errorf("ContentLength %d for %d bytes", r.ContentLength, len(b))
		}
		if r.GetBody == nil {
			t.Error("no GetBody: the transport cannot replay the body")
		}
		return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
	}))
	if _, err := d.Do(req); err != nil {
		t.Fatalf("the transport's body broke when the caller closed its stream: %v", err)
	}
	if got != "Action=DescribeInstances&Version=2016-11-15" {
		t.Fatalf("transport read %q", got)
	}
}
