package cloudsim

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The invariant checker reads the world through the ownership conventions
// written down in hooks.go and reports leaks, duplicates, dangling records
// and tokens outside SSM.

// Violation kinds.
const (
	ViolationOrphan         = "orphan"             // an owned resource whose org should not exist
	ViolationDupTunnel      = "duplicate_tunnel"   // more than one live tunnel for one org
	ViolationDupInstance    = "duplicate_instance" // more than one live instance for one org
	ViolationDanglingDNS    = "dangling_dns"       // CNAME to a tunnel that is missing or deleted
	ViolationTokenOutsideSM = "token_outside_ssm"  // a tunnel token (or its secret) outside an SSM SecureString
	// ViolationDupParameter: an org has more than one token parameter,
	// counted across every region (the same name in two regions is two).
	ViolationDupParameter = "duplicate_parameter"
	// ViolationRegionMismatch: an org's live instance runs in a region that
	// holds none of the org's token parameters while another region does;
	// its cloudflared reads SSM in its own region, so it can never connect.
	ViolationRegionMismatch = "region_mismatch"
	// ViolationNoGeneration: a live instance of an org named with its
	// generation carries no numeric Generation tag, so a re-created org
	// cannot tell it from its own.
	ViolationNoGeneration = "missing_generation"
	// ViolationStaleGeneration: an org named with its generation ("acme:2")
	// runs an instance of another generation: a re-created org inherited the
	// old org's instance.
	ViolationStaleGeneration = "stale_generation"
)

// Violation is one broken invariant. Resource is "<kind>:<id>" (tunnel,
// dns_record, instance, parameter, command); a parameter outside the home
// region is "parameter:<name>@<region>".
type Violation struct {
	Kind     string `json:"kind"`
	Org      string `json:"org"`
	Resource string `json:"resource"`
	Detail   string `json:"detail"`
	// Region is the AWS region of the instance or parameter concerned, ""
	// for Cloudflare resources and for violations that span regions.
	Region string `json:"region,omitempty"`
}

const (
	tunnelNamePrefix = "tw-"
	ownerCommentKey  = "tunnelward:org="
	tunnelCNAMESufx  = ".cfargotunnel.com"
)

var paramNameOrgRe = regexp.MustCompile(`/([a-z0-9-]{1,63})/tunnel-token$`)

// tunnelOrg is the org a tunnel name says it belongs to, "" if not ours.
func tunnelOrg(t *Tunnel) string {
	if org, ok := strings.CutPrefix(t.Name, tunnelNamePrefix); ok {
		return org
	}
	return ""
}

// recordOrg is the org an ownership comment names, "" if not ours.
func recordOrg(r *DNSRecord) string {
	rest, ok := strings.CutPrefix(r.Comment, ownerCommentKey)
	if !ok {
		return ""
	}
	org, _, _ := strings.Cut(rest, " ")
	return org
}

// instanceOrg is the OrgID tag of an instance tunnelward manages.
func instanceOrg(inst *Instance) string {
	if inst.Tags["ManagedBy"] != "tunnelward" {
		return ""
	}
	return inst.Tags["OrgID"]
}

// paramOrg is the org of a parameter: its tags, else its conventional name.
func paramOrg(p *Parameter) string {
	if p.Tags["ManagedBy"] == "tunnelward" && p.Tags["OrgID"] != "" {
		return p.Tags["OrgID"]
	}
	if m := paramNameOrgRe.FindStringSubmatch(p.Name); m != nil {
		return m[1]
	}
	return ""
}

// cnameTunnel is the tunnel id a CNAME points at, "" if not a tunnel CNAME.
func cnameTunnel(r *DNSRecord) string {
	if r.Type != "CNAME" {
		return ""
	}
	id, ok := strings.CutSuffix(strings.ToLower(r.Content), tunnelCNAMESufx)
	if !ok {
		return ""
	}
	return id
}

// CheckInvariants reports every broken invariant. orgs names the orgs that
// should exist, each optionally with its generation ("acme:2": its live
// instance must carry the tag Generation=2); nil checks only the structural
// invariants (duplicates, dangling records, tokens outside SSM). A clean
// world gives an empty list.
func (s *Sim) CheckInvariants(orgs []string) []Violation {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick()
	return s.checkLocked(orgs)
}

func (s *Sim) checkLocked(orgs []string) []Violation {
	out := []Violation{}
	addIn := func(region, kind, org, res, format string, args ...any) {
		out = append(out, Violation{Kind: kind, Org: org, Resource: res, Detail: fmt.Sprintf(format, args...), Region: region})
	}
	add := func(kind, org, res, format string, args ...any) { addIn("", kind, org, res, format, args...) }
	var want map[string]bool
	wantGen := map[string]string{}
	if orgs != nil {
		want = map[string]bool{}
		for _, o := range orgs {
			o, gen, _ := strings.Cut(o, ":")
			want[o] = true
			if gen != "" {
				wantGen[o] = gen
			}
		}
	}
	orphanIn := func(region, org, res, what string) {
		if want != nil && org != "" && !want[org] {
			addIn(region, ViolationOrphan, org, res, "%s belongs to org %q, which should not exist", what, org)
		}
	}
	orphan := func(org, res, what string) { orphanIn("", org, res, what) }

	// Tunnels per org: by name, and by what points at them (an instance's
	// TunnelID tag, an owned CNAME), so a second tunnel under another name
	// is still seen as the org's.
	tunnelsOf := map[string]map[string]bool{}
	link := func(org, tunnelID string) {
		t := s.tunnels[tunnelID]
		if org == "" || t == nil || t.DeletedAt != nil {
			return
		}
		if tunnelsOf[org] == nil {
			tunnelsOf[org] = map[string]bool{}
		}
		tunnelsOf[org][tunnelID] = true
	}
	for _, id := range sortedKeys(s.tunnels) {
		t := s.tunnels[id]
		if t.DeletedAt != nil {
			continue
		}
		org := tunnelOrg(t)
		link(org, id)
		orphan(org, "tunnel:"+id, fmt.Sprintf("live tunnel %q", t.Name))
	}
	for _, id := range sortedKeys(s.instances) {
		inst := s.instances[id]
		if org := instanceOrg(inst); org != "" && liveInstance(inst) {
			link(org, inst.Tags["TunnelID"])
		}
	}
	for _, id := range sortedKeys(s.dnsRecords) {
		r := s.dnsRecords[id]
		org := recordOrg(r)
		if tid := cnameTunnel(r); tid != "" {
			link(org, tid)
			t := s.tunnels[tid]
			switch {
			case t == nil:
				add(ViolationDanglingDNS, org, "dns_record:"+id, "%s CNAME points at tunnel %s, which does not exist", r.Name, tid)
			case t.DeletedAt != nil:
				add(ViolationDanglingDNS, org, "dns_record:"+id, "%s CNAME points at tunnel %s (%s), deleted at %s", r.Name, tid, t.Name, cfTime(*t.DeletedAt))
			default:
				// Cloudflare routes a tunnel's hostname only in a zone of the
				// tunnel's own account: across accounts the CNAME leads nowhere.
				zone := s.zoneOrFirst(r.ZoneID)
				if z, ok := s.cf.zones[zone]; ok && z.account != s.accountOrFirst(t.AccountTag) {
					add(ViolationDanglingDNS, org, "dns_record:"+id, "%s CNAME in zone %s (account %s) points at tunnel %s (%s) of account %s: a tunnel is reachable only from a zone of its own account",
						r.Name, z.name, z.account, tid, t.Name, s.accountOrFirst(t.AccountTag))
				}
			}
		}
		orphan(org, "dns_record:"+id, fmt.Sprintf("DNS record %s", r.Name))
	}
	// Counted across accounts: an org lives in one pool (account and
	// zone), so a live tunnel in each of two accounts is a duplicate too.
	for _, org := range sortedKeys(tunnelsOf) {
		if ids := sortedKeys(tunnelsOf[org]); len(ids) > 1 {
			accounts := map[string]bool{}
			var where []string
			for _, tid := range ids {
				a := s.accountOrFirst(s.tunnels[tid].AccountTag)
				accounts[a] = true
				where = append(where, tid+" in account "+a)
			}
			if len(accounts) > 1 {
				add(ViolationDupTunnel, org, "tunnel:"+strings.Join(ids, ","), "org has %d live tunnels, in %d accounts (%s)", len(ids), len(accounts), strings.Join(where, ", "))
			} else {
				add(ViolationDupTunnel, org, "tunnel:"+strings.Join(ids, ","), "org has %d live tunnels", len(ids))
			}
		}
	}

	// Instances: at most one live per org, across every region (two in
	// different regions are as much a duplicate as two in one).
	instOf := map[string][]*Instance{}
	for _, id := range sortedKeys(s.instances) {
		inst := s.instances[id]
		org := instanceOrg(inst)
		if org == "" || !liveInstance(inst) {
			continue
		}
		instOf[org] = append(instOf[org], inst)
		orphanIn(s.regionOf(inst), org, "instance:"+id, fmt.Sprintf("%s instance in %s", inst.State, s.regionOf(inst)))
		// Checked only for orgs named with their generation: other clients of
		// the emulator need not tag generations at all.
		gen := inst.Tags["Generation"]
		if w := wantGen[org]; w != "" {
			if _, err := strconv.ParseInt(gen, 10, 64); err != nil {
				addIn(s.regionOf(inst), ViolationNoGeneration, org, "instance:"+id, "%s instance has no numeric Generation tag (%q); the org is at generation %s", inst.State, gen, w)
			} else if gen != w {
				addIn(s.regionOf(inst), ViolationStaleGeneration, org, "instance:"+id, "instance is of generation %s, the org is at generation %s", gen, w)
			}
		}
	}
	for _, org := range sortedKeys(instOf) {
		if insts := instOf[org]; len(insts) > 1 {
			ids, where, region := s.placesOfInstances(insts)
			addIn(region, ViolationDupInstance, org, "instance:"+strings.Join(ids, ","), "org has %d live instances (%s)", len(insts), where)
		}
	}

	// Token parameters: at most one per org across every region, and in
	// the region of the org's live instance.
	paramsOf := map[string][]*Parameter{}
	for _, p := range s.allParams() {
		org := paramOrg(p)
		orphanIn(p.Region, org, s.paramRes(p), "parameter in "+p.Region)
		if org != "" {
			paramsOf[org] = append(paramsOf[org], p)
		}
	}
	for _, org := range sortedKeys(paramsOf) {
		ps := paramsOf[org]
		if len(ps) > 1 {
			var res, where []string
			regions := map[string]bool{}
			for _, p := range ps {
				res = append(res, strings.TrimPrefix(s.paramRes(p), "parameter:"))
				where = append(where, p.Name+" in "+p.Region)
				regions[p.Region] = true
			}
			region := ""
			if len(regions) == 1 {
				region = ps[0].Region
			}
			addIn(region, ViolationDupParameter, org, "parameter:"+strings.Join(res, ","), "org has %d token parameters (%s)", len(ps), strings.Join(where, ", "))
		}
		for _, inst := range instOf[org] {
			ir := s.regionOf(inst)
			var elsewhere []string
			local := false
			for _, p := range ps {
				if p.Region == ir {
					local = true
					break
				}
				elsewhere = append(elsewhere, p.Name+" in "+p.Region)
			}
			if !local {
				addIn(ir, ViolationRegionMismatch, org, "instance:"+inst.ID,
					"instance %s runs in %s but the org's token parameter is %s: its cloudflared reads SSM in %s and can never fetch the token",
					inst.ID, ir, strings.Join(elsewhere, ", "), ir)
			}
		}
	}

	s.checkTokensLocked(add)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Resource < out[j].Resource
	})
	return out
}

// checkTokensLocked finds a token, or the secret inside it, anywhere but the
// value of a SecureString parameter: user-data, tags, names, DNS content
// and comments, parameter names and plain parameters, SSM command text.
func (s *Sim) checkTokensLocked(add func(kind, org, res, format string, args ...any)) {
	type secret struct{ tunnel, org, token, raw string }
	var secrets []secret
	for _, id := range sortedKeys(s.tunnels) {
		t := s.tunnels[id]
		secrets = append(secrets, secret{id, tunnelOrg(t), TunnelToken(t), t.Secret})
	}
	scan := func(res, org, where, text string) {
		if text == "" {
			return
		}
		for _, sc := range secrets {
			if strings.Contains(text, sc.token) || (sc.raw != "" && strings.Contains(text, sc.raw)) {
				if org == "" {
					org = sc.org
				}
				add(ViolationTokenOutsideSM, org, res, "the token of tunnel %s appears in %s", sc.tunnel, where)
			}
		}
	}
	for _, id := range sortedKeys(s.tunnels) {
		t := s.tunnels[id]
		scan("tunnel:"+id, tunnelOrg(t), "the tunnel name", t.Name)
		if t.Config != nil {
			cfg, _ := json.Marshal(s.tunnelConfigJSON(t))
			scan("tunnel:"+id, tunnelOrg(t), "the tunnel configuration", string(cfg))
		}
	}
	for _, id := range sortedKeys(s.dnsRecords) {
		r := s.dnsRecords[id]
		scan("dns_record:"+id, recordOrg(r), "the record name/content/comment", r.Name+"\n"+r.Content+"\n"+r.Comment)
	}
	for _, id := range sortedKeys(s.instances) {
		inst := s.instances[id]
		org := instanceOrg(inst)
		scan("instance:"+id, org, "user-data", inst.UserData+"\n"+decodeUserData(inst.UserData))
		for _, k := range sortedKeys(inst.Tags) {
			scan("instance:"+id, org, "tag "+k, k+"="+inst.Tags[k])
		}
	}
	for _, p := range s.allParams() {
		org, res := paramOrg(p), s.paramRes(p)
		scan(res, org, "the parameter name/description", p.Name+"\n"+p.Description)
		for _, k := range sortedKeys(p.Tags) {
			scan(res, org, "tag "+k, k+"="+p.Tags[k])
		}
		if p.Type != "SecureString" {
			scan(res, org, "a "+p.Type+" parameter value (not SecureString)", p.Value)
		}
	}
	for _, id := range sortedKeys(s.commands) {
		c := s.commands[id]
		scan("command:"+id, "", "SSM command text", strings.Join(c.Commands, "\n")+"\n"+c.Comment)
	}
}

// placesOfInstances lists insts' ids, says where each runs, and gives their
// region when they share one ("" when they span regions). Caller holds mu.
func (s *Sim) placesOfInstances(insts []*Instance) (ids []string, where string, region string) {
	regions := map[string]bool{}
	var parts []string
	for _, inst := range insts {
		r := s.regionOf(inst)
		ids = append(ids, inst.ID)
		parts = append(parts, inst.ID+" in "+r)
		regions[r] = true
	}
	if len(regions) == 1 {
		region = s.regionOf(insts[0])
	}
	return ids, strings.Join(parts, ", "), region
}
