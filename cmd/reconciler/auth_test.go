package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

const daemonToken = "tw-daemon-admin-token-8c2f4e1a9d07"

func tokenFile(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// adminCall is GET url with an optional Authorization header value.
func adminCall(t *testing.T, url, authz string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header, b.String()
}

// A daemon with a token (--admin-token-file) refuses every endpoint but the
// probes without it; status and plan, given the same file or variable,
// send it; the token is in no log line and no command output.
func TestAdminTokenDaemon(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := tokenFile(t, daemonToken)
	cfg := testConfig(t, dir, "--admin-token-file", file)
	d := startDaemon(t, cfg) // waits for /readyz 200, sent without a token
	d.publish(events.Created{OrgID: "acme", Slug: "acme"})
	good := "Bearer " + daemonToken
	for _, c := range []struct {
		path, authz string
		code        int
	}{
		{"/healthz", "", 200}, {"/readyz", "", 200},
		{"/v1/orgs", "", 401}, {"/v1/orgs", "Bearer wrong-token-0123456789", 401}, {"/v1/orgs", good, 200},
		{"/v1/orgs/acme", "", 401}, {"/v1/plan", "", 401}, {"/v1/plan/acme", "", 401},
		{"/metrics", "", 401}, {"/metrics", good, 200},
	} {
		code, h, body := adminCall(t, d.url(c.path), c.authz)
		if code != c.code {
			t.Errorf("GET %s (authorization %v): %d, want %d: %s", c.path, c.authz != "", code, c.code, body)
		}
		if code == 401 && (!strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body, `"error"`)) {
			t.Errorf("GET %s: 401 without a Bearer challenge or a JSON error: %v %s", c.path, h, body)
		}
	}
	waitFor(t, "acme in /v1/orgs", func() bool { code, _, _ := adminCall(t, d.url("/v1/orgs/acme"), good); return code == 200 })

	var outputs []string
	cli := func(env map[string]string, args ...string) (int, string, string) {
		t.Helper()
		var out, errb strings.Builder
		code := realMainEnv(append(args, "--data-dir", dir, "--admin-listen", cfg.AdminListen, "--sandbox-listen", cfg.SandboxListen,
			"--nats-listen", cfg.NATS.Listen), func(k string) string { return env[k] }, &out, &errb)
		outputs = append(outputs, out.String(), errb.String())
		return code, out.String(), errb.String()
	}
	// The state file is held, so status asks the admin API, with the token
	// from the same file as the daemon, or from the variable.
	if code, out, errb := cli(nil, "status", "-o", "json", "--admin-token-file", file); code != 0 || !strings.Contains(errb, "admin API") || !strings.Contains(out, `"acme"`) {
		t.Fatalf("status with --admin-token-file: exit %d\n%s\n%s", code, out, errb)
	}
	if code, out, errb := cli(map[string]string{config.EnvAdminToken: daemonToken}, "status", "acme"); code != 0 || !strings.Contains(out, "acme") {
		t.Fatalf("status with %s: exit %d\n%s\n%s", config.EnvAdminToken, code, out, errb)
	}
	code, _, errb := cli(nil, "status")
	if code != 1 || !strings.Contains(errb, "requires the admin token") ||
		!strings.Contains(errb, config.EnvAdminToken) || !strings.Contains(errb, "--admin-token-file") {
		t.Fatalf("status without the token: exit %d, want 1 naming %s and --admin-token-file:\n%s", code, config.EnvAdminToken, errb)
	}
	if code, out, errb := cli(nil, "plan", "acme", "--admin-token-file", file); code == planError || !strings.Contains(errb, "admin API") {
		t.Fatalf("plan with the token: exit %d\n%s\n%s", code, out, errb)
	}
	if code, _, errb := cli(nil, "plan", "acme"); code != planError || !strings.Contains(errb, "requires the admin token") {
		t.Fatalf("plan without the token: exit %d\n%s", code, errb)
	}
	wrong := map[string]string{config.EnvAdminToken: "not-the-daemons-token-0123456789"}
	if code, _, errb := cli(wrong, "status"); code != 1 || !strings.Contains(errb, "refused the admin token this command sent (invalid bearer token") ||
		strings.Contains(errb, wrong[config.EnvAdminToken]) {
		t.Fatalf("status with a wrong token: exit %d\n%s", code, errb)
	}

	d.stop()
	logs := d.log()
	if !strings.Contains(logs, "admin API requires a bearer token") || !strings.Contains(logs, "admin API request refused") {
		t.Errorf("the log does not say the admin API takes a token, or that it refused requests:\n%s", logs)
	}
	for i, s := range append(outputs, logs) {
		if strings.Contains(s, daemonToken) {
			t.Errorf("output %d holds the admin token:\n%s", i, s)
		}
	}
}

// --admin-metrics-public: Prometheus may scrape without the token; nothing
// else opens. The token comes from TUNNELWARD_ADMIN_TOKEN here.
func TestAdminMetricsPublicDaemon(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse([]string{"--data-dir", t.TempDir(), "--nats-listen", freeAddr(t), "--admin-listen", freeAddr(t),
		"--sandbox-listen", freeAddr(t), "--admin-metrics-public"}, func(k string) string {
		return map[string]string{config.EnvAdminToken: daemonToken}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfg)
	for path, want := range map[string]int{"/metrics": 200, "/healthz": 200, "/v1/orgs": 401, "/v1/plan": 401} {
		if code, _, body := adminCall(t, d.url(path), ""); code != want {
			t.Errorf("GET %s without a token: %d, want %d: %s", path, code, want, body)
		}
	}
	if code, _, _ := adminCall(t, d.url("/v1/orgs"), "Bearer "+daemonToken); code != 200 {
		t.Errorf("GET /v1/orgs with the token: %d", code)
	}
}

// An admin address that is not loopback without a token is refused before
// anything starts (no state file, no NATS), naming what to set.
func TestAdminExposedRefusedBeforeStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	natsAddr := freeAddr(t)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	var out, errb strings.Builder
	code := realMain([]string{"--data-dir", dir, "--nats-listen", natsAddr, "--admin-listen", "0.0.0.0:" + port}, &out, &errb)
	if code != 2 {
		t.Fatalf("exit %d, want 2: %s", code, errb.String())
	}
	for _, want := range []string{"--admin-listen", "not a loopback address", "--admin-token-file", config.EnvAdminToken, "--admin-insecure"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, errb.String())
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("something started in the data dir: %v", entries)
	}
	if c, err := net.DialTimeout("tcp", natsAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("the embedded NATS server started on %s", natsAddr)
	}
}

// --admin-insecure lets a non-loopback address go without a token and says
// so loudly; a token or loopback says nothing alarming. (Configurations
// only: the tests bind loopback addresses alone.)
func TestAdminAccessLogged(t *testing.T) {
	t.Parallel()
	logOf := func(args ...string) string {
		t.Helper()
		c, err := config.Parse(args, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		logAdminAccess(c, slog.New(slog.NewTextHandler(&b, nil)))
		return b.String()
	}
	l := logOf("--admin-listen", "0.0.0.0:8081", "--admin-insecure")
	if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "ADMIN API WITHOUT AUTHENTICATION") ||
		!strings.Contains(l, "--admin-insecure") || !strings.Contains(l, "0.0.0.0:8081") || !strings.Contains(l, "--admin-token-file") {
		t.Errorf("--admin-insecure on 0.0.0.0 is not warned about loudly:\n%s", l)
	}
	if l := logOf(); l != "" {
		t.Errorf("the loopback default logs %q", l)
	}
	if l := logOf("--admin-listen", "127.0.0.1:8081", "--admin-insecure"); l != "" {
		t.Errorf("--admin-insecure on loopback (no effect) logs %q", l)
	}
	l = logOf("--admin-listen", "0.0.0.0:8081", "--admin-token-file", tokenFile(t, daemonToken))
	if strings.Contains(l, "WARN") || !strings.Contains(l, "requires a bearer token") || strings.Contains(l, daemonToken) {
		t.Errorf("with a token: %q", l)
	}
}

// The daemon's /v1/plan answers from its cache within planCacheTTL, and
// computes at most planBurst answers in a row, then one per planEvery;
// past that, 429 with Retry-After and no cloud call. Counted by the cloud
// emulator; the limiter runs on a test clock, so nothing depends on speed.
func TestPlanEndpointCachedAndLimited(t *testing.T) {
	t.Parallel()
	sim := httptest.NewServer(cloudsim.New(cloudsim.DefaultConfig()).Handler())
	defer sim.Close()
	dir := t.TempDir()
	cfg := testConfig(t, dir, "--cloud", sim.URL)
	store, err := state.Open(statePath(cfg), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var facts []state.Fact
	orgs := []string{}
	for i := range planBurst + 1 {
		id := "org" + strconv.Itoa(i)
		orgs = append(orgs, id)
		facts = append(facts, state.Fact{Seq: uint64(i + 1), EventID: "e" + id, Type: state.FactCreated, OrgID: id, Slug: id})
	}
	if _, err := store.Apply(facts); err != nil {
		t.Fatal(err)
	}
	ecfg, clouds, err := engineConfig(context.Background(), cfg, sim.URL, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ecfg.SweepInterval = -1 // never runs: only the dry run is called
	eng, err := reconcile.New(ecfg, clouds, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var priorities []ratelimit.Priority
	plan := func(ctx context.Context, org string) (planReport, error) {
		mu.Lock()
		priorities = append(priorities, ratelimit.PriorityOf(ctx))
		mu.Unlock()
		return planWith(ctx, eng, org)
	}
	now := time.Unix(1_800_000_000, 0)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	mux := http.NewServeMux()
	servePlans(mux, plan, store, newPlanCache(clock))
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	calls := func() int {
		n := 0
		for _, st := range callsOf(t, sim.URL) {
			for _, c := range st {
				n += c
			}
		}
		return n
	}

	c0 := calls()
	first := get("/v1/plan")
	c1 := calls()
	if first.Code != 200 || first.Header().Get("X-Cache") != "MISS" || c1 == c0 {
		t.Fatalf("first plan: %d X-Cache %q, %d cloud calls: %s", first.Code, first.Header().Get("X-Cache"), c1-c0, first.Body)
	}
	var rep planReport
	if err := json.Unmarshal(first.Body.Bytes(), &rep); err != nil || rep.Summary.Orgs != planBurst+1 {
		t.Fatalf("first plan: %v %+v", err, rep.Summary)
	}
	clockMu.Lock()
	now = now.Add(planCacheTTL - time.Second)
	clockMu.Unlock()
	again := get("/v1/plan")
	if again.Code != 200 || again.Header().Get("X-Cache") != "HIT" || again.Body.String() != first.Body.String() || calls() != c1 {
		t.Fatalf("plan within %s: %d X-Cache %q, %d new cloud calls", planCacheTTL, again.Code, again.Header().Get("X-Cache"), calls()-c1)
	}
	// The first plan took one of planBurst computations; one org each takes
	// the rest; the next is refused without a cloud call.
	for _, org := range orgs[:planBurst-1] {
		if rec := get("/v1/plan/" + org); rec.Code != 200 || rec.Header().Get("X-Cache") != "MISS" {
			t.Fatalf("plan of %s: %d %q: %s", org, rec.Code, rec.Header().Get("X-Cache"), rec.Body)
		}
	}
	c2 := calls()
	limited := get("/v1/plan/" + orgs[planBurst])
	if limited.Code != http.StatusTooManyRequests || limited.Header().Get("Retry-After") == "" || calls() != c2 {
		t.Fatalf("plan past the limit: %d Retry-After %q, %d cloud calls: %s", limited.Code, limited.Header().Get("Retry-After"), calls()-c2, limited.Body)
	}
	if retry, _ := strconv.Atoi(limited.Header().Get("Retry-After")); time.Duration(retry)*time.Second > planEvery {
		t.Fatalf("Retry-After %ds is longer than %s", retry, planEvery)
	}
	// An unknown org is answered from bbolt: 404, no cloud call, no 429.
	if rec := get("/v1/plan/nosuch"); rec.Code != http.StatusNotFound || calls() != c2 {
		t.Fatalf("plan of an unknown org: %d, %d cloud calls", rec.Code, calls()-c2)
	}
	clockMu.Lock()
	now = now.Add(planEvery)
	clockMu.Unlock()
	if rec := get("/v1/plan/" + orgs[planBurst]); rec.Code != 200 || calls() == c2 {
		t.Fatalf("plan after %s: %d: %s", planEvery, rec.Code, rec.Body)
	}
	// Every computation ran at Low priority: behind every reconcile's calls.
	mu.Lock()
	defer mu.Unlock()
	if len(priorities) != planBurst+1 {
		t.Fatalf("%d computations, want %d", len(priorities), planBurst+1)
	}
	for i, p := range priorities {
		if p != ratelimit.Low {
			t.Errorf("computation %d at priority %d, want Low", i, p)
		}
	}
}
