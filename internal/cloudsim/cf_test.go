package cloudsim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

func TestTunnelLifecycleThroughSDK(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	id := e.createTunnel("tw-acme")

	var gp zero_trust.TunnelCloudflaredGetParams
	set(&gp.AccountID, e.acct)
	got, err := e.tun.Get(ctx, id, gp)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "tw-acme" || got.ConfigSrc != "cloudflare" || got.Status != "inactive" || !got.DeletedAt.IsZero() || got.AccountTag != e.acct {
		t.Fatalf("tunnel as created: %+v", got)
	}

	// Name filter is exact; a similar name does not match.
	e.createTunnel("tw-acme-2")
	var lp zero_trust.TunnelCloudflaredListParams
	set(&lp.AccountID, e.acct)
	set(&lp.Name, "tw-acme")
	page, err := e.tun.List(ctx, lp)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Result) != 1 || page.Result[0].ID != id {
		t.Fatalf("list name=tw-acme: %+v", page.Result)
	}

	// Token: what cloudflared runs with; it names this tunnel and account.
	var tp zero_trust.TunnelCloudflaredTokenGetParams
	set(&tp.AccountID, e.acct)
	tok, err := e.tun.Token.Get(ctx, id, tp)
	if err != nil {
		t.Fatal(err)
	}
	if acct, tid, secret, ok := parseTunnelToken(*tok); !ok || acct != e.acct || tid != id || secret == "" {
		t.Fatalf("token does not decode to this tunnel: ok=%v acct=%s tid=%s", ok, acct, tid)
	}

	// Ingress configuration: versioned, returned as stored.
	var cp zero_trust.TunnelCloudflaredConfigurationUpdateParams
	set(&cp.AccountID, e.acct)
	var rule0, rule1 zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress
	set(&rule0.Hostname, "acme.sandbox.tunnelward.test")
	set(&rule0.Service, "http://localhost:8080")
	set(&rule1.Service, "http_status:404")
	var cfg zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfig
	set(&cfg.Ingress, []zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress{rule0, rule1})
	set(&cp.Config, cfg)
	upd, err := e.tun.Configurations.Update(ctx, id, cp)
	if err != nil {
		t.Fatal(err)
	}
	if upd.Version != 1 {
		t.Fatalf("config version after first PUT: %d", upd.Version)
	}
	var cg zero_trust.TunnelCloudflaredConfigurationGetParams
	set(&cg.AccountID, e.acct)
	conf, err := e.tun.Configurations.Get(ctx, id, cg)
	if err != nil {
		t.Fatal(err)
	}
	if conf.Version != 1 || len(conf.Config.Ingress) != 2 || conf.Config.Ingress[0].Hostname != "acme.sandbox.tunnelward.test" ||
		conf.Config.Ingress[0].Service != "http://localhost:8080" || conf.Config.Ingress[1].Service != "http_status:404" {
		t.Fatalf("config read back: %+v", conf.Config)
	}
	if _, err := e.tun.Configurations.Update(ctx, id, cp); err != nil {
		t.Fatal(err)
	}
	if conf, _ = e.tun.Configurations.Get(ctx, id, cg); conf.Version != 2 {
		t.Fatalf("config version after second PUT: %d", conf.Version)
	}

	// Duplicate name of a live tunnel: 409, code 1013.
	var np zero_trust.TunnelCloudflaredNewParams
	set(&np.AccountID, e.acct)
	set(&np.Name, "tw-acme")
	_, err = e.tun.New(ctx, np)
	wantCFError(t, err, http.StatusConflict, 1013)

	// Soft delete: still readable with deleted_at, excluded by is_deleted=false,
	// and the name is free again.
	var dp zero_trust.TunnelCloudflaredDeleteParams
	set(&dp.AccountID, e.acct)
	e.clock.Advance(time.Minute)
	del, err := e.tun.Delete(ctx, id, dp)
	if err != nil {
		t.Fatal(err)
	}
	if del.DeletedAt.IsZero() {
		t.Fatal("deleted tunnel has no deleted_at")
	}
	if got, err = e.tun.Get(ctx, id, gp); err != nil || got.DeletedAt.IsZero() {
		t.Fatalf("get after delete: %v %+v", err, got)
	}
	set(&lp.IsDeleted, false)
	if page, err = e.tun.List(ctx, lp); err != nil || len(page.Result) != 0 {
		t.Fatalf("is_deleted=false still lists the deleted tunnel: %v %+v", err, page)
	}
	set(&lp.IsDeleted, true)
	if page, err = e.tun.List(ctx, lp); err != nil || len(page.Result) != 1 {
		t.Fatalf("is_deleted=true does not list the deleted tunnel: %v %+v", err, page)
	}
	again := e.createTunnel("tw-acme")
	if again == id {
		t.Fatal("re-created tunnel reused the deleted id")
	}
	// The token of a deleted tunnel is gone.
	_, err = e.tun.Token.Get(ctx, id, tp)
	wantCFError(t, err, http.StatusNotFound, 1003)
}

func TestCloudflareAuthAndNotFound(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()

	bad := zero_trust.NewTunnelCloudflaredService(append(e.cfOpts, option.WithAPIToken("wrong-token"))...)
	var lp zero_trust.TunnelCloudflaredListParams
	set(&lp.AccountID, e.acct)
	_, err := bad.List(ctx, lp)
	wantCFError(t, err, http.StatusForbidden, 10000)

	badDNS := dns.NewRecordService(append(e.cfOpts, option.WithAPIToken("wrong-token"))...)
	var rp dns.RecordListParams
	set(&rp.ZoneID, e.zone)
	_, err = badDNS.List(ctx, rp)
	wantCFError(t, err, http.StatusForbidden, 10000)

	_, err = e.getTunnel("0b3e0fd4-0000-4000-a000-000000000000")
	wantCFError(t, err, http.StatusNotFound, 1003)

	var gp dns.RecordGetParams
	set(&gp.ZoneID, e.zone)
	_, err = e.rec.Get(ctx, "ffffffffffffffffffffffffffffffff", gp)
	wantCFError(t, err, http.StatusNotFound, 81044)

	set(&rp.ZoneID, "00000000000000000000000000000000")
	_, err = e.rec.List(ctx, rp)
	wantCFError(t, err, http.StatusBadRequest, 7003)

	set(&lp.AccountID, "00000000000000000000000000000000")
	_, err = e.tun.List(ctx, lp)
	wantCFError(t, err, http.StatusForbidden, 9109)

	calls := e.sim.Calls()
	if calls["cf.tunnel.list"][403] != 2 || calls["cf.dns.list"][403] != 1 || calls["cf.tunnel.get"][404] != 1 {
		t.Fatalf("calls counted: %v", calls)
	}
}

func TestTunnelConfigValidation(t *testing.T) {
	e := newEnv(t, nil)
	id := e.createTunnel("tw-cfg")
	put := func(rules ...[2]string) error {
		var cp zero_trust.TunnelCloudflaredConfigurationUpdateParams
		set(&cp.AccountID, e.acct)
		var list []zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress
		for _, r := range rules {
			var in zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress
			if r[0] != "" {
				set(&in.Hostname, r[0])
			}
			set(&in.Service, r[1])
			list = append(list, in)
		}
		var cfg zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfig
		set(&cfg.Ingress, list)
		set(&cp.Config, cfg)
		_, err := e.tun.Configurations.Update(context.Background(), id, cp)
		return err
	}
	for name, rules := range map[string][][2]string{
		"no catch-all":           {{"a.sandbox.tunnelward.test", "http://localhost:8080"}},
		"catch-all not last":     {{"", "http_status:404"}, {"a.sandbox.tunnelward.test", "http://localhost:8080"}},
		"bad service":            {{"a.sandbox.tunnelward.test", "localhost:8080"}, {"", "http_status:404"}},
		"hostname with a scheme": {{"https://a.sandbox.tunnelward.test", "http://localhost:8080"}, {"", "http_status:404"}},
	} {
		if err := put(rules...); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			wantCFError(t, err, http.StatusBadRequest, 1055)
		}
	}
	if err := put([2]string{"", "http_status:404"}); err != nil {
		t.Fatalf("a lone catch-all is valid: %v", err)
	}
}

func TestDNSRecordsThroughSDK(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DNSQuota = 4 })
	ctx := context.Background()
	target := "0b3e0fd4-1111-4222-a333-444455556666.cfargotunnel.com"

	// Relative name gets the zone; proxied, ttl auto and comment are kept.
	rec, err := e.createCNAME("acme", target, "tunnelward:org=acme")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Name != "acme.sandbox.tunnelward.test" || rec.Type != "CNAME" || rec.Content != target || !rec.Proxied || rec.TTL != 1 || rec.Comment != "tunnelward:org=acme" {
		t.Fatalf("created record: %+v", rec)
	}

	// Any record on a CNAME's name, and a CNAME on a taken name: 81053.
	_, err = e.createCNAME("acme.sandbox.tunnelward.test", "other.example.com", "")
	wantCFError(t, err, http.StatusBadRequest, 81053)
	var ap dns.RecordNewParams
	set(&ap.ZoneID, e.zone)
	var ab dns.RecordNewParamsBody
	set(&ab.Type, dns.RecordNewParamsBodyTypeA)
	set(&ab.Name, "acme")
	set(&ab.Content, "192.0.2.1")
	set(&ab.TTL, dns.TTL1)
	ap.Body = ab
	_, err = e.rec.New(ctx, ap)
	wantCFError(t, err, http.StatusBadRequest, 81053)

	// Filters: name.exact and comment.exact find it; type=A does not.
	var lp dns.RecordListParams
	set(&lp.ZoneID, e.zone)
	var nf dns.RecordListParamsName
	set(&nf.Exact, "acme.sandbox.tunnelward.test")
	set(&lp.Name, nf)
	page, err := e.rec.List(ctx, lp)
	if err != nil || len(page.Result) != 1 || page.Result[0].ID != rec.ID {
		t.Fatalf("name.exact: %v %+v", err, page)
	}
	var cf dns.RecordListParamsComment
	set(&cf.Exact, "tunnelward:org=acme")
	var lp2 dns.RecordListParams
	set(&lp2.ZoneID, e.zone)
	set(&lp2.Comment, cf)
	if page, err = e.rec.List(ctx, lp2); err != nil || len(page.Result) != 1 {
		t.Fatalf("comment.exact: %v %+v", err, page)
	}
	set(&lp2.Type, dns.RecordListParamsTypeA)
	if page, err = e.rec.List(ctx, lp2); err != nil || len(page.Result) != 0 {
		t.Fatalf("comment.exact + type=A: %v %+v", err, page)
	}

	// PATCH changes only what it names; PUT overwrites (comment dropped).
	var ep dns.RecordEditParams
	set(&ep.ZoneID, e.zone)
	var eb dns.RecordEditParamsBody
	set(&eb.Proxied, false)
	ep.Body = eb
	edited, err := e.rec.Edit(ctx, rec.ID, ep)
	if err != nil {
		t.Fatal(err)
	}
	if edited.Proxied || edited.Content != target || edited.Comment != "tunnelward:org=acme" {
		t.Fatalf("after PATCH proxied=false: %+v", edited)
	}
	var up dns.RecordUpdateParams
	set(&up.ZoneID, e.zone)
	var ub dns.RecordUpdateParamsBody
	set(&ub.Type, dns.RecordUpdateParamsBodyTypeCNAME)
	set(&ub.Name, "acme.sandbox.tunnelward.test")
	set(&ub.Content, "x.cfargotunnel.com")
	set(&ub.TTL, dns.TTL(300))
	set(&ub.Proxied, true)
	up.Body = ub
	updated, err := e.rec.Update(ctx, rec.ID, up)
	if err != nil {
		t.Fatal(err)
	}
	if updated.Content != "x.cfargotunnel.com" || updated.TTL != 300 || updated.Comment != "" || !updated.Proxied {
		t.Fatalf("after PUT: %+v", updated)
	}

	// Quota: 4 records per zone here.
	for i := 0; i < 3; i++ {
		if _, err := e.createCNAME(fmt.Sprintf("q%d", i), target, ""); err != nil {
			t.Fatalf("record %d under quota: %v", i, err)
		}
	}
	_, err = e.createCNAME("q-over", target, "")
	wantCFError(t, err, http.StatusBadRequest, 81045)

	// Delete, then it is gone.
	var dp dns.RecordDeleteParams
	set(&dp.ZoneID, e.zone)
	if res, err := e.rec.Delete(ctx, rec.ID, dp); err != nil || res.ID != rec.ID {
		t.Fatalf("delete: %v %+v", err, res)
	}
	var gp dns.RecordGetParams
	set(&gp.ZoneID, e.zone)
	_, err = e.rec.Get(ctx, rec.ID, gp)
	wantCFError(t, err, http.StatusNotFound, 81044)
	_, err = e.rec.Delete(ctx, rec.ID, dp)
	wantCFError(t, err, http.StatusNotFound, 81044)
}

// The SDK's auto-pagers ask for page+1 until a page comes back empty; both
// must stop, having seen every item once.
func TestAutoPagersTerminate(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for i := 0; i < 25; i++ {
		if _, err := e.createCNAME(fmt.Sprintf("org%02d", i), "t.cfargotunnel.com", "tunnelward:org="+fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		e.createTunnel(fmt.Sprintf("tw-p%d", i))
	}
	e.sim.ResetCalls()

	var lp dns.RecordListParams
	set(&lp.ZoneID, e.zone)
	set(&lp.PerPage, 10.0)
	seen := map[string]bool{}
	it := e.rec.ListAutoPaging(ctx, lp)
	for it.Next() {
		if seen[it.Current().ID] {
			t.Fatalf("record %s seen twice", it.Current().ID)
		}
		seen[it.Current().ID] = true
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 25 {
		t.Fatalf("auto-pager saw %d records, want 25", len(seen))
	}
	if n := e.sim.CallCount("cf.dns.list"); n != 4 { // 10 + 10 + 5 + the empty page
		t.Fatalf("dns list calls: %d, want 4", n)
	}

	var tp zero_trust.TunnelCloudflaredListParams
	set(&tp.AccountID, e.acct)
	set(&tp.PerPage, 2.0)
	set(&tp.IsDeleted, false)
	n := 0
	tit := e.tun.ListAutoPaging(ctx, tp)
	for tit.Next() {
		n++
	}
	if tit.Err() != nil || n != 5 {
		t.Fatalf("tunnel auto-pager: %d tunnels, err %v", n, tit.Err())
	}
	if c := e.sim.CallCount("cf.tunnel.list"); c != 4 { // 2 + 2 + 1 + empty
		t.Fatalf("tunnel list calls: %d, want 4", c)
	}
}

// Over the Cloudflare budget every call gets 429 with Retry-After until the
// window ends; the SDK sees it, and when allowed to retry it waits as told.
func TestCloudflareRateLimitRetryAfter(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Now = nil // real clock: the SDK really sleeps Retry-After
		c.Limits = RateLimits{CFEnabled: true, CFBudget: 3, CFWindow: Duration(time.Second)}
	})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := e.getTunnelList(ctx, e.tun); err != nil {
			t.Fatalf("call %d under budget: %v", i, err)
		}
	}
	_, err := e.getTunnelList(ctx, e.tun)
	wantCFError(t, err, http.StatusTooManyRequests, 971)
	ra := cfErrOf(t, err).Response.Header.Get("Retry-After")
	if ra != "1" {
		t.Fatalf("Retry-After: %q, want \"1\"", ra)
	}
	// DNS shares the budget: blocked too.
	var rp dns.RecordListParams
	set(&rp.ZoneID, e.zone)
	_, err = e.rec.List(ctx, rp)
	wantCFError(t, err, http.StatusTooManyRequests, 971)

	// With retries on, the SDK honours Retry-After and lands in the next window.
	retrying := zero_trust.NewTunnelCloudflaredService(append(e.cfOpts, option.WithMaxRetries(2))...)
	e.sim.ResetCalls()
	start := time.Now()
	if _, err := e.getTunnelList(ctx, retrying); err != nil {
		t.Fatalf("SDK with retries did not get through: %v", err)
	}
	calls := e.sim.Calls()["cf.tunnel.list"]
	if calls[429] < 1 || calls[200] != 1 {
		t.Fatalf("calls: %v, want at least one 429 then one 200", calls)
	}
	t.Logf("SDK waited %v before succeeding (%v)", time.Since(start).Round(time.Millisecond), calls)
}

func (e *env) getTunnelList(ctx context.Context, svc *zero_trust.TunnelCloudflaredService) (int, error) {
	var lp zero_trust.TunnelCloudflaredListParams
	set(&lp.AccountID, e.acct)
	p, err := svc.List(ctx, lp)
	if err != nil {
		return 0, err
	}
	return len(p.Result), nil
}

func TestCloudflareResponsesAreJSONEnvelopes(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct{ method, path, auth string }{
		{"GET", "/client/v4/accounts/" + e.acct + "/cfd_tunnel", "Bearer " + DefaultCFToken},
		{"GET", "/client/v4/accounts/" + e.acct + "/cfd_tunnel", ""},
		{"GET", "/client/v4/nope", "Bearer " + DefaultCFToken},
	} {
		req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s %s: Content-Type %q", tc.method, tc.path, ct)
		}
	}
}

// DELETE .../connections answers the documented envelope: its result is an
// object (Cloudflare's tunnel_empty_response), not null; cloudflare-go v7
// hands the decoded result back to the caller.
func TestTunnelConnectionsDeleteAnswersAnObject(t *testing.T) {
	e := newEnv(t, nil)
	tid := e.createTunnel("tw-acme")
	var dc zero_trust.TunnelCloudflaredConnectionDeleteParams
	set(&dc.AccountID, e.acct)
	res, err := e.tun.Connections.Delete(context.Background(), tid, dc)
	if err != nil {
		t.Fatal(err)
	}
	if res == nil {
		t.Fatal("no result")
	}
	if m, ok := (*res).(map[string]any); !ok || len(m) != 0 {
		t.Fatalf("result %#v, want an empty object", *res)
	}

	req, _ := http.NewRequest(http.MethodDelete, e.srv.URL+"/client/v4/accounts/"+e.acct+"/cfd_tunnel/"+tid+"/connections", nil)
	req.Header.Set("Authorization", "Bearer "+DefaultCFToken)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Success bool            `json:"success"`
		Result  json.RawMessage `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !env.Success || string(env.Result) != "{}" {
		t.Fatalf("HTTP %d success %v result %s, want 200 true {}", resp.StatusCode, env.Success, env.Result)
	}
}
