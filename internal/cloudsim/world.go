package cloudsim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// The simulated world: every EC2 instance that reaches running runs a
// simulated cloudflared ("connector"). Like the real systemd unit written by
// the user-data, it reads the SSM parameter the user-data names, with the
// instance role, and runs the tunnel whose token it finds; it keeps retrying
// every RetryInterval while the parameter is missing or the token is bad, so
// a token written late still works. Nothing here runs on a timer: events are
// scheduled on the world's clock and fire on the next request (tick).

const (
	connsPerConnector  = 4 // a healthy cloudflared holds 4 edge connections
	cloudflaredVersion = "2025.11.1"
)

var (
	tokenParamRe = regexp.MustCompile(`(?m)^\s*(?:export\s+)?TUNNEL_TOKEN_PARAMETER=["']?([^"'\s]+)["']?`)
	colos        = []string{"iad08", "iad12", "ewr01", "ewr05"}
)

// decodeUserData returns the user-data script: the API carries it base64.
func decodeUserData(ud string) string {
	if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ud)); err == nil {
		return string(b)
	}
	return ud
}

// TokenParameterOf returns the parameter name the user-data names, if any.
func TokenParameterOf(userData string) string {
	m := tokenParamRe.FindStringSubmatch(decodeUserData(userData))
	if m == nil {
		return ""
	}
	return m[1]
}

// connectorOf returns (creating it) the connector of inst. Caller holds mu.
func (s *Sim) connectorOf(inst *Instance) *Connector {
	c := s.connectors[inst.ID]
	if c == nil {
		c = &Connector{InstanceID: inst.ID, ClientID: s.newUUID()}
		s.connectors[inst.ID] = c
	}
	return c
}

// instanceRunning starts the simulated cloudflared of inst. Caller holds s.mu.
// The connector starts at the instance's own state-change time, not at the
// (possibly later) tick that noticed it, so the world does not depend on
// when someone happened to look.
func (s *Sim) instanceRunning(inst *Instance) {
	at := inst.StateChangedAt
	if at.IsZero() || at.After(s.now()) {
		at = s.now()
	}
	s.startConnectorAt(s.connectorOf(inst), at)
}

// instanceDown drops the connector of inst. Caller holds s.mu.
func (s *Sim) instanceDown(inst *Instance) {
	if c := s.connectors[inst.ID]; c != nil {
		s.stopConnector(c, "instance "+inst.State)
	}
}

// startConnector (re)starts the process now. Caller holds mu.
func (s *Sim) startConnector(c *Connector) { s.startConnectorAt(c, s.now()) }

// startConnectorAt (re)starts the process at at: drop what it held, then
// try to connect. A restarted process is a new connector: cloudflared draws
// a new connector id at every start. Caller holds mu.
func (s *Sim) startConnectorAt(c *Connector, at time.Time) {
	s.stopConnector(c, "")
	if !c.RunAt.IsZero() { // it ran before: this is a restart
		c.ClientID = s.newUUID()
	}
	if c.Broken {
		c.RunAt = at
		c.LastError = "cloudflared exited at start (instance broken out of band)"
		return
	}
	c.Running = true
	c.RunAt = at
	c.Attempts = 0
	c.LastError = ""
	gen := c.gen
	s.schedule(at, event{Kind: evConnectAttempt, Instance: c.InstanceID, Gen: gen})
}

// stopConnector stops the process and closes its connections. Caller holds mu.
func (s *Sim) stopConnector(c *Connector, why string) {
	c.gen++
	if c.Running && why != "" {
		c.LastError = why
	}
	c.Running = false
	c.Connected = false
	if c.TunnelID != "" {
		if t := s.tunnels[c.TunnelID]; t != nil {
			s.removeConns(t, c.ClientID)
		}
	}
}

// connectAttempt is one try of the connector: read the parameter, check the
// token, then connect after ConnectDelay. With held, the process is running
// and dials again with the token it already holds (it does not read SSM
// again); the edge refuses it if the tunnel is gone or its secret has been
// rotated since. Caller holds mu.
func (s *Sim) connectAttempt(c *Connector, gen int, at time.Time, held bool) {
	if c.gen != gen || !c.Running {
		return
	}
	c.Attempts++
	if held {
		if why := s.heldTokenRefused(c); why != "" {
			s.refusedAtEdge(c, gen, at, why)
			return
		}
		s.schedule(at.Add(s.cfg.ConnectDelay), event{Kind: evConnectOpen, Instance: c.InstanceID, Gen: gen})
		return
	}
	t, err := s.resolveToken(c)
	if err != nil {
		c.LastError = err.Error()
		c.TunnelID = ""
		s.schedule(at.Add(s.cfg.RetryInterval), event{Kind: evConnectAttempt, Instance: c.InstanceID, Gen: gen})
		return
	}
	c.TunnelID = t.ID
	c.TokenGen = t.SecretGen
	s.schedule(at.Add(s.cfg.ConnectDelay), event{Kind: evConnectOpen, Instance: c.InstanceID, Gen: gen})
}

// heldTokenRefused says why the edge refuses the token c holds (the one it
// authenticated TunnelID with), "" when it accepts it: the tunnel must be
// live and its secret the one c's token carries. Caller holds mu.
func (s *Sim) heldTokenRefused(c *Connector) string {
	t := s.tunnels[c.TunnelID]
	switch {
	case t == nil || t.DeletedAt != nil:
		return "edge refused the tunnel token it holds: the tunnel was deleted"
	case t.SecretGen != c.TokenGen:
		return "edge refused the tunnel token it holds (the tunnel's secret was rotated since it started): Unauthorized: Invalid tunnel secret"
	}
	return ""
}

// refusedAtEdge is a running cloudflared whose held token the edge refused:
// a permanent error, so cloudflared exits, and systemd (Restart=always in
// the unit the user-data writes) starts it again after RetryInterval; its
// ExecStartPre reads the parameter again. The restarted process is a new
// connector (a new client id) and connects only if the parameter now holds
// a valid token; otherwise it keeps failing every RetryInterval, as any
// start with a bad token does. Caller holds mu.
func (s *Sim) refusedAtEdge(c *Connector, gen int, at time.Time, why string) {
	c.Connected = false
	c.LastError = why
	c.ClientID = s.newUUID()
	s.schedule(at.Add(s.cfg.RetryInterval), event{Kind: evConnectAttempt, Instance: c.InstanceID, Gen: gen})
}

// resolveToken is what cloudflared does at start: fetch the token from SSM
// (with the instance role) and authenticate it. Caller holds mu.
func (s *Sim) resolveToken(c *Connector) (*Tunnel, error) {
	inst := s.instances[c.InstanceID]
	if inst == nil {
		return nil, fmt.Errorf("instance gone")
	}
	name := TokenParameterOf(inst.UserData)
	if name == "" {
		return nil, fmt.Errorf("user-data names no TUNNEL_TOKEN_PARAMETER")
	}
	if inst.IamInstanceProfile == "" {
		return nil, fmt.Errorf("ssm GetParameter %s: no instance profile, so no credentials (AccessDenied)", name)
	}
	// cloudflared's fetcher takes the region from IMDS: the instance's own.
	// A parameter of that name in another region does not exist for it.
	region := s.regionOf(inst)
	p := s.params[paramKey{region, name}]
	if s.cfg.InstanceRoleTagPolicy {
		// The policy's condition is evaluated before the parameter is
		// looked up, so a missing parameter is denied too, as in AWS.
		if err := s.instanceRoleMayRead(inst, name, p); err != nil {
			return nil, err
		}
	}
	if p == nil {
		return nil, fmt.Errorf("ssm GetParameter %s: ParameterNotFound (in %s)", name, region)
	}
	acct, id, secret, ok := parseTunnelToken(p.Value)
	if !ok {
		return nil, fmt.Errorf("parameter %s does not hold a tunnel token", name)
	}
	t := s.tunnels[id]
	if t == nil || t.DeletedAt != nil || t.AccountTag != acct || t.Secret != secret {
		return nil, fmt.Errorf("edge refused the tunnel token from %s: Unauthorized: Invalid tunnel secret", name)
	}
	return t, nil
}

// instanceRoleMayRead applies the instance role's policy
// (deploy/iam/instance-role-policy.json) to inst reading parameter name:
// allowed only if p carries tag InstanceArn equal to inst's ARN. Caller
// holds mu.
func (s *Sim) instanceRoleMayRead(inst *Instance, name string, p *Parameter) error {
	want := s.instanceARNIn(s.regionOf(inst), inst.ID)
	if p != nil && p.Tags[TagInstanceArn] == want {
		return nil
	}
	why := "parameter does not exist"
	if p != nil {
		why = "parameter has no " + TagInstanceArn + " tag"
		if got, ok := p.Tags[TagInstanceArn]; ok {
			why = fmt.Sprintf("parameter is tagged %s=%s", TagInstanceArn, got)
		}
	}
	role := inst.IamInstanceProfile
	if i := strings.LastIndex(role, "/"); i >= 0 {
		role = role[i+1:]
	}
	return fmt.Errorf("ssm GetParameter %s: AccessDeniedException: User: arn:aws:sts::%s:assumed-role/%s/%s "+
		"is not authorized to perform: ssm:GetParameter on resource: %s because no identity-based policy allows "+
		"the ssm:GetParameter action (%s; the role's policy wants %s=%s)",
		name, awsAccountID, role, inst.ID, paramARN(s.regionOf(inst), name), why, TagInstanceArn, want)
}

// TagInstanceArn is the parameter tag the instance role's policy matches
// against ${ec2:SourceInstanceARN}.
const TagInstanceArn = "InstanceArn"

// instanceARNIn is the ARN of instance id in region as the instance's own
// requests carry it (${ec2:SourceInstanceARN}): the partition of the
// region, the region, and the owner account DescribeInstances reports
// (ownerId).
func (s *Sim) instanceARNIn(region, id string) string {
	return "arn:" + partitionOf(region) + ":ec2:" + region + ":" + awsAccountID + ":instance/" + id
}

// partitionOf is the ARN partition of region.
func partitionOf(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// InstanceARN is the ARN of instance id, in the region it was launched in:
// the value its token parameter's InstanceArn tag must hold under
// Config.InstanceRoleTagPolicy. An id the world does not know (yet, or any
// more) gets the home region.
func (s *Sim) InstanceARN(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	region := s.region()
	if inst := s.instances[id]; inst != nil {
		region = s.regionOf(inst)
	}
	return s.instanceARNIn(region, id)
}

// connectOpen registers the connector's 4 connections. Caller holds mu.
func (s *Sim) connectOpen(c *Connector, gen int, now time.Time) {
	if c.gen != gen || !c.Running {
		return
	}
	t := s.tunnels[c.TunnelID]
	if t == nil || t.DeletedAt != nil {
		c.LastError = "tunnel deleted before the connector registered"
		s.schedule(now.Add(s.cfg.RetryInterval), event{Kind: evConnectAttempt, Instance: c.InstanceID, Gen: gen})
		return
	}
	if t.SecretGen != c.TokenGen {
		// Rotated between the token read and the registration.
		s.refusedAtEdge(c, gen, now, "edge refused the tunnel token at registration (the tunnel's secret was rotated after it was read): Unauthorized: Invalid tunnel secret")
		return
	}
	s.removeConns(t, c.ClientID)
	origin := "198.51.100.10"
	if inst := s.instances[c.InstanceID]; inst != nil && inst.PrivateIP != "" {
		origin = inst.PrivateIP
	}
	if len(t.Connections) == 0 {
		t.ConnsActiveAt = &now
		t.ConnsInactiveAt = nil
	}
	for i := 0; i < connsPerConnector; i++ {
		t.Connections = append(t.Connections, TunnelConn{
			ID: s.newUUID(), ConnectorID: c.ClientID, ColoName: colos[i%len(colos)], OpenedAt: now, OriginIP: origin,
		})
	}
	t.EverConnected = true
	c.Connected = true
	c.ConnectedAt = now
	c.LastError = ""
}

// removeConns drops the connections of one connector (clientID) or of all
// ("") from t, keeping conns_inactive_at right. Caller holds mu.
func (s *Sim) removeConns(t *Tunnel, clientID string) int {
	kept := t.Connections[:0]
	n := 0
	for _, cn := range t.Connections {
		if clientID == "" || cn.ConnectorID == clientID {
			n++
			continue
		}
		kept = append(kept, cn)
	}
	t.Connections = kept
	if n > 0 && len(t.Connections) == 0 {
		now := s.now()
		t.ConnsInactiveAt = &now
	}
	return n
}

// dropTunnelConns is DELETE .../connections (clientID "" for every
// connector's, else connector clientID's only): the edge closes the
// connections. A cloudflared that is still running dials again at once with
// the token it holds, as the real one does: if that token is still valid
// (the tunnel lives and its secret was not rotated since the process
// started) it is registered again after ConnectDelay under the same client
// id; otherwise the edge refuses it (see refusedAtEdge). Caller holds mu.
func (s *Sim) dropTunnelConns(t *Tunnel, clientID, why string) {
	s.removeConns(t, clientID)
	for _, id := range sortedKeys(s.connectors) { // sorted: events queue in a fixed order
		c := s.connectors[id]
		if c.TunnelID != t.ID || (clientID != "" && c.ClientID != clientID) || !c.Running {
			continue
		}
		c.Connected = false
		c.LastError = why
		c.gen++
		s.schedule(s.now(), event{Kind: evConnectAttempt, Instance: c.InstanceID, Gen: c.gen, Held: true})
	}
}

// runShellScript runs AWS-RunShellScript commands on inst. Caller holds s.mu.
// It understands what remediation sends: systemctl restart|start|stop|
// is-active cloudflared and a curl of the ready endpoint on 127.0.0.1:20241;
// anything else succeeds silently.
func (s *Sim) runShellScript(inst *Instance, commands []string) (string, int32) {
	var out strings.Builder
	var code int32
	for _, block := range commands {
		for _, line := range splitShell(block) {
			switch {
			case strings.Contains(line, "systemctl") && strings.Contains(line, "cloudflared"):
				code = s.systemctl(inst, line, &out)
			case strings.Contains(line, "curl") && strings.Contains(line, ":20241/ready"):
				code = s.curlReady(inst, line, &out)
			default:
				code = 0
			}
			if code != 0 && !strings.Contains(block, "||") {
				return out.String(), code
			}
		}
	}
	return out.String(), code
}

// splitShell splits a script into simple commands on newlines, ; and &&.
func splitShell(script string) []string {
	var out []string
	for _, l := range strings.Split(script, "\n") {
		for _, a := range strings.Split(l, ";") {
			for _, b := range strings.Split(a, "&&") {
				if b = strings.TrimSpace(b); b != "" && !strings.HasPrefix(b, "#") {
					out = append(out, b)
				}
			}
		}
	}
	return out
}

func (s *Sim) systemctl(inst *Instance, line string, out *strings.Builder) int32 {
	c := s.connectorOf(inst)
	switch {
	case strings.Contains(line, " restart "), strings.Contains(line, " start "):
		s.startConnector(c)
		return 0
	case strings.Contains(line, " stop "):
		s.stopConnector(c, "stopped by systemctl")
		return 0
	case strings.Contains(line, " is-active "):
		if c.Running {
			out.WriteString("active\n")
			return 0
		}
		out.WriteString("inactive\n")
		return 3
	}
	return 0
}

// curlReady answers like cloudflared's /ready: 200 with the number of ready
// connections once one is registered, 503 before.
func (s *Sim) curlReady(inst *Instance, line string, out *strings.Builder) int32 {
	c := s.connectorOf(inst)
	if !c.Running {
		fmt.Fprintf(out, "curl: (7) Failed to connect to 127.0.0.1 port 20241: Connection refused\n")
		return 7
	}
	ready := 0
	if c.Connected {
		if t := s.tunnels[c.TunnelID]; t != nil {
			for _, cn := range t.Connections {
				if cn.ConnectorID == c.ClientID {
					ready++
				}
			}
		}
	}
	status := 200
	if ready == 0 {
		status = 503
	}
	b, _ := json.Marshal(map[string]any{"status": status, "readyConnections": ready, "connectorId": c.ClientID})
	out.Write(b)
	out.WriteString("\n")
	if status != 200 && (strings.Contains(line, " -f") || strings.Contains(line, "--fail")) {
		return 22
	}
	return 0
}

// degradeConnector closes half of a connected connector's connections and
// keeps them closed (tunnel degraded) until the connector restarts.
// Caller holds mu.
func (s *Sim) degradeConnector(c *Connector) error {
	t := s.tunnels[c.TunnelID]
	if !c.Connected || t == nil {
		return fmt.Errorf("its cloudflared is not connected")
	}
	kept := t.Connections[:0]
	dropped := 0
	for _, cn := range t.Connections {
		if cn.ConnectorID == c.ClientID && dropped < connsPerConnector/2 {
			dropped++
			continue
		}
		kept = append(kept, cn)
	}
	t.Connections = kept
	c.LastError = "edge connections lost"
	return nil
}

// ---- out-of-band world actions (/_sim/world) ----

// WorldAction is one out-of-band change. Target it by id (instance id,
// tunnel id, record id or parameter name) or by org (resolved through the
// ownership conventions in hooks.go), in every region unless Region
// restricts it.
type WorldAction struct {
	Action  string `json:"action"`         // kill_connector, break_connector, degrade_connector, restart_connector, stop_instance, terminate_instance, delete, alter_dns
	Kind    string `json:"kind,omitempty"` // for delete: tunnel, dns_record, instance, parameter
	ID      string `json:"id,omitempty"`
	Org     string `json:"org,omitempty"`
	Content string `json:"content,omitempty"` // for alter_dns
	// Region restricts an instance or parameter target to one AWS region
	// (needed to delete one of two parameters of the same name); tunnels
	// and DNS records have no region, so it is refused for them.
	Region string `json:"region,omitempty"`
}

// WorldResult says what an action touched.
type WorldResult struct {
	Action   string   `json:"action"`
	Affected []string `json:"affected"`
}

// ApplyWorld performs one out-of-band action.
func (s *Sim) ApplyWorld(a WorldAction) (WorldResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick()
	defer s.changed()
	res := WorldResult{Action: a.Action, Affected: []string{}}
	if a.ID == "" && a.Org == "" {
		return res, fmt.Errorf("world action %q: give id or org", a.Action)
	}
	if a.Region != "" {
		if !s.hasRegion(a.Region) {
			return res, fmt.Errorf("world action %q: region %q is not one of the account's regions %v", a.Action, a.Region, s.cfg.Regions)
		}
		if a.Action == "alter_dns" || (a.Action == "delete" && (a.Kind == "tunnel" || a.Kind == "dns_record")) {
			return res, fmt.Errorf("world action %q: region applies to instances and parameters only; Cloudflare resources have none", a.Action)
		}
	}
	switch a.Action {
	case "kill_connector", "break_connector", "degrade_connector", "restart_connector", "stop_instance", "terminate_instance":
		insts := s.targetInstances(a)
		if len(insts) == 0 {
			return res, fmt.Errorf("world action %s: no live instance matches id=%q org=%q%s", a.Action, a.ID, a.Org, inRegion(a.Region))
		}
		for _, inst := range insts {
			switch a.Action {
			case "kill_connector":
				s.stopConnector(s.connectorOf(inst), "killed out of band")
			case "break_connector":
				c := s.connectorOf(inst)
				c.Broken = true
				s.stopConnector(c, "broken out of band")
			case "degrade_connector":
				if err := s.degradeConnector(s.connectorOf(inst)); err != nil {
					return res, fmt.Errorf("world action degrade_connector: instance %s: %w", inst.ID, err)
				}
			case "restart_connector":
				if inst.State != "running" {
					return res, fmt.Errorf("world action restart_connector: instance %s is %s, not running", inst.ID, inst.State)
				}
				s.startConnector(s.connectorOf(inst))
			case "stop_instance":
				s.worldStop(inst)
			case "terminate_instance":
				s.worldTerminate(inst)
			}
			res.Affected = append(res.Affected, "instance:"+inst.ID)
		}
	case "delete":
		return s.worldDelete(a, res)
	case "alter_dns":
		if a.Content == "" {
			return res, fmt.Errorf("world action alter_dns: content is required")
		}
		recs := s.targetRecords(a)
		if len(recs) == 0 {
			return res, fmt.Errorf("world action alter_dns: no DNS record matches id=%q org=%q", a.ID, a.Org)
		}
		for _, r := range recs {
			r.Content = strings.ToLower(a.Content)
			r.ModifiedOn = s.now()
			res.Affected = append(res.Affected, "dns_record:"+r.ID)
		}
	default:
		return res, fmt.Errorf("world action %q: unknown; want kill_connector, break_connector, degrade_connector, restart_connector, stop_instance, terminate_instance, delete or alter_dns", a.Action)
	}
	return res, nil
}

func (s *Sim) worldDelete(a WorldAction, res WorldResult) (WorldResult, error) {
	switch a.Kind {
	case "tunnel":
		for _, t := range s.targetTunnels(a) {
			// Out of band means past the API's own checks: the tunnel is
			// gone with its connections, as if deleted from the dashboard.
			s.dropTunnelConns(t, "", "tunnel deleted out of band")
			now := s.now()
			t.DeletedAt = &now
			res.Affected = append(res.Affected, "tunnel:"+t.ID)
		}
	case "dns_record":
		for _, r := range s.targetRecords(a) {
			delete(s.dnsRecords, r.ID)
			res.Affected = append(res.Affected, "dns_record:"+r.ID)
		}
	case "instance":
		for _, inst := range s.targetInstances(a) {
			s.worldTerminate(inst)
			res.Affected = append(res.Affected, "instance:"+inst.ID)
		}
	case "parameter":
		for _, p := range s.allParams() {
			if a.Region != "" && p.Region != a.Region {
				continue
			}
			if p.Name == a.ID || (a.Org != "" && paramOrg(p) == a.Org) {
				s.deleteParam(p.Region, p.Name)
				res.Affected = append(res.Affected, s.paramRes(p))
			}
		}
	default:
		return res, fmt.Errorf("world action delete: kind %q unknown; want tunnel, dns_record, instance or parameter", a.Kind)
	}
	if len(res.Affected) == 0 {
		return res, fmt.Errorf("world action delete: no %s matches id=%q org=%q%s", a.Kind, a.ID, a.Org, inRegion(a.Region))
	}
	return res, nil
}

// worldStop and worldTerminate move instances through the EC2 file's
// lifecycle (stopInstanceLocked / terminateInstanceLocked, hooks.go), so the
// world and the API change instances the same way. The interface lookup
// keeps this file compiling on its own while the EC2 file is written.
func (s *Sim) worldStop(inst *Instance) {
	if f, ok := any(s).(interface{ stopInstanceLocked(*Instance) }); ok {
		f.stopInstanceLocked(inst)
		return
	}
	inst.State, inst.StateChangedAt = "stopped", s.now()
	s.instanceDown(inst)
}

func (s *Sim) worldTerminate(inst *Instance) {
	if f, ok := any(s).(interface{ terminateInstanceLocked(*Instance) }); ok {
		f.terminateInstanceLocked(inst)
		return
	}
	inst.State, inst.StateChangedAt = "terminated", s.now()
	s.instanceDown(inst)
}

func liveInstance(inst *Instance) bool {
	return inst.State != "terminated" && inst.State != "shutting-down"
}

func inRegion(region string) string {
	if region == "" {
		return ""
	}
	return " in " + region
}

// paramRes names a parameter in violations and world results:
// "parameter:<name>", with "@<region>" when it is not in the home region
// (names cannot hold "@"), so two parameters of one name stay apart.
func (s *Sim) paramRes(p *Parameter) string {
	if p.Region == "" || p.Region == s.region() {
		return "parameter:" + p.Name
	}
	return "parameter:" + p.Name + "@" + p.Region
}

func (s *Sim) targetInstances(a WorldAction) []*Instance {
	var out []*Instance
	for _, id := range sortedKeys(s.instances) {
		inst := s.instances[id]
		if !liveInstance(inst) || (a.Region != "" && s.regionOf(inst) != a.Region) {
			continue
		}
		if id == a.ID || (a.Org != "" && inst.Tags["ManagedBy"] == "tunnelward" && inst.Tags["OrgID"] == a.Org) {
			out = append(out, inst)
		}
	}
	return out
}

func (s *Sim) targetTunnels(a WorldAction) []*Tunnel {
	var out []*Tunnel
	for _, id := range sortedKeys(s.tunnels) {
		t := s.tunnels[id]
		if t.DeletedAt != nil {
			continue
		}
		if id == a.ID || (a.Org != "" && t.Name == tunnelNamePrefix+a.Org) {
			out = append(out, t)
		}
	}
	return out
}

func (s *Sim) targetRecords(a WorldAction) []*DNSRecord {
	var out []*DNSRecord
	for _, id := range sortedKeys(s.dnsRecords) {
		r := s.dnsRecords[id]
		if id == a.ID || (a.Org != "" && recordOrg(r) == a.Org) {
			out = append(out, r)
		}
	}
	return out
}

// ConnectorState is a connector as /_sim/state shows it. It never shows
// the token or the secret.
type ConnectorState struct {
	InstanceID string `json:"instance_id"`
	Region     string `json:"region,omitempty"` // its instance's region, where it reads the token
	// ClientID is the connector id it registers with (connections'
	// client_id); a restarted cloudflared has a new one.
	ClientID    string     `json:"client_id"`
	TunnelID    string     `json:"tunnel_id,omitempty"`
	Running     bool       `json:"running"`
	Broken      bool       `json:"broken,omitempty"`
	Connected   bool       `json:"connected"`
	LastError   string     `json:"last_error,omitempty"`
	Attempts    int        `json:"attempts"`
	RunAt       *time.Time `json:"run_at,omitempty"`
	ConnectedAt *time.Time `json:"connected_at,omitempty"`
	// Current: the process runs and the token it holds (the one it last
	// authenticated TunnelID with) carries the tunnel's current secret.
	// False after a rotation until the process restarts with the new token,
	// and when it holds no token or does not run.
	Current bool `json:"token_current"`
	// TokenGeneration is the rotation generation of that token's secret (0:
	// the secret the tunnel was created with; each rotation adds 1).
	TokenGeneration int `json:"token_generation"`
}

// connectorState shows c. Caller holds mu.
func (s *Sim) connectorState(c *Connector) ConnectorState {
	region := s.region()
	if inst := s.instances[c.InstanceID]; inst != nil {
		region = s.regionOf(inst)
	}
	cs := ConnectorState{InstanceID: c.InstanceID, Region: region, ClientID: c.ClientID, TunnelID: c.TunnelID, Running: c.Running,
		Broken: c.Broken, Connected: c.Connected, LastError: c.LastError, Attempts: c.Attempts}
	if c.TunnelID != "" {
		cs.TokenGeneration = c.TokenGen
		if t := s.tunnels[c.TunnelID]; c.Running && t != nil && t.DeletedAt == nil && t.SecretGen == c.TokenGen {
			cs.Current = true
		}
	}
	if !c.RunAt.IsZero() {
		t := c.RunAt.UTC()
		cs.RunAt = &t
	}
	if c.Connected {
		t := c.ConnectedAt.UTC()
		cs.ConnectedAt = &t
	}
	return cs
}

// Connectors returns the simulated cloudflareds whose token names tunnel
// tunnelID (running or not, connected or not), ordered by instance id, as
// /_sim/state shows them: each with its client id and whether it holds the
// tunnel's current token (ConnectorState.Current). It advances the world
// first, as a request does.
func (s *Sim) Connectors(tunnelID string) []ConnectorState {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick()
	out := []ConnectorState{}
	for _, id := range sortedKeys(s.connectors) {
		if c := s.connectors[id]; c.TunnelID == tunnelID {
			out = append(out, s.connectorState(c))
		}
	}
	return out
}
