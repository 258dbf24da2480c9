// Package cloudflare is tunnelward's thin client over cloudflare-go v7 for
// the calls it needs: Cloudflare Tunnels (create, find, list, delete, clean
// connections, ingress configuration, token) and the zone's DNS records.
//
// It imports only the SDK's zero_trust, dns, option, pagination and shared
// packages, never the root package (which compiles ~150 services). SDK
// retries are off; every HTTP attempt goes through an apicall.Caller that
// holds the shared Cloudflare budget limiter and the one retry policy.
package cloudflare

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/packages/pagination"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
)

// ProductionBaseURL is Cloudflare's API v4 base.
const ProductionBaseURL = "https://api.cloudflare.com/client/v4/"

// Error kinds, matched with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("name already taken") // tunnel create with a name in use
	ErrExists   = errors.New("record already exists")
	// ErrActiveConnections: a tunnel with live connections cannot be
	// deleted; CleanConnections first.
	ErrActiveConnections = errors.New("tunnel has active connections")
)

// Cloudflare error codes we act on.
const (
	codeRecordExists   = 81053 // an A, AAAA or CNAME record with that host already exists
	codeIdentical      = 81058 // an identical record already exists
	codeTunnelActive   = 1022  // cannot delete tunnel because it has active connections
	codeRateLimited    = 10429
	codeRateLimitedAlt = 971
)

// Config says which account and zone to manage and how.
type Config struct {
	BaseURL   string // default ProductionBaseURL; a sandbox: "http://127.0.0.1:8787/client/v4/"
	APIToken  string
	AccountID string
	ZoneID    string
	ZoneName  string
	// HTTPClient is optional; its Transport is wrapped to observe attempts.
	// Default: a client with a 60 s overall timeout.
	HTTPClient *http.Client
	// Page sizes of the listings (the sweep's cost is pages, not orgs, and
	// every page spends one request of the 1200 / 5 min budget). Defaults
	// are the largest the API takes: TunnelPageSize 1000 (cfd_tunnel list's
	// per_page maximum); DNSPageSize 5000 (the dns_records schema allows up
	// to 5,000,000, but one page is decoded in memory at ~0.3 ms of client
	// CPU per record, so 5000 keeps a page to about 1.5 s of CPU). PageSize,
	// when set, is used for whichever of the two is not.
	PageSize       int
	TunnelPageSize int
	DNSPageSize    int

	Budget ratelimit.WindowBudget // default ratelimit.DefaultCloudflare
	// Pacer, when set, is the budget's pacing (NewPacer), shared by every
	// client on the same budget (one Cloudflare user: pools whose tokens
	// are one user's); the retry policy and observer are then the ones it
	// was built with. Nil: the client builds its own from Budget.
	Pacer   *Pacer
	Policy  apicall.Policy
	Observe apicall.Observer
}

// Pacer paces one Cloudflare budget: its window limiter, the order of the
// calls waiting on it (readiness polls and deletes before creations) and
// the pause a 429 sets. Cloudflare counts and throttles per API user, so
// the clients of pools on one user's budget share one: together they stay
// within it, a 429 answered to one pauses them all, and one pool's
// creations never go before another's polls.
type Pacer struct {
	window *ratelimit.Resizable
	call   *apicall.Caller
}

// NewPacer builds the pacing of cfg's Budget, with cfg's retry policy and
// observer.
func NewPacer(cfg Config) (*Pacer, error) {
	window, err := ratelimit.NewWindowLimiter(cfg.Budget)
	if err != nil {
		return nil, fmt.Errorf("cloudflare config: %w", err)
	}
	lim := ratelimit.NewPrioritized(window)
	return &Pacer{window: window, call: apicall.New(apicall.Options{
		Provider: "cloudflare", Policy: cfg.Policy, Observe: cfg.Observe, Classify: classify,
		Limit: func(string) ratelimit.Limiter { return lim },
	})}, nil
}

// Burst is the window limiter's burst now (its share of the budget).
func (p *Pacer) Burst() int { return p.window.Burst() }

// Default list page sizes (Config.TunnelPageSize, Config.DNSPageSize).
const (
	DefaultTunnelPageSize = 1000
	DefaultDNSPageSize    = 5000
)

// Client is safe for concurrent use; share one per process so the budget is
// shared.
type Client struct {
	cfg     Config
	window  *ratelimit.Resizable // the budget's limiter, maybe shared (SetBudgetShare)
	call    *apicall.Caller
	tunnels *zero_trust.TunnelCloudflaredService
	records *dns.RecordService
}

// New checks cfg and builds the client.
func New(cfg Config) (*Client, error) {
	var missing []string
	for name, v := range map[string]string{"API token": cfg.APIToken, "account id": cfg.AccountID, "zone id": cfg.ZoneID, "zone name": cfg.ZoneName} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cloudflare config: missing %s", strings.Join(missing, ", "))
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = ProductionBaseURL
	}
	if !strings.HasSuffix(cfg.BaseURL, "/") {
		cfg.BaseURL += "/"
	}
	if cfg.TunnelPageSize <= 0 {
		cfg.TunnelPageSize = cmp.Or(max(cfg.PageSize, 0), DefaultTunnelPageSize)
	}
	if cfg.DNSPageSize <= 0 {
		cfg.DNSPageSize = cmp.Or(max(cfg.PageSize, 0), DefaultDNSPageSize)
	}
	cfg.ZoneName = strings.TrimSuffix(strings.ToLower(cfg.ZoneName), ".")
	pacer := cfg.Pacer
	if pacer == nil {
		var err error
		if pacer, err = NewPacer(cfg); err != nil {
			return nil, err
		}
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		hc = &c
	}
	hc.Transport = apicall.Transport(hc.Transport)
	opts := []option.RequestOption{
		option.WithBaseURL(cfg.BaseURL),
		option.WithAPIToken(cfg.APIToken),
		option.WithHTTPClient(hc),
		option.WithMaxRetries(0), // apicall is the one retry layer
	}
	return &Client{
		cfg:     cfg,
		window:  pacer.window,
		call:    pacer.call,
		tunnels: zero_trust.NewTunnelCloudflaredService(opts...),
		records: dns.NewRecordService(opts...),
	}, nil
}

// ZoneName is the managed zone, lowercase, without a trailing dot.
func (c *Client) ZoneName() string { return c.cfg.ZoneName }

// FQDN is label.zone.
func (c *Client) FQDN(label string) string { return strings.ToLower(label) + "." + c.cfg.ZoneName }

// Caller exposes the call policy (its Retry-After pause, for the engine).
func (c *Client) Caller() *apicall.Caller { return c.call }

// classify adds Cloudflare's rate-limit codes to the HTTP rule.
func classify(err error, a apicall.Attempt) apicall.Class {
	var ae *zero_trust.Error
	if errors.As(err, &ae) {
		for _, e := range ae.Errors {
			if e.Code == codeRateLimited || e.Code == codeRateLimitedAlt {
				return apicall.Throttled
			}
		}
	}
	return apicall.ClassifyHTTP(err, a)
}

// hasCode reports whether err is an API error carrying code.
func hasCode(err error, code int64) bool {
	var ae *zero_trust.Error
	if errors.As(err, &ae) {
		for _, e := range ae.Errors {
			if e.Code == code {
				return true
			}
		}
	}
	return false
}

// do runs one API attempt under the call policy.
func (c *Client) do(ctx context.Context, op, resource string, fn func(ctx context.Context) error) error {
	return c.call.Do(ctx, op, resource, fn)
}

// listAll fetches every page of a V4 page-numbered list and hands each item
// to each, page by page, so only one page of the SDK's decoded items (which
// carry their raw JSON) is held at a time: accumulated, 100,000 DNS records
// and tunnels held hundreds of MB. It stops at total_pages or on an empty or
// short page, and refuses a server that ignores the page parameter instead
// of looping forever. On error the caller drops what each collected.
func listAll[T any](ctx context.Context, c *Client, op string, pageSize int, id func(T) string,
	fetch func(ctx context.Context, page int) (*pagination.V4PagePaginationArray[T], error), each func(*T)) (int, error) {
	prevFirst := ""
	for page := 1; ; page++ {
		var res *pagination.V4PagePaginationArray[T]
		err := c.do(ctx, op, fmt.Sprintf("page %d", page), func(ctx context.Context) error {
			var err error
			res, err = fetch(ctx, page)
			return err
		})
		if err != nil {
			return page - 1, err
		}
		n := len(res.Result)
		if n == 0 {
			return page, nil
		}
		if first := id(res.Result[0]); page > 1 && first != "" && first == prevFirst {
			return page, fmt.Errorf("cloudflare %s: page %d repeats page %d: server ignores paging", op, page, page-1)
		} else {
			prevFirst = first
		}
		for i := range res.Result {
			each(&res.Result[i])
		}
		perPage := int(res.ResultInfo.PerPage)
		if perPage <= 0 {
			perPage = pageSize
		}
		// total_pages (not in the SDK's struct, kept in its extra fields)
		// spares the empty page after a full last one.
		if f, ok := res.ResultInfo.JSON.ExtraFields["total_pages"]; ok {
			if tp, err := strconv.Atoi(f.Raw()); err == nil && tp > 0 && page >= tp {
				return page, nil
			}
		}
		if n < perPage {
			return page, nil
		}
	}
}

// SetBudgetShare makes this client spend share (0..1] of Config.Budget:
// the budget is per Cloudflare user, so replicas each take the share of
// the partitions they own, and together stay within it. With a shared
// Config.Pacer it resizes its limiter, for every client on the budget:
// give them all the same share.
func (c *Client) SetBudgetShare(share float64) {
	ratelimit.SetWindowShare(c.window, c.cfg.Budget, share)
}
