package daemon

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

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
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := reconcile.New(ecfg, clouds, st, nil)
	if err != nil {
		t.Fatal(err)
	}
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
