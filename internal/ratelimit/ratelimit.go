// Package ratelimit holds the client-side limiters tunnelward shares across
// all workers, one set per provider, sized to the providers' published
// limits (docs/decisions.md, rate limits) so that the limits are met here rather than
// discovered as throttling errors.
package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is what a caller waits on before each HTTP attempt.
// *rate.Limiter satisfies it.
type Limiter interface {
	Wait(ctx context.Context) error
}

// WindowBudget describes a fixed "N requests per window" budget, like
// Cloudflare's 1200 requests per 5 minutes.
type WindowBudget struct {
	Requests int           // budget per window; default DefaultCloudflare.Requests
	Window   time.Duration // default 5m
	Burst    int           // token bucket size; default 10
}

// CloudflareLimit is Cloudflare's documented budget: 1200 requests per 5
// minutes per user, shared by the dashboard, API keys and tokens.
const CloudflareLimit = 1200

// DefaultCloudflare is what tunnelward allows itself of CloudflareLimit. It
// keeps 50 requests back: the budget is shared with people using the
// dashboard, and the provider counts arrival times while the limiter counts
// send times, so latency jitter can move a few requests between windows.
// Going over blocks every call for the rest of the window, so the margin is
// cheap insurance (about 4% of throughput). Burst 10 gives r = 1140/300 s
// = 3.8 requests/s sustained.
var DefaultCloudflare = WindowBudget{Requests: CloudflareLimit - 50, Window: 5 * time.Minute, Burst: 10}

// NewWindowLimiter returns a token bucket that can never let more than
// Requests through in any interval of length Window: a bucket of size B
// refilled at rate r admits at most B + r·W requests in any window W, so
// r = (Requests − B) / W. Going over Cloudflare's budget blocks every call for
// the rest of the window, so the bound must hold exactly, not on average.
func NewWindowLimiter(b WindowBudget) (*Resizable, error) {
	b, err := b.normalized()
	if err != nil {
		return nil, err
	}
	r := rate.Limit(float64(b.Requests-b.Burst) / b.Window.Seconds())
	return NewResizable(r, b.Burst), nil
}

// SetWindowShare makes l, built by NewWindowLimiter(b), admit share (0..1]
// of b: rate and burst both scaled, so replicas whose shares add up to 1
// together stay within the budget in any window (each burst rounded down,
// at least 1). For a budget several processes share, like Cloudflare's
// per-user one.
func SetWindowShare(l *Resizable, b WindowBudget, share float64) {
	b, err := b.normalized()
	if err != nil || share <= 0 {
		return
	}
	share = min(share, 1)
	burst := max(1, int(float64(b.Burst)*share))
	l.Resize(rate.Limit(float64(b.Requests-b.Burst)*share/b.Window.Seconds()), burst)
}

func (b WindowBudget) normalized() (WindowBudget, error) {
	if b.Requests == 0 {
		b.Requests = DefaultCloudflare.Requests
	}
	if b.Window == 0 {
		b.Window = DefaultCloudflare.Window
	}
	if b.Burst == 0 {
		b.Burst = min(DefaultCloudflare.Burst, b.Requests/2)
	}
	if b.Requests < 2 || b.Window < 0 || b.Burst < 1 || b.Burst >= b.Requests {
		return b, fmt.Errorf("rate budget %d per %v with burst %d: need 1 <= burst < requests and a positive window",
			b.Requests, b.Window, b.Burst)
	}
	return b, nil
}

// Bucket is one token bucket's shape.
type Bucket struct {
	Burst int
	Rate  float64 // tokens per second
}

func (b Bucket) limiter() *Resizable { return NewResizable(rate.Limit(b.Rate), b.Burst) }

// EC2Buckets are EC2's per-action throttling buckets. Actions not named in
// PerAction fall into Mutating or NonMutating by their verb.
type EC2Buckets struct {
	PerAction   map[string]Bucket
	Mutating    Bucket
	NonMutating Bucket
}

// RefillHeadroom scales the published refill rates of token-bucket limits
// (EC2, SSM). A client bucket of exactly the server's shape starts and
// refills on a different clock: measured against the emulator, 8 launches
// through an identical RunInstances bucket drew one RequestLimitExceeded
// every run, because the server's bucket began a few milliseconds later.
// Refilling 10% slower removes that edge for the cost of 10% throughput.
const RefillHeadroom = 0.9

// DefaultEC2 is EC2's documented default account throttling, refill rates
// scaled by RefillHeadroom.
func DefaultEC2() EC2Buckets {
	h := RefillHeadroom
	return EC2Buckets{
		PerAction: map[string]Bucket{
			"RunInstances":       {Burst: 5, Rate: 2 * h},
			"TerminateInstances": {Burst: 100, Rate: 5 * h},
			"CreateTags":         {Burst: 100, Rate: 10 * h},
		},
		Mutating:    Bucket{Burst: 50, Rate: 5 * h},
		NonMutating: Bucket{Burst: 100, Rate: 20 * h},
	}
}

// EC2 hands out the bucket for an action. All clients of one account share
// one EC2 value.
type EC2 struct {
	perAction   map[string]*Resizable
	mutating    *Resizable
	nonMutating *Resizable
}

// NewEC2 builds the limiters.
func NewEC2(b EC2Buckets) *EC2 {
	e := &EC2{perAction: map[string]*Resizable{}, mutating: b.Mutating.limiter(), nonMutating: b.NonMutating.limiter()}
	for a, bk := range b.PerAction {
		e.perAction[a] = bk.limiter()
	}
	return e
}

// For returns the limiter an EC2 action draws from.
func (e *EC2) For(action string) Limiter {
	if l, ok := e.perAction[action]; ok {
		return l
	}
	if IsNonMutating(action) {
		return e.nonMutating
	}
	return e.mutating
}

// IsNonMutating reports whether an EC2 action only reads (EC2 puts
// Describe*, Get* and List* in the non-mutating bucket).
func IsNonMutating(action string) bool {
	for _, p := range []string{"Describe", "Get", "List"} {
		if strings.HasPrefix(action, p) {
			return true
		}
	}
	return false
}

// SetBucketShare makes l, built from b, admit share (0..1] of it: rate and
// burst scaled (burst at least 1), so replicas whose shares add up to 1
// together stay within one account's bucket.
func SetBucketShare(l *Resizable, b Bucket, share float64) {
	if share <= 0 {
		return
	}
	share = min(share, 1)
	l.Resize(rate.Limit(b.Rate*share), max(1, int(float64(b.Burst)*share)))
}

// SetShare scales every EC2 bucket to share of b (the buckets e was built
// from), as SetBucketShare.
func (e *EC2) SetShare(b EC2Buckets, share float64) {
	for a, l := range e.perAction {
		SetBucketShare(l, b.PerAction[a], share)
	}
	SetBucketShare(e.mutating, b.Mutating, share)
	SetBucketShare(e.nonMutating, b.NonMutating, share)
}

// DefaultSSM is Parameter Store's default throughput (40 TPS), refill
// scaled by RefillHeadroom.
var DefaultSSM = Bucket{Burst: 40, Rate: 40 * RefillHeadroom}

// NewSSM returns the limiter shared by every SSM call.
func NewSSM(b Bucket) *Resizable { return b.limiter() }
