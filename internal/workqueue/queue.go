// Package workqueue is a keyed work queue in the spirit of client-go's
// util/workqueue: a dirty set and a processing set give "queued twice,
// processed once", "never two workers on one key" and "re-added while
// processing runs once more after". On top sit delayed adds (requeue after a
// delay) and per-key capped exponential backoff with jitter for failures.
package workqueue

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Config shapes the failure backoff. Zero values take the defaults.
type Config struct {
	BaseDelay time.Duration // first failure's delay; default 1s
	MaxDelay  time.Duration // cap; default 5m
}

// Queue is safe for use by many goroutines.
type Queue struct {
	base, max time.Duration

	mu         sync.Mutex
	cond       *sync.Cond
	queue      []string            // keys in order; each also in dirty
	nFirst     int                 // queue[:nFirst] are keys added with AddAfterFirst
	first      map[string]struct{} // keys that go ahead of the others when queued
	dirty      map[string]struct{} // keys that need processing
	processing map[string]struct{} // keys handed to a worker and not Done
	waiting    map[string]*delayed // keys scheduled for later
	failures   map[string]int
	shutdown   bool
	rnd        *rand.Rand
}

type delayed struct {
	at    time.Time
	timer *time.Timer
}

// New returns an empty queue.
func New(cfg Config) *Queue {
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = time.Second
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 5 * time.Minute
	}
	if cfg.MaxDelay < cfg.BaseDelay {
		cfg.MaxDelay = cfg.BaseDelay
	}
	q := &Queue{
		base: cfg.BaseDelay, max: cfg.MaxDelay,
		dirty:      map[string]struct{}{},
		processing: map[string]struct{}{},
		waiting:    map[string]*delayed{},
		first:      map[string]struct{}{},
		failures:   map[string]int{},
		rnd:        rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add marks key as needing processing. A key already queued is not queued
// again; a key being processed is queued again when its worker calls Done.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue) addLocked(key string) {
	if q.shutdown {
		return
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	q.dirty[key] = struct{}{}
	if _, ok := q.processing[key]; ok {
		return // Done will queue it
	}
	q.enqueueLocked(key)
}

// enqueueLocked puts a dirty key in line: after the other first keys when
// it was added with AddAfterFirst, else at the end.
func (q *Queue) enqueueLocked(key string) {
	if _, ok := q.first[key]; ok {
		q.queue = slices.Insert(q.queue, q.nFirst, key)
		q.nFirst++
	} else {
		q.queue = append(q.queue, key)
	}
	q.cond.Signal()
}

// AddAfterFirst is AddAfter for work that finishes something already
// started (a readiness poll, a delete in progress): when due, key is
// handed out before every key added otherwise, in the order such keys
// came due. A key already queued the ordinary way moves ahead now.
func (q *Queue) AddAfterFirst(key string, delay time.Duration) {
	q.mu.Lock()
	if !q.shutdown {
		q.first[key] = struct{}{}
		if i := slices.Index(q.queue[q.nFirst:], key); i >= 0 {
			q.queue = slices.Delete(q.queue, q.nFirst+i, q.nFirst+i+1)
			q.queue = slices.Insert(q.queue, q.nFirst, key)
			q.nFirst++
		}
	}
	q.mu.Unlock()
	q.AddAfter(key, delay)
}

// AddAfter adds key once delay has passed. When the key is already waiting,
// the earlier of the two times wins, so a requeue can only be brought
// forward, never pushed back.
func (q *Queue) AddAfter(key string, delay time.Duration) {
	if delay <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	at := time.Now().Add(delay)
	if d, ok := q.waiting[key]; ok {
		if !at.Before(d.at) {
			return
		}
		d.timer.Stop()
	}
	d := &delayed{at: at}
	d.timer = time.AfterFunc(delay, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.waiting[key] != d {
			return // superseded by an earlier AddAfter
		}
		delete(q.waiting, key)
		q.addLocked(key)
	})
	q.waiting[key] = d
}

// AddRateLimited adds key after its backoff: BaseDelay·2^failures capped at
// MaxDelay, with equal jitter (half fixed, half random) so many failing keys
// spread out but none retries immediately.
func (q *Queue) AddRateLimited(key string) {
	q.AddAfter(key, q.nextBackoff(key))
}

func (q *Queue) nextBackoff(key string) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.failures[key]
	q.failures[key] = n + 1
	d := q.base
	for i := 0; i < n && d < q.max; i++ {
		d *= 2
	}
	d = min(d, q.max)
	half := d / 2
	return half + time.Duration(q.rnd.Int64N(int64(half)+1))
}

// Forget clears key's failure count (call it after a success).
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// NumRequeues is how many failures key has had since its last Forget.
func (q *Queue) NumRequeues(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Get blocks until a key is available or the queue is shut down and empty.
// The caller must call Done(key) when finished with it.
func (q *Queue) Get() (key string, shutdown bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if len(q.queue) == 0 {
		return "", true
	}
	key = q.queue[0]
	q.queue[0] = ""
	q.queue = q.queue[1:]
	if q.nFirst > 0 {
		q.nFirst--
	}
	if _, later := q.waiting[key]; !later {
		delete(q.first, key)
	}
	q.processing[key] = struct{}{}
	delete(q.dirty, key)
	return key, false
}

// Done marks key as no longer processed; if it was added meanwhile it is
// queued again now.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if _, ok := q.dirty[key]; ok {
		q.enqueueLocked(key)
	}
	if len(q.processing) == 0 {
		q.cond.Broadcast() // wakes ShutDownWithDrain
	}
}

// Len is the number of keys ready to be processed (not counting delayed or
// in-process keys). For metrics.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// Waiting is the number of keys scheduled for later. For metrics.
func (q *Queue) Waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}

// ShutDown stops accepting keys and drops delayed ones. Keys already queued
// are still handed out; once the queue is empty Get returns shutdown=true.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdownLocked()
}

func (q *Queue) shutdownLocked() {
	q.shutdown = true
	for k, d := range q.waiting {
		d.timer.Stop()
		delete(q.waiting, k)
	}
	q.cond.Broadcast()
}

// ShutDownWithDrain shuts down and waits until every key handed to a worker
// is Done and the queue is empty, or ctx ends.
func (q *Queue) ShutDownWithDrain(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdownLocked()
	for len(q.processing) > 0 || len(q.queue) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		q.cond.Wait()
	}
	return nil
}

// ShuttingDown reports whether ShutDown was called.
func (q *Queue) ShuttingDown() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shutdown
}
