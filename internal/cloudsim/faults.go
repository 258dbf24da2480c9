package cloudsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// FaultKind is what injectFault decided for one request.
type FaultKind int

const (
	FaultNone     FaultKind = iota
	FaultError              // answer with a 5xx (Status)
	FaultThrottle           // answer with the provider's throttling error (Status, RetryAfter)
	FaultHang               // the client gave up (ctx done) while we hung; write nothing
	// FaultLost: the operation is applied, then the connection breaks
	// halfway through the response body, so the client cannot tell whether
	// it happened (a crash-free "applied but unacknowledged").
	FaultLost
)

// Fault is the decision for one request.
//
// Status is already the provider's: for FaultThrottle it is 429 for
// Cloudflare (cf.*), 503 for EC2 (RequestLimitExceeded) and 400 for SSM
// (ThrottlingException); for FaultError it is the rule's 5xx (default 500).
// Reason names why (a rule, or which rate limit), for logs and /_sim/calls.
type Fault struct {
	Kind       FaultKind
	Status     int
	RetryAfter time.Duration // for FaultThrottle; Cloudflare sends it as Retry-After
	Reason     string
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("250ms", "5m"); a bare JSON number is taken as seconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "1.5s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "1.5s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		p, err := time.ParseDuration(x)
		if err != nil {
			return fmt.Errorf("duration %q: %w", x, err)
		}
		*d = Duration(p)
	case float64:
		*d = Duration(x * float64(time.Second))
	case nil:
		*d = 0
	default:
		return fmt.Errorf("duration: want a string like \"250ms\" or a number of seconds, got %s", b)
	}
	return nil
}

// FaultRule injects faults into the operations its Op pattern matches.
// Op is a glob over operation names (path.Match syntax: "cf.*",
// "ec2.RunInstances", "*"); rates are probabilities in [0,1], drawn in
// this order: hang, error, throttle; a request none of them (nor a rate
// limit) refused may then lose its response (LostRate). Latency is added to
// every matching request: uniform in [LatencyMin, LatencyMax], or fixed
// when Max <= Min.
type FaultRule struct {
	Op           string   `json:"op"`
	ErrorRate    float64  `json:"error_rate,omitempty"`
	ErrorStatus  int      `json:"error_status,omitempty"` // 500 when 0
	ThrottleRate float64  `json:"throttle_rate,omitempty"`
	RetryAfter   Duration `json:"retry_after,omitempty"` // Cloudflare throttles; 1s when 0
	LatencyMin   Duration `json:"latency_min,omitempty"`
	LatencyMax   Duration `json:"latency_max,omitempty"`
	HangRate     float64  `json:"hang_rate,omitempty"`
	LostRate     float64  `json:"lost_rate,omitempty"` // applied, then the response breaks off
}

// RateLimits are the provider-shaped rate limits. Each one is off when its
// Enabled is false. EC2Scale multiplies the EC2 capacities and refill rates
// (0 means 1) and SSMReadTPS is settable, so tests can hit them with a
// handful of requests.
type RateLimits struct {
	// Cloudflare: Budget requests per Window per API token (a user; each
	// token has its own window, requests with a token no identity has share
	// one); going over blocks that token's every Cloudflare call with 429 +
	// Retry-After until its window ends.
	CFEnabled bool     `json:"cf_enabled"`
	CFBudget  int      `json:"cf_budget"`
	CFWindow  Duration `json:"cf_window"`

	// EC2: token buckets per region and action class (RunInstances 5 / 2
	// per s, TerminateInstances 100 / 5, CreateTags 100 / 10, other mutating
	// 50 / 5, non-mutating Describe* 100 / 20), RequestLimitExceeded when
	// empty. AWS meters an account per region, so each region has its own.
	EC2Enabled bool    `json:"ec2_enabled"`
	EC2Scale   float64 `json:"ec2_scale,omitempty"`

	// SSM: parameter reads (GetParameter, GetParameters, GetParametersByPath)
	// at ReadTPS with an equal burst per region, ThrottlingException beyond it.
	SSMEnabled bool    `json:"ssm_enabled"`
	SSMReadTPS float64 `json:"ssm_read_tps,omitempty"`
}

// DefaultRateLimits are the providers' published figures.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		CFEnabled: true, CFBudget: 1200, CFWindow: Duration(5 * time.Minute),
		EC2Enabled: true, EC2Scale: 1,
		SSMEnabled: true, SSMReadTPS: 40,
	}
}

// FaultSettings is everything /_sim/faults reads and writes.
type FaultSettings struct {
	Rules  []FaultRule `json:"rules"`
	Limits RateLimits  `json:"rate_limits"`
}

// Validate names the first thing wrong with the settings.
func (fs FaultSettings) Validate() error {
	for i, r := range fs.Rules {
		if r.Op == "" {
			return fmt.Errorf("rules[%d].op: empty; use \"*\" to match every operation", i)
		}
		if _, err := path.Match(r.Op, "x"); err != nil {
			return fmt.Errorf("rules[%d].op %q: %w", i, r.Op, err)
		}
		for name, p := range map[string]float64{"error_rate": r.ErrorRate, "throttle_rate": r.ThrottleRate, "hang_rate": r.HangRate, "lost_rate": r.LostRate} {
			if p < 0 || p > 1 || math.IsNaN(p) {
				return fmt.Errorf("rules[%d].%s: %v is not a probability in [0,1]", i, name, p)
			}
		}
		if r.ErrorStatus != 0 && (r.ErrorStatus < 500 || r.ErrorStatus > 599) {
			return fmt.Errorf("rules[%d].error_status: %d is not a 5xx status", i, r.ErrorStatus)
		}
		if r.LatencyMin < 0 || r.LatencyMax < 0 || r.RetryAfter < 0 {
			return fmt.Errorf("rules[%d]: negative duration", i)
		}
	}
	l := fs.Limits
	if l.CFEnabled && (l.CFBudget <= 0 || l.CFWindow <= 0) {
		return fmt.Errorf("rate_limits: cf_budget and cf_window must be positive when cf_enabled")
	}
	if l.EC2Scale < 0 || l.SSMReadTPS < 0 {
		return fmt.Errorf("rate_limits: ec2_scale and ssm_read_tps must not be negative")
	}
	if l.SSMEnabled && l.SSMReadTPS == 0 {
		return fmt.Errorf("rate_limits: ssm_read_tps must be positive when ssm_enabled")
	}
	return nil
}

// ec2Class is one EC2 throttling bucket: capacity and refill per second.
type ec2Class struct {
	name   string
	burst  int
	refill float64
}

var (
	ec2RunInstances = ec2Class{"RunInstances", 5, 2}
	ec2Terminate    = ec2Class{"TerminateInstances", 100, 5}
	ec2CreateTags   = ec2Class{"CreateTags", 100, 10}
	ec2Mutating     = ec2Class{"mutating", 50, 5}
	ec2NonMutating  = ec2Class{"non-mutating", 100, 20}
)

// ec2ClassOf maps "ec2.<Action>" to its throttling bucket.
func ec2ClassOf(action string) ec2Class {
	switch {
	case action == "RunInstances":
		return ec2RunInstances
	case action == "TerminateInstances":
		return ec2Terminate
	case action == "CreateTags":
		return ec2CreateTags
	case strings.HasPrefix(action, "Describe"), strings.HasPrefix(action, "Get"), strings.HasPrefix(action, "List"):
		return ec2NonMutating
	default:
		return ec2Mutating
	}
}

// faultSet holds per-operation fault settings and the provider rate limiters.
// Randomness is one generator per operation, seeded from (seed, op), so the
// decisions for an operation depend only on the seed and how many requests
// of that operation came before, not on how other operations interleave.
type faultSet struct {
	mu       sync.Mutex
	seed     int64
	settings FaultSettings
	rnds     map[string]*rand.Rand

	cfWindows  map[string]*cfWindow     // by API token ("" for unknown tokens)
	ec2Buckets map[string]*rate.Limiter // by region + "/" + class
	ssmReads   map[string]*rate.Limiter // by region
}

func newFaultSet(seed int64, limits RateLimits) *faultSet {
	f := &faultSet{seed: seed, rnds: map[string]*rand.Rand{}}
	f.setLocked(FaultSettings{Limits: limits})
	return f
}

// setLocked installs settings and resets the limiters. Caller holds f.mu.
func (f *faultSet) setLocked(fs FaultSettings) {
	if fs.Limits.EC2Scale == 0 {
		fs.Limits.EC2Scale = 1
	}
	f.settings = fs
	f.cfWindows = map[string]*cfWindow{}
	f.ec2Buckets = map[string]*rate.Limiter{}
	f.ssmReads = map[string]*rate.Limiter{}
}

func (f *faultSet) rnd(op string) *rand.Rand {
	r := f.rnds[op]
	if r == nil {
		h := fnv.New64a()
		fmt.Fprintf(h, "%d/%s", f.seed, op)
		r = rand.New(rand.NewSource(int64(h.Sum64())))
		f.rnds[op] = r
	}
	return r
}

// FaultSettings returns the current fault settings.
func (s *Sim) FaultSettings() FaultSettings {
	f := s.faults
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.settings
	out.Rules = append([]FaultRule(nil), f.settings.Rules...)
	return out
}

// SetFaultSettings replaces the fault settings (rules and rate limits) and
// restarts every rate-limit window and bucket.
func (s *Sim) SetFaultSettings(fs FaultSettings) error {
	if err := fs.Validate(); err != nil {
		return err
	}
	f := s.faults
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setLocked(fs)
	return nil
}

// injectFault is injectFaultIn in the home region or, for a Cloudflare
// operation, against the budget of tokens no identity has.
func (s *Sim) injectFault(ctx context.Context, op string) Fault {
	if strings.HasPrefix(op, "cf.") {
		return s.injectFaultIn(ctx, op, "")
	}
	return s.injectFaultIn(ctx, op, s.region())
}

// injectFaultIn applies latency/hangs and decides errors and throttles for
// op. scope is whose rate limit the request counts against: for EC2, SSM
// and STS the region it was sent to (AWS meters an account per region), for
// Cloudflare the API token (a user; "" for a token no identity has). Rules
// match by op only. Must be called without s.mu held (it may sleep or block
// until ctx is done).
func (s *Sim) injectFaultIn(ctx context.Context, op, scope string) Fault {
	f := s.faults
	now := s.cfg.Now() // without s.mu: the wall (or test) clock, never an event's time

	f.mu.Lock()
	var latency time.Duration
	var fault Fault
	lost := ""
	for _, r := range f.settings.Rules {
		if ok, _ := path.Match(r.Op, op); !ok {
			continue
		}
		rnd := f.rnd(op)
		if r.LatencyMax > r.LatencyMin {
			latency += time.Duration(r.LatencyMin) + time.Duration(rnd.Int63n(int64(r.LatencyMax-r.LatencyMin)+1))
		} else {
			latency += time.Duration(r.LatencyMin)
		}
		if fault.Kind != FaultNone {
			continue
		}
		switch {
		case r.HangRate > 0 && rnd.Float64() < r.HangRate:
			fault = Fault{Kind: FaultHang, Reason: "rule " + r.Op + ": hang"}
		case r.ErrorRate > 0 && rnd.Float64() < r.ErrorRate:
			st := r.ErrorStatus
			if st == 0 {
				st = 500
			}
			fault = Fault{Kind: FaultError, Status: st, Reason: "rule " + r.Op + ": error"}
		case r.ThrottleRate > 0 && rnd.Float64() < r.ThrottleRate:
			ra := time.Duration(r.RetryAfter)
			if ra == 0 {
				ra = time.Second
			}
			fault = Fault{Kind: FaultThrottle, Status: throttleStatus(op), RetryAfter: ra, Reason: "rule " + r.Op + ": throttle"}
		case lost == "" && r.LostRate > 0 && rnd.Float64() < r.LostRate:
			lost = r.Op
		}
	}
	if fault.Kind == FaultNone {
		fault = f.rateLimitLocked(op, scope, now)
	}
	if fault.Kind == FaultNone && lost != "" {
		fault = Fault{Kind: FaultLost, Reason: "rule " + lost + ": response lost"}
	}
	f.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Fault{Kind: FaultHang, Reason: "client gave up during injected latency"}
		}
	}
	if fault.Kind == FaultHang {
		<-ctx.Done()
	}
	return fault
}

// throttleStatus is the HTTP status each provider throttles with.
func throttleStatus(op string) int {
	switch {
	case strings.HasPrefix(op, "ec2."):
		return 503 // RequestLimitExceeded
	case strings.HasPrefix(op, "ssm."):
		return 400 // ThrottlingException
	default:
		return 429
	}
}

// cfWindow is one API token's fixed rate-limit window.
type cfWindow struct {
	start time.Time
	count int
}

// rateLimitLocked applies the provider-shaped rate limits; scope is the
// region (AWS) or the API token (Cloudflare). Caller holds f.mu.
func (f *faultSet) rateLimitLocked(op, scope string, now time.Time) Fault {
	l := f.settings.Limits
	region := scope
	switch {
	case strings.HasPrefix(op, "cf.") && l.CFEnabled:
		win := time.Duration(l.CFWindow)
		cw := f.cfWindows[scope]
		if cw == nil {
			cw = &cfWindow{}
			f.cfWindows[scope] = cw
		}
		if cw.start.IsZero() || !now.Before(cw.start.Add(win)) {
			cw.start, cw.count = now, 0
		}
		cw.count++
		if cw.count > l.CFBudget {
			left := cw.start.Add(win).Sub(now)
			// Retry-After is whole seconds on the wire; round up so a client
			// that honours it lands after the window, not just before.
			left = time.Duration(math.Ceil(left.Seconds())) * time.Second
			return Fault{Kind: FaultThrottle, Status: 429, RetryAfter: left, Reason: "cloudflare rate limit"}
		}
	case strings.HasPrefix(op, "ec2.") && l.EC2Enabled:
		c := ec2ClassOf(strings.TrimPrefix(op, "ec2."))
		key := region + "/" + c.name
		b := f.ec2Buckets[key]
		if b == nil {
			burst := int(math.Max(1, math.Round(float64(c.burst)*l.EC2Scale)))
			b = rate.NewLimiter(rate.Limit(c.refill*l.EC2Scale), burst)
			b.AllowN(now, 0) // start full at the world's time
			f.ec2Buckets[key] = b
		}
		if !b.AllowN(now, 1) {
			return Fault{Kind: FaultThrottle, Status: 503, Reason: "ec2 " + c.name + " bucket empty in " + region}
		}
	case l.SSMEnabled && (op == "ssm.GetParameter" || op == "ssm.GetParameters" || op == "ssm.GetParametersByPath"):
		b := f.ssmReads[region]
		if b == nil {
			tps := l.SSMReadTPS
			b = rate.NewLimiter(rate.Limit(tps), int(math.Max(1, math.Round(tps))))
			b.AllowN(now, 0)
			f.ssmReads[region] = b
		}
		if !b.AllowN(now, 1) {
			return Fault{Kind: FaultThrottle, Status: 400, Reason: "ssm parameter read TPS in " + region}
		}
	}
	return Fault{}
}

// lostResponse buffers a handler's answer so that cut can send its status,
// headers and half its body, then break the connection: the client sees
// the status and a body cut short (unexpected EOF), as when a connection
// drops mid-response.
type lostResponse struct {
	w      http.ResponseWriter
	status int
	buf    bytes.Buffer
}

// loseResponse wraps w when f is FaultLost, counting the loss for op; defer
// the returned cut, which sends the buffered answer half and breaks it off
// (a no-op for any other fault).
func (s *Sim) loseResponse(w http.ResponseWriter, op string, f Fault) (http.ResponseWriter, func()) {
	if f.Kind != FaultLost {
		return w, func() {}
	}
	s.countLost(op)
	l := &lostResponse{w: w}
	return l, l.cut
}

func (l *lostResponse) Header() http.Header { return l.w.Header() }

func (l *lostResponse) WriteHeader(code int) {
	if l.status == 0 {
		l.status = code
	}
}

func (l *lostResponse) Write(b []byte) (int, error) {
	l.WriteHeader(http.StatusOK)
	return l.buf.Write(b)
}

func (l *lostResponse) cut() {
	l.WriteHeader(http.StatusOK)
	l.w.Header().Set("Content-Length", strconv.Itoa(l.buf.Len()))
	l.w.WriteHeader(l.status)
	_, _ = l.w.Write(l.buf.Bytes()[:l.buf.Len()/2])
	_ = http.NewResponseController(l.w).Flush()
	// The documented way to break a response off: net/http closes the
	// connection without logging a stack.
	panic(http.ErrAbortHandler)
}
