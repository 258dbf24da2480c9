// Package reconcile is tunnelward's engine: per org it compares the desired
// state kept in bbolt with what the clouds show, decides through
// internal/plan what must change, and applies it with idempotent,
// crash-safe steps. Workers pull org ids from a keyed work queue, so one org
// is never worked on by two workers at once; a periodic sweep lists every
// owned resource with paginated calls, requeues drifted orgs and collects
// orphans.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelward/tunnelward/internal/controller"
	"github.com/tunnelward/tunnelward/internal/crashpoint"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/workqueue"
)

// InstanceSpec is how org instances are launched.
type InstanceSpec struct {
	ImageID          string
	InstanceType     string
	SubnetID         string
	SecurityGroupIDs []string
	InstanceProfile  string // name or ARN
}

// Config shapes the engine. Zero values take the defaults named beside them.
// Placement policies (Config.Placement).
const (
	PlaceFill      = "fill"
	PlaceLeastUsed = "least-used"
)

type Config struct {
	ZoneName    string // e.g. sandbox.tunnelward.test (required)
	Service     string // ingress service; default http://localhost:8080
	ParamPrefix string // SSM path prefix; default /tunnelward/tunnels
	Instance    InstanceSpec
	// TokenMaxAge rotates tokens older than this (0: never; rotate.go).
	TokenMaxAge time.Duration
	// Placement is how an org that names no pool is placed among
	// Clouds.Pools: PlaceFill (default: the first pool in order with room)
	// or PlaceLeastUsed (the pool with the most room left, as a fraction).
	Placement string
	// Placements shares the pools' counts between replicas (ledger.go);
	// nil: this process places alone.
	Placements PlacementLedger

	Workers          int           // default 4
	ReconcileTimeout time.Duration // one Reconcile call; default 2m
	ShutdownGrace    time.Duration // in-flight reconciles at shutdown; default 10s

	// BootConnect is the expected time from RunInstances to a connected
	// tunnel: the first readiness poll waits this long. Default 90s.
	BootConnect time.Duration
	// PollInterval spaces later readiness polls. Default 10s.
	PollInterval time.Duration
	// HealthGrace is how long a restarted cloudflared gets before the
	// instance is replaced. Default 60s.
	HealthGrace time.Duration
	// RemediationLimit restarts/replacements are allowed per
	// RemediationWindow per org (no flapping). Defaults 3 per 30m.
	RemediationLimit  int
	RemediationWindow time.Duration

	SweepInterval time.Duration // default 5m; <0 disables the periodic sweep
	GC            bool          // collect orphans (false: only report them)
	// Watch runs each listing on its own, budget-aware interval between
	// sweeps (watch.go); the sweep interval is its ceiling.
	Watch       WatchConfig
	OrphanGrace time.Duration // default 10m
	// DNSBatchWindow is how long a DNS record create or delete waits for
	// others to go out in one batch (dnsbatch.go); default 200ms, < 0 sends
	// each alone. DNSBatchMax bounds a batch (the zone plan's: 200 Free,
	// 3,500 paid); default 200.
	DNSBatchWindow time.Duration
	DNSBatchMax    int

	// Fence decides which orgs this replica reconciles and holds each
	// cloud write to its partition's lease (fence.go); nil: all, always.
	Fence Fence
	// Replica names this replica in the statuses it writes
	// (observed.replica); "" writes none.
	Replica string

	Logger *slog.Logger
	Now    func() time.Time
	// Metrics receives the engine's figures; nil records nothing.
	// *metrics.Metrics satisfies it.
	Metrics Observer
}

// Observer is what the engine reports for metrics.
type Observer interface {
	ObserveReconcile(result string, d time.Duration)
	QueueRetry()
	Remediation(action, outcome string)
	DriftFound(resource string)
	OrphanCollected(resource string)
	SweepDone(d time.Duration, err error)
	SetOrgsByCondition(counts map[string]int)
	SetTunnelsByStatus(counts map[string]int)
	// SetPool sets a Cloudflare pool's use of one resource ("tunnels",
	// "dns_records") against its limit (0: none).
	SetPool(pool, resource string, used, limit int)
	// TokenRotated counts a finished token rotation by trigger
	// ("requested", "max_age"); SetTokensPastMaxAge is how many orgs'
	// tokens are older than the max age, at a sweep.
	TokenRotated(trigger string)
	SetTokensPastMaxAge(n int)
	SetNotReadySince(since time.Time)
	ObserveTimeToReady(d time.Duration)
	SetWatchInterval(listing string, d time.Duration)
	Listing(listing, by string)
}

type noMetrics struct{}

func (noMetrics) ObserveReconcile(string, time.Duration) {}
func (noMetrics) QueueRetry()                            {}
func (noMetrics) Remediation(string, string)             {}
func (noMetrics) DriftFound(string)                      {}
func (noMetrics) OrphanCollected(string)                 {}
func (noMetrics) SweepDone(time.Duration, error)         {}
func (noMetrics) SetOrgsByCondition(map[string]int)      {}
func (noMetrics) SetTunnelsByStatus(map[string]int)      {}
func (noMetrics) SetPool(string, string, int, int)       {}
func (noMetrics) TokenRotated(string)                    {}
func (noMetrics) SetTokensPastMaxAge(int)                {}
func (noMetrics) SetNotReadySince(time.Time)             {}
func (noMetrics) ObserveTimeToReady(time.Duration)       {}
func (noMetrics) SetWatchInterval(string, time.Duration) {}
func (noMetrics) Listing(string, string)                 {}

func (c *Config) defaults() error {
	if c.ZoneName == "" {
		return errors.New("reconcile: config: zone name is required")
	}
	if c.Instance.ImageID == "" {
		return errors.New("reconcile: config: instance AMI (image id) is required")
	}
	if c.Instance.InstanceType == "" {
		c.Instance.InstanceType = "t3.micro"
	}
	if c.Service == "" {
		c.Service = "http://localhost:8080"
	}
	if c.ParamPrefix == "" {
		c.ParamPrefix = owner.DefaultParamPrefix
	}
	if !strings.HasPrefix(c.ParamPrefix, "/") {
		return fmt.Errorf("reconcile: config: SSM path prefix %q must start with /", c.ParamPrefix)
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.ReconcileTimeout <= 0 {
		c.ReconcileTimeout = 2 * time.Minute
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.BootConnect <= 0 {
		c.BootConnect = 90 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 10 * time.Second
	}
	if c.HealthGrace <= 0 {
		c.HealthGrace = 60 * time.Second
	}
	if c.RemediationLimit <= 0 {
		c.RemediationLimit = 3
	}
	if c.RemediationWindow <= 0 {
		c.RemediationWindow = 30 * time.Minute
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 5 * time.Minute
	}
	c.Watch.defaults()
	if c.OrphanGrace <= 0 {
		c.OrphanGrace = 10 * time.Minute
	}
	c.dnsBatchDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
	return nil
}

// Result says when an org wants another look; TerminalError wraps what
// retrying cannot fix (the org gets a Failed condition and is not retried
// until something changes it). Both are the generic controller's.
type (
	Result        = controller.Result
	TerminalError = controller.TerminalError
)

// Terminal marks err as not worth retrying.
func Terminal(err error) error { return controller.Terminal(err) }

// Engine reconciles orgs.
type Engine struct {
	cfg    Config
	clouds Clouds
	store  Store
	queue  *workqueue.Queue
	ctrl   *controller.Controller // runs Reconcile over the queue
	log    *slog.Logger

	// polls remembers orgs whose last reconcile applied everything and only
	// wait for the tunnel to connect: their next look is a single tunnel
	// GET instead of a full observation (Cloudflare budget).
	pollMu sync.Mutex
	polls  map[string]pollState

	orphanMu   sync.Mutex
	orphanSeen map[string]time.Time // resource key -> first seen as orphan

	sweepMu   sync.Mutex
	lastSweep SweepReport

	viewMu sync.Mutex
	view   invView               // the newest result of each listing
	slots  map[Listing]watchSlot // each watch's current slot (watch.go)
	// sweepListing is the running sweeps' listing (watch.go): watches
	// that come due meanwhile wait for it instead of listing the same
	// pages a second time.
	sweepListing sweepListing
	// budgetPPM is this process's share of the budgets in millionths
	// (SetBudgetShare); 0: all of them.
	budgetPPM atomic.Int64
	passMu    sync.Mutex // one inventory pass at a time (the sweep and the watches)

	// planned, when set (tests), sees each pass's final plan: the dry run
	// is checked against exactly what a pass decided.
	planned func(orgID string, p plan.Result)
	// gate, when set (tests), is called before each reconcile: a test holds
	// repairs back to see the status a listing wrote before them.
	gate func(orgID string)

	// tagged maps an org id to the instance id this process last tagged
	// (or saw tagged) on the org's token parameter, so the tag is read back
	// only after a restart (present.go, tagTokenForInstance).
	tagged sync.Map
	// tokens holds the tokens of tunnels created by this process until
	// they are in SSM (step_token.go).
	tokens heldTokens
	// ready runs the early tunnel listings readiness polls share (ready.go).
	ready readyLister
	// dnsBatch gathers the DNS changes of orgs in flight (dnsbatch.go).
	dnsBatch dnsBatchers
	// tombs runs the listings tombstones share (tombstone.go).
	tombs deleteLister
	// pools counts placements in Cloudflare pools (pool.go); poolList is
	// the served pools in fill order.
	pools    poolBook
	poolList []string
	// poolGroup maps each pool the shared placement records keep to its
	// record's key, ledgerKeys lists the keys (ledger.go); both empty
	// without Config.Placements.
	poolGroup  map[string]string
	ledgerKeys []string
	// rotating holds the max-age token rotations in flight (rotate.go).
	rotating rotations

	// tally is the orgs-by-condition gauge, moved by each status write.
	tally conditionTally
	// confirmed maps an org id to when the inventory passes last saw all
	// of its resources as recorded (Seen).
	confirmed sync.Map
	// sweepKick asks the sweep loop for a sweep now (KickSweep).
	sweepKick chan struct{}
}

type pollState struct {
	lastSeq   uint64
	reports   int
	tunnelID  string
	converged time.Time
	listedAt  time.Time // start of the tunnel listing the last poll read (ready.go)
	// notBefore is when a launched instance can first be connected: a pass
	// that comes sooner (the org requeued for another reason) looks at
	// nothing and waits.
	notBefore time.Time
}

// New builds an engine. queue may be nil (a fresh one is made).
func New(cfg Config, clouds Clouds, store Store, queue *workqueue.Queue) (*Engine, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := clouds.validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("reconcile: store is required")
	}
	if queue == nil {
		queue = workqueue.New(workqueue.Config{})
	}
	e := &Engine{
		cfg: cfg, clouds: clouds, queue: queue, log: cfg.Logger,
		polls: map[string]pollState{}, orphanSeen: map[string]time.Time{}, sweepKick: make(chan struct{}, 1),
		slots: map[Listing]watchSlot{}, poolList: poolOrder(clouds),
	}
	e.poolGroup, e.ledgerKeys = ledgerGroups(clouds, cfg.Placements)
	e.pools.startTurn, e.pools.placeTurn = make(chan struct{}, 1), make(chan struct{}, 1)
	e.tally.set = cfg.Metrics.SetOrgsByCondition
	e.store = &serialStore{Store: store, changed: e.tally.change}
	e.ctrl = controller.New(controller.Config{Workers: cfg.Workers, Timeout: cfg.ReconcileTimeout,
		ShutdownGrace: cfg.ShutdownGrace, Logger: cfg.Logger, KeyAttr: "org_id",
		Observe: cfg.Metrics.ObserveReconcile, Retry: cfg.Metrics.QueueRetry}, e, queue)
	return e, nil
}

// Config returns the effective configuration.
func (e *Engine) Config() Config { return e.cfg }

// Queue is the engine's work queue.
func (e *Engine) Queue() *workqueue.Queue { return e.queue }

// OnApplied is ingest's hook: an event for orgID was committed to bbolt.
func (e *Engine) OnApplied(orgID string) {
	e.noteApplied(orgID)
	e.queue.Add(orgID)
}

// Enqueue asks for a reconcile of orgID.
func (e *Engine) Enqueue(orgID string) { e.queue.Add(orgID) }

// Overlaps is how many times a reconcile started for an org another worker
// was still reconciling. Always zero unless the queue is broken.
func (e *Engine) Overlaps() int64 { return e.ctrl.Overlaps() }

// Reconciles counts the workers' Reconcile calls.
func (e *Engine) Reconciles() int64 { return e.ctrl.Reconciles() }

// EnqueueAll queues every org that may need work: all present orgs and the
// tombstones whose cascade is not done. With skipReady, orgs recorded Ready
// with nothing unhandled (no report, no pending remediation, no event newer
// than their last finished pass) are left to the sweep, which compares them all for
// the cost of a few list pages instead of three Cloudflare reads each.
func (e *Engine) EnqueueAll(skipReady bool) (int, error) {
	n := 0
	var placed bookLoad // the pool book's count, from the same read
	err := e.store.ForEach(func(o state.Org) error {
		if o.Desired.Presence == state.Deleted && o.Observed.DeleteDone {
			return nil
		}
		e.countPlacement(&placed, o)
		if o.Desired.Presence == state.Deleted {
			e.noteApplied(o.ID) // committed before now (tombstone.go)
		}
		if skipReady && o.Desired.Presence != state.Deleted && IsTrue(o, state.CondReady) &&
			unhandledReports(o) == 0 && pendingRemediation(o) == nil && o.Observed.ReconciledSeq >= o.LastSeq {
			return nil
		}
		e.queue.Add(o.ID)
		n++
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("reconcile: list orgs: %w", err)
	}
	e.pools.once.Do(func() { e.initBook(placed) })
	return n, nil
}

// Run starts the workers and the sweep and blocks until ctx ends; then
// reconciles in flight get ShutdownGrace to finish and queued keys are left
// for the next start (which enqueues every org that is not Ready).
func (e *Engine) Run(ctx context.Context) error {
	// The sweep runs at start too; it requeues Ready orgs that drifted.
	n, err := e.EnqueueAll(e.cfg.SweepInterval > 0)
	if err != nil {
		return err
	}
	if err := e.CountConditions(); err != nil {
		return err
	}
	sched := e.WatchSchedule()
	attrs := []any{"workers", e.cfg.Workers, "orgs_queued", n, "sweep_interval", e.cfg.SweepInterval, "gc", e.cfg.GC,
		"watch_budget_share", e.cfg.Watch.BudgetShare}
	for _, l := range Listings {
		attrs = append(attrs, "watch_"+string(l), sched[l])
		e.cfg.Metrics.SetWatchInterval(string(l), sched[l])
	}
	e.log.Info("reconcile engine started", attrs...)
	var wg sync.WaitGroup
	if e.sharedPlacements() {
		wg.Go(func() { e.ledgerLoop(ctx) })
	}
	if e.cfg.SweepInterval > 0 {
		wg.Go(func() { e.sweepLoop(ctx) })
		if e.cfg.Watch.BudgetShare > 0 {
			wg.Go(func() { e.watchLoops(ctx) })
		}
	}
	e.ctrl.Run(ctx)
	wg.Wait()
	return nil
}

func (e *Engine) sweepLoop(ctx context.Context) {
	t := time.NewTicker(e.cfg.SweepInterval)
	defer t.Stop()
	for {
		if _, err := e.Sweep(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.sweepKick:
		}
	}
}

// Reconcile converges one org and records the outcome in its status.
func (e *Engine) Reconcile(ctx context.Context, orgID string) (Result, error) {
	if e.gate != nil {
		e.gate(orgID)
	}
	org, ok, err := e.store.Get(orgID)
	if err != nil {
		return Result{}, fmt.Errorf("reconcile org %s: read state: %w", orgID, err)
	}
	if !ok {
		e.tombs.floors.Delete(orgID)
		return Result{}, nil // never created: nothing of it can exist
	}
	if !e.owns(orgID) {
		return Result{}, nil // another replica's; queued again when this one takes its partition
	}
	e.loadBook()
	ctx = e.withFence(ctx, orgID)
	defer e.recordReplica(org)
	log := e.log.With("org_id", orgID)
	if e.finishing(org) {
		ctx = ratelimit.WithPriority(ctx, ratelimit.High)
	}
	var res Result
	if org.Desired.Presence == state.Deleted {
		if org.Observed.DeleteDone {
			e.tombs.floors.Delete(orgID)
			return Result{}, nil
		}
		res, err = e.converge(ctx, log, org, e.deleteOrg)
	} else {
		e.notePassStarted(orgID)
		res, err = e.converge(ctx, log, org, e.presentOrg)
		e.notePassEnded(orgID)
	}
	return res, err
}

// finishing reports whether reconciling org finishes work already started
// (a delete, a launched org not yet Ready, a scheduled readiness poll): its
// Cloudflare calls go before those of orgs not started yet, so a burst of
// creations does not hold back orgs one call away from Ready.
func (e *Engine) finishing(org state.Org) bool {
	return org.Desired.Presence == state.Deleted || e.polling(org.ID) ||
		(org.Observed.InstanceID != "" && !IsTrue(org, state.CondReady))
}

// converge runs one step function and records its error on the org.
func (e *Engine) converge(ctx context.Context, log *slog.Logger, org state.Org,
	step func(context.Context, *slog.Logger, state.Org) (Result, error)) (Result, error) {
	res, err := step(ctx, log, org)
	if err == nil {
		return res, nil
	}
	now := e.cfg.Now()
	var term *TerminalError
	uerr := e.store.Update(org.ID, func(o *state.Org) error {
		o.LastError = err.Error()
		o.LastErrorAt = now
		if errors.As(err, &term) {
			reason := term.Reason
			if reason == "" {
				reason = "TerminalError"
			}
			setCondition(o, state.CondFailed, true, reason, err.Error(), now)
			setCondition(o, state.CondReady, false, "Failed", "", now)
		}
		return nil
	})
	if uerr != nil {
		log.Warn("record reconcile error", "err", uerr)
	}
	return res, err
}

// setCondition sets one condition, keeping its transition time when the
// status does not change.
func setCondition(o *state.Org, typ string, status bool, reason, msg string, now time.Time) {
	o.SetCondition(typ, status, reason, msg, now)
}

// Condition returns the org's condition of a type, if set.
func Condition(o state.Org, typ string) (state.Condition, bool) {
	for _, c := range o.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return state.Condition{}, false
}

// IsTrue reports whether the org has condition typ with status true.
func IsTrue(o state.Org, typ string) bool {
	c, ok := Condition(o, typ)
	return ok && c.Status
}

const maxRemediations = 50

func addRemediation(o *state.Org, r state.Remediation) {
	o.Remediations = append(o.Remediations, r)
	if n := len(o.Remediations); n > maxRemediations {
		o.Remediations = append([]state.Remediation(nil), o.Remediations[n-maxRemediations:]...)
	}
}

// mutate runs one cloud mutation and logs it with its outcome: one line per
// mutation, the operator's audit trail.
func mutate(ctx context.Context, log *slog.Logger, op, target string, fn func(context.Context) error) error {
	// The fence: no write for an org whose partition lease this replica
	// does not hold fresh, and a write in flight is cancelled when it stops
	// holding it (fence.go).
	ctx, release, ferr := holdFence(ctx)
	if ferr != nil {
		log.Log(ctx, slog.LevelWarn, "cloud mutation", "op", op, "target", target, "outcome", "fenced", "err", ferr)
		return ferr
	}
	defer release()
	start := time.Now()
	crashpoint.Hit("cloud.before." + op)
	err := fn(ctx)
	crashpoint.Hit("cloud.after." + op)
	outcome := "ok"
	lvl := slog.LevelInfo
	if err != nil {
		outcome = "error"
		lvl = slog.LevelWarn
		if errors.Is(err, ErrExists) {
			outcome = "exists"
			lvl = slog.LevelInfo
		} else if errors.Is(err, ErrNotFound) {
			outcome = "not_found"
			lvl = slog.LevelInfo
		}
	}
	attrs := []any{"op", op, "target", target, "outcome", outcome, "took", time.Since(start).Round(time.Millisecond)}
	if err != nil && lvl == slog.LevelWarn {
		attrs = append(attrs, "err", err)
	}
	log.Log(ctx, lvl, "cloud mutation", attrs...)
	return err
}

// deleteStep is every resource's delete: one mutation where "not found" is
// success, then, for an org (orgID "" for an orphan), forgetting what its
// record says of the resource (forget edits the observed ids).
func (e *Engine) deleteStep(ctx context.Context, log *slog.Logger, op, target, what string,
	del func(context.Context) error, orgID string, forget func(*state.Observed)) error {
	err := mutate(ctx, log, op, target, del)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if orgID == "" {
		return nil
	}
	if err := e.store.Update(orgID, func(o *state.Org) error { forget(&o.Observed); return nil }); err != nil {
		return fmt.Errorf("record after %s: %w", what, err)
	}
	return nil
}

// fanOut runs independent cloud steps at once and keeps every error: errgroup
// would stop at the first, and a reconcile reports (and retries) them all.
type fanOut struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (f *fanOut) run(fn func() error) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := fn(); err != nil {
			f.mu.Lock()
			f.errs = append(f.errs, err)
			f.mu.Unlock()
		}
	}()
}

// wait returns once every step is done, with their errors joined.
func (f *fanOut) wait() error {
	f.wg.Wait()
	return errors.Join(f.errs...)
}

// CountConditions sets the orgs-by-condition gauge from bbolt: at start
// (before any worker writes), so it is right from the first scrape; each
// status write moves it from then on (tally.go).
func (e *Engine) CountConditions() error {
	by := map[string]int{}
	if err := e.store.ForEach(func(o state.Org) error {
		for _, c := range o.Conditions {
			if c.Status {
				by[c.Type]++
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("reconcile: count conditions: %w", err)
	}
	e.tally.reset(by)
	return nil
}
