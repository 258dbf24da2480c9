package cloudsim

import (
	"context"
	"errors"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

// fakeClock is the world's clock in tests: it moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one emulator on loopback with real cloudflare-go services on it.
type env struct {
	t      testing.TB
	sim    *Sim
	srv    *httptest.Server
	clock  *fakeClock
	tun    *zero_trust.TunnelCloudflaredService
	rec    *dns.RecordService
	acct   string
	zone   string
	cfOpts []option.RequestOption
}

// newEnv starts a world on a fake clock, rate limits off unless mutate
// turns them on; the SDK does not retry unless a test asks it to.
func newEnv(t testing.TB, mutate func(*Config)) *env {
	t.Helper()
	clock := newFakeClock()
	cfg := DefaultConfig()
	cfg.Now = clock.Now
	cfg.Limits = RateLimits{}
	if mutate != nil {
		mutate(&cfg)
	}
	s := New(cfg)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	e := &env{t: t, sim: s, srv: srv, clock: clock, acct: cfg.AccountID, zone: cfg.ZoneID}
	e.cfOpts = []option.RequestOption{
		option.WithBaseURL(srv.URL + "/client/v4/"),
		option.WithAPIToken(cfg.CFToken),
		option.WithHTTPClient(srv.Client()),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(10 * time.Second),
	}
	e.tun = zero_trust.NewTunnelCloudflaredService(e.cfOpts...)
	e.rec = dns.NewRecordService(e.cfOpts...)
	return e
}

// set fills a cloudflare-go param.Field (its type lives in an internal
// package, and cloudflare.F lives in the root package we do not import).
func set[T any](field any, v T) {
	rv := reflect.ValueOf(field).Elem()
	rv.FieldByName("Value").Set(reflect.ValueOf(v))
	rv.FieldByName("Present").SetBool(true)
}

// cfErrOf unwraps the SDK's API error.
func cfErrOf(t *testing.T, err error) *zero_trust.Error {
	t.Helper()
	var apiErr *zero_trust.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want a Cloudflare API error, got %v", err)
	}
	return apiErr
}

// wantCFError asserts the HTTP status and the v4 error code.
func wantCFError(t *testing.T, err error, status int, code int64) {
	t.Helper()
	if err == nil {
		t.Fatalf("want error %d/%d, got success", status, code)
	}
	apiErr := cfErrOf(t, err)
	if apiErr.StatusCode != status {
		t.Fatalf("status: got %d, want %d (%v)", apiErr.StatusCode, status, err)
	}
	if len(apiErr.Errors) == 0 || apiErr.Errors[0].Code != code {
		t.Fatalf("error code: got %+v, want %d", apiErr.Errors, code)
	}
}

func (e *env) createTunnel(name string) string {
	e.t.Helper()
	var p zero_trust.TunnelCloudflaredNewParams
	set(&p.AccountID, e.acct)
	set(&p.Name, name)
	set(&p.ConfigSrc, zero_trust.TunnelCloudflaredNewParamsConfigSrcCloudflare)
	tun, err := e.tun.New(context.Background(), p)
	if err != nil {
		e.t.Fatalf("create tunnel %s: %v", name, err)
	}
	return tun.ID
}

func (e *env) getTunnel(id string) (string, error) {
	var p zero_trust.TunnelCloudflaredGetParams
	set(&p.AccountID, e.acct)
	tun, err := e.tun.Get(context.Background(), id, p)
	if err != nil {
		return "", err
	}
	return string(tun.Status), nil
}

func (e *env) createCNAME(name, content, comment string) (*dns.RecordResponse, error) {
	var p dns.RecordNewParams
	set(&p.ZoneID, e.zone)
	var b dns.RecordNewParamsBody
	set(&b.Type, dns.RecordNewParamsBodyTypeCNAME)
	set(&b.Name, name)
	set(&b.Content, content)
	set(&b.TTL, dns.TTL1)
	set(&b.Proxied, true)
	if comment != "" {
		set(&b.Comment, comment)
	}
	p.Body = b
	return e.rec.New(context.Background(), p)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
