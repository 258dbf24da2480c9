package cloudflare

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/packages/pagination"
	"github.com/cloudflare/cloudflare-go/v7/shared"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/secret"
)

// Tunnel statuses as Cloudflare reports them.
const (
	StatusInactive = "inactive"
	StatusDegraded = "degraded"
	StatusHealthy  = "healthy"
	StatusDown     = "down"
)

// Tunnel is what tunnelward needs to know of a Cloudflare Tunnel.
type Tunnel struct {
	ID          string
	Name        string
	Status      string
	ConfigSrc   string
	Connections int      // active edge connections (4 per healthy connector)
	Connectors  []string // distinct connector (client) ids
	CreatedAt   time.Time
	Deleted     bool
}

// Healthy reports whether the tunnel serves traffic.
func (t Tunnel) Healthy() bool { return t.Status == StatusHealthy && t.Connections > 0 }

func toTunnel(t *shared.CloudflareTunnel) Tunnel {
	out := Tunnel{ID: t.ID, Name: t.Name, Status: string(t.Status), ConfigSrc: string(t.ConfigSrc),
		Connections: len(t.Connections), CreatedAt: t.CreatedAt, Deleted: !t.DeletedAt.IsZero()}
	seen := map[string]bool{}
	for _, c := range t.Connections {
		if c.ClientID != "" && !seen[c.ClientID] {
			seen[c.ClientID] = true
			out.Connectors = append(out.Connectors, c.ClientID)
		}
	}
	return out
}

// detachTunnel copies a listed tunnel's strings, so the listing keeps none
// of the SDK's decoded page alive.
func detachTunnel(t Tunnel) Tunnel {
	t.ID, t.Name, t.Status, t.ConfigSrc = strings.Clone(t.ID), strings.Clone(t.Name), strings.Clone(t.Status), strings.Clone(t.ConfigSrc)
	for i := range t.Connectors {
		t.Connectors[i] = strings.Clone(t.Connectors[i])
	}
	return t
}

// IngressRule is one rule of a remotely-managed tunnel's configuration.
type IngressRule struct {
	Hostname string
	Path     string
	Service  string
}

// CreateTunnel creates a remotely-managed tunnel (config_src cloudflare)
// with a secret Cloudflare draws; its token must then be read with Token.
// A name already in use gives ErrConflict: the caller then finds it by name.
func (c *Client) CreateTunnel(ctx context.Context, name string) (Tunnel, error) {
	return c.createTunnel(ctx, name, secret.TunnelSecret{})
}

// CreateTunnelWithSecret creates a remotely-managed tunnel with a secret
// drawn here (crypto/rand) and returns its token, built locally in
// cloudflared's format (BuildToken): no token read. The secret lives only
// in the returned token; a caller that loses the token before storing it
// reads it back with Token. ErrConflict as CreateTunnel.
func (c *Client) CreateTunnelWithSecret(ctx context.Context, name string) (Tunnel, secret.Token, error) {
	s, err := secret.NewTunnelSecret()
	if err != nil {
		return Tunnel{}, secret.Token{}, fmt.Errorf("cloudflare tunnel.create %s: %w", name, err)
	}
	t, err := c.createTunnel(ctx, name, s)
	if err != nil {
		return t, secret.Token{}, err
	}
	return t, BuildToken(c.cfg.AccountID, t.ID, s), nil
}

// BuildToken is a remotely-managed tunnel's token as cloudflared reads it
// (cloudflared connection.TunnelToken): base64 of the JSON {"a": account
// tag, "t": tunnel id, "s": base64 of the tunnel secret}.
func BuildToken(accountTag, tunnelID string, s secret.TunnelSecret) secret.Token {
	b, _ := json.Marshal(struct {
		A string `json:"a"`
		T string `json:"t"`
		S string `json:"s"`
	}{accountTag, tunnelID, s.Base64()})
	return secret.NewToken(base64.StdEncoding.EncodeToString(b))
}

func (c *Client) createTunnel(ctx context.Context, name string, s secret.TunnelSecret) (Tunnel, error) {
	var p zero_trust.TunnelCloudflaredNewParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	setField(&p.Name.Value, &p.Name.Present, name)
	setField(&p.ConfigSrc.Value, &p.ConfigSrc.Present, zero_trust.TunnelCloudflaredNewParamsConfigSrcCloudflare)
	if !s.IsZero() {
		setField(&p.TunnelSecret.Value, &p.TunnelSecret.Present, s.Base64())
	}
	var out Tunnel
	err := c.do(ctx, "tunnel.create", name, func(ctx context.Context) error {
		t, err := c.tunnels.New(ctx, p)
		if err == nil {
			out = toTunnel(t)
		}
		return err
	})
	if apicall.StatusOf(err) == http.StatusConflict {
		return Tunnel{}, apicall.WithKind(err, ErrConflict)
	}
	return out, err
}

// FindTunnel looks a live tunnel up by exact name; found is false when none.
func (c *Client) FindTunnel(ctx context.Context, name string) (t Tunnel, found bool, err error) {
	var p zero_trust.TunnelCloudflaredListParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	setField(&p.Name.Value, &p.Name.Present, name)
	setField(&p.IsDeleted.Value, &p.IsDeleted.Present, false)
	var res *pagination.V4PagePaginationArray[shared.CloudflareTunnel]
	err = c.do(ctx, "tunnel.list", name, func(ctx context.Context) error {
		var err error
		res, err = c.tunnels.List(ctx, p)
		return err
	})
	if err != nil {
		return Tunnel{}, false, err
	}
	for i := range res.Result {
		// Filter again: the name filter is exact, but never trust a filter
		// with ownership decisions.
		if r := &res.Result[i]; r.Name == name && r.DeletedAt.IsZero() {
			return toTunnel(r), true, nil
		}
	}
	return Tunnel{}, false, nil
}

// GetTunnel fetches a tunnel by id (ErrNotFound when it does not exist; a
// deleted tunnel may still come back with Deleted set).
func (c *Client) GetTunnel(ctx context.Context, id string) (Tunnel, error) {
	var p zero_trust.TunnelCloudflaredGetParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	var out Tunnel
	err := c.do(ctx, "tunnel.get", id, func(ctx context.Context) error {
		t, err := c.tunnels.Get(ctx, id, p)
		if err == nil {
			out = toTunnel(t)
		}
		return err
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return Tunnel{}, apicall.WithKind(err, ErrNotFound)
	}
	return out, err
}

// ListTunnels lists every live (not deleted) tunnel of the account whose
// name starts with namePrefix ("" for all), all pages, and says how many
// pages it fetched. The prefix is sent as include_prefix and checked again
// here.
func (c *Client) ListTunnels(ctx context.Context, namePrefix string) ([]Tunnel, int, error) {
	var out []Tunnel
	pages, err := listAll(ctx, c, "tunnel.list", c.cfg.TunnelPageSize, func(t shared.CloudflareTunnel) string { return t.ID },
		func(ctx context.Context, page int) (*pagination.V4PagePaginationArray[shared.CloudflareTunnel], error) {
			var p zero_trust.TunnelCloudflaredListParams
			setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
			setField(&p.IsDeleted.Value, &p.IsDeleted.Present, false)
			setField(&p.Page.Value, &p.Page.Present, float64(page))
			setField(&p.PerPage.Value, &p.PerPage.Present, float64(c.cfg.TunnelPageSize))
			if namePrefix != "" {
				setField(&p.IncludePrefix.Value, &p.IncludePrefix.Present, namePrefix)
			}
			return c.tunnels.List(ctx, p)
		}, func(t *shared.CloudflareTunnel) {
			if t.DeletedAt.IsZero() && strings.HasPrefix(t.Name, namePrefix) {
				out = append(out, detachTunnel(toTunnel(t)))
			}
		})
	if err != nil {
		return nil, pages, err
	}
	return out, pages, nil
}

// DeleteTunnel deletes a tunnel. existed is false when it was already gone
// (not an error: deleting is idempotent). A tunnel with active connections
// cannot be deleted; call CleanConnections first.
func (c *Client) DeleteTunnel(ctx context.Context, id string) (existed bool, err error) {
	var p zero_trust.TunnelCloudflaredDeleteParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	err = c.do(ctx, "tunnel.delete", id, func(ctx context.Context) error {
		_, err := c.tunnels.Delete(ctx, id, p)
		return err
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return false, nil
	}
	if hasCode(err, codeTunnelActive) {
		return false, apicall.WithKind(err, ErrActiveConnections)
	}
	return err == nil, err
}

// CleanConnections drops every connection of a tunnel (stale or live), so
// it can be deleted.
func (c *Client) CleanConnections(ctx context.Context, id string) error {
	return c.DropConnector(ctx, id, "")
}

// GetConfig returns the tunnel's ingress rules and configuration version
// (no rules and version 0 when never configured).
func (c *Client) GetConfig(ctx context.Context, id string) ([]IngressRule, int64, error) {
	var p zero_trust.TunnelCloudflaredConfigurationGetParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	var rules []IngressRule
	var version int64
	err := c.do(ctx, "tunnel_config.get", id, func(ctx context.Context) error {
		res, err := c.tunnels.Configurations.Get(ctx, id, p)
		if err != nil {
			return err
		}
		rules = rules[:0]
		for _, r := range res.Config.Ingress {
			rules = append(rules, IngressRule{Hostname: r.Hostname, Path: r.Path, Service: r.Service})
		}
		version = res.Version
		return nil
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return nil, 0, apicall.WithKind(err, ErrNotFound)
	}
	return rules, version, err
}

// PutConfig replaces the tunnel's ingress rules. The last rule must be a
// catch-all (no hostname), as cloudflared requires.
func (c *Client) PutConfig(ctx context.Context, id string, rules []IngressRule) error {
	if len(rules) == 0 || rules[len(rules)-1].Hostname != "" || rules[len(rules)-1].Path != "" {
		return fmt.Errorf("cloudflare tunnel_config.put %s: the last ingress rule must be a catch-all without hostname or path", id)
	}
	var p zero_trust.TunnelCloudflaredConfigurationUpdateParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	ing := make([]zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfigIngress, len(rules))
	for i, r := range rules {
		if r.Service == "" {
			return fmt.Errorf("cloudflare tunnel_config.put %s: ingress rule %d has no service", id, i)
		}
		if r.Hostname != "" {
			setField(&ing[i].Hostname.Value, &ing[i].Hostname.Present, r.Hostname)
		}
		if r.Path != "" {
			setField(&ing[i].Path.Value, &ing[i].Path.Present, r.Path)
		}
		setField(&ing[i].Service.Value, &ing[i].Service.Present, r.Service)
	}
	var cfg zero_trust.TunnelCloudflaredConfigurationUpdateParamsConfig
	setField(&cfg.Ingress.Value, &cfg.Ingress.Present, ing)
	setField(&p.Config.Value, &p.Config.Present, cfg)
	err := c.do(ctx, "tunnel_config.put", id, func(ctx context.Context) error {
		_, err := c.tunnels.Configurations.Update(ctx, id, p)
		return err
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return apicall.WithKind(err, ErrNotFound)
	}
	return err
}

// RotateSecret gives the tunnel a new secret, drawn here (PATCH
// tunnel_secret), and returns the token built from it without a call: the
// old token can open no new connection from now on, connectors already
// running keep theirs until they restart or their connections are deleted.
func (c *Client) RotateSecret(ctx context.Context, id string) (secret.Token, error) {
	s, err := secret.NewTunnelSecret()
	if err != nil {
		return secret.Token{}, fmt.Errorf("cloudflare tunnel.edit %s: %w", id, err)
	}
	var p zero_trust.TunnelCloudflaredEditParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	setField(&p.TunnelSecret.Value, &p.TunnelSecret.Present, s.Base64())
	err = c.do(ctx, "tunnel.edit", id, func(ctx context.Context) error {
		_, err := c.tunnels.Edit(ctx, id, p)
		return err
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return secret.Token{}, apicall.WithKind(err, ErrNotFound)
	}
	if err != nil {
		return secret.Token{}, err
	}
	return BuildToken(c.cfg.AccountID, id, s), nil
}

// Connector is one cloudflared process connected to a tunnel.
type Connector struct {
	ID    string // client_id
	RunAt time.Time
}

// Connectors lists the tunnel's connected cloudflared processes.
func (c *Client) Connectors(ctx context.Context, id string) ([]Connector, error) {
	var p zero_trust.TunnelCloudflaredConnectionGetParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	var out []Connector
	err := c.do(ctx, "tunnel_connections.get", id, func(ctx context.Context) error {
		res, err := c.tunnels.Connections.Get(ctx, id, p)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, cl := range res.Result {
			if len(cl.Conns) > 0 {
				out = append(out, Connector{ID: cl.ID, RunAt: cl.RunAt})
			}
		}
		return nil
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return nil, apicall.WithKind(err, ErrNotFound)
	}
	return out, err
}

// DropConnector deletes one connector's connections (client_id); the
// others' stay. clientID "" deletes every connector's.
func (c *Client) DropConnector(ctx context.Context, id, clientID string) error {
	var p zero_trust.TunnelCloudflaredConnectionDeleteParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	if clientID != "" {
		setField(&p.ClientID.Value, &p.ClientID.Present, clientID)
	}
	err := c.do(ctx, "tunnel_connections.delete", id, func(ctx context.Context) error {
		_, err := c.tunnels.Connections.Delete(ctx, id, p)
		return err
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return apicall.WithKind(err, ErrNotFound)
	}
	return err
}

// Token fetches the tunnel's connector token. It is a root credential for
// the tunnel: it leaves this package only as a secret.Token.
func (c *Client) Token(ctx context.Context, id string) (secret.Token, error) {
	var p zero_trust.TunnelCloudflaredTokenGetParams
	setField(&p.AccountID.Value, &p.AccountID.Present, c.cfg.AccountID)
	var tok secret.Token
	err := c.do(ctx, "tunnel_token.get", id, func(ctx context.Context) error {
		res, err := c.tunnels.Token.Get(ctx, id, p)
		if err != nil {
			return err
		}
		if res == nil || *res == "" {
			return fmt.Errorf("empty token in response")
		}
		tok = secret.NewToken(*res)
		return nil
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return secret.Token{}, apicall.WithKind(err, ErrNotFound)
	}
	return tok, err
}

// setField sets an SDK param.Field (its type lives in an internal package,
// and cloudflare.F in the root package we do not import).
func setField[T any](value *T, present *bool, v T) {
	*value = v
	*present = true
}
