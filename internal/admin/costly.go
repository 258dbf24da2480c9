package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// CostlyOptions shape a Costly.
type CostlyOptions struct {
	// TTL is how long a successful answer is served again without being
	// computed.
	TTL time.Duration
	// Every and Burst limit computations (cache misses): at most Burst in a
	// row, then one per Every. Burst must be at least 1.
	Every time.Duration
	Burst int
	// What names the endpoint in the 429 message (e.g. "/v1/plan").
	What string
	// Now is the clock (time.Now when nil); tests set it.
	Now func() time.Time
}

// Costly serves answers that are expensive to compute: the dry run reads
// the clouds, spending the Cloudflare budget the reconciles need, and
// anyone who can reach the admin API can ask for it. Successful answers are
// cached per key for TTL; concurrent requests for one key share one
// computation; computations are rate limited, and a request that would
// need one beyond the limit gets 429 with Retry-After instead of waiting.
type Costly struct {
	opts CostlyOptions
	lim  *rate.Limiter

	mu    sync.Mutex
	cache map[string]*flight
}

// flight is one computation of a key and, once done, its answer.
type flight struct {
	done    chan struct{} // closed when code and body are set
	code    int
	body    []byte
	at      time.Time // when the answer was ready
	waiters int       // requests waiting for it
	cancel  context.CancelFunc
}

// NewCostly returns a Costly with these options.
func NewCostly(o CostlyOptions) *Costly {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.What == "" {
		o.What = "this endpoint"
	}
	return &Costly{opts: o, lim: rate.NewLimiter(rate.Every(o.Every), o.Burst), cache: map[string]*flight{}}
}

// Compute produces an answer: an HTTP status and the value to encode as
// JSON. Only 200 answers are cached.
type Compute func(ctx context.Context) (code int, v any)

// Serve answers r with key's cached answer, or the answer of the
// computation of key in progress, or a new computation when the rate limit
// allows one, or 429. The answer says how old it is: Age (whole seconds
// since it was computed) and X-Cache (HIT when it was computed before this
// request arrived, MISS otherwise).
func (c *Costly) Serve(w http.ResponseWriter, r *http.Request, key string, compute Compute) {
	now := c.opts.Now()
	c.mu.Lock()
	f := c.cache[key]
	switch {
	case f != nil && f.ready() && now.Sub(f.at) < c.opts.TTL:
		c.mu.Unlock()
		c.write(w, f, "HIT", now)
		return
	case f != nil && !f.ready():
		f.waiters++ // share the computation in progress
	default:
		res := c.lim.ReserveN(now, 1)
		if delay := res.DelayFrom(now); !res.OK() || delay > 0 {
			res.CancelAt(now) // give the token back: nothing is computed
			c.mu.Unlock()
			c.tooMany(w, delay)
			return
		}
		c.pruneLocked(now)
		// The computation outlives the request that started it while
		// others wait for it; it is cancelled when every waiter left.
		ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
		f = &flight{done: make(chan struct{}), waiters: 1, cancel: cancel}
		c.cache[key] = f
		go c.run(ctx, key, f, compute)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
		c.write(w, f, "MISS", c.opts.Now())
	case <-r.Context().Done():
		c.mu.Lock()
		f.waiters--
		if f.waiters == 0 && !f.ready() {
			f.cancel()
			if c.cache[key] == f {
				delete(c.cache, key) // a later request starts afresh
			}
		}
		c.mu.Unlock()
	}
}

func (c *Costly) run(ctx context.Context, key string, f *flight, compute Compute) {
	defer f.cancel()
	code, v := compute(ctx)
	body, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(map[string]string{"error": "encoding the answer failed: " + err.Error()})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f.code, f.body, f.at = code, append(body, '\n'), c.opts.Now()
	if code != http.StatusOK && c.cache[key] == f {
		delete(c.cache, key) // errors are not cached: the next request retries (within the limit)
	}
	close(f.done)
}

// ready reports whether f's answer is set. Call with c.mu held or after
// done is closed.
func (f *flight) ready() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// pruneLocked drops expired answers, so keys (one per org) do not pile up.
func (c *Costly) pruneLocked(now time.Time) {
	for k, f := range c.cache {
		if f.ready() && now.Sub(f.at) >= c.opts.TTL {
			delete(c.cache, k)
		}
	}
}

func (c *Costly) write(w http.ResponseWriter, f *flight, cache string, now time.Time) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if f.code == http.StatusOK {
		age := max(now.Sub(f.at), 0)
		h.Set("Age", strconv.Itoa(int(age/time.Second)))
		h.Set("Cache-Control", "private, max-age="+strconv.Itoa(int(c.opts.TTL/time.Second)))
		h.Set("X-Cache", cache)
	}
	w.WriteHeader(f.code)
	_, _ = w.Write(f.body)
}

func (c *Costly) tooMany(w http.ResponseWriter, delay time.Duration) {
	secs := max(int(math.Ceil(delay.Seconds())), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf(
		"too many %s requests: each new answer reads the clouds, whose API budget the reconciles need; "+
			"answers are reused for %s, and new ones are computed at most %d in a row, then one per %s; retry in %ds",
		c.opts.What, c.opts.TTL, c.opts.Burst, c.opts.Every, secs))
}
