package cloudsim

import (
	"context"
	"math/rand"
	"sync"
	"time"
)

// FaultKind is what injectFault decided for one request.
type FaultKind int

const (
	FaultNone     FaultKind = iota
	FaultError              // answer with a 5xx (Status)
	FaultThrottle           // answer with the provider's throttling error (RetryAfter for Cloudflare)
	FaultHang               // the client gave up (ctx done) while we hung; write nothing
)

// Fault is the decision for one request.
type Fault struct {
	Kind       FaultKind
	Status     int           // HTTP status for FaultError (500, 502, 503) and FaultThrottle (429 / 503 EC2 uses 503? see provider)
	RetryAfter time.Duration // for FaultThrottle
}

// faultSet holds per-operation fault settings and the provider rate limiters.
// TODO(cf/core owner): settings per op and per provider, seeded randomness,
// latency distributions, hangs, Cloudflare window budget, EC2 buckets, SSM TPS.
type faultSet struct {
	mu  sync.Mutex
	rnd *rand.Rand
}

func newFaultSet(seed int64) *faultSet {
	return &faultSet{rnd: rand.New(rand.NewSource(seed))}
}

// injectFault applies latency/hangs and decides errors and throttles for op.
// Must be called without s.mu held (it may sleep or block until ctx is done).
func (s *Sim) injectFault(ctx context.Context, op string) Fault {
	_ = ctx
	_ = op
	return Fault{}
}
