package cloudsim

import (
	"encoding/base64"
	"testing"
	"time"
)

// A world loaded through the Go loaders behaves like one built through the
// APIs: the loaded instance's cloudflared reads the loaded parameter and
// connects the loaded tunnel, the invariant checker sees one clean org, and
// nothing was counted as an API call.
func TestPreloadedOrgConnectsAndIsClean(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ConnectDelay = 0
	s := New(cfg)

	tun := s.LoadTunnel("tw-acme")
	if err := s.LoadTunnelConfig(tun.ID, []IngressRule{{Hostname: "acme." + cfg.ZoneName, Service: "http://localhost:8080"}, {Service: "http_status:404"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.LoadTunnelConfig("no-such-tunnel", nil); err == nil {
		t.Error("LoadTunnelConfig of an unknown tunnel: no error")
	}
	rec := s.LoadDNSRecord(DNSRecord{Name: "acme", Type: "CNAME", Content: tun.ID + ".cfargotunnel.com", Proxied: true, Comment: "tunnelward:org=acme"})
	param := "/tunnelward/tunnels/acme/tunnel-token"
	tags := map[string]string{"ManagedBy": "tunnelward", "OrgID": "acme", "TunnelID": tun.ID}
	ud := base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\nTUNNEL_TOKEN_PARAMETER='" + param + "'\n"))
	inst := s.LoadInstance(Instance{ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro", UserData: ud,
		Tags: tags, IamInstanceProfile: "tunnelward-instance"})
	// The instance first, so the parameter can carry its ARN: the loaded
	// cloudflared reads it on the next tick, and the role's policy wants it.
	ptags := map[string]string{TagInstanceArn: s.InstanceARN(inst)}
	for k, v := range tags {
		ptags[k] = v
	}
	s.LoadParameter(Parameter{Name: param, Type: "SecureString", Value: TunnelToken(tun), Tags: ptags})

	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.State()
		if len(st.Tunnels) == 1 && st.Tunnels[0]["status"] == "healthy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("loaded tunnel never became healthy: %+v connectors %+v", st.Tunnels, st.Connectors)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := s.State()
	if len(st.DNSRecords) != 1 || st.DNSRecords[0]["id"] != rec || st.DNSRecords[0]["name"] != "acme."+cfg.ZoneName {
		t.Errorf("dns records %+v, want one %s named acme.%s", st.DNSRecords, rec, cfg.ZoneName)
	}
	if len(st.Instances) != 1 || st.Instances[0]["InstanceId"] != inst {
		t.Errorf("instances %+v, want %s", st.Instances, inst)
	}
	if v := s.CheckInvariants([]string{"acme"}); len(v) != 0 {
		t.Errorf("invariant violations on a consistent loaded world: %+v", v)
	}
	if v := s.CheckInvariants([]string{}); len(v) == 0 {
		t.Error("with no org expected, the loaded resources are not reported as orphans")
	}
	if n := len(s.Calls()); n != 0 {
		t.Errorf("loading counted %d operations as API calls: %v", n, s.Calls())
	}
}
