package cloudsim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// serveSim serves the emulator's own endpoints under /_sim/:
//
//	GET        /_sim/state       every resource, as its provider's API shows it
//	GET        /_sim/invariants  ?orgs=a,b names the orgs that should exist
//	GET/DELETE /_sim/calls       request counts per operation and status (?reset=1 or DELETE zeroes)
//	GET/PUT    /_sim/faults      fault rules and rate limits (JSON, FaultSettings)
//	POST       /_sim/world       one WorldAction (JSON)
//	GET        /_sim/resolve     ?name=<fqdn>: what a client resolving the name reaches (Resolution)
//
// They are not authenticated: the emulator listens on loopback only.
func (s *Sim) serveSim(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case "/_sim/state":
		if !allow(w, r, http.MethodGet) {
			return
		}
		writeJSON(w, http.StatusOK, s.State())
	case "/_sim/invariants":
		if !allow(w, r, http.MethodGet) {
			return
		}
		var orgs []string
		if r.URL.Query().Has("orgs") {
			orgs = []string{}
			for _, o := range strings.Split(r.URL.Query().Get("orgs"), ",") {
				if o = strings.TrimSpace(o); o != "" {
					orgs = append(orgs, o)
				}
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"violations": s.CheckInvariants(orgs)})
	case "/_sim/calls":
		if !allow(w, r, http.MethodGet, http.MethodDelete) {
			return
		}
		rep := s.callsReport()
		if r.Method == http.MethodDelete || r.URL.Query().Get("reset") == "1" {
			s.ResetCalls()
		}
		writeJSON(w, http.StatusOK, rep)
	case "/_sim/faults":
		if !allow(w, r, http.MethodGet, http.MethodPut, http.MethodPost) {
			return
		}
		if r.Method != http.MethodGet {
			var fs FaultSettings
			if err := decodeStrict(r.Body, &fs); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "faults: " + err.Error()})
				return
			}
			if err := s.SetFaultSettings(fs); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "faults: " + err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, s.FaultSettings())
	case "/_sim/world":
		if !allow(w, r, http.MethodPost) {
			return
		}
		var a WorldAction
		if err := decodeStrict(r.Body, &a); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "world: " + err.Error()})
			return
		}
		res, err := s.ApplyWorld(a)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	case "/_sim/resolve":
		if !allow(w, r, http.MethodGet) {
			return
		}
		name := strings.TrimSpace(r.URL.Query().Get("name"))
		if name == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "resolve: give the name to resolve: ?name=<fqdn>"})
			return
		}
		writeJSON(w, http.StatusOK, s.Resolve(name))
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint; see /_sim/state, /_sim/invariants, /_sim/calls, /_sim/faults, /_sim/world, /_sim/resolve"})
	}
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": r.Method + " not allowed; use " + strings.Join(methods, " or ")})
	return false
}

func decodeStrict(body io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WorldState is /_sim/state.
type WorldState struct {
	Time    time.Time `json:"time"`
	Regions []string  `json:"regions"` // the AWS account's regions, home region first
	// Zones are the Cloudflare zones served, each with its account, in the
	// order of the identities (the first identity's first). Tokens are not
	// shown. Tunnels name their account (account_tag), records their zone
	// (zone_id).
	Zones      []ZoneState      `json:"zones"`
	Tunnels    []map[string]any `json:"tunnels"`
	DNSRecords []map[string]any `json:"dns_records"`
	Instances  []map[string]any `json:"instances"`
	Parameters []map[string]any `json:"parameters"`
	Connectors []ConnectorState `json:"connectors"`
}

// ZoneState is a Cloudflare zone as /_sim/state shows it.
type ZoneState struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	AccountID string `json:"account_id"`
}

// State returns every resource as its provider's API shows it (EC2 and SSM
// with their API field names), with SecureString values replaced by their
// SHA-256, and the simulated connectors.
func (s *Sim) State() WorldState {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick()
	st := WorldState{
		Time: s.now().UTC(), Tunnels: []map[string]any{}, DNSRecords: []map[string]any{},
		Instances: []map[string]any{}, Parameters: []map[string]any{}, Connectors: []ConnectorState{},
		Regions: s.Regions(), Zones: []ZoneState{},
	}
	for _, id := range s.cf.order {
		z := s.cf.zones[id]
		st.Zones = append(st.Zones, ZoneState{ID: id, Name: z.name, AccountID: z.account})
	}
	for _, id := range sortedKeys(s.tunnels) {
		st.Tunnels = append(st.Tunnels, s.tunnelJSON(s.tunnels[id]))
	}
	for _, id := range sortedKeys(s.dnsRecords) {
		st.DNSRecords = append(st.DNSRecords, dnsJSON(s.dnsRecords[id]))
	}
	for _, id := range sortedKeys(s.instances) {
		inst := s.instances[id]
		st.Instances = append(st.Instances, instanceStateJSON(inst, s.regionOf(inst)))
	}
	for _, p := range s.allParams() {
		st.Parameters = append(st.Parameters, paramStateJSON(p))
	}
	for _, id := range sortedKeys(s.connectors) {
		st.Connectors = append(st.Connectors, s.connectorState(s.connectors[id]))
	}
	return st
}

func awsTags(m map[string]string) []map[string]string {
	out := []map[string]string{}
	for _, k := range sortedKeys(m) {
		out = append(out, map[string]string{"Key": k, "Value": m[k]})
	}
	return out
}

var simStateCode = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

// instanceStateJSON shows inst with the DescribeInstances field names, plus
// Region (not an EC2 field: the region it was launched in).
func instanceStateJSON(inst *Instance, region string) map[string]any {
	sgs := []map[string]string{}
	for _, g := range inst.SecurityGroupIDs {
		sgs = append(sgs, map[string]string{"GroupId": g})
	}
	m := map[string]any{
		"InstanceId":       inst.ID,
		"ReservationId":    inst.ReservationID,
		"ImageId":          inst.ImageID,
		"InstanceType":     inst.InstanceType,
		"State":            map[string]any{"Code": simStateCode[inst.State], "Name": inst.State},
		"Tags":             awsTags(inst.Tags),
		"SubnetId":         inst.SubnetID,
		"SecurityGroups":   sgs,
		"PrivateIpAddress": inst.PrivateIP,
		"LaunchTime":       inst.LaunchTime.UTC(),
		"ClientToken":      inst.ClientToken,
		"Region":           region,
		"Placement":        map[string]string{"AvailabilityZone": region + "a"},
		// DescribeInstanceAttribute userData shows it base64; the decoded
		// script is given too, so an operator can read it.
		"UserData":       inst.UserData,
		"UserDataScript": decodeUserData(inst.UserData),
	}
	if inst.IamInstanceProfile != "" {
		m["IamInstanceProfile"] = map[string]string{"Arn": inst.IamInstanceProfile}
	}
	mo := inst.MetadataOptions.withDefaults()
	m["MetadataOptions"] = map[string]any{"HttpTokens": mo.HttpTokens, "HttpPutResponseHopLimit": mo.HttpPutResponseHopLimit,
		"HttpEndpoint": mo.HttpEndpoint, "HttpProtocolIpv6": mo.HttpProtocolIpv6, "InstanceMetadataTags": mo.InstanceMetadataTags}
	return m
}

// paramStateJSON shows p with the DescribeParameters field names, plus
// Region (where it lives).
func paramStateJSON(p *Parameter) map[string]any {
	m := map[string]any{
		"Name":             p.Name,
		"ARN":              paramARN(p.Region, p.Name),
		"Region":           p.Region,
		"Type":             p.Type,
		"Version":          p.Version,
		"LastModifiedDate": p.LastModifiedDate.UTC(),
		"Tier":             p.Tier,
		"DataType":         p.DataType,
		"Tags":             awsTags(p.Tags),
	}
	if p.Description != "" {
		m["Description"] = p.Description
	}
	if p.KeyID != "" {
		m["KeyId"] = p.KeyID
	}
	if p.Type == "SecureString" {
		sum := sha256.Sum256([]byte(p.Value))
		m["ValueSHA256"] = hex.EncodeToString(sum[:])
	} else {
		m["Value"] = p.Value
	}
	return m
}
