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

// Several Cloudflare identities in one emulator: the sandbox's pools. Every
// test talks to the emulator through cloudflare-go v7 over HTTP.

// as is e seen through another identity: the same world and server, the
// SDK with token, account and zone.
func (e *env) as(token, account, zone string) *env {
	c := *e
	c.acct, c.zone = account, zone
	c.cfOpts = []option.RequestOption{
		option.WithBaseURL(e.srv.URL + "/client/v4/"),
		option.WithAPIToken(token),
		option.WithHTTPClient(e.srv.Client()),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(10 * time.Second),
	}
	c.tun = zero_trust.NewTunnelCloudflaredService(c.cfOpts...)
	c.rec = dns.NewRecordService(c.cfOpts...)
	return &c
}

// second is e through DefaultConfig's second identity.
func (e *env) second() *env { return e.as(DefaultCF2Token, DefaultAccount2ID, DefaultZone2ID) }

func (e *env) tunnelNames(t *testing.T) []string {
	t.Helper()
	var lp zero_trust.TunnelCloudflaredListParams
	set(&lp.AccountID, e.acct)
	page, err := e.tun.List(context.Background(), lp)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tn := range page.Result {
		out = append(out, tn.Name+"="+tn.ID)
	}
	return out
}

func (e *env) recordNames(t *testing.T) []string {
	t.Helper()
	var lp dns.RecordListParams
	set(&lp.ZoneID, e.zone)
	page, err := e.rec.List(context.Background(), lp)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range page.Result {
		out = append(out, r.Name)
	}
	return out
}

func TestDefaultConfigServesTwoIdentities(t *testing.T) {
	ids := DefaultConfig().CFIdentities()
	want := []CFIdentity{
		{DefaultCFToken, DefaultAccountID, DefaultZoneID, DefaultZoneName},
		{"sandbox2-token", "b2c3d4e5f60718293a4b5c6d7e8f90a1", "e0f1d2c3b4a5968778695a4b3c2d1e0f", "sandbox2.tunnelward.test"},
	}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("identities %v, want %v", ids, want)
	}
	if q := New(Config{}).Config().TunnelQuota; q != 1000 {
		t.Fatalf("tunnel quota of a zero Config: %d, want 1000", q)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := DefaultConfig()
	bad.CFExtra = append(bad.CFExtra, CFIdentity{Token: "t3", AccountID: DefaultAccount2ID, ZoneID: DefaultZoneID, ZoneName: DefaultZoneName})
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), DefaultZoneID) {
		t.Fatalf("a zone in two accounts: %v", err)
	}
	bad.CFExtra = []CFIdentity{{Token: "t3", AccountID: DefaultAccount2ID}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("an identity without a zone: %v", err)
	}
}

// Tunnels belong to an account: the same name in two accounts is two
// tunnels, and nothing of one account is seen through the other.
func TestTunnelsBelongToTheirAccount(t *testing.T) {
	one := newEnv(t, nil)
	two := one.second()
	ctx := context.Background()
	id1 := one.createTunnel("tw-acme")
	id2 := two.createTunnel("tw-acme") // the same name in another account
	if id1 == id2 {
		t.Fatal("one id for two tunnels")
	}
	if got := one.tunnelNames(t); len(got) != 1 || got[0] != "tw-acme="+id1 {
		t.Fatalf("account 1 lists %v, want only its tw-acme %s", got, id1)
	}
	if got := two.tunnelNames(t); len(got) != 1 || got[0] != "tw-acme="+id2 {
		t.Fatalf("account 2 lists %v, want only its tw-acme %s", got, id2)
	}
	// The name is still unique within an account.
	var np zero_trust.TunnelCloudflaredNewParams
	set(&np.AccountID, two.acct)
	set(&np.Name, "tw-acme")
	_, err := two.tun.New(ctx, np)
	wantCFError(t, err, http.StatusConflict, 1013)

	// Account 2's tunnel through account 1 (with account 1's token): not found,
	// whatever the operation.
	var gp zero_trust.TunnelCloudflaredGetParams
	set(&gp.AccountID, one.acct)
	_, err = one.tun.Get(ctx, id2, gp)
	wantCFError(t, err, http.StatusNotFound, 1003)
	var tp zero_trust.TunnelCloudflaredTokenGetParams
	set(&tp.AccountID, one.acct)
	_, err = one.tun.Token.Get(ctx, id2, tp)
	wantCFError(t, err, http.StatusNotFound, 1003)
	var cg zero_trust.TunnelCloudflaredConfigurationGetParams
	set(&cg.AccountID, one.acct)
	_, err = one.tun.Configurations.Get(ctx, id2, cg)
	wantCFError(t, err, http.StatusNotFound, 1003)
	var cp zero_trust.TunnelCloudflaredConfigurationUpdateParams
	set(&cp.AccountID, one.acct)
	var cfgp zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfig
	rules := make([]zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress, 1)
	set(&rules[0].Service, "http_status:404")
	set(&cfgp.Ingress, rules)
	set(&cp.Config, cfgp)
	_, err = one.tun.Configurations.Update(ctx, id2, cp)
	wantCFError(t, err, http.StatusNotFound, 1003)
	var kg zero_trust.TunnelCloudflaredConnectionGetParams
	set(&kg.AccountID, one.acct)
	_, err = one.tun.Connections.Get(ctx, id2, kg)
	wantCFError(t, err, http.StatusNotFound, 1003)
	var kd zero_trust.TunnelCloudflaredConnectionDeleteParams
	set(&kd.AccountID, one.acct)
	_, err = one.tun.Connections.Delete(ctx, id2, kd)
	wantCFError(t, err, http.StatusNotFound, 1003)
	var ep zero_trust.TunnelCloudflaredEditParams
	set(&ep.AccountID, one.acct)
	set(&ep.Name, "tw-stolen")
	_, err = one.tun.Edit(ctx, id2, ep)
	wantCFError(t, err, http.StatusNotFound, 1003)
	var dp zero_trust.TunnelCloudflaredDeleteParams
	set(&dp.AccountID, one.acct)
	_, err = one.tun.Delete(ctx, id2, dp)
	wantCFError(t, err, http.StatusNotFound, 1003)

	// Untouched, in its own account.
	var gp2 zero_trust.TunnelCloudflaredGetParams
	set(&gp2.AccountID, two.acct)
	got, err := two.tun.Get(ctx, id2, gp2)
	if err != nil || got.Name != "tw-acme" || !got.DeletedAt.IsZero() || got.AccountTag != DefaultAccount2ID {
		t.Fatalf("account 2's tunnel after account 1's attempts: %v %+v", err, got)
	}
	// Deleting account 1's tw-acme leaves account 2's.
	if _, err := one.tun.Delete(ctx, id1, dp); err != nil {
		t.Fatal(err)
	}
	if st := two.status(id2); st != "inactive" {
		t.Fatalf("account 2's tunnel: %s", st)
	}
}

// A token reaches only its identities' accounts and zones.
func TestTokenReachesOnlyItsIdentities(t *testing.T) {
	one := newEnv(t, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		e            *env
		status, code int
	}{
		{"token 1 on account 2", one.as(DefaultCFToken, DefaultAccount2ID, DefaultZoneID), http.StatusForbidden, 9109},
		{"token 2 on account 1", one.as(DefaultCF2Token, DefaultAccountID, DefaultZone2ID), http.StatusForbidden, 9109},
		{"unknown token", one.as("no-such-token", DefaultAccountID, DefaultZoneID), http.StatusForbidden, 10000},
	} {
		var lp zero_trust.TunnelCloudflaredListParams
		set(&lp.AccountID, tc.e.acct)
		_, err := tc.e.tun.List(ctx, lp)
		t.Run(tc.name, func(t *testing.T) { wantCFError(t, err, tc.status, int64(tc.code)) })
	}
	for _, tc := range []struct {
		name         string
		e            *env
		status, code int
	}{
		// A zone the emulator serves, outside the token's scope: Cloudflare's
		// answer to a token without permission on the zone.
		{"token 1 on zone 2", one.as(DefaultCFToken, DefaultAccountID, DefaultZone2ID), http.StatusForbidden, 10000},
		{"token 2 on zone 1", one.as(DefaultCF2Token, DefaultAccount2ID, DefaultZoneID), http.StatusForbidden, 10000},
		// A zone no identity has: an invalid object identifier.
		{"token 1 on an unknown zone", one.as(DefaultCFToken, DefaultAccountID, "0123456789abcdef0123456789abcdef"), http.StatusBadRequest, 7003},
		{"unknown token", one.as("no-such-token", DefaultAccountID, DefaultZoneID), http.StatusForbidden, 10000},
	} {
		_, err := tc.e.createCNAME("acme", "x.cfargotunnel.com", "")
		t.Run(tc.name, func(t *testing.T) { wantCFError(t, err, tc.status, int64(tc.code)) })
	}
	if n := len(one.sim.State().DNSRecords); n != 0 {
		t.Fatalf("%d records created by refused requests", n)
	}

	// The same token in two identities reaches both.
	e := newEnv(t, func(c *Config) {
		c.CFExtra = []CFIdentity{{Token: DefaultCFToken, AccountID: DefaultAccount2ID, ZoneID: DefaultZone2ID, ZoneName: DefaultZone2Name}}
	})
	e.createTunnel("tw-acme")
	both := e.as(DefaultCFToken, DefaultAccount2ID, DefaultZone2ID)
	both.createTunnel("tw-acme")
	if _, err := both.createCNAME("acme", "x.cfargotunnel.com", ""); err != nil {
		t.Fatal(err)
	}
	if got := both.recordNames(t); len(got) != 1 || got[0] != "acme."+DefaultZone2Name {
		t.Fatalf("zone 2 through the shared token: %v", got)
	}
}

// DNS records belong to their zone: names, conflicts, the quota and every
// operation on a record id are per zone.
func TestDNSRecordsBelongToTheirZone(t *testing.T) {
	// A third zone named like the first, in account 2 (as Cloudflare lets a
	// name be added to two accounts), so one FQDN can exist in two zones.
	const zone3 = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	one := newEnv(t, func(c *Config) {
		c.DNSQuota = 2
		c.CFExtra = append(c.CFExtra, CFIdentity{Token: DefaultCF2Token, AccountID: DefaultAccount2ID, ZoneID: zone3, ZoneName: DefaultZoneName})
	})
	two := one.second()
	three := one.as(DefaultCF2Token, DefaultAccount2ID, zone3)
	ctx := context.Background()

	r1, err := one.createCNAME("acme", "a.cfargotunnel.com", "tunnelward:org=acme")
	if err != nil {
		t.Fatal(err)
	}
	// Names take the zone of the path.
	r2, err := two.createCNAME("acme", "b.cfargotunnel.com", "tunnelward:org=acme")
	if err != nil || r2.Name != "acme."+DefaultZone2Name {
		t.Fatalf("zone 2's acme: %v %+v", err, r2)
	}
	// The same FQDN in another zone is no conflict; in its own zone it is.
	r3, err := three.createCNAME("acme."+DefaultZoneName, "c.cfargotunnel.com", "")
	if err != nil || r3.Name != "acme."+DefaultZoneName {
		t.Fatalf("zone 3's acme: %v %+v", err, r3)
	}
	_, err = two.createCNAME("acme", "d.cfargotunnel.com", "")
	wantCFError(t, err, http.StatusBadRequest, 81053)

	// Each zone lists only its own.
	if got := one.recordNames(t); fmt.Sprint(got) != "[acme."+DefaultZoneName+"]" {
		t.Fatalf("zone 1 lists %v", got)
	}
	if got := two.recordNames(t); fmt.Sprint(got) != "[acme."+DefaultZone2Name+"]" {
		t.Fatalf("zone 2 lists %v", got)
	}

	// Zone 1's record through zone 2: not found, whatever the operation.
	var gp dns.RecordGetParams
	set(&gp.ZoneID, two.zone)
	_, err = two.rec.Get(ctx, r1.ID, gp)
	wantCFError(t, err, http.StatusNotFound, 81044)
	var ep dns.RecordEditParams
	set(&ep.ZoneID, two.zone)
	var eb dns.RecordEditParamsBody
	set(&eb.Content, "stolen.cfargotunnel.com")
	ep.Body = eb
	_, err = two.rec.Edit(ctx, r1.ID, ep)
	wantCFError(t, err, http.StatusNotFound, 81044)
	var up dns.RecordUpdateParams
	set(&up.ZoneID, two.zone)
	var ub dns.RecordUpdateParamsBody
	set(&ub.Type, dns.RecordUpdateParamsBodyTypeCNAME)
	set(&ub.Name, "acme")
	set(&ub.Content, "stolen.cfargotunnel.com")
	up.Body = ub
	_, err = two.rec.Update(ctx, r1.ID, up)
	wantCFError(t, err, http.StatusNotFound, 81044)
	var dp dns.RecordDeleteParams
	set(&dp.ZoneID, two.zone)
	_, err = two.rec.Delete(ctx, r1.ID, dp)
	wantCFError(t, err, http.StatusNotFound, 81044)

	// A batch applies within its zone: deleting zone 1's record through zone
	// 2 fails the whole batch (its post is not applied either).
	var bp dns.RecordBatchParams
	set(&bp.ZoneID, two.zone)
	del := make([]dns.RecordBatchParamsDelete, 1)
	set(&del[0].ID, r1.ID)
	set(&bp.Deletes, del)
	var post dns.CNAMERecordParam
	set(&post.Name, "beta")
	set(&post.Type, dns.CNAMERecordTypeCNAME)
	set(&post.Content, "e.cfargotunnel.com")
	set(&bp.Posts, []dns.RecordBatchParamsPostUnion{post})
	_, err = two.rec.Batch(ctx, bp)
	wantCFError(t, err, http.StatusNotFound, 81044)
	if got := two.recordNames(t); len(got) != 1 {
		t.Fatalf("a failed batch changed zone 2: %v", got)
	}
	// Its own record, then: the post lands in zone 2, under zone 2's name.
	set(&del[0].ID, r2.ID)
	set(&bp.Deletes, del)
	res, err := two.rec.Batch(ctx, bp)
	if err != nil || len(res.Posts) != 1 || res.Posts[0].Name != "beta."+DefaultZone2Name {
		t.Fatalf("batch in zone 2: %v %+v", err, res)
	}
	if got := one.recordNames(t); fmt.Sprint(got) != "[acme."+DefaultZoneName+"]" {
		t.Fatalf("zone 2's batch changed zone 1: %v", got)
	}

	// The quota (2 here) is per zone: zone 1 fills up, zone 2 still has room.
	if _, err := one.createCNAME("q1", "q.cfargotunnel.com", ""); err != nil {
		t.Fatal(err)
	}
	_, err = one.createCNAME("q2", "q.cfargotunnel.com", "")
	wantCFError(t, err, http.StatusBadRequest, 81045)
	if _, err := two.createCNAME("q1", "q.cfargotunnel.com", ""); err != nil {
		t.Fatalf("zone 2 under its quota while zone 1 is full: %v", err)
	}
	_, err = two.createCNAME("q2", "q.cfargotunnel.com", "")
	wantCFError(t, err, http.StatusBadRequest, 81045)

	// /_sim/state names the zones and each record's.
	st := one.sim.State()
	if len(st.Zones) != 3 || st.Zones[1] != (ZoneState{ID: DefaultZone2ID, Name: DefaultZone2Name, AccountID: DefaultAccount2ID}) {
		t.Fatalf("state zones: %+v", st.Zones)
	}
	zones := map[string]int{}
	for _, r := range st.DNSRecords {
		zones[r["zone_id"].(string)]++
	}
	if zones[DefaultZoneID] != 2 || zones[DefaultZone2ID] != 2 || zones[zone3] != 1 {
		t.Fatalf("records per zone: %v", zones)
	}
}

// An account holds at most TunnelQuota live tunnels; a create past it is
// refused, in that account only.
func TestTunnelQuotaPerAccount(t *testing.T) {
	one := newEnv(t, func(c *Config) { c.TunnelQuota = 2 })
	two := one.second()
	ctx := context.Background()
	a := one.createTunnel("tw-a")
	one.createTunnel("tw-b")
	create := func(e *env, name string) error {
		var np zero_trust.TunnelCloudflaredNewParams
		set(&np.AccountID, e.acct)
		set(&np.Name, name)
		set(&np.ConfigSrc, zero_trust.TunnelCloudflaredNewParamsConfigSrcCloudflare)
		_, err := e.tun.New(ctx, np)
		return err
	}
	err := create(one, "tw-c")
	wantCFError(t, err, http.StatusBadRequest, 1014)
	if msg := cfErrOf(t, err).Errors[0].Message; !strings.Contains(msg, "maximum number of tunnels") {
		t.Fatalf("message %q", msg)
	}
	// A retried create of a tunnel that exists still says the name is taken
	// (the client adopts it), even at the limit.
	wantCFError(t, create(one, "tw-a"), http.StatusConflict, 1013)
	// The other account has its own quota.
	two.createTunnel("tw-c")
	two.createTunnel("tw-d")
	wantCFError(t, create(two, "tw-e"), http.StatusBadRequest, 1014)
	// Deleted tunnels do not count.
	var dp zero_trust.TunnelCloudflaredDeleteParams
	set(&dp.AccountID, one.acct)
	if _, err := one.tun.Delete(ctx, a, dp); err != nil {
		t.Fatal(err)
	}
	if err := create(one, "tw-c"); err != nil {
		t.Fatalf("create after a delete freed a place: %v", err)
	}
	if c := one.sim.Calls()["cf.tunnel.create"]; c[400] != 2 {
		t.Fatalf("create calls %v, want two refused with 400", c)
	}
}

// The Cloudflare budget is per API token: one token over its budget does
// not throttle another; one token in two identities has one budget.
func TestCloudflareBudgetPerToken(t *testing.T) {
	limits := func(c *Config) {
		c.Limits = RateLimits{CFEnabled: true, CFBudget: 3, CFWindow: Duration(time.Minute)}
	}
	one := newEnv(t, limits)
	two := one.second()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := one.getTunnelList(ctx, one.tun); err != nil {
			t.Fatalf("token 1, call %d under budget: %v", i, err)
		}
	}
	_, err := one.getTunnelList(ctx, one.tun)
	wantCFError(t, err, http.StatusTooManyRequests, 971)
	if ra := cfErrOf(t, err).Response.Header.Get("Retry-After"); ra != "60" {
		t.Fatalf("Retry-After %q, want 60 (the fake clock stands still)", ra)
	}
	// Token 2 has its whole budget.
	for i := 0; i < 3; i++ {
		if _, err := two.getTunnelList(ctx, two.tun); err != nil {
			t.Fatalf("token 2, call %d while token 1 is throttled: %v", i, err)
		}
	}
	_, err = two.getTunnelList(ctx, two.tun)
	wantCFError(t, err, http.StatusTooManyRequests, 971)
	// A new window for both.
	one.clock.Advance(time.Minute)
	if _, err := one.getTunnelList(ctx, one.tun); err != nil {
		t.Fatalf("token 1 in the next window: %v", err)
	}
	// Requests with tokens no identity has share one budget of their own:
	// they are refused (403), not throttled, until it is spent.
	stranger := one.as("no-such-token", DefaultAccountID, DefaultZoneID)
	for i := 0; i < 3; i++ {
		_, err := stranger.getTunnelList(ctx, stranger.tun)
		wantCFError(t, err, http.StatusForbidden, 10000)
	}
	_, err = stranger.getTunnelList(ctx, stranger.tun)
	wantCFError(t, err, http.StatusTooManyRequests, 971)
	if _, err := two.getTunnelList(ctx, two.tun); err != nil {
		t.Fatalf("token 2 after strangers spent theirs: %v", err)
	}

	// One token in two identities: one user, one budget across both accounts.
	shared := newEnv(t, func(c *Config) {
		limits(c)
		c.CFExtra = []CFIdentity{{Token: DefaultCFToken, AccountID: DefaultAccount2ID, ZoneID: DefaultZone2ID, ZoneName: DefaultZone2Name}}
	})
	other := shared.as(DefaultCFToken, DefaultAccount2ID, DefaultZone2ID)
	for i, e := range []*env{shared, other, shared} {
		if _, err := e.getTunnelList(ctx, e.tun); err != nil {
			t.Fatalf("shared token, call %d: %v", i, err)
		}
	}
	_, err = other.getTunnelList(ctx, other.tun)
	wantCFError(t, err, http.StatusTooManyRequests, 971)

	// /_sim/faults keeps its shape: a PUT restarts every token's window.
	if code, body := one.putFaults(`{"rules":[],"rate_limits":{"cf_enabled":true,"cf_budget":1,"cf_window":"1m"}}`); code != http.StatusOK {
		t.Fatalf("put faults: %d %s", code, body)
	}
	for _, e := range []*env{one, two} {
		if _, err := e.getTunnelList(ctx, e.tun); err != nil {
			t.Fatalf("first call after the PUT: %v", err)
		}
		_, err := e.getTunnelList(ctx, e.tun)
		wantCFError(t, err, http.StatusTooManyRequests, 971)
	}
}

// A tunnel of the second account is connected by cloudflared with its token
// (which names that account), as one of the first is.
func TestSecondAccountTunnelConnects(t *testing.T) {
	one := newEnv(t, persistDelays)
	two := one.second()
	ec, sc := AWSTestClients(t, one.srv.URL)
	tid := two.createTunnel("tw-acme")
	const param = "/tunnelward/acme/tunnel-token"
	two.putToken(sc, param, tid)
	iid := launch(t, ec, "acme", tid, param, "tok-acme")
	two.tagFor(ec, sc, param, iid)
	one.clock.Advance(25 * time.Second)
	if st := two.status(tid); st != "healthy" {
		t.Fatalf("account 2's tunnel: %s (connector %+v)", st, two.connector(iid))
	}
	// Its CNAME belongs in a zone of its own account: in zone 2 it is clean,
	// in zone 1 (another account) it leads nowhere.
	if _, err := two.createCNAME("acme", tid+".cfargotunnel.com", "tunnelward:org=acme"); err != nil {
		t.Fatal(err)
	}
	if v := one.sim.CheckInvariants([]string{"acme"}); len(v) != 0 {
		t.Fatalf("violations: %+v", v)
	}
	r, err := one.createCNAME("acme", tid+".cfargotunnel.com", "tunnelward:org=acme")
	if err != nil {
		t.Fatal(err)
	}
	v := one.sim.CheckInvariants([]string{"acme"})
	if len(v) != 1 || v[0].Kind != ViolationDanglingDNS || v[0].Resource != "dns_record:"+r.ID || !strings.Contains(v[0].Detail, "its own account") {
		t.Fatalf("a CNAME across accounts: %+v", v)
	}
	// A live tw-acme in each account is a duplicate: an org has one pool.
	one.createTunnel("tw-acme")
	var dup []Violation
	for _, x := range one.sim.CheckInvariants(nil) {
		if x.Kind == ViolationDupTunnel {
			dup = append(dup, x)
		}
	}
	if len(dup) != 1 || !strings.Contains(dup[0].Detail, "in 2 accounts") {
		t.Fatalf("duplicate across accounts: %+v", dup)
	}
}

// A snapshot keeps every tunnel's account and every record's zone; an
// emulator that does not serve them refuses it; a version 1 snapshot (one
// account, one zone) loads as the first identity's.
func TestSnapshotKeepsAccountsAndZones(t *testing.T) {
	one := newEnv(t, nil)
	two := one.second()
	tid1 := one.createTunnel("tw-acme")
	tid2 := two.createTunnel("tw-acme")
	if _, err := one.createCNAME("acme", tid1+".cfargotunnel.com", "tunnelward:org=acme"); err != nil {
		t.Fatal(err)
	}
	r2, err := two.createCNAME("acme", tid2+".cfargotunnel.com", "tunnelward:org=acme")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := one.sim.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	cfg := one.sim.Config()
	loaded, err := Restore(cfg, snap)
	if err != nil {
		t.Fatal(err)
	}
	l1 := envFor(t, loaded, one.clock)
	l2 := l1.second()
	if got := l2.tunnelNames(t); fmt.Sprint(got) != "[tw-acme="+tid2+"]" {
		t.Fatalf("account 2 after the load: %v", got)
	}
	if got := l1.tunnelNames(t); fmt.Sprint(got) != "[tw-acme="+tid1+"]" {
		t.Fatalf("account 1 after the load: %v", got)
	}
	var gp dns.RecordGetParams
	set(&gp.ZoneID, l2.zone)
	rec, err := l2.rec.Get(context.Background(), r2.ID, gp)
	if err != nil || rec.Name != "acme."+DefaultZone2Name || rec.Content != tid2+".cfargotunnel.com" {
		t.Fatalf("zone 2's record after the load: %v %+v", err, rec)
	}
	set(&gp.ZoneID, l1.zone)
	_, err = l1.rec.Get(context.Background(), r2.ID, gp)
	wantCFError(t, err, http.StatusNotFound, 81044)
	if got := l1.recordNames(t); fmt.Sprint(got) != "[acme."+DefaultZoneName+"]" {
		t.Fatalf("zone 1 after the load: %v", got)
	}
	if a, b := comparableSnapshot(t, one.sim), comparableSnapshot(t, loaded); a != b {
		t.Fatalf("the loaded world differs:\n--- saved\n%s\n--- loaded\n%s", a, b)
	}

	// An emulator without the second identity cannot serve that world.
	firstOnly := cfg
	firstOnly.CFExtra = nil
	if _, err := Restore(firstOnly, snap); err == nil || !strings.Contains(err.Error(), DefaultAccount2ID) {
		t.Fatalf("restore without account 2: %v", err)
	}
	// Nor one serving zone 2 under another name.
	renamed := cfg
	renamed.CFExtra = []CFIdentity{{Token: DefaultCF2Token, AccountID: DefaultAccount2ID, ZoneID: DefaultZone2ID, ZoneName: "elsewhere.test"}}
	if _, err := Restore(renamed, snap); err == nil || !strings.Contains(err.Error(), "elsewhere.test") {
		t.Fatalf("restore with zone 2 renamed: %v", err)
	}

	// Version 1: no zones, tunnels and records without account or zone.
	v1 := reEnvelope(t, snap, func(w map[string]any) {
		delete(w, "zones")
		for _, x := range w["tunnels"].([]any) {
			x.(map[string]any)["AccountTag"] = ""
		}
		for _, x := range w["dns_records"].([]any) {
			x.(map[string]any)["ZoneID"] = ""
		}
	})
	v1 = []byte(strings.Replace(string(v1), fmt.Sprintf(`"version":%d`, snapshotVersion), `"version":1`, 1))
	old, err := Restore(cfg, v1)
	if err != nil {
		t.Fatal(err)
	}
	o1 := envFor(t, old, one.clock)
	if got := o1.tunnelNames(t); len(got) != 2 {
		t.Fatalf("a version 1 world's tunnels are the first account's: %v", got)
	}
	if got := o1.second().tunnelNames(t); len(got) != 0 {
		t.Fatalf("account 2 of a version 1 world: %v", got)
	}
	var raw struct {
		Tunnels []map[string]any `json:"tunnels"`
	}
	b, _ := json.Marshal(old.State())
	_ = json.Unmarshal(b, &raw)
	for _, tn := range raw.Tunnels {
		if tn["account_tag"] != DefaultAccountID {
			t.Fatalf("a version 1 tunnel shows account %v", tn["account_tag"])
		}
	}
}
