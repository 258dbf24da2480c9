package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The wiring from a `--cloud URL` configuration builds an engine that
// really reconciles against that emulator, in every served region, with
// the knobs applied last.
func TestEngineFromConfigConverges(t *testing.T) {
	scfg := cloudsim.DefaultConfig()
	scfg.BootDelay, scfg.ConnectDelay = 50*time.Millisecond, 50*time.Millisecond
	sim := cloudsim.New(scfg)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	c, err := config.Parse([]string{"--cloud", srv.URL, "--aws-regions", "eu-west-1"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ecfg, clouds, err := EngineConfig(context.Background(), c, srv.URL, slog.New(slog.DiscardHandler), nil,
		Knobs{Engine: func(e *reconcile.Config) { e.Workers = 3 }})
	if err != nil {
		t.Fatal(err)
	}
	if ecfg.Workers != 3 || ecfg.ZoneName != scfg.ZoneName || clouds.DefaultRegion != "us-east-1" || clouds.Regions["eu-west-1"].Instances == nil {
		t.Fatalf("config %+v, default region %q, regions %v", ecfg, clouds.DefaultRegion, clouds.Regions)
	}
	st, eng := newEngine(t, ecfg, clouds)
	if _, err := st.Apply([]state.Fact{{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "acme", Slug: "acme", Region: "eu-west-1", Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := eng.Reconcile(context.Background(), "acme"); err != nil {
			t.Fatal(err)
		}
		o, _, _ := st.Get("acme")
		if reconcile.IsTrue(o, state.CondReady) {
			if o.Observed.Region != "eu-west-1" {
				t.Fatalf("org built in %q", o.Observed.Region)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not Ready: %+v", o)
		}
		time.Sleep(20 * time.Millisecond)
		sim.Tick()
	}
	if v := sim.CheckInvariants([]string{"acme:1"}); len(v) != 0 {
		t.Fatalf("invariants: %+v", v)
	}
}

// The watches take their share of the limits the clients are built with;
// 0% turns them off.
func TestWatchConfig(t *testing.T) {
	c := config.Config{WatchBudgetShare: 0.05}
	w := watchConfig(c, Knobs{CFBudget: ratelimit.WindowBudget{Requests: 600, Window: time.Minute}, CFPageSize: 20, AWSPage: 100})
	if w.BudgetShare != 0.05 || w.CFPerSecond != 10 || w.TunnelPage != 20 || w.ParamPage != 50 || w.InstancePage != 100 {
		t.Fatalf("watch config %+v", w)
	}
	if w := watchConfig(config.Config{}, Knobs{}); w.BudgetShare >= 0 {
		t.Fatalf("0%% share: watches not off: %+v", w)
	}
}

// cfRecorder is a Cloudflare API that answers every GET with an empty
// page and records who asked for what: the wiring is tested without an
// emulator that knows more than one identity.
type cfRecorder struct {
	mu   sync.Mutex
	seen []string // "<token> <path>"
}

func (r *cfRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.seen = append(r.seen, strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")+" "+req.URL.Path)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"success":true,"errors":[],"messages":[],"result":[],"result_info":{"page":1,"per_page":50,"count":0,"total_count":0,"total_pages":1}}`)
}

func (r *cfRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

// Every pool gets a client of its own, with its token, account and zone:
// the sandbox's two pools call two accounts and two zones, each with its
// identity's token; the engine gets both pools in order, with limits, and
// the placement policy.
func TestEngineConfigBuildsAClientPerPool(t *testing.T) {
	rec := &cfRecorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	c, err := config.Parse([]string{"--cloud", srv.URL, "--pool-placement", "least-used", "--cloudflare-max-dns-records", "150"},
		func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var built []*cloudflare.Client
	ecfg, clouds, err := EngineConfig(context.Background(), c, srv.URL, slog.New(slog.DiscardHandler), nil,
		Knobs{OnCloudflare: func(cf *cloudflare.Client) { built = append(built, cf) }})
	if err != nil {
		t.Fatal(err)
	}
	if ecfg.Placement != reconcile.PlaceLeastUsed || ecfg.ZoneName != config.SandboxZoneName {
		t.Errorf("placement %q, zone name %q", ecfg.Placement, ecfg.ZoneName)
	}
	if clouds.DefaultPool != "sandbox" || !slices.Equal(clouds.PoolOrder, []string{"sandbox", "sandbox2"}) || len(built) != 2 {
		t.Fatalf("default pool %q, order %v, %d clients handed out", clouds.DefaultPool, clouds.PoolOrder, len(built))
	}
	want := map[string]reconcile.PoolLimits{
		"sandbox":  {Account: config.SandboxAccountID, Budget: "sandbox", MaxTunnels: 1000, MaxRecords: 150},
		"sandbox2": {Account: config.SandboxPool2AccountID, Budget: "sandbox2", MaxTunnels: 1000, MaxRecords: 200},
	}
	zones := map[string]string{"sandbox": config.SandboxZoneName, "sandbox2": config.SandboxPool2ZoneName}
	for name, lim := range want {
		p := clouds.Pools[name]
		if p.Limits != lim || p.ZoneName != zones[name] {
			t.Errorf("pool %s: limits %+v zone %q, want %+v %q", name, p.Limits, p.ZoneName, lim, zones[name])
		}
	}

	ctx := context.Background()
	calls := map[string][]string{
		"sandbox": {config.SandboxCloudflareToken + " /client/v4/zones/" + config.SandboxZoneID + "/dns_records",
			config.SandboxCloudflareToken + " /client/v4/accounts/" + config.SandboxAccountID + "/cfd_tunnel"},
		"sandbox2": {config.SandboxPool2Token + " /client/v4/zones/" + config.SandboxPool2ZoneID + "/dns_records",
			config.SandboxPool2Token + " /client/v4/accounts/" + config.SandboxPool2AccountID + "/cfd_tunnel"},
	}
	for _, name := range []string{"sandbox", "sandbox2"} {
		p := clouds.Pools[name]
		if _, err := p.DNS.ListRecords(ctx); err != nil {
			t.Fatalf("pool %s: list records: %v", name, err)
		}
		if _, err := p.Tunnels.ListTunnels(ctx); err != nil {
			t.Fatalf("pool %s: list tunnels: %v", name, err)
		}
		if got := rec.take(); !slices.Equal(got, calls[name]) {
			t.Errorf("pool %s called %v, want %v", name, got, calls[name])
		}
	}
	// The default pool is also the engine's Tunnels and DNS.
	if _, err := clouds.DNS.ListRecords(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); !slices.Equal(got, calls["sandbox"][:1]) {
		t.Errorf("Clouds.DNS called %v, want the default pool's zone", got)
	}
}

// The pools on one budget draw from one limiter: what one spends, the
// other waits for. Pools on other budgets do not.
func TestPoolsOnOneBudgetShareALimiter(t *testing.T) {
	rec := &cfRecorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	pools := writeFile(t, "pools.yaml", `
- {name: same-token, account_id: `+config.SandboxAccountID+`, zone_id: 11111111111111111111111111111111, zone_name: one.tunnelward.test, api_token_env: TOK_DEFAULT}
- {name: same-budget, account_id: `+config.SandboxAccountID+`, zone_id: 22222222222222222222222222222222, zone_name: two.tunnelward.test, api_token_env: TOK_OTHER, budget: sandbox}
- {name: own, account_id: `+config.SandboxPool2AccountID+`, zone_id: 33333333333333333333333333333333, zone_name: three.tunnelward.test, api_token_env: TOK_OWN}
`)
	env := map[string]string{"TOK_DEFAULT": config.SandboxCloudflareToken, "TOK_OTHER": "other-token", "TOK_OWN": "own-token"}
	c, err := config.Parse([]string{"--cloud", srv.URL, "--cloudflare-pools-file", pools}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	// A burst of 2 per budget, then about one call an hour.
	k := Knobs{CFBudget: ratelimit.WindowBudget{Requests: 3, Window: time.Hour, Burst: 2}}
	cfs, err := cloudflareClients(c, srv.URL, nil, k)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfs) != 4 {
		t.Fatalf("%d clients, want one per pool (4)", len(cfs))
	}
	ctx := context.Background()
	listing := func(cf *cloudflare.Client) error {
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, _, err := cf.ListTunnels(short, "tw-")
		return err
	}
	// The default pool and the pool on its token spend the budget's burst...
	if err := listing(cfs[0]); err != nil {
		t.Fatal(err)
	}
	if err := listing(cfs[1]); err != nil {
		t.Fatal(err)
	}
	// ...so the pool naming that budget waits,
	if err := listing(cfs[2]); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third call on the spent budget: %v, want it held by the shared limiter", err)
	}
	// while a pool on a budget of its own does not.
	if err := listing(cfs[3]); err != nil {
		t.Fatalf("the pool on its own budget: %v", err)
	}
	if got := c.Pools(); got[1].Budget != "sandbox" || got[2].Budget != "sandbox" || got[3].Budget != "own" {
		t.Fatalf("budgets %v", got)
	}
}

// Only the default pool: one client, one pool, as before pools.
func TestEngineConfigDefaultPoolOnly(t *testing.T) {
	rec := &cfRecorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	none := writeFile(t, "pools.yaml", "pools: []\n")
	c, err := config.Parse([]string{"--cloud", srv.URL, "--cloudflare-pools-file", none}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	_, clouds, err := EngineConfig(context.Background(), c, srv.URL, slog.New(slog.DiscardHandler), nil,
		Knobs{OnCloudflare: func(*cloudflare.Client) { n++ }})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || clouds.DefaultPool != "sandbox" || !slices.Equal(clouds.PoolOrder, []string{"sandbox"}) {
		t.Fatalf("%d clients, default %q, order %v", n, clouds.DefaultPool, clouds.PoolOrder)
	}
}

// config's placement names are the engine's.
func TestPlacementNamesAgree(t *testing.T) {
	if config.PlaceFill != reconcile.PlaceFill || config.PlaceLeastUsed != reconcile.PlaceLeastUsed {
		t.Fatal("config and reconcile name the placement policies differently")
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Against an emulator that serves both sandbox identities, the engine the
// wiring builds puts an org that asks for sandbox2 in that account and
// zone, with sandbox2's token, and an org that names no pool in the
// default pool.
func TestEngineFromConfigServesTwoPools(t *testing.T) {
	scfg := cloudsim.DefaultConfig()
	scfg.BootDelay, scfg.ConnectDelay = 50*time.Millisecond, 50*time.Millisecond
	sim := cloudsim.New(scfg)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	c, err := config.Parse([]string{"--cloud", srv.URL}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ecfg, clouds, err := EngineConfig(context.Background(), c, srv.URL, slog.New(slog.DiscardHandler), nil, Knobs{})
	if err != nil {
		t.Fatal(err)
	}
	st, eng := newEngine(t, ecfg, clouds)
	if _, err := st.Apply([]state.Fact{
		{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "acme", Slug: "acme", Time: time.Now()},
		{Seq: 2, EventID: "e2", Type: state.FactCreated, OrgID: "beta", Slug: "beta", Pool: "sandbox2", Time: time.Now()},
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, org := range []string{"acme", "beta"} {
		for {
			if _, err := eng.Reconcile(context.Background(), org); err != nil {
				t.Fatal(err)
			}
			o, _, _ := st.Get(org)
			if reconcile.IsTrue(o, state.CondReady) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not Ready: %+v", org, o)
			}
			time.Sleep(20 * time.Millisecond)
			sim.Tick()
		}
	}
	want := map[string]struct{ pool, zone, fqdn, account string }{
		"acme": {"sandbox", config.SandboxZoneID, "acme." + config.SandboxZoneName, config.SandboxAccountID},
		"beta": {"sandbox2", config.SandboxPool2ZoneID, "beta." + config.SandboxPool2ZoneName, config.SandboxPool2AccountID},
	}
	ws := sim.State()
	for org, w := range want {
		o, _, _ := st.Get(org)
		if got := eng.PoolOf(o); got != w.pool {
			t.Errorf("%s placed in %q, want %q", org, got, w.pool)
		}
		var zone, account string
		for _, r := range ws.DNSRecords {
			if r["name"] == w.fqdn {
				zone, _ = r["zone_id"].(string)
			}
		}
		for _, tn := range ws.Tunnels {
			if tn["id"] == o.Observed.TunnelID {
				account, _ = tn["account_tag"].(string)
			}
		}
		if zone != w.zone || account != w.account {
			t.Errorf("%s: record %s in zone %q, tunnel in account %q; want zone %s, account %s", org, w.fqdn, zone, account, w.zone, w.account)
		}
	}
	if v := sim.CheckInvariants([]string{"acme:1", "beta:1"}); len(v) != 0 {
		t.Fatalf("invariants: %+v", v)
	}
}

// newEngine opens a fresh state file and builds an engine on it from the
// wiring's output.
func newEngine(t *testing.T, ecfg reconcile.Config, clouds reconcile.Clouds) (*state.Store, *reconcile.Engine) {
	t.Helper()
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := reconcile.New(ecfg, clouds, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st, eng
}
