package cloudsim

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// Bulk loading: resources put straight into the world through Go, without
// HTTP, so a benchmark or a large-fleet test can start from thousands of
// converged orgs in milliseconds instead of replaying thousands of API
// calls. Loaded resources are not counted in Calls() and meet no faults or
// rate limits. They are otherwise ordinary: the APIs list, read, change and
// delete them like any other, and a loaded instance runs its simulated
// cloudflared exactly as a booted one does.
//
// The loaders skip the per-request checks that cost O(resources) each (DNS
// name conflicts, tunnel name uniqueness) and the quotas (records per zone,
// tunnels per account): the caller loads a consistent world (one tunnel
// name per account, one record name per zone).

// LoadTunnel adds a remotely managed tunnel to the first identity's account
// and returns it (its id and, via TunnelToken, its token).
func (s *Sim) LoadTunnel(name string) *Tunnel {
	return s.LoadTunnelIn(s.cf.first.AccountID, name)
}

// LoadTunnelIn adds a remotely managed tunnel to account, one of the
// identities' accounts (another panics: a world no token can reach is a
// caller's mistake), and returns it. The account's tunnel quota is not
// checked.
func (s *Sim) LoadTunnelIn(account, name string) *Tunnel {
	if !s.cf.accounts[account] && account != s.cf.first.AccountID {
		panic(fmt.Sprintf("cloudsim: LoadTunnelIn: account %q is not one of the Cloudflare identities' accounts", account))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed()
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	t := &Tunnel{
		ID: s.newUUID(), AccountTag: account, Name: name, ConfigSrc: "cloudflare",
		Secret: base64.StdEncoding.EncodeToString(raw), CreatedAt: s.now(), Metadata: map[string]any{},
	}
	s.tunnels[t.ID] = t
	return t
}

// LoadTunnelConfig sets a loaded tunnel's ingress rules, as a PUT of its
// configuration would.
func (s *Sim) LoadTunnelConfig(tunnelID string, ingress []IngressRule) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed()
	t := s.tunnels[tunnelID]
	if t == nil {
		return fmt.Errorf("load tunnel config: no tunnel %s", tunnelID)
	}
	t.Config = &TunnelConfig{Ingress: append([]IngressRule(nil), ingress...)}
	t.ConfigVersion++
	return nil
}

// LoadDNSRecord adds a record to r.ZoneID, one of the identities' zones (the
// first identity's when empty; another panics), and returns its id; ID and
// times are filled in. A name not in the zone gets the zone's name
// appended, as on create.
func (s *Sim) LoadDNSRecord(r DNSRecord) string {
	r.ZoneID = s.zoneOrFirst(r.ZoneID)
	zone, ok := s.cf.zones[r.ZoneID]
	if !ok {
		if r.ZoneID != s.cf.first.ZoneID {
			panic(fmt.Sprintf("cloudsim: LoadDNSRecord: zone %q is not one of the Cloudflare identities' zones", r.ZoneID))
		}
		zone.name = normZone(s.cf.first.ZoneName) // a Config without a zone id
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed()
	r.Name = strings.ToLower(strings.TrimSuffix(r.Name, "."))
	if zone.name != "" && r.Name != zone.name && !strings.HasSuffix(r.Name, "."+zone.name) {
		r.Name += "." + zone.name
	}
	if r.TTL == 0 {
		r.TTL = 1
	}
	now := s.now()
	r.ID, r.CreatedOn, r.ModifiedOn = s.newHex(32), now, now
	rec := r
	s.dnsRecords[rec.ID] = &rec
	return rec.ID
}

// LoadParameter adds (or replaces) an SSM parameter in p.Region (the home
// region when empty); Version, tier and data type default as PutParameter
// sets them.
func (s *Sim) LoadParameter(p Parameter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed()
	if p.Version == 0 {
		p.Version = 1
	}
	if p.Tier == "" {
		p.Tier = "Standard"
	}
	if p.DataType == "" {
		p.DataType = "text"
	}
	if p.Tags == nil {
		p.Tags = map[string]string{}
	}
	p.LastModifiedDate = s.now()
	s.setParam(&p)
}

// LoadInstance adds a running instance (ID, reservation, IP and times are
// filled in) and starts its simulated cloudflared, which reads the token
// parameter its user-data names and connects the tunnel after the connect
// delay, exactly as after a boot. It runs in inst.Region (the home region
// when empty; give one of Config.Regions). It returns the instance id.
func (s *Sim) LoadInstance(inst Instance) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed()
	s.seq++
	now := s.now()
	in := inst
	in.ID, in.ReservationID = "i-"+s.newHex(17), "r-"+s.newHex(17)
	in.State, in.LaunchTime, in.StateChangedAt = "running", now, now
	in.PrivateIP = fmt.Sprintf("10.0.%d.%d", (s.seq/250)%250, s.seq%250+2)
	in.Tags = copyTags(inst.Tags)
	if in.Region == "" {
		in.Region = s.region()
	}
	in.SecurityGroupIDs = append([]string(nil), inst.SecurityGroupIDs...)
	s.instances[in.ID] = &in
	s.reservation[in.ReservationID] = []string{in.ID}
	s.instanceRunning(&in)
	return in.ID
}
