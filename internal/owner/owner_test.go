package owner

import (
	"encoding/base64"
	"sort"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
)

func TestRoundTrips(t *testing.T) {
	if org, ok := OrgFromTunnelName(TunnelName("acme")); !ok || org != "acme" {
		t.Fatalf("tunnel name round trip: %q %v", org, ok)
	}
	for _, name := range []string{"tw-", "prod-acme", "acme"} {
		if org, ok := OrgFromTunnelName(name); ok {
			t.Errorf("tunnel %q taken as org %q's", name, org)
		}
	}
	if org, ok := OrgFromDNSComment(DNSComment("acme") + " generation=2"); !ok || org != "acme" {
		t.Fatalf("comment with suffix: %q %v", org, ok)
	}
	for _, c := range []string{"made by hand", DNSCommentPrefix, ""} {
		if org, ok := OrgFromDNSComment(c); ok {
			t.Errorf("comment %q taken as org %q's", c, org)
		}
	}
	p := ParamName(DefaultParamPrefix+"/", "acme")
	if p != "/tunnelward/tunnels/acme/tunnel-token" {
		t.Fatalf("parameter name %q", p)
	}
	if org, ok := OrgFromParamName(DefaultParamPrefix, p); !ok || org != "acme" {
		t.Fatalf("parameter round trip: %q %v", org, ok)
	}
	for _, name := range []string{"/tunnelward/tunnels//tunnel-token", "/tunnelward/tunnels/a/b/tunnel-token", "/other/acme/tunnel-token"} {
		if org, ok := OrgFromParamName(DefaultParamPrefix, name); ok {
			t.Errorf("parameter %q taken as org %q's", name, org)
		}
	}
}

// The emulator may not import this package (it must not bend to what it
// tests), so it writes the conventions down itself: a world built with
// these names must be attributed, by its invariant checker, to the org
// that owns it, and every resource must count as an orphan of that org
// once the org should not exist.
func TestEmulatorReadsTheSameNames(t *testing.T) {
	s := cloudsim.New(cloudsim.DefaultConfig())
	tun := s.LoadTunnel(TunnelName("acme"))
	s.LoadDNSRecord(cloudsim.DNSRecord{Name: "acme", Type: "CNAME", Content: tun.ID + ".cfargotunnel.com",
		Proxied: true, Comment: DNSComment("acme")})
	param := ParamName(DefaultParamPrefix, "acme")
	tags := map[string]string{TagManagedBy: ManagedBy, TagOrgID: "acme", TagTunnelID: tun.ID, TagGeneration: "3",
		TagName: InstanceName("acme")}
	ud := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\nTUNNEL_TOKEN_PARAMETER='" + param + "'\n"))
	inst := s.LoadInstance(cloudsim.Instance{ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro", UserData: ud, Tags: tags})
	s.LoadParameter(cloudsim.Parameter{Name: param, Type: "SecureString", Value: cloudsim.TunnelToken(tun),
		Tags: map[string]string{TagManagedBy: ManagedBy, TagOrgID: "acme", TagInstanceArn: s.InstanceARN(inst)}})

	if v := s.CheckInvariants([]string{"acme:3"}); len(v) != 0 {
		t.Fatalf("a world named by this package, org acme at generation 3: %+v", v)
	}
	var orphans []string
	for _, v := range s.CheckInvariants([]string{}) {
		if v.Kind == cloudsim.ViolationOrphan && v.Org == "acme" {
			orphans = append(orphans, strings.SplitN(v.Resource, ":", 2)[0])
		}
	}
	sort.Strings(orphans)
	if got := strings.Join(orphans, ","); got != "dns_record,instance,parameter,tunnel" {
		t.Fatalf("orphans of acme the emulator recognises: %q, want every resource", got)
	}
	if v := s.CheckInvariants([]string{"acme:4"}); len(v) != 1 || v[0].Kind != cloudsim.ViolationStaleGeneration {
		t.Fatalf("Generation tag not read as the emulator's: %+v", v)
	}
}

func TestClientToken(t *testing.T) {
	a := ClientToken("acme", 1, 0)
	if a != "tw-acme-g1-a0" || a != ClientToken("acme", 1, 0) {
		t.Fatalf("token %q not readable/deterministic", a)
	}
	seen := map[string]bool{}
	for _, tok := range []string{a, ClientToken("acme", 2, 0), ClientToken("acme", 1, 1), ClientToken("acme1", 1, 0), ClientToken("acm", 11, 0)} {
		if seen[tok] {
			t.Fatalf("collision on %q", tok)
		}
		seen[tok] = true
	}
	long := strings.Repeat("o", 63)
	l1, l2 := ClientToken(long, 1, 0), ClientToken(long, 2, 0)
	if len(l1) != 64 || l1 == l2 || l1 != ClientToken(long, 1, 0) {
		t.Fatalf("long org tokens %q %q", l1, l2)
	}
	for _, tok := range []string{l1, ClientToken(long[:50], 123456789, 99)} {
		if len(tok) > 64 {
			t.Fatalf("token %q longer than 64", tok)
		}
	}
}
