package monitoring

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/promql"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/testbin"
)

// scrapeInterval is the interval the evaluation stamps successive scrapes
// with (compose's Prometheus scrapes and evaluates every 15 s).
const scrapeInterval = 15 * time.Second

// TunnelwardTunnelsDown, evaluated on what the running reconciler exposes:
// it stays quiet while the tunnel is healthy, goes pending and then firing
// while a broken cloudflared keeps the tunnel down (a restart cannot fix
// it, and --health-grace holds the replacement back), and clears once the
// operator's repair (terminating the instance, so the engine launches a
// new one) brings the tunnel back.
//
// The values are real: each evaluation follows a real scrape of the
// daemon's /metrics, and the reconciler sweeps every second. Only time is
// compressed: the scrapes are stamped scrapeInterval apart, so the rule's
// `for: 15m` is 60 scrapes rather than 15 minutes.
func TestTunnelsDownFiresAndClears(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the reconciler binary")
	}
	var rule *alertEval
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "TunnelwardTunnelsDown" {
				rule = newAlertEval(r.Alert, r.Expr, time.Duration(r.For))
			}
		}
	}
	if rule == nil {
		t.Fatal("no TunnelwardTunnelsDown in the rule file")
	}
	d := startDaemon(t, "--sweep-interval", "1s", "--health-grace", "10m")
	d.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	waitFor(t, "acme Ready", time.Minute, func() bool { return d.ready(t, "acme") })

	store := newMemStore()
	ctx := context.Background()
	ts := time.Now().Truncate(time.Second)
	var last promql.Vector
	step := func() alertState {
		t.Helper()
		ts = ts.Add(scrapeInterval)
		if err := store.scrape(ctx, "http://"+d.admin+"/metrics", "tunnelward", d.admin, ts); err != nil {
			t.Fatal(err)
		}
		st, vec, err := rule.eval(ctx, store, ts)
		if err != nil {
			t.Fatal(err)
		}
		last = vec
		return st
	}
	// Healthy: well past the rule's `for`, never active.
	for i := 0; i < int(rule.hold/scrapeInterval)+5; i++ {
		if st := step(); st != inactive {
			t.Fatalf("scrape %d with a healthy tunnel: %s (%v)", i, st, last)
		}
	}

	d.world(t, `{"action":"break_connector","org":"acme"}`)
	var states []alertState
	waitFor(t, "the alert to fire", time.Minute, func() bool {
		st := step()
		if len(states) == 0 || states[len(states)-1] != st {
			states = append(states, st)
		}
		return st == firing
	})
	if strings.Join(toStrings(states), ",") != "inactive,pending,firing" && strings.Join(toStrings(states), ",") != "pending,firing" {
		t.Fatalf("states %v, want pending before firing", states)
	}
	if len(last) != 1 || last[0].F != 1 {
		t.Fatalf("firing with %v, want one tunnel down", last)
	}
	t.Logf("fired after %s of (compressed) time", time.Duration(rule.hold))

	// The repair: the instance goes, the engine launches a new one whose
	// cloudflared is not broken.
	d.world(t, `{"action":"terminate_instance","org":"acme"}`)
	waitFor(t, "the alert to clear", 2*time.Minute, func() bool { return step() == inactive })
	waitFor(t, "acme Ready again", time.Minute, func() bool { return d.ready(t, "acme") })
	// And it stays clear.
	for i := 0; i < 5; i++ {
		if st := step(); st != inactive {
			t.Fatalf("after the repair: %s (%v)", st, last)
		}
	}
}

func toStrings(s []alertState) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

// daemon is the reconciler binary in sandbox mode (embedded NATS, the
// in-process emulator) on loopback ports of its own.
type daemon struct {
	admin, sandbox, nats string
	js                   jetstream.JetStream
	validator            *events.Validator
}

func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	bin := testbin.Path(t, "reconciler", "./cmd/reconciler")
	d := &daemon{admin: freeAddr(t), sandbox: freeAddr(t), nats: freeAddr(t)}
	args := append([]string{"--data-dir", t.TempDir(), "--nats-listen", d.nats, "--admin-listen", d.admin,
		"--sandbox-listen", d.sandbox, "--log-format", "json"}, extra...)
	cmd := exec.Command(bin, args...)
	logs := &testbin.Output{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("reconciler did not stop within 30s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("reconciler log:\n%s", logs.String())
		}
	})
	waitFor(t, "reconciler ready", time.Minute, func() bool { return httpCode("http://"+d.admin+"/readyz") == 200 })
	nc, err := nats.Connect("nats://" + d.nats)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if d.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if d.validator, err = events.NewValidator(); err != nil {
		t.Fatal(err)
	}
	return d
}

// publish sends a valid event, as the publisher command does.
func (d *daemon) publish(t *testing.T, data any) {
	t.Helper()
	ev, err := events.New(data)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := broker.PublishEvent(ctx, d.js, d.validator, ev); err != nil {
		t.Fatal(err)
	}
}

// world runs a sandbox world action (internal/cloudsim, POST /_sim/world).
func (d *daemon) world(t *testing.T, action string) {
	t.Helper()
	resp, err := http.Post("http://"+d.sandbox+"/_sim/world", "application/json", strings.NewReader(action))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 {
		t.Fatalf("world %s: %s %s", action, resp.Status, b)
	}
}

func (d *daemon) org(t *testing.T, id string) (state.Org, bool) {
	t.Helper()
	resp, err := http.Get("http://" + d.admin + "/v1/orgs/" + id)
	if err != nil {
		return state.Org{}, false
	}
	defer resp.Body.Close()
	var o state.Org
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&o) != nil {
		return state.Org{}, false
	}
	return o, true
}

func (d *daemon) ready(t *testing.T, id string) bool {
	o, ok := d.org(t, id)
	if !ok {
		return false
	}
	for _, c := range o.Conditions {
		if c.Type == state.CondReady {
			return c.Status
		}
	}
	return false
}

// waitFor polls cond every 20 ms until it holds, failing the test at the
// deadline. The alert test scrapes and evaluates once per poll, so the
// interval is also how long a compressed scrape interval takes.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string { t.Helper(); return testbin.FreeAddr(t) }

func httpCode(url string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
