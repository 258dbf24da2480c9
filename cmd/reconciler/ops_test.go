package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// daemon is run() in this process, stopped at the end of the test.
type daemon struct {
	t      *testing.T
	cfg    config.Config
	cancel context.CancelFunc
	done   chan error
	logs   *lockedWriter
}

func startDaemon(t *testing.T, cfg config.Config) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{t: t, cfg: cfg, cancel: cancel, done: make(chan error, 1), logs: &lockedWriter{b: &strings.Builder{}}}
	log := slog.New(slog.NewTextHandler(d.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { d.done <- run(ctx, cfg, log) }()
	t.Cleanup(d.stop)
	waitFor(t, "daemon ready", func() bool {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("daemon stopped: %v\n%s", err, d.log())
		default:
		}
		return httpCode(d.url("/readyz")) == 200
	})
	return d
}

func (d *daemon) url(path string) string { return "http://" + d.cfg.AdminListen + path }

func (d *daemon) log() string {
	d.logs.mu.Lock()
	defer d.logs.mu.Unlock()
	return d.logs.b.String()
}

func (d *daemon) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Errorf("daemon: %v", err)
		}
	case <-time.After(30 * time.Second):
		d.t.Error("daemon did not stop within 30s")
	}
}

func (d *daemon) natsURL() string {
	if d.cfg.NATS.URL != "" {
		return d.cfg.NATS.URL
	}
	return "nats://" + d.cfg.NATS.Listen
}

// publish sends events the way the publisher does (validated, Nats-Msg-Id).
func (d *daemon) publish(data ...any) {
	d.t.Helper()
	nc, err := nats.Connect(d.natsURL())
	if err != nil {
		d.t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	v, _ := events.NewValidator()
	for _, x := range data {
		ev, err := events.New(x)
		if err != nil {
			d.t.Fatal(err)
		}
		if _, err := broker.PublishEvent(context.Background(), js, v, ev); err != nil {
			d.t.Fatal(err)
		}
	}
}

func (d *daemon) org(id string) (state.Org, bool) {
	var o state.Org
	resp, err := http.Get(d.url("/v1/orgs/" + id))
	if err != nil {
		return o, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return o, false
	}
	return o, json.NewDecoder(resp.Body).Decode(&o) == nil
}

func (d *daemon) waitReady(ids ...string) {
	d.t.Helper()
	for _, id := range ids {
		waitForLong(d.t, id+" Ready", 60*time.Second, func() bool {
			o, ok := d.org(id)
			return ok && reconcile.IsTrue(o, state.CondReady)
		})
	}
}

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var reSample = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)
var reLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func scrape(t *testing.T, url string) []sample {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := reSample.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, l := range reLabel.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		out = append(out, s)
	}
	return out
}

// sum adds the samples of name whose labels include every pair in match.
func sum(samples []sample, name string, match map[string]string) (float64, bool) {
	total, found := 0.0, false
	for _, s := range samples {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range match {
			if s.labels[k] != v {
				ok = false
			}
		}
		if ok {
			total, found = total+s.value, true
		}
	}
	return total, found
}

// A lifecycle in the sandbox moves the metrics an operator watches, and no
// label ever carries an org id.
func TestMetricsAfterLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a lifecycle in the sandbox")
	}
	t.Parallel()
	cfg := testConfig(t, t.TempDir())
	d := startDaemon(t, cfg)

	d.publish(events.Created{OrgID: "acme-corp", Slug: "acme"})
	// A publisher ignoring the contract: dead-lettered (no Nats-Msg-Id).
	nc, err := nats.Connect(d.natsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(context.Background(), "orgs.rogue-org.created", []byte(`{"type":"org.created"}`)); err != nil {
		t.Fatal(err)
	}
	d.waitReady("acme-corp")
	d.publish(events.Deleted{OrgID: "acme-corp"})
	waitForLong(t, "acme-corp deleted in the cloud", 60*time.Second, func() bool {
		o, ok := d.org("acme-corp")
		return ok && o.Observed.DeleteDone
	})

	var got []sample
	need := func(what string, name string, match map[string]string, min float64) {
		t.Helper()
		v, ok := sum(got, name, match)
		if !ok || v < min {
			t.Errorf("%s: %s%v = %v (present %v), want >= %v", what, name, match, v, ok, min)
		}
	}
	waitFor(t, "dead letter counted", func() bool {
		got = scrape(t, d.url("/metrics"))
		v, _ := sum(got, "tunnelward_dead_letters_total", nil)
		return v >= 1
	})
	need("created applied", "tunnelward_events_ingested_total", map[string]string{"type": "org.created", "result": "applied"}, 1)
	need("deleted applied", "tunnelward_events_ingested_total", map[string]string{"type": "org.deleted", "result": "applied"}, 1)
	need("invalid counted", "tunnelward_events_ingested_total", map[string]string{"result": "invalid"}, 1)
	for _, s := range got {
		if s.name == "tunnelward_dead_letters_total" && (s.labels["reason"] == "" || s.labels["reason"] == "unknown") {
			t.Errorf("dead letter without a reason code: %+v", s)
		}
	}
	for _, p := range []string{"cloudflare", "ec2", "ssm"} {
		need("API requests "+p, "tunnelward_cloud_api_requests_total", map[string]string{"provider": p, "status_class": "2xx"}, 1)
	}
	// One operation naming for every provider (the engine's log and the
	// emulator's call counts use the same names).
	need("tunnel created", "tunnelward_cloud_api_requests_total", map[string]string{"provider": "cloudflare", "operation": "cf.tunnel.create"}, 1)
	need("instance launched", "tunnelward_cloud_api_requests_total", map[string]string{"provider": "ec2", "operation": "ec2.RunInstances"}, 1)
	need("token written", "tunnelward_cloud_api_requests_total", map[string]string{"provider": "ssm", "operation": "ssm.PutParameter"}, 1)
	need("reconciles timed", "tunnelward_reconcile_duration_seconds_count", nil, 1)
	need("sweep finished", "tunnelward_sweeps_total", map[string]string{"result": "success"}, 1)
	need("last sweep time", "tunnelward_sweep_last_success_timestamp_seconds", nil, 1)
	need("consumer readable", "tunnelward_consumer_info_up", nil, 1)
	need("consumer pending", "tunnelward_consumer_pending_messages", nil, 0)
	need("consumer redelivered", "tunnelward_consumer_redelivered_messages", nil, 0)
	need("queue depth", "tunnelward_workqueue_depth", nil, 0)

	for _, s := range got {
		for k, v := range s.labels {
			if strings.Contains(v, "acme") || strings.Contains(v, "rogue") {
				t.Errorf("label %s=%q of %s carries an org id", k, v, s.name)
			}
		}
	}
	if t.Failed() {
		t.Logf("operations seen: %v", opsOf(got))
	}

	// Logs: one line per cloud mutation with its outcome, each naming the
	// org; event lines name the org and the event id.
	mutations := map[string]bool{}
	for _, line := range strings.Split(d.log(), "\n") {
		switch {
		case strings.Contains(line, "msg=\"cloud mutation\""):
			if !strings.Contains(line, "org_id=acme-corp") || !strings.Contains(line, "outcome=") {
				t.Errorf("mutation line without org_id or outcome: %s", line)
			}
			if m := regexp.MustCompile(` op=(\S+)`).FindStringSubmatch(line); m != nil {
				mutations[m[1]] = true
			}
		case strings.Contains(line, "msg=event "), strings.Contains(line, "msg=\"event dead-lettered\""):
			if !strings.Contains(line, "org_id=") || !strings.Contains(line, "event_id=") {
				t.Errorf("event line without org_id or event_id: %s", line)
			}
		}
	}
	if len(mutations) < 5 {
		t.Errorf("want a logged line for each mutation of a create and a delete, saw ops %v", mutations)
	}
}

func opsOf(samples []sample) []string {
	var out []string
	for _, s := range samples {
		if s.name == "tunnelward_cloud_api_requests_total" {
			out = append(out, fmt.Sprintf("%s/%s/%s=%v", s.labels["provider"], s.labels["operation"], s.labels["status_class"], s.value))
		}
	}
	return out
}

// probe reads /readyz.
func probe(t *testing.T, url string) (int, admin.ProbeResponse) {
	t.Helper()
	var pr admin.ProbeResponse
	resp, err := http.Get(url)
	if err != nil {
		return 0, pr
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&pr)
	return resp.StatusCode, pr
}

// The settings compose sets (TUNNELWARD_CLOUD, TUNNELWARD_NATS_URL,
// TUNNELWARD_ADMIN_LISTEN) take effect, and /readyz names the NATS check
// while the broker is down and recovers when it is back.
func TestReadyzFollowsNATSAndEnvTakesEffect(t *testing.T) {
	// Parallel only once the configuration is parsed: parsing replaces
	// getenv, which parallel tests read.
	natsAddr, storeDir := freeAddr(t), t.TempDir()
	ns, err := broker.StartEmbedded(natsAddr, storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown() }()
	sim := httptest.NewServer(cloudsim.New(cloudsim.DefaultConfig()).Handler())
	defer sim.Close()

	adminAddr := freeAddr(t)
	env := map[string]string{
		"TUNNELWARD_CLOUD":        sim.URL,
		"TUNNELWARD_NATS_URL":     ns.ClientURL(),
		"TUNNELWARD_ADMIN_LISTEN": adminAddr,
		"TUNNELWARD_DATA_DIR":     t.TempDir(),
	}
	getenv = func(k string) string { return env[k] }
	_, cx, code := parseCommand(nil, getenv, io.Discard, io.Discard)
	getenv = os.Getenv
	if cx == nil {
		t.Fatalf("parse: exit %d", code)
	}
	t.Parallel()
	c := cx.cfg
	if c.Cloud != config.ModeURL || c.CloudURL != sim.URL || c.NATS.URL != ns.ClientURL() || c.AdminListen != adminAddr {
		t.Fatalf("environment not applied: %+v", c)
	}
	d := startDaemon(t, c)
	if !strings.Contains(d.log(), "cloud emulator at a URL") || !strings.Contains(d.log(), sim.URL) {
		t.Fatalf("daemon does not use the cloud from TUNNELWARD_CLOUD:\n%s", d.log())
	}

	ns.Shutdown()
	var pr admin.ProbeResponse
	waitFor(t, "/readyz 503 naming nats", func() bool {
		var code int
		code, pr = probe(t, d.url("/readyz"))
		return code == http.StatusServiceUnavailable && contains(pr.Failed, "nats")
	})
	for _, c := range pr.Checks {
		if c.Name == "nats" && (c.OK || c.Error == "") {
			t.Fatalf("nats check without a reason: %+v", pr)
		}
	}
	if code := httpCode(d.url("/healthz")); code != 200 {
		t.Fatalf("/healthz %d while NATS is down: the process is alive", code)
	}

	ns, err = broker.StartEmbedded(natsAddr, storeDir)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz 200 after NATS is back", func() bool {
		code, _ := probe(t, d.url("/readyz"))
		return code == 200
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// callsOf reads /_sim/calls: operation -> status -> count.
func callsOf(t *testing.T, simURL string) map[string]map[string]int {
	t.Helper()
	var rep struct {
		Ops map[string]map[string]int `json:"ops"`
	}
	resp, err := http.Get(simURL + "/_sim/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	return rep.Ops
}

func isReadOp(op string) bool {
	for _, s := range []string{".get", ".list", "Describe", "GetParameter", "ListTags"} {
		if strings.Contains(op, s) {
			return true
		}
	}
	return false
}

func simPost(t *testing.T, url string, body any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		out, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %s %s", url, resp.Status, out)
	}
}

type planRun struct {
	code   int
	stdout string
	stderr string
	report planReport
}

func runPlan(t *testing.T, args ...string) planRun {
	t.Helper()
	var out, errb strings.Builder
	code := realMain(append([]string{"plan"}, args...), &out, &errb)
	r := planRun{code: code, stdout: out.String(), stderr: errb.String()}
	if strings.Contains(strings.Join(args, " "), "-o json") {
		if err := json.Unmarshal([]byte(r.stdout), &r.report); err != nil {
			t.Fatalf("plan -o json: %v\n%s\n%s", err, r.stdout, r.stderr)
		}
	}
	return r
}

// plan reports exactly the drift made out of band, only reads, and reports
// nothing once a reconcile repaired it: from the state file (daemon
// stopped) and through the daemon's admin API (daemon running).
func TestPlanReportsDriftOnlyReads(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a lifecycle in the sandbox")
	}
	t.Parallel()
	sim := httptest.NewServer(cloudsim.New(cloudsim.DefaultConfig()).Handler())
	defer sim.Close()
	dir := t.TempDir()
	cfg := testConfig(t, dir, "--cloud", sim.URL, "--sweep-interval", "1h")
	d := startDaemon(t, cfg)
	d.publish(events.Created{OrgID: "acme", Slug: "acme"}, events.Created{OrgID: "beta", Slug: "beta"})
	d.waitReady("acme", "beta")
	d.stop() // nobody repairs while we look

	common := []string{"--data-dir", dir, "--cloud", sim.URL, "--admin-listen", cfg.AdminListen}
	if r := runPlan(t, append([]string{"acme", "-o", "json"}, common...)...); r.code != planNoChanges || len(r.report.Orgs) != 1 || len(r.report.Orgs[0].Changes) != 0 {
		t.Fatalf("converged acme: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	simPost(t, sim.URL+"/_sim/world", cloudsim.WorldAction{Action: "delete", Kind: "dns_record", Org: "acme"})
	before := callsOf(t, sim.URL)
	r := runPlan(t, append([]string{"acme", "-o", "json"}, common...)...)
	if r.code != planChanges {
		t.Fatalf("plan after drift: exit %d, want %d\n%s\n%s", r.code, planChanges, r.stdout, r.stderr)
	}
	ch := r.report.Orgs[0].Changes
	if len(ch) != 1 || ch[0].Resource != "dns" || ch[0].Op != "create" || ch[0].Reason == "" {
		t.Fatalf("want exactly one dns create with a reason, got %+v", ch)
	}
	if s := r.report.Summary; s.Create != 1 || s.Update+s.Delete+s.Restart+s.Conflicts+s.Orphans != 0 || s.OrgsWithChanges != 1 {
		t.Fatalf("summary %+v", s)
	}
	all := runPlan(t, common...) // every org, table
	if all.code != planChanges || !regexp.MustCompile(`(?m)^acme\s+dns\s+create`).MatchString(all.stdout) ||
		!regexp.MustCompile(`(?m)^beta\s+-\s+-\s+-\s+no changes`).MatchString(all.stdout) ||
		!strings.Contains(all.stdout, "Plan: 1 to create, 0 to update, 0 to delete, 0 to restart, 0 other (token rotation, cutover); 0 conflicts; 0 orphans; 1 of 2 orgs change.") {
		t.Fatalf("plan table: exit %d\n%s\n%s", all.code, all.stdout, all.stderr)
	}
	after := callsOf(t, sim.URL)
	for op, st := range after {
		n := 0
		for _, c := range st {
			n += c
		}
		for _, c := range before[op] {
			n -= c
		}
		if n > 0 && !isReadOp(op) {
			t.Errorf("plan sent %d %s requests: it must only read", n, op)
		}
	}

	// A reconcile (the daemon's start-up sweep finds the drift) repairs it;
	// plan, now through the running daemon's admin API, reports nothing.
	d = startDaemon(t, cfg)
	waitForLong(t, "dns record re-created", 60*time.Second, func() bool {
		r := runPlan(t, append([]string{"acme", "-o", "json"}, common...)...)
		return r.code == planNoChanges
	})
	r = runPlan(t, common...)
	if r.code != planNoChanges || !strings.Contains(r.stderr, "admin API") || !strings.Contains(r.stdout, "0 of 2 orgs change") {
		t.Fatalf("plan after reconcile: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runPlan(t, append([]string{"nosuch"}, common...)...); r.code != planError || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("plan of an unknown org: exit %d %s", r.code, r.stderr)
	}
	if r := runPlan(t, "--workers", "0", "--data-dir", dir); r.code != planError || !strings.Contains(r.stderr, "--workers") {
		t.Fatalf("plan with a bad setting: exit %d %s", r.code, r.stderr)
	}
}
