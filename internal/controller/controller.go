// Package controller is the generic loop that drives a reconciler, in the
// manner of controller-runtime's: a keyed work queue, a fixed number of
// workers, never two workers on one key, per-key backoff on errors, a
// requeue after a delay when the reconciler asks for one, and a terminal
// error type for what retrying cannot fix. It knows nothing of what a key
// names; tunnelward's org reconciler (internal/reconcile) is one Reconciler.
package controller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelward/tunnelward/internal/workqueue"
)

// Result says when a key wants another look.
type Result struct {
	RequeueAfter time.Duration
}

// Reconciler converges one key. It is level-based: it reads the current
// desired and observed state itself, so being called again is always safe.
type Reconciler interface {
	Reconcile(ctx context.Context, key string) (Result, error)
}

// TerminalError wraps what retrying cannot fix (bad configuration, a
// record that cannot be read): the key is not retried until something
// queues it again.
type TerminalError struct {
	Err    error
	Reason string // a short machine-readable reason; "TerminalError" when empty
}

func (e *TerminalError) Error() string { return e.Err.Error() }
func (e *TerminalError) Unwrap() error { return e.Err }

// Terminal marks err as not worth retrying.
func Terminal(err error) error { return &TerminalError{Err: err} }

// Config shapes a controller. Zero values take the defaults named beside them.
type Config struct {
	Workers int           // default 4
	Timeout time.Duration // one Reconcile call; default 2m
	// ShutdownGrace is what reconciles in flight get to finish when the
	// controller stops, so one rarely stops between a cloud call and
	// recording its result (which is safe, only slower to resume).
	// Default 10s.
	ShutdownGrace time.Duration
	Logger        *slog.Logger
	// Observe, when set, gets each Reconcile's result ("ok", "requeue",
	// "error", "terminal") and duration; Retry each backoff requeue.
	Observe func(result string, d time.Duration)
	Retry   func()
	// KeyAttr names the key in log lines (e.g. "org_id").
	KeyAttr string
}

// Controller runs a Reconciler over the keys of a queue.
type Controller struct {
	cfg   Config
	r     Reconciler
	queue *workqueue.Queue

	inflight   sync.Map
	overlaps   atomic.Int64
	reconciles atomic.Int64
}

// New returns a controller for r over queue (a fresh one when nil).
func New(cfg Config, r Reconciler, queue *workqueue.Queue) *Controller {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.KeyAttr == "" {
		cfg.KeyAttr = "key"
	}
	if queue == nil {
		queue = workqueue.New(workqueue.Config{})
	}
	return &Controller{cfg: cfg, r: r, queue: queue}
}

// Queue is the controller's work queue.
func (c *Controller) Queue() *workqueue.Queue { return c.queue }

// Overlaps counts reconciles that started for a key another worker was
// still reconciling: always zero unless the queue is broken.
func (c *Controller) Overlaps() int64 { return c.overlaps.Load() }

// Reconciles counts Reconcile calls made by the workers.
func (c *Controller) Reconciles() int64 { return c.reconciles.Load() }

// Run starts the workers and blocks until ctx ends; then reconciles in
// flight get ShutdownGrace to finish, and queued keys are left for the
// next start.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Go(func() { c.worker(ctx) })
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
}

func (c *Controller) worker(ctx context.Context) {
	for {
		key, shutdown := c.queue.Get()
		if shutdown {
			return
		}
		if ctx.Err() == nil { // shutting down: what is still queued waits for the next start
			c.process(ctx, key)
		}
		c.queue.Done(key)
	}
}

func (c *Controller) process(parent context.Context, key string) {
	log := c.cfg.Logger.With(c.cfg.KeyAttr, key)
	if _, busy := c.inflight.LoadOrStore(key, struct{}{}); busy {
		c.overlaps.Add(1)
		log.Error("key reconciled by two workers at once")
	} else {
		defer c.inflight.Delete(key)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), c.cfg.Timeout)
	defer cancel()
	stopGrace := context.AfterFunc(parent, func() { time.AfterFunc(c.cfg.ShutdownGrace, cancel) })
	defer stopGrace()
	start := time.Now()
	c.reconciles.Add(1)
	res, err := c.r.Reconcile(ctx, key)
	var term *TerminalError
	result := "ok"
	switch {
	case err != nil && errors.As(err, &term):
		result = "terminal"
		log.Error("reconcile failed; not retried until it is queued again", "err", err)
		c.queue.Forget(key)
	case err != nil:
		if parent.Err() != nil {
			return
		}
		result = "error"
		log.Warn("reconcile failed; retrying with backoff", "err", err, "retries", c.queue.NumRequeues(key))
		if c.cfg.Retry != nil {
			c.cfg.Retry()
		}
		c.queue.AddRateLimited(key)
	default:
		c.queue.Forget(key)
		if res.RequeueAfter > 0 {
			// A requeue waits for something under way (a boot, a connect, a
			// grace): finishing work, served before keys not started yet.
			result = "requeue"
			c.queue.AddAfterFirst(key, res.RequeueAfter)
		}
	}
	if c.cfg.Observe != nil {
		c.cfg.Observe(result, time.Since(start))
	}
}
