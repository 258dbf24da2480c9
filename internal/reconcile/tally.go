package reconcile

import (
	"maps"
	"sync"

	"github.com/tunnelward/tunnelward/internal/state"
)

// conditionTally is the orgs-by-condition gauge, kept as conditions change:
// counted from bbolt once at start (CountConditions), then moved by every
// committed change the engine makes (serialStore calls change), so it is
// right from the first scrape and never waits for a sweep.
type conditionTally struct {
	mu     sync.Mutex
	counts map[string]int
	set    func(map[string]int)
}

// reset replaces the counts with a full count.
func (t *conditionTally) reset(counts map[string]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counts = maps.Clone(counts)
	t.set(maps.Clone(t.counts))
}

// change moves the counts by one org's conditions before and after a write.
func (t *conditionTally) change(before, after []state.Condition) {
	delta := map[string]int{}
	for _, c := range before {
		if c.Status {
			delta[c.Type]--
		}
	}
	for _, c := range after {
		if c.Status {
			delta[c.Type]++
		}
	}
	moved := false
	for _, d := range delta {
		moved = moved || d != 0
	}
	if !moved {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts = map[string]int{}
	}
	for c, d := range delta {
		t.counts[c] += d
	}
	t.set(maps.Clone(t.counts))
}

// ConditionCounts is the current orgs-by-condition count (conditions that are true).
func (e *Engine) ConditionCounts() map[string]int {
	e.tally.mu.Lock()
	defer e.tally.mu.Unlock()
	return maps.Clone(e.tally.counts)
}
