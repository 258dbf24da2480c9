package metrics

import (
	"sort"
	"sync"
	"time"
)

// RecentWindow is the span RecentAPICalls counts over: Cloudflare's budget
// window (1200 requests per 5 minutes), so the admin status page can set
// the count against the limit without a Prometheus server to ask.
const RecentWindow = 5 * time.Minute

// recentSlot is how finely the window moves: the count covers the last
// RecentWindow to within one slot.
const recentSlot = 10 * time.Second

// Recent is one provider's cloud API attempts over the last RecentWindow.
type Recent struct {
	Provider  string
	Requests  int // HTTP attempts, whatever their answer
	Throttled int // of which the provider throttled (429, RequestLimitExceeded)
	Failed    int // of which 5xx or no answer at all
}

// recentCalls is a ring of per-slot counts per provider.
type recentCalls struct {
	now   func() time.Time
	mu    sync.Mutex
	rings map[string]*ring
}

type ring struct {
	epoch [int(RecentWindow / recentSlot)]int64 // slot number each bucket holds
	count [int(RecentWindow / recentSlot)][3]int
}

func newRecentCalls(now func() time.Time) *recentCalls {
	return &recentCalls{now: now, rings: map[string]*ring{}}
}

func (r *recentCalls) add(provider string, status int, throttled bool) {
	slot := r.now().UnixNano() / int64(recentSlot)
	r.mu.Lock()
	defer r.mu.Unlock()
	rg := r.rings[provider]
	if rg == nil {
		rg = &ring{}
		r.rings[provider] = rg
	}
	i := int(slot % int64(len(rg.epoch)))
	if rg.epoch[i] != slot {
		rg.epoch[i], rg.count[i] = slot, [3]int{}
	}
	rg.count[i][0]++
	if throttled {
		rg.count[i][1]++
	}
	if c := StatusClass(status); c == "5xx" || c == "error" {
		rg.count[i][2]++
	}
}

func (r *recentCalls) sum() []Recent {
	slot := r.now().UnixNano() / int64(recentSlot)
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Recent, 0, len(r.rings))
	for p, rg := range r.rings {
		rc := Recent{Provider: p}
		for i, e := range rg.epoch {
			if e > slot-int64(len(rg.epoch)) && e <= slot {
				rc.Requests += rg.count[i][0]
				rc.Throttled += rg.count[i][1]
				rc.Failed += rg.count[i][2]
			}
		}
		out = append(out, rc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Provider < out[j].Provider })
	return out
}

// RecentAPICalls is each provider's cloud API attempts over the last
// RecentWindow, sorted by provider (nil before the first call).
func (m *Metrics) RecentAPICalls() []Recent {
	if m == nil {
		return nil
	}
	return m.recent.sum()
}
