package cloudsim

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// invWorld builds worlds for the invariant checker directly (some of these
// states the API itself would refuse to produce, which is the point).
type invWorld struct{ s *Sim }

func newInvWorld() *invWorld {
	return &invWorld{s: New(Config{AccountID: DefaultAccountID, ZoneID: DefaultZoneID, ZoneName: DefaultZoneName})}
}

func (w *invWorld) tunnel(name string, deleted bool) *Tunnel {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	t := &Tunnel{ID: w.s.newUUID(), AccountTag: DefaultAccountID, Name: name, ConfigSrc: "cloudflare",
		Secret: base64.StdEncoding.EncodeToString([]byte(name + "-secret-0123456789abcdefghijklmn")), CreatedAt: time.Now()}
	if deleted {
		now := time.Now()
		t.DeletedAt = &now
	}
	w.s.tunnels[t.ID] = t
	return t
}

func (w *invWorld) cname(org, tunnelID string) *DNSRecord {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	r := &DNSRecord{ID: w.s.newHex(32), ZoneID: DefaultZoneID, Name: org + "." + DefaultZoneName, Type: "CNAME",
		Content: tunnelID + ".cfargotunnel.com", Proxied: true, TTL: 1, Comment: "tunnelward:org=" + org}
	w.s.dnsRecords[r.ID] = r
	return r
}

func (w *invWorld) instance(org, tunnelID, state, userData string) *Instance {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	inst := &Instance{ID: "i-" + w.s.newHex(17), State: state, UserData: base64.StdEncoding.EncodeToString([]byte(userData)),
		Tags: map[string]string{"ManagedBy": "tunnelward", "OrgID": org, "TunnelID": tunnelID}}
	w.s.instances[inst.ID] = inst
	return inst
}

func (w *invWorld) param(org, typ, value string) *Parameter {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	p := &Parameter{Name: "/tunnelward/" + org + "/tunnel-token", Type: typ, Value: value, Version: 1,
		Tags: map[string]string{"ManagedBy": "tunnelward", "OrgID": org}}
	w.s.setParam(p)
	return p
}

// org lays down one correct org: tunnel, CNAME, running instance, SecureString token.
func (w *invWorld) org(org string) *Tunnel {
	t := w.tunnel("tw-"+org, false)
	w.cname(org, t.ID)
	w.instance(org, t.ID, "running", "#!/bin/bash\nTUNNEL_TOKEN_PARAMETER='/tunnelward/"+org+"/tunnel-token'\n")
	w.param(org, "SecureString", TunnelToken(t))
	return t
}

func kinds(vs []Violation) string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Kind+"("+v.Org+" "+strings.SplitN(v.Resource, ":", 2)[0]+")")
	}
	return strings.Join(out, ",")
}

func TestInvariantsCleanWorld(t *testing.T) {
	w := newInvWorld()
	w.org("acme")
	w.org("globex")
	w.tunnel("someone-elses", false) // not ours: never reported
	w.tunnel("tw-gone", true)        // deleted: fine
	w.instance("acme", "", "terminated", "")
	if v := w.s.CheckInvariants([]string{"acme", "globex"}); len(v) != 0 {
		t.Fatalf("clean world: %+v", v)
	}
	if v := w.s.CheckInvariants(nil); len(v) != 0 {
		t.Fatalf("clean world, structural only: %+v", v)
	}
}

func TestInvariantOrphans(t *testing.T) {
	w := newInvWorld()
	w.org("acme")
	w.org("initech")
	got := w.s.CheckInvariants([]string{"acme"})
	if kinds(got) != "orphan(initech dns_record),orphan(initech instance),orphan(initech parameter),orphan(initech tunnel)" {
		t.Fatalf("orphans: %s", kinds(got))
	}
	// Without the list of orgs there is nothing to call an orphan.
	if v := w.s.CheckInvariants(nil); len(v) != 0 {
		t.Fatalf("structural only: %+v", v)
	}
}

func TestInvariantDuplicateTunnel(t *testing.T) {
	w := newInvWorld()
	w.org("acme")
	// A second tunnel under another name that acme's CNAME points at.
	other := w.tunnel("tw-acme-retry", false)
	for _, r := range w.s.dnsRecords {
		r.Content = other.ID + ".cfargotunnel.com"
	}
	got := w.s.CheckInvariants(nil)
	if kinds(got) != "duplicate_tunnel(acme tunnel)" {
		t.Fatalf("want one duplicate_tunnel for acme, got %s", kinds(got))
	}
}

func TestInvariantDuplicateInstance(t *testing.T) {
	w := newInvWorld()
	tun := w.org("acme")
	w.instance("acme", tun.ID, "pending", "")
	got := w.s.CheckInvariants([]string{"acme"})
	if kinds(got) != "duplicate_instance(acme instance)" {
		t.Fatalf("got %s", kinds(got))
	}
	// shutting-down no longer counts as live.
	for _, inst := range w.s.instances {
		if inst.State == "pending" {
			inst.State = "shutting-down"
		}
	}
	if v := w.s.CheckInvariants([]string{"acme"}); len(v) != 0 {
		t.Fatalf("after the duplicate shuts down: %+v", v)
	}
}

func TestInvariantDanglingDNS(t *testing.T) {
	w := newInvWorld()
	tun := w.org("acme")
	w.cname("ghost", "0b3e0fd4-1111-4222-a333-444455556666")
	now := time.Now()
	tun.DeletedAt = &now
	got := w.s.CheckInvariants(nil)
	if kinds(got) != "dangling_dns(acme dns_record),dangling_dns(ghost dns_record)" {
		t.Fatalf("got %s", kinds(got))
	}
}

func TestInvariantTokenOutsideSSM(t *testing.T) {
	for name, leak := range map[string]func(w *invWorld, tok string){
		"user-data": func(w *invWorld, tok string) {
			w.instance("acme", "", "running", "#!/bin/bash\nTUNNEL_TOKEN="+tok+"\n")
		},
		"instance tag": func(w *invWorld, tok string) {
			for _, inst := range w.s.instances {
				inst.Tags["Token"] = tok
			}
		},
		"plain String parameter": func(w *invWorld, tok string) {
			for _, p := range w.s.params {
				p.Type = "String"
			}
		},
		"DNS comment": func(w *invWorld, tok string) {
			for _, r := range w.s.dnsRecords {
				r.Comment = "tunnelward:org=acme token=" + tok
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newInvWorld()
			tun := w.org("acme")
			leak(w, TunnelToken(tun))
			got := w.s.CheckInvariants([]string{"acme"})
			if !strings.Contains(kinds(got), "token_outside_ssm(acme") {
				t.Fatalf("leak via %s not found: %s", name, kinds(got))
			}
			for _, v := range got {
				if strings.Contains(v.Detail, TunnelToken(tun)) || strings.Contains(v.Detail, tun.Secret) {
					t.Fatalf("the report itself leaks the token: %+v", v)
				}
			}
		})
	}
}

func TestInvariantsEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	e.createTunnel("tw-acme")
	get := func(q string) []Violation {
		res, err := e.srv.Client().Get(e.srv.URL + "/_sim/invariants" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", res.StatusCode)
		}
		var body struct {
			Violations []Violation `json:"violations"`
		}
		if err := json.NewDecoder(res.Body).Decode(&body); err != nil || body.Violations == nil {
			t.Fatalf("body: %v (violations must be a list, never null)", err)
		}
		return body.Violations
	}
	if v := get(""); len(v) != 0 {
		t.Fatalf("structural: %+v", v)
	}
	if v := get("?orgs=acme,globex"); len(v) != 0 {
		t.Fatalf("acme expected: %+v", v)
	}
	if v := get("?orgs="); len(v) != 1 || v[0].Kind != ViolationOrphan || v[0].Org != "acme" {
		t.Fatalf("no orgs expected: %+v", v)
	}

	// /_sim/state never shows a SecureString value.
	_, sc := AWSTestClients(t, e.srv.URL)
	var id string
	for tid := range e.sim.tunnels {
		id = tid
	}
	e.putToken(sc, acmeParam, id)
	res, err := e.srv.Client().Get(e.srv.URL + "/_sim/state")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var st WorldState
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if len(st.Parameters) != 1 || st.Parameters[0]["ValueSHA256"] == nil || st.Parameters[0]["Value"] != nil {
		t.Fatalf("parameter in state: %+v", st.Parameters)
	}
	b, _ := json.Marshal(st)
	if strings.Contains(string(b), TunnelToken(e.sim.tunnels[id])) {
		t.Fatal("/_sim/state shows the token")
	}
	if len(st.Tunnels) != 1 || st.Tunnels[0]["status"] != "inactive" {
		t.Fatalf("tunnels in state: %+v", st.Tunnels)
	}
}

// An org named with its generation ("acme:2") must run an instance tagged
// with that generation: a re-created org that kept the old org's instance,
// or an instance without the tag, is reported; orgs named without one are
// not checked for it.
func TestInvariantGeneration(t *testing.T) {
	w := newInvWorld()
	w.org("acme")
	inst := func() *Instance {
		for _, in := range w.s.instances {
			return in
		}
		return nil
	}()
	if v := w.s.CheckInvariants([]string{"acme"}); len(v) != 0 {
		t.Fatalf("without a generation named: %s", kinds(v))
	}
	if got := kinds(w.s.CheckInvariants([]string{"acme:2"})); got != "missing_generation(acme instance)" {
		t.Fatalf("untagged instance, org at generation 2: got %s", got)
	}
	inst.Tags["Generation"] = "1"
	if got := kinds(w.s.CheckInvariants([]string{"acme:2"})); got != "stale_generation(acme instance)" {
		t.Fatalf("generation-1 instance, org at generation 2: got %s", got)
	}
	inst.Tags["Generation"] = "2"
	if v := w.s.CheckInvariants([]string{"acme:2"}); len(v) != 0 {
		t.Fatalf("generation-2 instance, org at generation 2: %s", kinds(v))
	}
	if got := kinds(w.s.CheckInvariants([]string{})); got != "orphan(acme dns_record),orphan(acme instance),orphan(acme parameter),orphan(acme tunnel)" {
		t.Fatalf("org not named: got %s", got)
	}
}
