package cluster_test

// Several in-process replicas on an in-process 3-node JetStream cluster
// (R3 streams and lease bucket), against one emulator: the real ingest,
// engine, SDKs and lease manager, each replica with its own state file and
// NATS connection. Every request to the emulator is logged with the
// replica that sent it and the orgs its write was fenced for, between the
// moments the emulator started and finished it: the overlap check reads
// that log.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/cluster"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/testbin"
	"github.com/tunnelward/tunnelward/internal/userdata"
	"github.com/tunnelward/tunnelward/internal/workqueue"
)

// Short but real: a dead replica's orgs wait at most this long. Long
// enough that renewals keep up on a loaded machine (the whole suite with
// -race on two cores).
const testTTL = 3 * time.Second

func freePort(t testing.TB) int { t.Helper(); return testbin.FreePort(t) }

// startJSCluster runs three nats-servers with JetStream clustered over
// routes on loopback, as nats.go's jetstream test helper does, and waits
// for a meta leader. The route ports are chosen before the servers bind
// them (every server needs every other's), so another process on the
// machine can take one in between (an outgoing connection's ephemeral
// port): then the whole cluster is started again on new ports.
func startJSCluster(t testing.TB) []*server.Server {
	t.Helper()
	var errs []string
	for range 3 {
		srvs, err := tryJSCluster(t)
		if err == nil {
			waitFor(t, 20*time.Second, "a JetStream meta leader", func() bool {
				for _, s := range srvs {
					if s.JetStreamIsLeader() {
						return true
					}
				}
				return false
			})
			return srvs
		}
		errs = append(errs, err.Error())
	}
	t.Fatalf("could not start a 3-node JetStream cluster:\n%s", strings.Join(errs, "\n"))
	return nil
}

func tryJSCluster(t testing.TB) ([]*server.Server, error) {
	const n = 3
	cports := make([]int, n)
	for i := range cports {
		cports[i] = freePort(t)
	}
	var routes []string
	for _, p := range cports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var srvs []*server.Server
	stop := func() {
		for _, s := range srvs {
			s.Shutdown()
		}
	}
	for i := range n {
		o := natstest.DefaultTestOptions
		o.Port = -1
		o.Host = "127.0.0.1"
		o.ServerName = fmt.Sprintf("n%d", i)
		o.JetStream = true
		o.StoreDir = t.TempDir()
		o.Cluster.Name = "tw"
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = cports[i]
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		o.NoLog, o.NoSigs = true, true
		s, err := server.NewServer(&o)
		if err != nil {
			stop()
			return nil, fmt.Errorf("n%d: %w", i, err)
		}
		errLog := &serverErrors{}
		s.SetLoggerV2(errLog, false, false, false)
		srvs = append(srvs, s)
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			stop()
			return nil, fmt.Errorf("n%d (route port %d) not ready after 10s: %s", i, cports[i], errLog)
		}
		t.Cleanup(s.Shutdown)
	}
	return srvs, nil
}

// serverErrors keeps what a test nats-server reports as errors, to say why
// it did not start. Fatalf must not exit: the server stops itself.
type serverErrors struct {
	mu   sync.Mutex
	errs []string
}

func (l *serverErrors) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf(format, v...))
}

func (l *serverErrors) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return "no error logged"
	}
	return strings.Join(l.errs, "; ")
}

func (l *serverErrors) Noticef(string, ...any)    {}
func (l *serverErrors) Warnf(string, ...any)      {}
func (l *serverErrors) Debugf(string, ...any)     {}
func (l *serverErrors) Tracef(string, ...any)     {}
func (l *serverErrors) Fatalf(f string, v ...any) { l.add(f, v...) }
func (l *serverErrors) Errorf(f string, v ...any) { l.add(f, v...) }

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call is one request the emulator answered.
type call struct {
	replica    string
	status     int
	body       string   // the answer's start, when it is an error
	orgs       []string // the fence scope of the write
	method     string
	path       string
	write      bool
	start, end time.Time
}

type callLog struct {
	mu    sync.Mutex
	calls []call
}

// wrap logs every request the emulator handles, with the replica and the
// orgs the sender tagged it with.
func (l *callLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := call{replica: r.Header.Get("X-Test-Replica"), method: r.Method, path: r.URL.Path, start: time.Now()}
		if o := r.Header.Get("X-Test-Orgs"); o != "" {
			c.orgs = strings.Split(o, ",")
		}
		c.write = isWrite(r)
		sw := testbin.NewStatusWriter(w)
		h.ServeHTTP(sw, r)
		c.end, c.status, c.body = time.Now(), sw.Status, sw.ErrorBody()
		l.mu.Lock()
		l.calls = append(l.calls, c)
		l.mu.Unlock()
	})
}

// isWrite tells the emulator's mutations from its reads: Cloudflare by
// method, SSM by X-Amz-Target, EC2 by its Action (a form field; the body
// is put back).
func isWrite(r *http.Request) bool {
	if strings.HasPrefix(r.URL.Path, "/client/v4/") {
		return r.Method != http.MethodGet
	}
	readOnly := func(action string) bool {
		for _, p := range []string{"Describe", "Get", "List"} {
			if strings.HasPrefix(action, p) {
				return true
			}
		}
		return false
	}
	if tgt := r.Header.Get("X-Amz-Target"); tgt != "" {
		_, action, _ := strings.Cut(tgt, ".")
		return !readOnly(action)
	}
	if r.Method != http.MethodPost || r.Body == nil {
		return false
	}
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(strings.NewReader(string(b)))
	form, _ := url.ParseQuery(string(b))
	return !readOnly(form.Get("Action"))
}

// tagging marks each request with its replica and the orgs its context is
// fenced for.
type tagging struct {
	replica string
	base    http.RoundTripper
}

func (tr tagging) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Test-Replica", tr.replica)
	if orgs := reconcile.FencedOrgs(r.Context()); len(orgs) > 0 {
		r.Header.Set("X-Test-Orgs", strings.Join(orgs, ","))
	}
	return tr.base.RoundTrip(r)
}

// proxy forwards one replica's NATS connections; cut blackholes them (a
// replica cut off from NATS: connections hang, nothing is refused).
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	t.Cleanup(func() { l.Close(); p.closeAll() })
	go p.serve()
	return p
}

func (p *proxy) url() string { return "nats://" + p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		cut := p.cut
		p.mu.Unlock()
		if cut {
			continue // held open, never answered
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, s)
		p.mu.Unlock()
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			cut := p.cut
			p.mu.Unlock()
			if cut {
				return // swallowed: the peer waits forever
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *proxy) blackhole() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// world is the emulator, the cluster and the replicas.
type world struct {
	t    testing.TB
	srvs []*server.Server
	sim  *cloudsim.Sim
	web  *httptest.Server
	log  *callLog
	v    *events.Validator
	pub  jetstream.JetStream

	mu       sync.Mutex
	replicas map[string]*replica
	dirs     map[string]string // each replica id's state directory, kept across restarts
	ttl      time.Duration     // the lease TTL (testTTL unless a benchmark sets it)
	// poolLimit, when set, serves the emulator's two Cloudflare identities
	// as pools sandbox and sandbox2 of this many tunnels each, their counts
	// shared through the placement bucket.
	poolLimit int
}

type replica struct {
	id     string
	nc     *nats.Conn
	proxy  *proxy
	store  *state.Store
	in     *ingest.Ingester
	mgr    *cluster.Manager
	eng    *reconcile.Engine
	cancel context.CancelFunc
	wg     sync.WaitGroup
	dead   bool
}

func newWorld(t testing.TB) *world { t.Helper(); return newPoolWorld(t, 0) }

// newPoolWorld is newWorld with two pools of poolLimit tunnels each
// (world.poolLimit; 0: one pool, no limits), which the emulator enforces
// too: a create past them is refused with Cloudflare's error.
func newPoolWorld(t testing.TB, poolLimit int) *world {
	t.Helper()
	w := &world{t: t, srvs: startJSCluster(t), log: &callLog{}, replicas: map[string]*replica{}, dirs: map[string]string{}, ttl: testTTL,
		poolLimit: poolLimit}
	scfg := cloudsim.DefaultConfig()
	if poolLimit > 0 {
		scfg.TunnelQuota = poolLimit
	}
	scfg.BootDelay, scfg.ConnectDelay, scfg.ShutdownDelay = 150*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
	scfg.RetryInterval = 100 * time.Millisecond
	scfg.Limits = cloudsim.RateLimits{}
	w.sim = cloudsim.New(scfg)
	w.web = httptest.NewServer(w.log.wrap(w.sim.Handler()))
	t.Cleanup(w.web.Close)
	var err error
	if w.v, err = events.NewValidator(); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(w.urls())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if w.pub, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := broker.EnsureStreamsReplicated(ctx, w.pub, 3, nil); err != nil {
		t.Fatal(err)
	}
	// The buckets too, as a cluster that ran replicas before has them: a
	// test that stops a node before its first replica starts must not
	// depend on whether the meta leader has seen the node go (an R3 bucket
	// is not created with a peer known offline: "no suitable peers").
	if _, err := broker.EnsureLeaseBucket(ctx, w.pub, 3, w.ttl); err != nil {
		t.Fatal(err)
	}
	if poolLimit > 0 {
		if _, err := broker.EnsurePlacementBucket(ctx, w.pub, 3); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *world) urls() string {
	var u []string
	for _, s := range w.srvs {
		u = append(u, s.ClientURL())
	}
	return strings.Join(u, ",")
}

// startReplica runs one replica; viaProxy connects it to one node through
// a proxy the test can cut, else to all three (a comma-separated list).
func (w *world) startReplica(id string, viaProxy bool) *replica {
	t := w.t
	t.Helper()
	r := &replica{id: id}
	url := w.urls()
	if viaProxy {
		r.proxy = newProxy(t, strings.TrimPrefix(w.srvs[0].ClientURL(), "nats://"))
		url = r.proxy.url()
	}
	var err error
	r.nc, err = nats.Connect(url, nats.Name("replica-"+id), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.Timeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nc.Close)
	js, err := jetstream.New(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := broker.EnsureStreamsReplicated(ctx, js, 3, nil); err != nil {
		t.Fatal(err)
	}
	kv, err := broker.EnsureLeaseBucket(ctx, js, 3, w.ttl)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	dir, ok := w.dirs[id]
	if !ok {
		dir = t.TempDir()
		w.dirs[id] = dir
	}
	w.mu.Unlock()
	if r.store, err = state.Open(filepath.Join(dir, "state.db"), state.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.store.Close() })

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testLog{t}, nil)).With("replica", id)
	}
	scfg := w.sim.Config()
	hc := &http.Client{Transport: tagging{replica: id, base: http.DefaultTransport}}
	pol := apicall.Policy{MaxAttempts: 6, BaseDelay: 5 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
		MaxRetryAfter: 3 * time.Second, CallTimeout: 5 * time.Second}
	cf, err := cloudflare.New(cloudflare.Config{BaseURL: w.web.URL + "/client/v4/", APIToken: scfg.CFToken,
		AccountID: scfg.AccountID, ZoneID: scfg.ZoneID, ZoneName: scfg.ZoneName, HTTPClient: hc,
		Policy: pol, PageSize: 20, Budget: ratelimit.WindowBudget{Requests: 100000, Window: time.Minute, Burst: 500}})
	if err != nil {
		t.Fatal(err)
	}
	aw, err := aws.New(context.Background(), aws.Config{Endpoint: w.web.URL, Region: scfg.Region, HTTPClient: hc,
		AccessKeyID: scfg.AWSAccessKey, SecretAccessKey: scfg.AWSSecret, Policy: pol, PageSize: 20,
		EC2Buckets: ratelimit.EC2Buckets{Mutating: ratelimit.Bucket{Burst: 500, Rate: 500}, NonMutating: ratelimit.Bucket{Burst: 500, Rate: 500}},
		SSMBucket:  ratelimit.Bucket{Burst: 400, Rate: 400}})
	if err != nil {
		t.Fatal(err)
	}
	clouds := reconcile.NewClouds(cf, aw, userdata.Params{})
	clouds.DefaultRegion = scfg.Region
	var ledger reconcile.PlacementLedger
	if w.poolLimit > 0 {
		clouds.DefaultPool = "sandbox"
		for i, id := range scfg.CFIdentities()[:2] {
			pc := cf
			if i > 0 {
				if pc, err = cloudflare.New(cloudflare.Config{BaseURL: w.web.URL + "/client/v4/", APIToken: id.Token,
					AccountID: id.AccountID, ZoneID: id.ZoneID, ZoneName: id.ZoneName, HTTPClient: hc,
					Policy: pol, PageSize: 20, Budget: ratelimit.WindowBudget{Requests: 100000, Window: time.Minute, Burst: 500}}); err != nil {
					t.Fatal(err)
				}
			}
			clouds = clouds.WithPool([]string{"sandbox", "sandbox2"}[i], pc, reconcile.PoolLimits{Account: id.AccountID, MaxTunnels: w.poolLimit})
		}
		pkv, err := broker.EnsurePlacementBucket(ctx, js, 3)
		if err != nil {
			t.Fatal(err)
		}
		ledger = cluster.NewPlacements(pkv, r.nc)
	}

	r.mgr, err = cluster.New(cluster.Config{KV: kv, Conn: r.nc, Replica: id, TTL: w.ttl, Log: log,
		OnGained: func([]int) {
			if r.eng != nil {
				r.eng.PartitionsGained()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.eng, err = reconcile.New(reconcile.Config{
		ZoneName: scfg.ZoneName, Instance: reconcile.InstanceSpec{ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro",
			SubnetID: "subnet-0123456789abcdef0", SecurityGroupIDs: []string{"sg-0123456789abcdef0"}, InstanceProfile: "tunnelward-instance"},
		Workers: 4, BootConnect: 300 * time.Millisecond, PollInterval: 50 * time.Millisecond,
		HealthGrace: 5 * time.Second, SweepInterval: -1, ReconcileTimeout: 20 * time.Second, ShutdownGrace: time.Second,
		Fence: r.mgr, Replica: id, Logger: log, Placements: ledger,
	}, clouds, r.store, workqueue.New(workqueue.Config{BaseDelay: 20 * time.Millisecond, MaxDelay: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ctx, ingest.Config{Consumer: ingest.ConsumerFor(id), JS: js, Store: r.store, Validator: w.v,
		MaxWait: 200 * time.Millisecond, RetryDelay: 100 * time.Millisecond, OnApplied: r.eng.OnApplied,
		// A fetch the client gave up on under load is redelivered after
		// AckWait: short here, so the test does not wait 30 s for it.
		AckWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	r.cancel = stop
	r.in = in
	r.wg.Go(func() {
		if err := in.Run(rctx); err != nil {
			t.Errorf("replica %s: ingest stopped: %v", id, err)
		}
	})
	r.wg.Go(func() { _ = r.eng.Run(rctx) })
	r.wg.Go(func() { r.mgr.Run(rctx) })
	t.Cleanup(r.stop)
	w.mu.Lock()
	w.replicas[id] = r
	w.mu.Unlock()
	return r
}

func (r *replica) stop() {
	r.cancel()
	r.wg.Wait()
}

// kill stops a replica abruptly: its NATS connection is gone first, so it
// cannot give its leases back; they expire.
func (w *world) kill(r *replica) {
	r.nc.Close()
	r.stop()
	w.mu.Lock()
	r.dead = true
	w.mu.Unlock()
}

// restart stops a replica gracefully (its leases given back, its state
// file closed) and starts it again with the same id and state file.
func (w *world) restart(r *replica) *replica {
	w.t.Helper()
	r.stop()
	r.nc.Close()
	if err := r.store.Close(); err != nil {
		w.t.Fatalf("replica %s: close state: %v", r.id, err)
	}
	return w.startReplica(r.id, false)
}

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (w *world) publishCreated(orgs ...string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, org := range orgs {
		ev, err := events.New(events.Created{OrgID: org, Slug: org})
		if err != nil {
			w.t.Fatal(err)
		}
		if _, err := broker.PublishEvent(ctx, w.pub, w.v, ev); err != nil {
			w.t.Fatal(err)
		}
	}
}

// balanced waits until the live replicas hold every partition, each its
// share.
func (w *world) balanced(live ...*replica) {
	w.t.Helper()
	waitFor(w.t, 60*time.Second, "the partitions to balance", func() bool {
		n := 0
		for _, r := range live {
			got := len(r.mgr.Owned())
			if got < cluster.DefaultPartitions/len(live) || got > cluster.DefaultPartitions/len(live)+1 {
				return false
			}
			n += got
		}
		return n == cluster.DefaultPartitions
	})
}

// converged reports whether every org is Ready on the live replica that
// owns it now.
func (w *world) converged(orgs []string) (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, org := range orgs {
		var owner *replica
		for _, r := range w.replicas {
			if !r.dead && r.mgr.Owns(org) {
				owner = r
			}
		}
		if owner == nil {
			return false, org + ": no live owner"
		}
		o, ok, err := owner.store.Get(org)
		if !ok {
			return false, fmt.Sprintf("%s: not ingested by its owner %s (ingest %+v, check %v)", org, owner.id, owner.in.Stats(), owner.in.Check(context.Background()))
		}
		if err != nil || !reconcile.IsTrue(o, state.CondReady) || o.Observed.Replica != owner.id {
			return false, fmt.Sprintf("%s: not Ready on its owner %s (partition %d; queued %d; conditions %+v; last error %q; observed %+v)",
				org, owner.id, cluster.Partition(org, cluster.DefaultPartitions), owner.eng.Queue().Len(), o.Conditions, o.LastError, o.Observed)
		}
	}
	return true, ""
}

func (w *world) waitConverged(orgs []string, d time.Duration) {
	w.t.Helper()
	var why string
	end := time.Now().Add(d)
	for {
		ok, reason := w.converged(orgs)
		if ok {
			break
		}
		why = reason
		if time.Now().After(end) {
			w.t.Fatalf("not converged after %s: %s", d, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := w.sim.CheckInvariants(orgs); len(v) > 0 {
		w.t.Fatalf("emulator invariants broken: %+v", v)
	}
}

// checkWrites reads the emulator's call log: every write went out fenced
// for the orgs it touched, and no two replicas wrote for one org in
// overlapping intervals. It returns the writers of each org.
func (w *world) checkWrites() map[string]map[string]bool {
	w.t.Helper()
	w.log.mu.Lock()
	calls := append([]call(nil), w.log.calls...)
	w.log.mu.Unlock()
	byOrg := map[string][]call{}
	writers := map[string]map[string]bool{}
	for _, c := range calls {
		if !c.write {
			continue
		}
		if len(c.orgs) == 0 {
			w.t.Errorf("unfenced write by %q: %s %s", c.replica, c.method, c.path)
			continue
		}
		for _, org := range c.orgs {
			byOrg[org] = append(byOrg[org], c)
			if writers[org] == nil {
				writers[org] = map[string]bool{}
			}
			writers[org][c.replica] = true
		}
	}
	for org, cs := range byOrg {
		for i := range cs {
			for j := i + 1; j < len(cs); j++ {
				a, b := cs[i], cs[j]
				if a.replica != b.replica && a.start.Before(b.end) && b.start.Before(a.end) {
					w.t.Errorf("org %s: %s (%s %s, %s..%s) and %s (%s %s, %s..%s) wrote at the same time", org,
						a.replica, a.method, a.path, a.start.Format("15:04:05.000"), a.end.Format("15:04:05.000"),
						b.replica, b.method, b.path, b.start.Format("15:04:05.000"), b.end.Format("15:04:05.000"))
				}
			}
		}
	}
	return writers
}

func orgNames(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%02d", prefix, i))
	}
	return out
}

// A replica stopped abruptly mid-work: its partitions are taken over when
// their leases expire, and every org converges on its new owner.
func TestReplicaKilledPartitionsTakenOver(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b, c := w.startReplica("a", false), w.startReplica("b", false), w.startReplica("c", false)
	w.balanced(a, b, c)
	orgs := orgNames("kill", 24)
	w.publishCreated(orgs...)
	// b dies as soon as it has started writing for one of its orgs.
	waitFor(t, 10*time.Second, "b to start building an org", func() bool {
		for _, org := range orgs {
			if o, ok, _ := b.store.Get(org); ok && o.Observed.TunnelID != "" {
				return true
			}
		}
		return false
	})
	var bOrgs []string
	for _, org := range orgs {
		if b.mgr.Owns(org) {
			bOrgs = append(bOrgs, org)
		}
	}
	killed := time.Now()
	w.kill(b)
	w.waitConverged(orgs, 40*time.Second)
	t.Logf("every org Ready %s after the kill (lease TTL %s); b owned %d of them", time.Since(killed).Round(time.Millisecond), testTTL, len(bOrgs))
	w.balanced(a, c)
	w.checkWrites()
}

// A replica cut off from NATS (its connections hang) stops writing at its
// renew deadline, before its leases expire and others take its orgs: the
// emulator's log shows no org written by two replicas at once, and the
// orgs it was building are finished by others.
func TestReplicaCutOffStopsWritingBeforeTakeover(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := w.startReplica("a", true)
	b, c := w.startReplica("b", false), w.startReplica("c", false)
	w.balanced(a, b, c)
	orgs := orgNames("cut", 24)
	w.publishCreated(orgs...)
	waitFor(t, 10*time.Second, "a to start building an org", func() bool {
		for _, org := range orgs {
			if o, ok, _ := a.store.Get(org); ok && o.Observed.TunnelID != "" {
				return true
			}
		}
		return false
	})
	cut := time.Now()
	a.proxy.blackhole()
	w.mu.Lock()
	a.dead = true // as far as convergence goes: its orgs must be finished by others
	w.mu.Unlock()
	waitFor(t, 20*time.Second, "b and c to take a's partitions", func() bool {
		return len(b.mgr.Owned())+len(c.mgr.Owned()) == cluster.DefaultPartitions
	})
	w.waitConverged(orgs, 40*time.Second)
	writers := w.checkWrites()
	// a really was writing, and others finished after it.
	shared := 0
	for _, ws := range writers {
		if ws["a"] && (ws["b"] || ws["c"]) {
			shared++
		}
	}
	// a's last write went out before its fence closed: the renew deadline
	// is the fence (TTL/2) after the last renewal, which was before the cut.
	w.log.mu.Lock()
	var last time.Time
	for _, x := range w.log.calls {
		if x.write && x.replica == "a" && x.start.After(last) {
			last = x.start
		}
	}
	w.log.mu.Unlock()
	if limit := cut.Add(testTTL / 2); last.After(limit) {
		t.Errorf("a wrote at %s, after its fence closed at the latest (%s)", last.Format("15:04:05.000"), limit.Format("15:04:05.000"))
	}
	t.Logf("orgs written by a and then by another replica: %d; a's last write %s after the cut", shared, last.Sub(cut).Round(time.Millisecond))
}

// waitDeleted waits until every org's tombstone is done on the live
// replica that owns it.
func (w *world) waitDeleted(orgs []string, d time.Duration) {
	w.t.Helper()
	waitFor(w.t, d, "the deleted orgs' cascades", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, org := range orgs {
			done := false
			for _, r := range w.replicas {
				if r.dead || !r.mgr.Owns(org) {
					continue
				}
				o, ok, err := r.store.Get(org)
				done = err == nil && ok && o.Observed.DeleteDone
			}
			if !done {
				return false
			}
		}
		return true
	})
}

// everyReplicaHas checks that each live replica's state file holds every
// event published: its org record and the sequence of its last event.
func (w *world) everyReplicaHas(want map[string]uint64) {
	w.t.Helper()
	waitFor(w.t, 20*time.Second, "every replica to ingest every event", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, r := range w.replicas {
			if r.dead {
				continue
			}
			for org, seq := range want {
				if o, ok, err := r.store.Get(org); err != nil || !ok || o.LastSeq != seq {
					return false
				}
			}
		}
		return true
	})
}

// lastSeqs reads the stream: each org's last event's sequence, and how
// many messages the stream holds.
func (w *world) lastSeqs() (map[string]uint64, uint64) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := w.pub.Stream(ctx, events.Stream)
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]uint64{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			w.t.Fatalf("stream message %d: %v", seq, err)
		}
		parts := strings.Split(m.Subject, ".")
		out[parts[1]] = seq
	}
	return out, info.State.Msgs
}

// The NATS server that leads the event stream dies while events are being
// published: every event the stream acknowledged survives on the other two
// (R3), reaches every replica, and every org converges.
func TestStreamLeaderKilledLosesNoAckedEvent(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.startReplica("a", false), w.startReplica("b", false)
	w.balanced(a, b)
	orgs := orgNames("leader", 20)
	w.publishCreated(orgs[:10]...)
	leader := w.streamLeader()
	leader.Shutdown()
	killed := time.Now()
	// Published through the election: each is acked once a new leader
	// stores it (the publisher retries, the message id deduplicates).
	w.publishCreated(orgs[10:]...)
	t.Logf("10 events acked %s after the leader (%s) died", time.Since(killed).Round(time.Millisecond), leader.Name())
	seqs, msgs := w.lastSeqs()
	if msgs != uint64(len(orgs)) || len(seqs) != len(orgs) {
		t.Fatalf("the stream holds %d messages for %d orgs, want one each of %d", msgs, len(seqs), len(orgs))
	}
	w.everyReplicaHas(seqs)
	w.waitConverged(orgs, 60*time.Second)
	w.checkWrites()
}

// Every replica restarted in turn while events keep coming: nothing lost
// (every replica's state file holds every event), nothing duplicated (the
// emulator's invariants: one tunnel, record, parameter and instance per
// org, nothing left of deleted orgs), no two replicas writing for one org
// at once.
func TestRollingRestartUnderLoad(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.startReplica("a", false), w.startReplica("b", false)
	w.balanced(a, b)
	orgs := orgNames("roll", 40)
	var gone []string
	load := make(chan error, 1)
	go func() {
		publish := func(data any) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ev, err := events.New(data)
			if err == nil {
				_, err = broker.PublishEvent(ctx, w.pub, w.v, ev)
			}
			return err
		}
		for i, org := range orgs {
			if err := publish(events.Created{OrgID: org, Slug: org}); err != nil {
				load <- err
				return
			}
			if i%5 == 4 { // every fifth org is deleted again a little later
				if err := publish(events.Deleted{OrgID: orgs[i-2]}); err != nil {
					load <- err
					return
				}
				gone = append(gone, orgs[i-2])
			}
			time.Sleep(40 * time.Millisecond)
		}
		load <- nil
	}()
	time.Sleep(300 * time.Millisecond)
	a = w.restart(a)
	w.balanced(a, b)
	b = w.restart(b)
	w.balanced(a, b)
	if err := <-load; err != nil {
		t.Fatalf("publishing under the restarts: %v", err)
	}
	seqs, msgs := w.lastSeqs()
	if want := len(orgs) + len(gone); msgs != uint64(want) {
		t.Fatalf("the stream holds %d messages, want %d", msgs, want)
	}
	w.everyReplicaHas(seqs)
	var present []string
	for _, org := range orgs {
		if !slices.Contains(gone, org) {
			present = append(present, org)
		}
	}
	w.waitDeleted(gone, 60*time.Second)
	w.waitConverged(present, 60*time.Second)
	w.checkWrites()
}

// BenchmarkFailover is issue 14's failover figure: the replica that owns
// an org is killed while it builds the org (its NATS connection gone first,
// so its leases expire), and the time from the kill to the org Ready on its
// new owner is measured, once per iteration, beside the lease TTL; a fresh
// replica replaces the dead one before the next. At the end the emulator's
// call log must show no org written by two replicas at once (overlap) and
// its invariants no duplicate or leftover. Run:
//
//	go test -run '^$' -bench Failover -benchtime 20x ./internal/cluster
//
// TUNNELWARD_FAILOVER_TTL sets the lease TTL (default the daemon's 10s).
func BenchmarkFailover(b *testing.B) {
	ttl := 10 * time.Second
	if s := os.Getenv("TUNNELWARD_FAILOVER_TTL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("TUNNELWARD_FAILOVER_TTL: %v", err)
		}
		ttl = d
	}
	w := newWorld(b)
	w.ttl = ttl
	live := []*replica{w.startReplica("r0", false), w.startReplica("r1", false), w.startReplica("r2", false)}
	w.balanced(live...)
	next := 3
	var took []time.Duration
	var orgs []string
	b.ResetTimer()
	for i := range b.N {
		org := fmt.Sprintf("failover-%03d", i)
		orgs = append(orgs, org)
		w.publishCreated(org)
		var owner *replica
		waitFor(b, 30*time.Second, org+" being built by its owner", func() bool {
			for _, r := range live {
				if o, ok, _ := r.store.Get(org); ok && r.mgr.Owns(org) && o.Observed.TunnelID != "" {
					owner = r
					return true
				}
			}
			return false
		})
		if o, _, _ := owner.store.Get(org); reconcile.IsTrue(o, state.CondReady) {
			b.Fatalf("%s was Ready before the kill: the kill is not mid-create", org)
		}
		killed := time.Now()
		w.kill(owner)
		live = slices.DeleteFunc(live, func(r *replica) bool { return r == owner })
		w.waitConverged(orgs, 3*ttl+30*time.Second) // (earlier orgs are Ready: it waits for org)
		took = append(took, time.Since(killed))
		b.StopTimer()
		live = append(live, w.startReplica(fmt.Sprintf("r%d", next), false))
		next++
		w.balanced(live...)
		b.StartTimer()
	}
	b.StopTimer()
	w.waitConverged(orgs, 60*time.Second)
	writers := w.checkWrites() // fails the benchmark on any overlapping write
	taken := 0
	for _, ws := range writers {
		if len(ws) > 1 {
			taken++
		}
	}
	b.Logf("each kill, in order: %v", roundAll(took))
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	b.ReportMetric(q(0.5).Seconds(), "failover-p50-s")
	b.ReportMetric(q(0.99).Seconds(), "failover-p99-s")
	b.ReportMetric(ttl.Seconds(), "lease-ttl-s")
	b.Logf("%d kills, lease TTL %s: failover p50 %s, p99 %s, max %s; orgs written by two replicas (one after the other) %d of %d; no overlapping write and clean emulator invariants (checked: the run fails otherwise)",
		len(took), ttl, q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), taken, len(orgs))
}

// A replica that starts while the event stream's leader has just died
// (the streams, the lease bucket and its consumer looked up during the
// election) starts once the cluster answers again: a request lost with its
// server is tried again, not waited on until the start-up deadline ends.
func TestStartDuringLeaderElection(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	leader := w.streamLeader()
	leader.Shutdown()
	// startReplica ensures the streams and the lease bucket and makes its
	// ingest consumer, each within a 20 s context: it fails the test if any
	// of them gives up (the old code did, every time).
	r := w.startReplica("late", false)
	w.balanced(r)
	w.publishCreated("election")
	w.waitConverged([]string{"election"}, 30*time.Second)
}

// streamLeader is the server leading the event stream.
func (w *world) streamLeader() *server.Server {
	w.t.Helper()
	var leader *server.Server
	waitFor(w.t, 10*time.Second, "the event stream's leader", func() bool {
		for _, s := range w.srvs {
			if s.JetStreamIsStreamLeader("$G", events.Stream) {
				leader = s
				return true
			}
		}
		return false
	})
	return leader
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// Two replicas, each placing only its own orgs and keeping only their
// observed state, create more orgs at once than two pools hold: the
// shared placement records keep every pool at its limit (the emulator's
// own limit never refuses a create), the rest wait with PoolFull.
func TestReplicasNeverOverfillAPool(t *testing.T) {
	t.Parallel()
	const limit = 4
	w := newPoolWorld(t, limit)
	a, b := w.startReplica("a", false), w.startReplica("b", false)
	w.balanced(a, b)
	orgs := orgNames("pool", 12)
	w.publishCreated(orgs...)

	status := func(org string) (state.Org, bool) {
		for _, r := range []*replica{a, b} {
			if r.mgr.Owns(org) {
				o, ok, _ := r.store.Get(org)
				return o, ok
			}
		}
		return state.Org{}, false
	}
	var ready, full []string
	waitFor(t, 60*time.Second, "every org Ready or waiting for room", func() bool {
		ready, full = nil, nil
		for _, org := range orgs {
			o, ok := status(org)
			if !ok {
				return false
			}
			if reconcile.IsTrue(o, state.CondReady) {
				ready = append(ready, org)
			} else if c, ok := reconcile.Condition(o, state.CondFailed); ok && c.Status && c.Reason == reconcile.ReasonPoolFull {
				full = append(full, org)
			}
		}
		return len(ready)+len(full) == len(orgs)
	})
	if len(ready) != 2*limit || len(full) != len(orgs)-2*limit {
		t.Fatalf("%d Ready, %d waiting for room; want %d and %d", len(ready), len(full), 2*limit, len(orgs)-2*limit)
	}
	byReplica := map[string]int{}
	inPool := map[string]int{}
	for _, org := range ready {
		o, _ := status(org)
		byReplica[o.Observed.Replica]++
		inPool[o.Observed.Pool]++
	}
	if byReplica["a"] == 0 || byReplica["b"] == 0 {
		t.Fatalf("Ready orgs by replica %v: both must have placed some for the test to mean anything", byReplica)
	}
	if inPool["sandbox"] != limit || inPool["sandbox2"] != limit {
		t.Fatalf("Ready orgs by pool %v, want %d in each", inPool, limit)
	}
	// Cloudflare's limit errors (tunnels an account 1014, records a zone
	// 81045) never fire: placement kept under them across replicas.
	w.log.mu.Lock()
	for _, c := range w.log.calls {
		if c.write && (strings.Contains(c.body, `"code":1014`) || strings.Contains(c.body, `"code":81045`)) {
			t.Errorf("replica %s: %s %s refused by a pool's limit: %s", c.replica, c.method, c.path, c.body)
		}
	}
	w.log.mu.Unlock()
	if v := w.sim.CheckInvariants(ready); len(v) > 0 {
		t.Fatalf("emulator invariants broken: %+v", v)
	}
}
