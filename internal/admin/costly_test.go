package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable time source: Costly's cache and limiter read only it,
// so nothing here depends on how fast the test runs.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type answer struct{ N int64 }

func serveKey(t *testing.T, c *Costly, ctx context.Context, key string, compute Compute) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	c.Serve(rec, httptest.NewRequest(http.MethodGet, "/v1/plan/"+key, nil).WithContext(ctx), key, compute)
	return rec
}

// Answers are reused for TTL; new ones are limited to Burst in a row, then
// one per Every; past that, 429 with Retry-After and nothing computed.
// Errors are not cached.
func TestCostlyCachesAndLimits(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := NewCostly(CostlyOptions{TTL: 10 * time.Second, Every: 10 * time.Second, Burst: 2, What: "/v1/plan", Now: clk.Now})
	var calls atomic.Int64
	compute := func(context.Context) (int, any) { return http.StatusOK, answer{calls.Add(1)} }
	get := func(key string) (*httptest.ResponseRecorder, answer) {
		t.Helper()
		rec := serveKey(t, c, context.Background(), key, compute)
		var a answer
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
		}
		return rec, a
	}
	expect := func(what string, rec *httptest.ResponseRecorder, code int, cache, age string, n int64, a answer) {
		t.Helper()
		if rec.Code != code || rec.Header().Get("X-Cache") != cache || rec.Header().Get("Age") != age || a.N != n {
			t.Fatalf("%s: %d X-Cache %q Age %q answer %d; want %d %q %q %d: %s", what, rec.Code,
				rec.Header().Get("X-Cache"), rec.Header().Get("Age"), a.N, code, cache, age, n, rec.Body)
		}
	}

	rec, a := get("all")
	expect("first", rec, 200, "MISS", "0", 1, a)
	clk.Add(5 * time.Second)
	rec, a = get("all")
	expect("within the TTL", rec, 200, "HIT", "5", 1, a)
	if cc := rec.Header().Get("Cache-Control"); cc != "private, max-age=10" {
		t.Fatalf("Cache-Control %q", cc)
	}
	rec, a = get("acme") // a second key: the limiter's second token
	expect("another key", rec, 200, "MISS", "0", 2, a)
	rec, _ = get("beta") // half a token left: refused, nothing computed
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "5" || calls.Load() != 2 {
		t.Fatalf("over the limit: %d Retry-After %q, %d computations: %s", rec.Code, rec.Header().Get("Retry-After"), calls.Load(), rec.Body)
	}
	if body := rec.Body.String(); !strings.Contains(body, "too many /v1/plan requests") || !strings.Contains(body, "retry in 5s") {
		t.Fatalf("429 body: %s", body)
	}
	// A refused request gives its token back: after Retry-After one
	// computation fits again, and the one after it is refused again.
	rec, a = get("all") // still cached (5 s old), refused or not elsewhere
	expect("cached while limited", rec, 200, "HIT", "5", 1, a)
	clk.Add(5 * time.Second)
	rec, a = get("beta")
	expect("after Retry-After", rec, 200, "MISS", "0", 3, a)
	rec, _ = get("all") // expired (10 s old), and no token left
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "10" || calls.Load() != 3 {
		t.Fatalf("expired answer over the limit: %d Retry-After %q, %d computations", rec.Code, rec.Header().Get("Retry-After"), calls.Load())
	}

	// Errors are not cached: the next request computes again.
	clk.Add(time.Hour) // a full bucket
	fails := 0
	failing := func(context.Context) (int, any) {
		fails++
		return http.StatusBadGateway, map[string]string{"error": "cloud unreachable"}
	}
	for i := range 2 {
		rec := serveKey(t, c, context.Background(), "all", failing)
		if rec.Code != http.StatusBadGateway || rec.Header().Get("X-Cache") != "" || fails != i+1 {
			t.Fatalf("error %d: %d X-Cache %q, %d computations", i, rec.Code, rec.Header().Get("X-Cache"), fails)
		}
	}
}

// Concurrent requests for one key share one computation (and one token).
func TestCostlySharesAComputation(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := NewCostly(CostlyOptions{TTL: time.Minute, Every: time.Hour, Burst: 1, Now: clk.Now})
	release := make(chan struct{})
	var calls atomic.Int64
	compute := func(context.Context) (int, any) {
		n := calls.Add(1)
		<-release
		return http.StatusOK, answer{n}
	}
	const n = 4
	recs := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { recs[i] = serveKey(t, c, context.Background(), "all", compute) })
	}
	waitUntil(t, "every request to wait for the one computation", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		f := c.cache["all"]
		return f != nil && f.waiters == n
	})
	close(release)
	wg.Wait()
	for i, rec := range recs {
		if rec.Code != 200 || rec.Header().Get("X-Cache") != "MISS" || strings.TrimSpace(rec.Body.String()) != `{"N":1}` {
			t.Fatalf("request %d: %d %q %s", i, rec.Code, rec.Header().Get("X-Cache"), rec.Body)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("%d computations for %d concurrent requests, want 1", calls.Load(), n)
	}
}

// A computation nobody waits for any more is cancelled and forgotten.
func TestCostlyCancelsWhenEveryoneLeft(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := NewCostly(CostlyOptions{TTL: time.Minute, Every: time.Second, Burst: 5, Now: clk.Now})
	cancelled := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *httptest.ResponseRecorder)
	go func() {
		done <- serveKey(t, c, ctx, "all", func(cctx context.Context) (int, any) {
			<-cctx.Done()
			close(cancelled)
			return http.StatusBadGateway, map[string]string{"error": cctx.Err().Error()}
		})
	}()
	waitUntil(t, "the computation to start", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.cache["all"] != nil })
	cancel()
	<-done
	<-cancelled // the computation saw its context end
	rec := serveKey(t, c, context.Background(), "all", func(context.Context) (int, any) { return 200, answer{7} })
	if rec.Code != 200 || rec.Header().Get("X-Cache") != "MISS" || !strings.Contains(rec.Body.String(), "7") {
		t.Fatalf("after the abandoned computation: %d %q %s", rec.Code, rec.Header().Get("X-Cache"), rec.Body)
	}
}

// waitUntil polls cond: for goroutines to reach a state, never to let time
// pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
