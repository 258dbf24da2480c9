package cloudsim

import (
	"sort"
	"strconv"
	"sync"
)

// callCounter counts requests per operation and HTTP status.
type callCounter struct {
	mu   sync.Mutex
	m    map[string]map[int]int
	lost map[string]int // answered, then the response was cut (FaultLost)
}

func newCallCounter() *callCounter {
	return &callCounter{m: map[string]map[int]int{}, lost: map[string]int{}}
}

// countLost records that op's response will be cut short; the request is
// also counted, with its status, by countCall.
func (s *Sim) countLost(op string) {
	c := s.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lost[op]++
}

// LostCalls returns, per operation, how many responses were cut short
// after the operation was applied.
func (s *Sim) LostCalls() map[string]int {
	c := s.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.lost))
	for op, n := range c.lost {
		out[op] = n
	}
	return out
}

// countCall records one answered request of op with its HTTP status.
// Injected hangs are counted with status 0 (nothing was written).
func (s *Sim) countCall(op string, status int) {
	c := s.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[op] == nil {
		c.m[op] = map[int]int{}
	}
	c.m[op][status]++
}

// Calls returns a copy of the request counts: operation -> HTTP status -> count.
func (s *Sim) Calls() map[string]map[int]int {
	c := s.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]map[int]int, len(c.m))
	for op, st := range c.m {
		cp := make(map[int]int, len(st))
		for k, v := range st {
			cp[k] = v
		}
		out[op] = cp
	}
	return out
}

// CallCount is the number of requests of op answered with any status.
func (s *Sim) CallCount(op string) int {
	c := s.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.m[op] {
		n += v
	}
	return n
}

// ResetCalls zeroes every counter.
func (s *Sim) ResetCalls() {
	c := s.calls
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = map[string]map[int]int{}
	c.lost = map[string]int{}
}

// callsReport is the JSON shape of /_sim/calls.
type callsReport struct {
	Total int                       `json:"total"`
	Ops   map[string]map[string]int `json:"ops"` // op -> "200" -> count
	List  []callsRow                `json:"calls"`
	// Lost counts the requests (also in Ops) whose response was cut short
	// after the operation was applied: op -> count.
	Lost map[string]int `json:"lost"`
}

type callsRow struct {
	Op     string `json:"op"`
	Status int    `json:"status"`
	Count  int    `json:"count"`
}

func (s *Sim) callsReport() callsReport {
	m := s.Calls()
	rep := callsReport{Ops: map[string]map[string]int{}, List: []callsRow{}, Lost: s.LostCalls()}
	for op, st := range m {
		rep.Ops[op] = map[string]int{}
		for code, n := range st {
			rep.Ops[op][strconv.Itoa(code)] = n
			rep.Total += n
			rep.List = append(rep.List, callsRow{Op: op, Status: code, Count: n})
		}
	}
	sort.Slice(rep.List, func(i, j int) bool {
		if rep.List[i].Op != rep.List[j].Op {
			return rep.List[i].Op < rep.List[j].Op
		}
		return rep.List[i].Status < rep.List[j].Status
	})
	return rep
}
