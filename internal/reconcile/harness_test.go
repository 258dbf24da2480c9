package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/testbin"
	"github.com/tunnelward/tunnelward/internal/userdata"
	"github.com/tunnelward/tunnelward/internal/workqueue"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is one emulated cloud on loopback, the real provider clients on
// it, a bbolt file and an engine.
type harness struct {
	t      testing.TB
	sim    *cloudsim.Sim
	srv    *httptest.Server
	store  *state.Store
	eng    *Engine
	logs   *syncBuffer
	seq    atomic.Uint64
	cancel context.CancelFunc
	done   chan struct{}
	cf     *cloudflare.Client
	aw     *aws.Client
	// requests are the Cloudflare requests the emulator answered, in order.
	requests *requestLog
	// sends are the Cloudflare requests as the client saw them.
	sends *requestLog
	// clouds, ecfg and queue rebuild the engine on the same store (reopen).
	clouds Clouds
	ecfg   Config
}

// requestLog records when each Cloudflare request reached the emulator and
// how it was answered.
type requestLog struct {
	mu  sync.Mutex
	log []cfRequest
}

type cfRequest struct {
	at         time.Time
	done       time.Time // client side only: when the answer came back
	gated      time.Time // client side only: when its attempt passed the client's gate
	method     string
	path       string
	status     int
	retryAfter string
}

func (l *requestLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/client/v4/") {
			next.ServeHTTP(w, r)
			return
		}
		at := time.Now()
		sw := testbin.NewStatusWriter(w)
		next.ServeHTTP(sw, r)
		l.mu.Lock()
		l.log = append(l.log, cfRequest{at: at, method: r.Method, path: r.URL.Path, status: sw.Status, retryAfter: w.Header().Get("Retry-After")})
		l.mu.Unlock()
	})
}

// roundTrip records, on the client side, when each Cloudflare request was
// handed to the transport and when its answer came back: what the client
// knew when, which the server's arrival times cannot tell under load.
func (l *requestLog) roundTrip(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent := time.Now()
		resp, err := next.RoundTrip(r)
		if !strings.HasPrefix(r.URL.Path, "/client/v4/") {
			return resp, err
		}
		e := cfRequest{at: sent, done: time.Now(), method: r.Method, path: r.URL.Path}
		if a := apicall.AttemptFrom(r.Context()); a != nil {
			e.gated = a.Gated
		}
		if resp != nil {
			e.status, e.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
		}
		l.mu.Lock()
		l.log = append(l.log, e)
		l.mu.Unlock()
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (l *requestLog) all() []cfRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]cfRequest(nil), l.log...)
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

type harnessOpts struct {
	sim      func(*cloudsim.Config)
	engine   func(*Config)
	policy   apicall.Policy
	cfBudget *ratelimit.WindowBudget // default testCFBudget
	// regions the engine serves besides the emulator's default region, each
	// through its own aws client (as cmd/reconciler builds them).
	regions []string
	// pools, when set, serve one Cloudflare pool per entry, each on its own
	// emulated identity (account, zone, token): "sandbox" (the emulator's
	// first identity, the default pool), "sandbox2" (its second), then
	// "pool3"... on identities added to the emulator.
	pools []PoolLimits
}

// poolName is the harness's name of its i-th pool.
func poolName(i int) string {
	switch i {
	case 0:
		return "sandbox"
	case 1:
		return "sandbox2"
	}
	return fmt.Sprintf("pool%d", i+1)
}

// Emulated delays used by every test: short but real.
const (
	testBoot     = 150 * time.Millisecond
	testConnect  = 100 * time.Millisecond
	testShutdown = 50 * time.Millisecond
)

// restartGrace is the health grace of tests whose restarted cloudflared
// must come back before the instance is replaced. The grace only bounds
// the wait (the remediation is resolved the moment the tunnel is healthy,
// polled every PollInterval), so a long one costs nothing when the restart
// works, and lets these tests run in parallel: on a loaded machine a
// restart can take longer than the default's 400 ms.
const restartGrace = 10 * time.Second

// Tests run many short polls; the real budgets (1200 Cloudflare requests
// per 5 minutes, RunInstances 2/s) would only make them slow. The limiters
// themselves are internal/ratelimit's and tested there.
var (
	testCFBudget   = ratelimit.WindowBudget{Requests: 100000, Window: time.Minute, Burst: 500}
	testEC2Buckets = ratelimit.EC2Buckets{Mutating: ratelimit.Bucket{Burst: 500, Rate: 500}, NonMutating: ratelimit.Bucket{Burst: 500, Rate: 500}}
)

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	scfg := cloudsim.DefaultConfig()
	scfg.BootDelay, scfg.ConnectDelay, scfg.ShutdownDelay = testBoot, testConnect, testShutdown
	scfg.RetryInterval = 100 * time.Millisecond
	scfg.Limits = cloudsim.RateLimits{}
	if o.sim != nil {
		o.sim(&scfg)
	}
	for i := len(scfg.CFExtra) + 1; i < len(o.pools); i++ {
		scfg.CFExtra = append(scfg.CFExtra, cloudsim.CFIdentity{Token: fmt.Sprintf("token-%d", i),
			AccountID: fmt.Sprintf("%032x", 0xacc0+i), ZoneID: fmt.Sprintf("%032x", 0x2000+i),
			ZoneName: poolName(i) + ".tunnelward.test"})
	}
	sim := cloudsim.New(scfg)
	rec := &requestLog{}
	srv := httptest.NewServer(rec.wrap(sim.Handler()))
	t.Cleanup(srv.Close)

	pol := o.policy
	if pol.BaseDelay == 0 {
		pol = apicall.Policy{MaxAttempts: 6, BaseDelay: 5 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
			MaxRetryAfter: 3 * time.Second, CallTimeout: 5 * time.Second}
	}
	budget := testCFBudget
	if o.cfBudget != nil {
		budget = *o.cfBudget
	}
	sends := &requestLog{}
	cfHTTP := srv.Client()
	cfHTTP.Transport = sends.roundTrip(cfHTTP.Transport)
	cf, err := cloudflare.New(cloudflare.Config{BaseURL: srv.URL + "/client/v4/", APIToken: scfg.CFToken,
		AccountID: scfg.AccountID, ZoneID: scfg.ZoneID, ZoneName: scfg.ZoneName, HTTPClient: cfHTTP,
		Policy: pol, PageSize: 20, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	aw, err := aws.New(context.Background(), aws.Config{Endpoint: srv.URL, Region: scfg.Region,
		AccessKeyID: scfg.AWSAccessKey, SecretAccessKey: scfg.AWSSecret, Policy: pol, PageSize: 20,
		EC2Buckets: testEC2Buckets, SSMBucket: ratelimit.Bucket{Burst: 400, Rate: 400}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	logs := &syncBuffer{}
	ecfg := Config{
		ZoneName: scfg.ZoneName, Instance: InstanceSpec{ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro",
			SubnetID: "subnet-0123456789abcdef0", SecurityGroupIDs: []string{"sg-0123456789abcdef0"}, InstanceProfile: "tunnelward-instance"},
		Workers: 4, BootConnect: testBoot + testConnect + 50*time.Millisecond, PollInterval: 50 * time.Millisecond,
		HealthGrace: 400 * time.Millisecond, SweepInterval: -1, OrphanGrace: time.Millisecond, GC: true,
		ReconcileTimeout: 20 * time.Second,
		Logger:           slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.engine != nil {
		o.engine(&ecfg)
	}
	clouds := NewClouds(cf, aw, userdata.Params{})
	clouds.DefaultRegion = scfg.Region
	for _, r := range o.regions {
		awr, err := aws.New(context.Background(), aws.Config{Endpoint: srv.URL, Region: r,
			AccessKeyID: scfg.AWSAccessKey, SecretAccessKey: scfg.AWSSecret, Policy: pol, PageSize: 20,
			EC2Buckets: testEC2Buckets, SSMBucket: ratelimit.Bucket{Burst: 400, Rate: 400}})
		if err != nil {
			t.Fatal(err)
		}
		clouds = clouds.WithRegion(r, awr, InstanceSpec{ImageID: "ami-0" + regionHex(r),
			SubnetID: "subnet-0" + regionHex(r), SecurityGroupIDs: []string{"sg-0" + regionHex(r)}})
	}
	if len(o.pools) > 0 {
		clouds.DefaultPool = poolName(0)
		ids := scfg.CFIdentities()
		for i, l := range o.pools {
			pc := cf
			if i > 0 {
				id := ids[i]
				if pc, err = cloudflare.New(cloudflare.Config{BaseURL: srv.URL + "/client/v4/", APIToken: id.Token,
					AccountID: id.AccountID, ZoneID: id.ZoneID, ZoneName: id.ZoneName, HTTPClient: cfHTTP,
					Policy: pol, PageSize: 20, Budget: budget}); err != nil {
					t.Fatal(err)
				}
			}
			if l.Account == "" {
				l.Account = ids[i].AccountID
			}
			clouds = clouds.WithPool(poolName(i), pc, l)
		}
	}
	h := &harness{t: t, sim: sim, srv: srv, store: st, logs: logs, cf: cf, aw: aw, requests: rec, sends: sends,
		clouds: clouds, ecfg: ecfg}
	h.reopen(nil)
	return h
}

// reopen builds a new engine on the same store, clients and emulator (a
// process restart), with edit applied to its clouds; the old one must be
// stopped.
func (h *harness) reopen(edit func(*Clouds)) {
	h.t.Helper()
	clouds := h.clouds
	if edit != nil {
		edit(&clouds)
	}
	q := workqueue.New(workqueue.Config{BaseDelay: 20 * time.Millisecond, MaxDelay: 500 * time.Millisecond})
	eng, err := New(h.ecfg, clouds, h.store, q)
	if err != nil {
		h.t.Fatal(err)
	}
	h.eng = eng
}

// regionHex makes a region's fake resource ids distinct (17 hex digits).
func regionHex(r string) string {
	h := fnv.New64a()
	h.Write([]byte(r))
	return fmt.Sprintf("%016x", h.Sum64())
}

// testWriter sends engine logs to t.Log only with -v.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// start runs the engine until the test ends.
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		if err := h.eng.Run(ctx); err != nil {
			h.t.Errorf("engine run: %v", err)
		}
	}()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

// apply commits events to bbolt the way ingest does, then tells the engine.
func (h *harness) apply(facts ...state.Fact) {
	h.t.Helper()
	for i := range facts {
		if facts[i].Seq == 0 {
			facts[i].Seq = h.seq.Add(1)
		}
		if facts[i].EventID == "" {
			facts[i].EventID = fmt.Sprintf("ev-%d", facts[i].Seq)
		}
		if facts[i].Time.IsZero() {
			facts[i].Time = time.Now()
		}
	}
	out, err := h.store.Apply(facts)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, oc := range out {
		if oc.Changed() {
			h.eng.OnApplied(oc.OrgID)
		}
	}
}

func created(org, slug string) state.Fact {
	return state.Fact{Type: state.FactCreated, OrgID: org, Slug: slug}
}

func deleted(org string) state.Fact { return state.Fact{Type: state.FactDeleted, OrgID: org} }

func healthFailed(org string) state.Fact {
	return state.Fact{Type: state.FactHealthFailed, OrgID: org, Reason: "probe failed", Observer: "test"}
}

func (h *harness) org(id string) state.Org {
	h.t.Helper()
	o, ok, err := h.store.Get(id)
	if err != nil || !ok {
		h.t.Fatalf("org %s: ok=%v err=%v", id, ok, err)
	}
	return o
}

// waitFor polls cond until it holds or the deadline passes.
func (h *harness) waitFor(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h.sim.Tick()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, h.describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) waitReady(orgs ...string) {
	h.t.Helper()
	for _, id := range orgs {
		h.waitFor("org "+id+" Ready", 15*time.Second, func() bool {
			o, ok, _ := h.store.Get(id)
			return ok && IsTrue(o, state.CondReady)
		})
	}
}

func (h *harness) waitDeleted(orgs ...string) {
	h.t.Helper()
	for _, id := range orgs {
		h.waitFor("org "+id+" deleted", 15*time.Second, func() bool {
			o, ok, _ := h.store.Get(id)
			return ok && o.Observed.DeleteDone
		})
	}
}

func (h *harness) describe() string {
	var b strings.Builder
	orgs, _ := h.store.List()
	for _, o := range orgs {
		j, _ := json.Marshal(o)
		fmt.Fprintf(&b, "org %s\n", j)
	}
	st := h.sim.State()
	j, _ := json.Marshal(map[string]any{"tunnels": st.Tunnels, "dns": st.DNSRecords, "instances": st.Instances, "params": st.Parameters})
	fmt.Fprintf(&b, "sim %s\n", j)
	return b.String()
}

// world is the emulator's state reduced to what tests count.
type world struct {
	tunnels   []map[string]any // live
	records   []map[string]any
	instances []map[string]any // not terminated
	params    []map[string]any
}

func (h *harness) world() world {
	st := h.sim.State()
	var w world
	for _, t := range st.Tunnels {
		if t["deleted_at"] == nil {
			w.tunnels = append(w.tunnels, t)
		}
	}
	w.records = st.DNSRecords
	for _, in := range st.Instances {
		if s := instState(in); s != "terminated" && s != "shutting-down" {
			w.instances = append(w.instances, in)
		}
	}
	w.params = st.Parameters
	return w
}

func instState(in map[string]any) string {
	st, _ := in["State"].(map[string]any)
	n, _ := st["Name"].(string)
	return n
}

// invariants asks the emulator's checker, naming the orgs that should exist.
// With no orgs named, every owned resource left is an orphan.
func (h *harness) invariants(orgs ...string) []cloudsim.Violation {
	if orgs == nil {
		orgs = []string{}
	}
	return h.sim.CheckInvariants(orgs)
}

func (h *harness) requireClean(orgs ...string) {
	h.t.Helper()
	if v := h.invariants(orgs...); len(v) > 0 {
		h.t.Fatalf("invariant violations: %+v\n%s", v, h.describe())
	}
}

func (h *harness) simGet(path string) []byte {
	h.t.Helper()
	res, err := http.Get(h.srv.URL + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return b
}

func (h *harness) worldAction(a cloudsim.WorldAction) {
	h.t.Helper()
	if _, err := h.sim.ApplyWorld(a); err != nil {
		h.t.Fatal(err)
	}
}
