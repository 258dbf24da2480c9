package cloudsim

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

func (e *env) createRecord(typ dns.RecordNewParamsBodyType, name, content string, proxied bool) string {
	e.t.Helper()
	var p dns.RecordNewParams
	set(&p.ZoneID, e.zone)
	var b dns.RecordNewParamsBody
	set(&b.Type, typ)
	set(&b.Name, name)
	set(&b.Content, content)
	set(&b.TTL, dns.TTL1)
	set(&b.Proxied, proxied)
	p.Body = b
	r, err := e.rec.New(context.Background(), p)
	if err != nil {
		e.t.Fatalf("create %s %s: %v", typ, name, err)
	}
	return r.ID
}

// getResolve is GET /_sim/resolve?name=name.
func (e *env) getResolve(name string) (int, Resolution) {
	e.t.Helper()
	res, err := e.srv.Client().Get(e.srv.URL + "/_sim/resolve?name=" + url.QueryEscape(name))
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var r Resolution
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
			e.t.Fatal(err)
		}
	}
	return res.StatusCode, r
}

// The resolution probe: an A record, a CNAME to a healthy tunnel, to a
// tunnel that is down, to one never connected, to a deleted one, across
// accounts, unproxied, and a name no record has.
func TestResolve(t *testing.T) {
	e := newEnv(t, rotationDelays)
	ec, sc := AWSTestClients(t, e.srv.URL)
	zone := DefaultZoneName

	up := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, up)
	iid := e.runInstance(ec, "acme", up, acmeParam)
	e.tagFor(ec, sc, acmeParam, iid)
	idle := e.createTunnel("tw-idle")
	gone := e.createTunnel("tw-gone")
	e.clock.Advance(2 * time.Second)

	aID := e.createRecord(dns.RecordNewParamsBodyTypeA, "web", "192.0.2.10", true)
	e.createRecord(dns.RecordNewParamsBodyTypeAAAA, "web", "2001:db8::10", true)
	acme, err := e.createCNAME("acme", up+".cfargotunnel.com", "tunnelward:org=acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.createCNAME("idle", idle+".cfargotunnel.com", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.createCNAME("gone", gone+".cfargotunnel.com", ""); err != nil {
		t.Fatal(err)
	}
	e.createRecord(dns.RecordNewParamsBodyTypeCNAME, "plain", up+".cfargotunnel.com", false)
	e.createRecord(dns.RecordNewParamsBodyTypeCNAME, "alias", "www.example.com", true)
	e.createRecord(dns.RecordNewParamsBodyTypeTXT, "txt-only", "hello", false)
	// A CNAME in the second identity's zone (another account) to the first
	// account's tunnel.
	two := e.second()
	if _, err := two.createCNAME("cross", up+".cfargotunnel.com", ""); err != nil {
		t.Fatal(err)
	}
	var dp zero_trust.TunnelCloudflaredDeleteParams
	set(&dp.AccountID, e.acct)
	if _, err := e.tun.Delete(context.Background(), gone, dp); err != nil {
		t.Fatal(err)
	}

	// An A record (and an AAAA at the same name): the A is answered.
	r := e.sim.Resolve("WEB." + zone + ".")
	if !r.Found || r.Type != "A" || r.Content != "192.0.2.10" || r.RecordID != aID || r.Records != 2 || !r.Proxied ||
		r.ZoneID != DefaultZoneID || r.ZoneName != zone || r.Name != "web."+zone || r.TunnelID != "" || r.TunnelHealthy || r.Reason != "" {
		t.Fatalf("A record: %+v", r)
	}

	// A CNAME to a healthy tunnel.
	r = e.sim.Resolve("acme." + zone)
	if !r.Found || r.Type != "CNAME" || r.RecordID != acme.ID || r.Content != up+".cfargotunnel.com" || r.TunnelID != up ||
		r.TunnelStatus != "healthy" || !r.TunnelHealthy || r.Reason != "" || r.Records != 1 {
		t.Fatalf("CNAME to a healthy tunnel: %+v", r)
	}

	// The same tunnel, down: found, not healthy.
	e.world(WorldAction{Action: "kill_connector", Org: "acme"})
	r = e.sim.Resolve("acme." + zone)
	if !r.Found || r.TunnelID != up || r.TunnelStatus != "down" || r.TunnelHealthy || r.Reason != ResolveNoConnections {
		t.Fatalf("CNAME to a down tunnel: %+v", r)
	}
	// Back up, through a restart the probe sees without any other request.
	e.world(WorldAction{Action: "restart_connector", ID: iid})
	e.clock.Advance(time.Second)
	if r = e.sim.Resolve("acme." + zone); !r.TunnelHealthy {
		t.Fatalf("CNAME to a tunnel up again: %+v", r)
	}

	for name, want := range map[string]Resolution{
		"idle":  {TunnelID: idle, TunnelStatus: "inactive", Reason: ResolveNoConnections},
		"gone":  {TunnelID: gone, Reason: ResolveTunnelDeleted},
		"plain": {TunnelID: up, TunnelStatus: "healthy", Reason: ResolveNotProxied},
		"alias": {},
	} {
		r := e.sim.Resolve(name + "." + zone)
		if !r.Found || r.Type != "CNAME" || r.TunnelID != want.TunnelID || r.TunnelStatus != want.TunnelStatus || r.TunnelHealthy || r.Reason != want.Reason {
			t.Errorf("%s: %+v, want %+v", name, r, want)
		}
	}
	r = e.sim.Resolve("cross." + DefaultZone2Name)
	if !r.Found || r.ZoneID != DefaultZone2ID || r.TunnelID != up || r.TunnelHealthy || r.Reason != ResolveOtherAccount {
		t.Fatalf("CNAME across accounts: %+v", r)
	}

	// Names no A, AAAA or CNAME has: not found, with the zone they fall in.
	for name, wantZone := range map[string]string{
		"missing." + zone:           DefaultZoneID,
		"txt-only." + zone:          DefaultZoneID,
		"a.b." + DefaultZone2Name:   DefaultZone2ID,
		zone:                        DefaultZoneID,
		"elsewhere.example.org":     "",
		"x" + zone:                  "", // not a subdomain, only a suffix
		"missing." + zone + ".":     DefaultZoneID,
		"  Missing." + zone + ".  ": DefaultZoneID,
	} {
		r := e.sim.Resolve(name)
		if r.Found || r.Type != "" || r.TunnelID != "" || r.Records != 0 || r.ZoneID != wantZone {
			t.Errorf("%q: %+v, want not found in zone %q", name, r, wantZone)
		}
	}

	// Over HTTP.
	code, hr := e.getResolve("acme." + zone)
	if code != http.StatusOK || hr != e.sim.Resolve("acme."+zone) {
		t.Fatalf("GET /_sim/resolve: %d %+v", code, hr)
	}
	if code, hr := e.getResolve("missing." + zone); code != http.StatusOK || hr.Found {
		t.Fatalf("GET /_sim/resolve of a missing name: %d %+v", code, hr)
	}
	if code, _ := e.getResolve(""); code != http.StatusBadRequest {
		t.Fatalf("GET /_sim/resolve without a name: %d", code)
	}
}

// The probe is polled every 100 ms by cutover tests: it allocates nothing
// for a name that is found.
func TestResolveAllocatesNothing(t *testing.T) {
	e := newEnv(t, rotationDelays)
	tid := e.createTunnel("tw-acme")
	if _, err := e.createCNAME("acme", tid+".cfargotunnel.com", ""); err != nil {
		t.Fatal(err)
	}
	for i := range 150 { // a zone with records to walk past
		e.createRecord(dns.RecordNewParamsBodyTypeA, "host"+string(rune('a'+i%26))+string(rune('a'+i/26)), "192.0.2.1", true)
	}
	name := "acme." + DefaultZoneName
	if n := testing.AllocsPerRun(100, func() { _ = e.sim.Resolve(name) }); n != 0 {
		t.Fatalf("Resolve allocates %v times per call", n)
	}
}
