package cloudsim

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
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
)

// Violation is one broken invariant. Resource is "<kind>:<id>" (tunnel,
// dns_record, instance, parameter, command).
type Violation struct {
	Kind     string `json:"kind"`
	Org      string `json:"org"`
	Resource string `json:"resource"`
	Detail   string `json:"detail"`
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
// should exist; nil checks only the structural invariants (duplicates,
// dangling records, tokens outside SSM). A clean world gives an empty list.
func (s *Sim) CheckInvariants(orgs []string) []Violation {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick()
	return s.checkLocked(orgs)
}

func (s *Sim) checkLocked(orgs []string) []Violation {
	out := []Violation{}
	add := func(kind, org, res, format string, args ...any) {
		out = append(out, Violation{Kind: kind, Org: org, Resource: res, Detail: fmt.Sprintf(format, args...)})
	}
	var want map[string]bool
	if orgs != nil {
		want = map[string]bool{}
		for _, o := range orgs {
			want[o] = true
		}
	}
	orphan := func(org, res, what string) {
		if want != nil && org != "" && !want[org] {
			add(ViolationOrphan, org, res, "%s belongs to org %q, which should not exist", what, org)
		}
	}

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
			}
		}
		orphan(org, "dns_record:"+id, fmt.Sprintf("DNS record %s", r.Name))
	}
	for _, org := range sortedKeys(tunnelsOf) {
		if ids := sortedKeys(tunnelsOf[org]); len(ids) > 1 {
			add(ViolationDupTunnel, org, "tunnel:"+strings.Join(ids, ","), "org has %d live tunnels", len(ids))
		}
	}

	// Instances: at most one live per org.
	instOf := map[string][]string{}
	for _, id := range sortedKeys(s.instances) {
		inst := s.instances[id]
		org := instanceOrg(inst)
		if org == "" || !liveInstance(inst) {
			continue
		}
		instOf[org] = append(instOf[org], id)
		orphan(org, "instance:"+id, fmt.Sprintf("%s instance", inst.State))
	}
	for _, org := range sortedKeys(instOf) {
		if ids := instOf[org]; len(ids) > 1 {
			add(ViolationDupInstance, org, "instance:"+strings.Join(ids, ","), "org has %d live instances", len(ids))
		}
	}
	for _, name := range sortedKeys(s.params) {
		orphan(paramOrg(s.params[name]), "parameter:"+name, "parameter")
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
	for _, name := range sortedKeys(s.params) {
		p := s.params[name]
		org := paramOrg(p)
		scan("parameter:"+name, org, "the parameter name/description", name+"\n"+p.Description)
		for _, k := range sortedKeys(p.Tags) {
			scan("parameter:"+name, org, "tag "+k, k+"="+p.Tags[k])
		}
		if p.Type != "SecureString" {
			scan("parameter:"+name, org, "a "+p.Type+" parameter value (not SecureString)", p.Value)
		}
	}
	for _, id := range sortedKeys(s.commands) {
		c := s.commands[id]
		scan("command:"+id, "", "SSM command text", strings.Join(c.Commands, "\n")+"\n"+c.Comment)
	}
}
