package cloudflare_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
)

// attempt is one observed HTTP attempt.
type attempt struct {
	op        string
	status    int
	throttled bool
	end       time.Time
}

type recorder struct {
	mu  sync.Mutex
	log []attempt
}

func (r *recorder) observe(provider, op string, status int, _ time.Duration, throttled bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, attempt{op, status, throttled, time.Now()})
}

func (r *recorder) attempts() []attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]attempt(nil), r.log...)
}

type world struct {
	sim *cloudsim.Sim
	url string
	rec *recorder
}

// newWorld starts an emulator with rate limits off unless limits says
// otherwise, and a client on it.
func newWorld(t *testing.T, limits cloudsim.RateLimits, mutate func(*cloudflare.Config)) (*world, *cloudflare.Client) {
	t.Helper()
	cfg := cloudsim.DefaultConfig()
	cfg.Limits = limits
	sim := cloudsim.New(cfg)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	w := &world{sim: sim, url: srv.URL, rec: &recorder{}}
	c := w.client(t, mutate)
	return w, c
}

func (w *world) client(t *testing.T, mutate func(*cloudflare.Config)) *cloudflare.Client {
	t.Helper()
	cc := cloudflare.Config{
		BaseURL:   w.url + "/client/v4/",
		APIToken:  cloudsim.DefaultCFToken,
		AccountID: cloudsim.DefaultAccountID,
		ZoneID:    cloudsim.DefaultZoneID,
		ZoneName:  cloudsim.DefaultZoneName,
		Policy:    apicall.Policy{BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond, CallTimeout: 5 * time.Second},
		Observe:   w.rec.observe,
		// Loose unless a test is about the limiter: the production budget
		// (4 calls/s after a burst of 10) would only slow these tests down.
		Budget: ratelimit.WindowBudget{Requests: 100000, Window: time.Second, Burst: 1000},
	}
	if mutate != nil {
		mutate(&cc)
	}
	c, err := cloudflare.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var ctx = context.Background()

func TestConfigValidation(t *testing.T) {
	_, err := cloudflare.New(cloudflare.Config{APIToken: "x"})
	if err == nil || !strings.Contains(err.Error(), "account id") || !strings.Contains(err.Error(), "zone id") {
		t.Fatalf("err = %v", err)
	}
}

func TestTunnelLifecycle(t *testing.T) {
	w, c := newWorld(t, cloudsim.RateLimits{}, nil)

	tun, err := c.CreateTunnel(ctx, "tw-acme")
	if err != nil {
		t.Fatal(err)
	}
	if tun.ID == "" || tun.Name != "tw-acme" || tun.ConfigSrc != "cloudflare" || tun.Status != cloudflare.StatusInactive {
		t.Fatalf("created %+v", tun)
	}
	if _, err := c.CreateTunnel(ctx, "tw-acme"); !errors.Is(err, cloudflare.ErrConflict) {
		t.Fatalf("duplicate create: %v", err)
	}
	if n := len(w.sim.State().Tunnels); n != 1 {
		t.Fatalf("emulator holds %d tunnels after a refused duplicate", n)
	}

	got, found, err := c.FindTunnel(ctx, "tw-acme")
	if err != nil || !found || got.ID != tun.ID {
		t.Fatalf("FindTunnel: %+v %v %v", got, found, err)
	}
	if _, found, err := c.FindTunnel(ctx, "tw-acm"); err != nil || found {
		t.Fatalf("FindTunnel of a prefix matched: %v %v", found, err)
	}
	if g, err := c.GetTunnel(ctx, tun.ID); err != nil || g.Name != "tw-acme" || g.Healthy() {
		t.Fatalf("GetTunnel: %+v %v", g, err)
	}
	if _, err := c.GetTunnel(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, cloudflare.ErrNotFound) {
		t.Fatalf("GetTunnel unknown: %v", err)
	}

	// Ingress configuration round trip.
	rules, _, err := c.GetConfig(ctx, tun.ID)
	if err != nil || len(rules) != 0 {
		t.Fatalf("fresh config: %+v %v", rules, err)
	}
	want := []cloudflare.IngressRule{{Hostname: c.FQDN("acme"), Service: "http://localhost:8080"}, {Service: "http_status:404"}}
	if err := c.PutConfig(ctx, tun.ID, want); err != nil {
		t.Fatal(err)
	}
	rules, v1, err := c.GetConfig(ctx, tun.ID)
	if err != nil || fmt.Sprint(rules) != fmt.Sprint(want) {
		t.Fatalf("config = %+v (%v), want %+v", rules, err, want)
	}
	if err := c.PutConfig(ctx, tun.ID, want[:1]); err == nil {
		t.Fatal("config without a catch-all accepted")
	}
	if _, v2, _ := c.GetConfig(ctx, tun.ID); v2 != v1 {
		t.Fatalf("refused config changed the version %d -> %d", v1, v2)
	}

	// The token: present, opaque when printed.
	tok, err := c.Token(ctx, tun.ID)
	if err != nil || tok.IsZero() {
		t.Fatalf("Token: %v", err)
	}
	if s := fmt.Sprintf("%v %s %+v", tok, tok, tok); strings.Contains(s, tok.Reveal()) {
		t.Fatal("token printed")
	}
	if _, err := c.Token(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, cloudflare.ErrNotFound) {
		t.Fatalf("Token of unknown tunnel: %v", err)
	}

	if err := c.CleanConnections(ctx, tun.ID); err != nil {
		t.Fatal(err)
	}
	existed, err := c.DeleteTunnel(ctx, tun.ID)
	if err != nil || !existed {
		t.Fatalf("DeleteTunnel: %v %v", existed, err)
	}
	if _, found, _ := c.FindTunnel(ctx, "tw-acme"); found {
		t.Fatal("deleted tunnel still found by name")
	}
	// Deleting again is not an error.
	if _, err := c.DeleteTunnel(ctx, tun.ID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	// The name is free again.
	if _, err := c.CreateTunnel(ctx, "tw-acme"); err != nil {
		t.Fatalf("re-create after delete: %v", err)
	}
}

func TestListTunnelsAllPages(t *testing.T) {
	_, c := newWorld(t, cloudsim.RateLimits{}, func(cc *cloudflare.Config) { cc.PageSize = 3 })
	var ids []string
	for i := range 8 {
		tun, err := c.CreateTunnel(ctx, fmt.Sprintf("tw-org%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tun.ID)
	}
	if _, err := c.CreateTunnel(ctx, "someone-elses"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteTunnel(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	got, pages, err := c.ListTunnels(ctx, "tw-")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 || pages != 3 { // 7 live tw- tunnels: 3+3+1
		t.Fatalf("listed %d tunnels in %d pages, want 7 in 3", len(got), pages)
	}
	seen := map[string]bool{}
	for _, tun := range got {
		if seen[tun.ID] || tun.ID == ids[0] || !strings.HasPrefix(tun.Name, "tw-") {
			t.Fatalf("bad listing entry %+v", tun)
		}
		seen[tun.ID] = true
	}
	all, pages, err := c.ListTunnels(ctx, "")
	if err != nil || len(all) != 8 || pages != 3 { // 8 live: 3+3+2
		t.Fatalf("all: %d tunnels, %d pages, %v", len(all), pages, err)
	}
	// An exact multiple of the page size costs no empty page more: the
	// answer's total_pages says the last page was the last.
	if _, err := c.DeleteTunnel(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteTunnel(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	if got, pages, err := c.ListTunnels(ctx, ""); err != nil || len(got) != 6 || pages != 2 {
		t.Fatalf("6 tunnels: %d in %d pages, %v", len(got), pages, err)
	}
}

func TestDNSRecords(t *testing.T) {
	w, c := newWorld(t, cloudsim.RateLimits{}, func(cc *cloudflare.Config) { cc.PageSize = 2 })
	spec := cloudflare.RecordSpec{Name: c.FQDN("acme"), Content: "t1.cfargotunnel.com", Comment: "tunnelward:org=acme"}
	rec, err := c.CreateRecord(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID == "" || rec.Name != "acme."+cloudsim.DefaultZoneName || rec.Type != "CNAME" || !rec.Proxied || rec.Comment != spec.Comment {
		t.Fatalf("created %+v", rec)
	}
	if _, err := c.CreateRecord(ctx, spec); !errors.Is(err, cloudflare.ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	other := cloudflare.RecordSpec{Name: c.FQDN("acme-www"), Content: "example.net", Comment: "hand-made"}
	if _, err := c.CreateRecord(ctx, other); err != nil {
		t.Fatal(err)
	}

	found, err := c.FindRecords(ctx, c.FQDN("ACME")+".")
	if err != nil || len(found) != 1 || found[0].ID != rec.ID {
		t.Fatalf("FindRecords: %+v %v", found, err)
	}
	if found, err := c.FindRecords(ctx, c.FQDN("nobody")); err != nil || len(found) != 0 {
		t.Fatalf("FindRecords nobody: %+v %v", found, err)
	}

	spec.Content = "t2.cfargotunnel.com"
	upd, err := c.UpdateRecord(ctx, rec.ID, spec)
	if err != nil || upd.Content != "t2.cfargotunnel.com" || !upd.Proxied {
		t.Fatalf("UpdateRecord: %+v %v", upd, err)
	}
	if g, err := c.GetRecord(ctx, rec.ID); err != nil || g.Content != "t2.cfargotunnel.com" {
		t.Fatalf("GetRecord: %+v %v", g, err)
	}

	// Five more owned records: 6 owned over pages of 2, the hand-made one
	// filtered out.
	for i := range 5 {
		if _, err := c.CreateRecord(ctx, cloudflare.RecordSpec{Name: c.FQDN(fmt.Sprintf("org%d", i)),
			Content: "t.cfargotunnel.com", Comment: fmt.Sprintf("tunnelward:org=org%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	owned, pages, err := c.ListRecords(ctx, "tunnelward:")
	if err != nil || len(owned) != 6 {
		t.Fatalf("ListRecords: %d records, %v", len(owned), err)
	}
	if pages != 3 { // 6 = 2+2+2; total_pages spares the empty fourth
		t.Fatalf("ListRecords took %d pages, want 3", pages)
	}
	for _, r := range owned {
		if !strings.HasPrefix(r.Comment, "tunnelward:") {
			t.Fatalf("listed a record we do not own: %+v", r)
		}
	}
	all, _, err := c.ListRecords(ctx, "")
	if err != nil || len(all) != 7 {
		t.Fatalf("all records: %d %v", len(all), err)
	}

	existed, err := c.DeleteRecord(ctx, rec.ID)
	if err != nil || !existed {
		t.Fatalf("DeleteRecord: %v %v", existed, err)
	}
	existed, err = c.DeleteRecord(ctx, rec.ID)
	if err != nil || existed {
		t.Fatalf("second DeleteRecord: %v %v", existed, err)
	}
	if _, err := c.GetRecord(ctx, rec.ID); !errors.Is(err, cloudflare.ErrNotFound) {
		t.Fatalf("GetRecord deleted: %v", err)
	}
	if _, err := c.UpdateRecord(ctx, rec.ID, spec); !errors.Is(err, cloudflare.ErrNotFound) {
		t.Fatalf("UpdateRecord deleted: %v", err)
	}
	for _, r := range w.sim.State().DNSRecords {
		if r["id"] == rec.ID {
			t.Fatal("deleted record still in the emulator")
		}
	}
}

func TestBadCredentialsNotLeaked(t *testing.T) {
	w, _ := newWorld(t, cloudsim.RateLimits{}, nil)
	const secretToken = "wrong-token-value-0123456789"
	c := w.client(t, func(cc *cloudflare.Config) { cc.APIToken = secretToken })
	_, err := c.CreateTunnel(ctx, "tw-x")
	if err == nil {
		t.Fatal("bad token accepted")
	}
	if strings.Contains(err.Error(), secretToken) || !strings.Contains(err.Error(), "cloudflare tunnel.create tw-x") {
		t.Fatalf("error text: %v", err)
	}
	if apicall.StatusOf(err) != 403 || len(w.rec.attempts()) != 1 {
		t.Fatalf("403 was retried or misread: status %d, %d attempts", apicall.StatusOf(err), len(w.rec.attempts()))
	}
}

// wire records every response's status and Retry-After, and when each
// request went out.
type wire struct {
	mu   sync.Mutex
	sent []time.Time
	resp []wireResp
}

type wireResp struct {
	at         time.Time
	status     int
	retryAfter time.Duration
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	w.mu.Lock()
	w.sent = append(w.sent, time.Now())
	w.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		w.mu.Lock()
		w.resp = append(w.resp, wireResp{time.Now(), resp.StatusCode, apicall.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())})
		w.mu.Unlock()
	}
	return resp, err
}

// TestRetryAfterHonoured: the emulator's Cloudflare budget (3 per 1 s
// window) blocks the 4th call with 429 + Retry-After; the client, whose own
// limiter is loose on purpose, waits it out and succeeds. The retry leaves
// no earlier than Retry-After after the 429 arrived.
func TestRetryAfterHonoured(t *testing.T) {
	wr := &wire{}
	w, c := newWorld(t, cloudsim.RateLimits{CFEnabled: true, CFBudget: 3, CFWindow: cloudsim.Duration(time.Second)},
		func(cc *cloudflare.Config) { cc.HTTPClient = &http.Client{Transport: wr} })
	tun, err := c.CreateTunnel(ctx, "tw-acme")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.GetTunnel(ctx, tun.ID); err != nil {
			t.Fatal(err)
		}
	}
	wr.mu.Lock()
	defer wr.mu.Unlock()
	if len(wr.resp) != 5 || wr.resp[3].status != 429 || wr.resp[3].retryAfter <= 0 || wr.resp[4].status != 200 {
		t.Fatalf("responses %+v: want 200 200 200 429(Retry-After) 200", wr.resp)
	}
	if gap := wr.sent[4].Sub(wr.resp[3].at); gap < wr.resp[3].retryAfter {
		t.Fatalf("retried %v after the 429, Retry-After was %v", gap, wr.resp[3].retryAfter)
	}
	log := w.rec.attempts()
	if !log[3].throttled || log[3].status != 429 || log[4].status != 200 {
		t.Fatalf("observer saw %+v", log)
	}
	if n := w.sim.Calls()["cf.tunnel.get"][429]; n != 1 {
		t.Fatalf("emulator answered 429 %d times, want exactly 1", n)
	}
}

// TestLimiterKeepsUnderBudget: 32 calls from 8 workers against an emulator
// budget of 20 per second. With the client budget set to the same figures no
// call is ever refused; the control run without the client limiter is
// refused, so the assertion can fail.
func TestLimiterKeepsUnderBudget(t *testing.T) {
	limits := cloudsim.RateLimits{CFEnabled: true, CFBudget: 20, CFWindow: cloudsim.Duration(time.Second)}
	burst := func(c *cloudflare.Client, id string) (failed int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 8 {
			wg.Go(func() {
				for range 4 {
					if _, err := c.GetTunnel(ctx, id); err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		return failed
	}

	w, c := newWorld(t, limits, func(cc *cloudflare.Config) {
		cc.Budget = ratelimit.WindowBudget{Requests: 20, Window: time.Second, Burst: 4}
	})
	tun, err := c.CreateTunnel(ctx, "tw-acme")
	if err != nil {
		t.Fatal(err)
	}
	if failed := burst(c, tun.ID); failed != 0 {
		t.Fatalf("%d calls failed", failed)
	}
	if n := w.sim.Calls()["cf.tunnel.get"][429]; n != 0 {
		t.Fatalf("emulator refused %d calls with 429: the limiter let the burst through", n)
	}
	if n := w.sim.Calls()["cf.tunnel.get"][200]; n != 32 {
		t.Fatalf("emulator answered %d calls, want 32", n)
	}

	// Control: no client limit, no retries.
	w2, _ := newWorld(t, limits, nil)
	loose := w2.client(t, func(cc *cloudflare.Config) {
		cc.Budget = ratelimit.WindowBudget{Requests: 100000, Window: time.Second, Burst: 1000}
		cc.Policy.MaxAttempts = 1
	})
	tun2, err := loose.CreateTunnel(ctx, "tw-acme")
	if err != nil {
		t.Fatal(err)
	}
	if failed := burst(loose, tun2.ID); failed == 0 || w2.sim.Calls()["cf.tunnel.get"][429] == 0 {
		t.Fatal("control run without a limiter was never throttled; the test proves nothing")
	}
}

// TestServerErrorsRetried: half of all dns.create answers are 502; every
// create still succeeds exactly once (no duplicate records).
func TestServerErrorsRetried(t *testing.T) {
	w, c := newWorld(t, cloudsim.RateLimits{}, func(cc *cloudflare.Config) { cc.Policy.MaxAttempts = 10 })
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{
		{Op: "cf.dns.create", ErrorRate: 0.5, ErrorStatus: 502},
	}}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := c.CreateRecord(ctx, cloudflare.RecordSpec{Name: c.FQDN(fmt.Sprintf("o%d", i)),
			Content: "t.cfargotunnel.com", Comment: "tunnelward:org=o"}); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	calls := w.sim.Calls()["cf.dns.create"]
	if calls[502] == 0 || calls[200] != 10 {
		t.Fatalf("calls %v: want some 502s and exactly 10 successes", calls)
	}
	if n := len(w.sim.State().DNSRecords); n != 10 {
		t.Fatalf("%d records in the emulator, want 10", n)
	}
}

// The default page sizes are the largest the API takes for tunnels (1000)
// and the client's choice for DNS records (5000): 2,500 owned tunnels and
// records list in 3 and 1 pages, counted by the emulator.
func TestListDefaultPageSizes(t *testing.T) {
	w, c := newWorld(t, cloudsim.RateLimits{}, nil)
	const n = 2500
	for i := range n {
		tun := w.sim.LoadTunnel(fmt.Sprintf("tw-org%04d", i))
		w.sim.LoadDNSRecord(cloudsim.DNSRecord{Name: fmt.Sprintf("org%04d.%s", i, cloudsim.DefaultZoneName), Type: "CNAME",
			Content: tun.ID + ".cfargotunnel.com", Proxied: true, Comment: fmt.Sprintf("tunnelward:org=org%04d", i)})
	}
	w.sim.ResetCalls()
	tuns, tp, err := c.ListTunnels(ctx, "tw-")
	if err != nil || len(tuns) != n || tp != 3 {
		t.Fatalf("ListTunnels: %d tunnels in %d pages, %v; want %d in 3", len(tuns), tp, err, n)
	}
	recs, rp, err := c.ListRecords(ctx, "tunnelward:")
	if err != nil || len(recs) != n || rp != 1 {
		t.Fatalf("ListRecords: %d records in %d pages, %v; want %d in 1", len(recs), rp, err, n)
	}
	if tl, dl := w.sim.CallCount("cf.tunnel.list"), w.sim.CallCount("cf.dns.list"); tl != 3 || dl != 1 {
		t.Fatalf("emulator counted cf.tunnel.list %d, cf.dns.list %d; want 3 and 1", tl, dl)
	}
}

// VerifyToken: one tunnel-list request; a refused token is ErrTokenRefused
// (never quoted), an outage is not.
func TestVerifyToken(t *testing.T) {
	w, c := newWorld(t, cloudsim.RateLimits{}, func(cc *cloudflare.Config) { cc.Policy.MaxAttempts = 2 })
	if err := c.VerifyToken(ctx); err != nil {
		t.Fatalf("accepted token: %v", err)
	}
	if n := w.sim.Calls()["cf.tunnel.list"][200]; n != 1 {
		t.Fatalf("%d tunnel lists, want 1", n)
	}
	const secretToken = "wrong-token-value-0123456789"
	err := w.client(t, func(cc *cloudflare.Config) { cc.APIToken = secretToken }).VerifyToken(ctx)
	if !errors.Is(err, cloudflare.ErrTokenRefused) || strings.Contains(err.Error(), secretToken) {
		t.Fatalf("wrong token: %v", err)
	}
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{{Op: "cf.tunnel.list", ErrorRate: 1, ErrorStatus: 503}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyToken(ctx); err == nil || errors.Is(err, cloudflare.ErrTokenRefused) {
		t.Fatalf("an outage must not read as a refused token: %v", err)
	}
}

// Clients on one budget share its pacer (Config.Pacer): what one spends
// of the window, the other cannot; a client without it has its own.
func TestSharedPacer(t *testing.T) {
	// A burst of 2, then about one call an hour.
	budget := ratelimit.WindowBudget{Requests: 3, Window: time.Hour, Burst: 2}
	shared, err := cloudflare.NewPacer(cloudflare.Config{Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	w, a := newWorld(t, cloudsim.RateLimits{}, func(cc *cloudflare.Config) { cc.Budget, cc.Pacer = budget, shared })
	b := w.client(t, func(cc *cloudflare.Config) { cc.Budget, cc.Pacer = budget, shared })
	own := w.client(t, func(cc *cloudflare.Config) { cc.Budget = budget })

	for i := range 2 {
		if _, _, err := a.ListTunnels(ctx, "tw-"); err != nil {
			t.Fatalf("call %d of the burst: %v", i, err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, _, err := b.ListTunnels(short, "tw-"); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b's call after a spent the shared burst: %v, want it held by the limiter", err)
	}
	if _, _, err := own.ListTunnels(ctx, "tw-"); err != nil {
		t.Fatalf("a client with its own limiter: %v", err)
	}
	if n := w.sim.Calls()["cf.tunnel.list"][200]; n != 3 {
		t.Fatalf("emulator answered %d listings, want 3 (a's two, own's one)", n)
	}

	// SetBudgetShare on either client resizes the one limiter.
	b.SetBudgetShare(0.5)
	if got := shared.Burst(); got != 1 {
		t.Fatalf("burst after a half share = %d, want 1", got)
	}
}

// A 429 answered to one client pauses the other clients of its budget
// (Cloudflare throttles the API user, whichever pool's call it was), not
// a client on another budget.
func TestSharedPacerPausesOnA429(t *testing.T) {
	shared, err := cloudflare.NewPacer(cloudflare.Config{})
	if err != nil {
		t.Fatal(err)
	}
	w, a := newWorld(t, cloudsim.RateLimits{}, func(cc *cloudflare.Config) { cc.Pacer = shared })
	b := w.client(t, func(cc *cloudflare.Config) { cc.Pacer = shared })
	own := w.client(t, nil)
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{
		{Op: "cf.tunnel.list", ThrottleRate: 1, RetryAfter: cloudsim.Duration(time.Minute)}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.ListTunnels(ctx, "tw-"); err == nil {
		t.Fatal("a's listing succeeded through a throttle rule")
	}
	if d := b.Caller().BlockedFor(); d < 50*time.Second {
		t.Fatalf("b paused for %s after a's 429 with Retry-After 60, want about a minute", d)
	}
	if d := own.Caller().BlockedFor(); d != 0 {
		t.Fatalf("a client on its own budget paused for %s", d)
	}
}
