package cloudsim

import "strings"

// Resolution is what a client resolving a name in one of the emulated zones
// would reach: the address record (A, AAAA) or CNAME Cloudflare answers
// with, and for a CNAME to <tunnel-id>.cfargotunnel.com the tunnel behind
// it and whether it serves the name. GET /_sim/resolve?name=<fqdn> shows
// it; Sim.Resolve returns it.
type Resolution struct {
	Name  string `json:"name"`  // the name asked, lowercase, without a trailing dot
	Found bool   `json:"found"` // an A, AAAA or CNAME record has the name
	// ZoneID and ZoneName: the served zone the name falls in (the record's
	// zone when found; the longest served zone name the name ends in
	// otherwise, "" when none).
	ZoneID   string `json:"zone_id,omitempty"`
	ZoneName string `json:"zone_name,omitempty"`
	// The record answered: a CNAME when the name has one (it shares its
	// name with no A or AAAA), else an A before an AAAA; among several of
	// one type, the smallest record id. Records counts the name's A, AAAA
	// and CNAME records.
	RecordID string `json:"record_id,omitempty"`
	Type     string `json:"type,omitempty"`
	Content  string `json:"content,omitempty"`
	Proxied  bool   `json:"proxied"`
	Records  int    `json:"records"`
	// TunnelID is the tunnel a CNAME to <id>.cfargotunnel.com names ("" for
	// any other record). TunnelStatus is its v4 status (inactive, healthy,
	// degraded, down) while it is live, "" when it is missing or deleted.
	TunnelID     string `json:"tunnel_id,omitempty"`
	TunnelStatus string `json:"tunnel_status,omitempty"`
	// TunnelHealthy: a client reaching the name gets through the tunnel to
	// an origin: the record is proxied, the tunnel is live, belongs to the
	// zone's account and has at least one connection (healthy or
	// degraded). Reason says why not, "" when healthy or not a tunnel CNAME.
	TunnelHealthy bool   `json:"tunnel_healthy"`
	Reason        string `json:"reason,omitempty"`
}

// Reasons a tunnel CNAME leads nowhere (Resolution.Reason).
const (
	ResolveNotProxied    = "record is not proxied: <id>.cfargotunnel.com does not resolve outside Cloudflare"
	ResolveNoTunnel      = "tunnel does not exist"
	ResolveTunnelDeleted = "tunnel is deleted"
	ResolveOtherAccount  = "tunnel belongs to another account than the record's zone"
	ResolveNoConnections = "tunnel has no connections"
)

// Resolve says what a client resolving name (a fully qualified name; case
// and a trailing dot do not matter) would reach, after advancing the world
// as a request does. It is cheap enough to poll: one pass over the records
// under the lock, nothing allocated beyond the answer.
func (s *Sim) Resolve(name string) Resolution {
	name = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick()
	res := Resolution{Name: name}
	var best *DNSRecord
	for _, r := range s.dnsRecords {
		if r.Name != name {
			continue
		}
		rank := resolveRank(r.Type)
		if rank == 0 {
			continue
		}
		res.Records++
		if best == nil || rank < resolveRank(best.Type) || (rank == resolveRank(best.Type) && r.ID < best.ID) {
			best = r
		}
	}
	if best == nil {
		res.ZoneID, res.ZoneName = s.zoneOfName(name)
		return res
	}
	zone := s.zoneOrFirst(best.ZoneID)
	z := s.cf.zones[zone]
	res.Found = true
	res.ZoneID, res.ZoneName = zone, z.name
	res.RecordID, res.Type, res.Content, res.Proxied = best.ID, best.Type, best.Content, best.Proxied
	tid := cnameTunnel(best)
	if tid == "" {
		return res
	}
	res.TunnelID = tid
	t := s.tunnels[tid]
	switch {
	case t == nil:
		res.Reason = ResolveNoTunnel
	case t.DeletedAt != nil:
		res.Reason = ResolveTunnelDeleted
	default:
		res.TunnelStatus = s.tunnelStatus(t)
		switch {
		case s.accountOrFirst(t.AccountTag) != z.account:
			res.Reason = ResolveOtherAccount
		case !best.Proxied:
			res.Reason = ResolveNotProxied
		case len(t.Connections) == 0:
			res.Reason = ResolveNoConnections
		default:
			res.TunnelHealthy = true
		}
	}
	return res
}

// resolveRank orders the record types a name resolves through: a CNAME
// (alone at its name), then A, then AAAA; 0 for any other type.
func resolveRank(typ string) int {
	switch typ {
	case "CNAME":
		return 1
	case "A":
		return 2
	case "AAAA":
		return 3
	}
	return 0
}

// zoneOfName is the served zone whose name is the longest suffix of name
// (the name itself or a parent), "" when none. Caller holds mu.
func (s *Sim) zoneOfName(name string) (id, zoneName string) {
	for _, zid := range s.cf.order {
		zn := s.cf.zones[zid].name
		if zn == "" || len(zn) <= len(zoneName) {
			continue
		}
		if name == zn || (strings.HasSuffix(name, zn) && name[len(name)-len(zn)-1] == '.') {
			id, zoneName = zid, zn
		}
	}
	return id, zoneName
}
