package cloudsim

import "sync"

// callCounter counts requests per operation and HTTP status.
type callCounter struct {
	mu sync.Mutex
	m  map[string]map[int]int
}

func newCallCounter() *callCounter { return &callCounter{m: map[string]map[int]int{}} }

// countCall records one answered request of op with its HTTP status.
func (s *Sim) countCall(op string, status int) {
	c := s.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[op] == nil {
		c.m[op] = map[int]int{}
	}
	c.m[op][status]++
}
