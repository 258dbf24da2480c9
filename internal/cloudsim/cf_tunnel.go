package cloudsim

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// cfTunnel finds a tunnel of the account by id (deleted ones too, as the
// real API answers GET for a deleted tunnel with deleted_at set). A tunnel
// of another account is not found.
func (s *Sim) cfTunnel(account, id string) (*Tunnel, *cfErr) {
	t := s.tunnels[id]
	if t == nil || s.accountOrFirst(t.AccountTag) != account {
		return nil, errCFTunnelNotFound
	}
	return t, nil
}

// liveTunnelNamed returns the account's not-deleted tunnel called name, if
// any: names are unique per account.
func (s *Sim) liveTunnelNamed(account, name string) *Tunnel {
	for _, t := range s.tunnels {
		if t.DeletedAt == nil && t.Name == name && s.accountOrFirst(t.AccountTag) == account {
			return t
		}
	}
	return nil
}

// liveTunnelCount is how many not-deleted tunnels the account holds.
func (s *Sim) liveTunnelCount(account string) int {
	n := 0
	for _, t := range s.tunnels {
		if t.DeletedAt == nil && s.accountOrFirst(t.AccountTag) == account {
			n++
		}
	}
	return n
}

func (s *Sim) cfTunnelCreate(account string, body map[string]any) (any, *cfResultInfo, *cfErr) {
	name, _, e := bodyString(body, "name")
	if e != nil {
		return nil, nil, e
	}
	if strings.TrimSpace(name) == "" {
		return nil, nil, cfErrorf(http.StatusBadRequest, 1001, "name is required") // approx
	}
	src, has, e := bodyString(body, "config_src")
	if e != nil {
		return nil, nil, e
	}
	if !has {
		src = "local"
	}
	if src != "local" && src != "cloudflare" {
		return nil, nil, cfErrorf(http.StatusBadRequest, 1001, "config_src must be \"local\" or \"cloudflare\", got %q", src)
	}
	secret, hasSecret, e := bodyString(body, "tunnel_secret")
	if e != nil {
		return nil, nil, e
	}
	if hasSecret {
		if e := checkTunnelSecret(secret); e != nil {
			return nil, nil, e
		}
	} else {
		raw := make([]byte, 32)
		_, _ = rand.Read(raw) // a secret, so not from the seeded generator
		secret = base64.StdEncoding.EncodeToString(raw)
	}
	// The name first: a retried create of a tunnel that exists is a 1013
	// (which the client adopts), even with the account at its limit.
	if s.liveTunnelNamed(account, name) != nil {
		return nil, nil, errCFTunnelName
	}
	if s.liveTunnelCount(account) >= s.cfg.TunnelQuota {
		return nil, nil, errCFTunnelQuota
	}
	now := s.now()
	t := &Tunnel{
		ID: s.newUUID(), AccountTag: account, Name: name, ConfigSrc: src,
		Secret: secret, CreatedAt: now, Metadata: map[string]any{},
	}
	s.tunnels[t.ID] = t
	return s.tunnelJSON(t), nil, nil
}

// cfTunnelEdit is PATCH cfd_tunnel/{id}: a new name and/or a new
// tunnel_secret. A new secret rotates the tunnel's token (GET .../token and
// the token built from account, id and secret change): from then on the old
// token opens no new connection, while connections already open with it
// stay until their cloudflared restarts or they are deleted (as Cloudflare
// documents token rotation). The body is checked whole before anything
// changes.
func (s *Sim) cfTunnelEdit(account, id string, body map[string]any) (any, *cfResultInfo, *cfErr) {
	t, e := s.cfTunnel(account, id)
	if e != nil {
		return nil, nil, e
	}
	if t.DeletedAt != nil {
		return nil, nil, errCFTunnelNotFound
	}
	name, hasName, e := bodyString(body, "name")
	if e != nil {
		return nil, nil, e
	}
	if hasName && name != t.Name {
		if strings.TrimSpace(name) == "" {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1001, "name must not be empty")
		}
		if s.liveTunnelNamed(account, name) != nil {
			return nil, nil, errCFTunnelName
		}
	}
	secret, hasSecret, e := bodyString(body, "tunnel_secret")
	if e != nil {
		return nil, nil, e
	}
	if hasSecret {
		if e := checkTunnelSecret(secret); e != nil {
			return nil, nil, e
		}
	}
	if hasName {
		t.Name = name
	}
	if hasSecret && secret != t.Secret {
		t.Secret = secret
		t.SecretGen++
	}
	return s.tunnelJSON(t), nil, nil
}

// checkTunnelSecret is Cloudflare's rule for tunnel_secret (create and
// edit): "at least 32 bytes and encoded as a base64 string" (standard
// encoding, padded, as cloudflared and `openssl rand -base64 32` write
// it). approx: the code and message of the refusal are not confirmed.
func checkTunnelSecret(secret string) *cfErr {
	raw, err := base64.StdEncoding.DecodeString(secret)
	if err != nil || len(raw) < 32 {
		return cfErrorf(http.StatusBadRequest, 1001, "tunnel_secret must be base64 of at least 32 bytes")
	}
	return nil
}

func (s *Sim) cfTunnelDelete(account, id string) (any, *cfResultInfo, *cfErr) {
	t, e := s.cfTunnel(account, id)
	if e != nil {
		return nil, nil, e
	}
	if t.DeletedAt != nil {
		return s.tunnelJSON(t), nil, nil
	}
	if len(t.Connections) > 0 {
		return nil, nil, errCFTunnelActive
	}
	now := s.now()
	t.DeletedAt = &now
	return s.tunnelJSON(t), nil, nil
}

func (s *Sim) cfTunnelList(account string, q url.Values) (any, *cfResultInfo, *cfErr) {
	page, perPage, e := cfPaging(q, 20, 1000)
	if e != nil {
		return nil, nil, e
	}
	var isDeleted *bool
	if v := q.Get("is_deleted"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1001, "is_deleted must be true or false, got %q", v)
		}
		isDeleted = &b
	}
	var existedAt time.Time
	if v := q.Get("existed_at"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1001, "existed_at must be an RFC 3339 time, got %q", v)
		}
		existedAt = t
	}
	status := q.Get("status")
	if status != "" && status != "inactive" && status != "degraded" && status != "healthy" && status != "down" {
		return nil, nil, cfErrorf(http.StatusBadRequest, 1001, "status must be inactive, degraded, healthy or down, got %q", status)
	}
	var out []*Tunnel
	for _, t := range s.tunnels {
		switch {
		case s.accountOrFirst(t.AccountTag) != account,
			q.Has("name") && t.Name != q.Get("name"),
			q.Get("uuid") != "" && t.ID != q.Get("uuid"),
			q.Get("include_prefix") != "" && !strings.HasPrefix(t.Name, q.Get("include_prefix")),
			q.Get("exclude_prefix") != "" && strings.HasPrefix(t.Name, q.Get("exclude_prefix")),
			isDeleted != nil && *isDeleted != (t.DeletedAt != nil),
			!existedAt.IsZero() && (!t.CreatedAt.Before(existedAt) || (t.DeletedAt != nil && t.DeletedAt.Before(existedAt))),
			status != "" && s.tunnelStatus(t) != status:
			continue
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	lo, hi, info := pageOf(len(out), page, perPage)
	res := make([]any, 0, hi-lo)
	for _, t := range out[lo:hi] {
		res = append(res, s.tunnelJSON(t))
	}
	return res, info, nil
}

// tunnelStatus derives the status from the connections: inactive (never
// connected), healthy (every connector has its 4 connections), degraded
// (connected, but a connector has fewer), down (was connected, none now).
// It allocates nothing (Resolve calls it for pollers): a tunnel holds a
// handful of connections, so counting each connector's is cheap.
func (s *Sim) tunnelStatus(t *Tunnel) string {
	if len(t.Connections) == 0 {
		if t.EverConnected {
			return "down"
		}
		return "inactive"
	}
	for _, c := range t.Connections {
		n := 0
		for _, d := range t.Connections {
			if d.ConnectorID == c.ConnectorID {
				n++
			}
		}
		if n < connsPerConnector {
			return "degraded"
		}
	}
	return "healthy"
}

// tunnelJSON is a tunnel as the v4 API shows it.
func (s *Sim) tunnelJSON(t *Tunnel) map[string]any {
	conns := make([]any, 0, len(t.Connections))
	for _, c := range t.Connections {
		conns = append(conns, connJSON(c))
	}
	md := t.Metadata
	if md == nil {
		md = map[string]any{}
	}
	return map[string]any{
		"id":                t.ID,
		"account_tag":       t.AccountTag,
		"name":              t.Name,
		"created_at":        cfTime(t.CreatedAt),
		"deleted_at":        cfTimePtr(t.DeletedAt),
		"connections":       conns,
		"conns_active_at":   cfTimePtr(t.ConnsActiveAt),
		"conns_inactive_at": cfTimePtr(t.ConnsInactiveAt),
		"tun_type":          "cfd_tunnel",
		"status":            s.tunnelStatus(t),
		"remote_config":     t.ConfigSrc == "cloudflare",
		"config_src":        t.ConfigSrc,
		"metadata":          md,
	}
}

func connJSON(c TunnelConn) map[string]any {
	return map[string]any{
		"id":                   c.ID,
		"uuid":                 c.ID,
		"client_id":            c.ConnectorID,
		"client_version":       cloudflaredVersion,
		"colo_name":            c.ColoName,
		"is_pending_reconnect": false,
		"opened_at":            cfTime(c.OpenedAt),
		"origin_ip":            c.OriginIP,
	}
}

// connectionsJSON is GET .../connections: one entry per connector.
func (s *Sim) connectionsJSON(t *Tunnel) []any {
	byClient := map[string][]TunnelConn{}
	var order []string
	for _, c := range t.Connections {
		if _, ok := byClient[c.ConnectorID]; !ok {
			order = append(order, c.ConnectorID)
		}
		byClient[c.ConnectorID] = append(byClient[c.ConnectorID], c)
	}
	out := make([]any, 0, len(order))
	for _, id := range order {
		conns := make([]any, 0, len(byClient[id]))
		for _, c := range byClient[id] {
			conns = append(conns, connJSON(c))
		}
		runAt := byClient[id][0].OpenedAt
		for _, c := range s.connectors {
			if c.ClientID == id {
				runAt = c.RunAt
			}
		}
		out = append(out, map[string]any{
			"id":             id,
			"arch":           "linux_amd64",
			"version":        cloudflaredVersion,
			"config_version": t.ConfigVersion,
			"features":       []string{"ha-origin", "serialized_headers", "support_datagram_v3_2", "management_logs"},
			"run_at":         cfTime(runAt),
			"conns":          conns,
		})
	}
	return out
}

// tunnelConfigJSON is GET/PUT .../configurations.
func (s *Sim) tunnelConfigJSON(t *Tunnel) map[string]any {
	cfg := map[string]any{}
	if t.Config != nil {
		for k, v := range t.Config.Raw {
			cfg[k] = v
		}
		rules := make([]any, 0, len(t.Config.Ingress))
		for _, r := range t.Config.Ingress {
			m := map[string]any{"service": r.Service}
			if r.Hostname != "" {
				m["hostname"] = r.Hostname
			}
			if r.Path != "" {
				m["path"] = r.Path
			}
			rules = append(rules, m)
		}
		cfg["ingress"] = rules
	}
	return map[string]any{
		"account_id": t.AccountTag,
		"tunnel_id":  t.ID,
		"version":    t.ConfigVersion,
		"config":     cfg,
		"source":     t.ConfigSrc,
		"created_at": cfTime(t.CreatedAt),
	}
}

var (
	hostnameRe = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	serviceRe  = regexp.MustCompile(`^((https?|tcp|ssh|rdp|smb|unix|unix\+tls)://.+|http_status:[1-5][0-9][0-9]|hello_world|bastion)$`)
)

// cfTunnelConfigPut stores the remotely-managed configuration after the
// checks cloudflared itself applies: every rule has a service, the last rule
// is a catch-all (no hostname, no path) and no earlier rule is one.
func (s *Sim) cfTunnelConfigPut(account, id string, body map[string]any) (any, *cfResultInfo, *cfErr) {
	t, e := s.cfTunnel(account, id)
	if e != nil {
		return nil, nil, e
	}
	if t.DeletedAt != nil {
		return nil, nil, errCFTunnelNotFound
	}
	raw, ok := body["config"].(map[string]any)
	if !ok {
		return nil, nil, cfErrorf(http.StatusBadRequest, 1055, "Invalid tunnel configuration: config object is required") // approx
	}
	list, ok := raw["ingress"].([]any)
	if !ok || len(list) == 0 {
		return nil, nil, cfErrorf(http.StatusBadRequest, 1055, "Invalid tunnel configuration: ingress must be a non-empty list ending with a catch-all rule")
	}
	rules := make([]IngressRule, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1055, "Invalid tunnel configuration: ingress[%d] is not an object", i)
		}
		host, _ := m["hostname"].(string)
		p, _ := m["path"].(string)
		svc, _ := m["service"].(string)
		if svc == "" {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1055, "Invalid tunnel configuration: ingress[%d] has no service", i)
		}
		if !serviceRe.MatchString(svc) {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1055, "Invalid tunnel configuration: ingress[%d] service %q is not a supported origin (http://, https://, tcp://, ssh://, rdp://, unix://, http_status:NNN, hello_world)", i, svc)
		}
		if host != "" && !hostnameRe.MatchString(strings.ToLower(host)) {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1055, "Invalid tunnel configuration: ingress[%d] hostname %q is not a valid hostname", i, host)
		}
		catchAll := host == "" && p == ""
		last := i == len(list)-1
		if last && !catchAll {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1055, "Invalid tunnel configuration: the last ingress rule must match all URLs (no hostname or path)")
		}
		if !last && catchAll {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1055, "Invalid tunnel configuration: ingress[%d] matches all URLs but is not the last rule", i)
		}
		rules = append(rules, IngressRule{Hostname: strings.ToLower(host), Path: p, Service: svc})
	}
	keep := map[string]any{}
	for k, v := range raw {
		if k != "ingress" {
			keep[k] = v
		}
	}
	t.Config = &TunnelConfig{Ingress: rules, Raw: keep}
	t.ConfigVersion++
	return s.tunnelConfigJSON(t), nil, nil
}
