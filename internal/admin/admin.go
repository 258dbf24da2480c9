// Package admin is the admin HTTP server: liveness and readiness probes
// that name the failing check, and a read-only view of the org records.
// Later parts add their own checks (AddCheck) and handlers (Handle, e.g.
// /metrics). RequireToken puts a bearer token in front of everything but
// the probes; Costly caches and rate-limits handlers that spend a cloud
// budget.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/state"
)

// Orgs is what the server reads org records from (*state.Store).
type Orgs interface {
	Get(orgID string) (state.Org, bool, error)
	List() ([]state.Org, error)
}

type check struct {
	name string
	fn   func(context.Context) error
}

// Server is the admin HTTP server.
type Server struct {
	orgs         Orgs
	log          *slog.Logger
	mux          *http.ServeMux
	checkTimeout time.Duration

	mu        sync.RWMutex
	liveness  []check
	readiness []check
	auth      *auth // nil: every endpoint open (see RequireToken)
	watch     func() map[string]time.Duration
	view      func(state.Org) state.Org
	poolOf    func(state.Org) string
	pools     func() any
}

// Org is one org as /v1/orgs and /v1/orgs/{id} show it: the record, the
// Cloudflare pool it is placed in as a top-level "pool" ("" before its
// placement), and when its tunnel token was last rotated as a top-level
// "token_rotated_at" (RFC 3339; absent before a rotation completed).
type Org struct {
	state.Org
	Pool           string     `json:"pool"`
	TokenRotatedAt *time.Time `json:"token_rotated_at,omitempty"`
}

// SetPoolUsage makes GET /v1/orgs also show each Cloudflare pool's use
// against its limits ("pools": what fn returns, the engine's Pools), for
// `reconciler status`.
func (s *Server) SetPoolUsage(fn func() any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pools = fn
}

// SetPoolOf makes /v1/orgs and /v1/orgs/{id} name each org's pool through
// fn (the engine's PoolOf, which knows the default pool of records from
// before pools). Without it the pool is the record's observed one.
func (s *Server) SetPoolOf(fn func(state.Org) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.poolOf = fn
}

// SetWatchSchedule makes GET /v1/orgs also name the effective interval of
// each listing's watch, for `reconciler status`.
func (s *Server) SetWatchSchedule(fn func() map[string]time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watch = fn
}

// SetOrgView makes GET /v1/orgs and /v1/orgs/{id} show each record through
// fn: the engine's view, whose observed-at includes the watches' looks.
func (s *Server) SetOrgView(fn func(state.Org) state.Org) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.view = fn
}

func (s *Server) viewed(o state.Org) Org {
	s.mu.RLock()
	fn, poolOf := s.view, s.poolOf
	s.mu.RUnlock()
	if fn != nil {
		o = fn(o)
	}
	v := Org{Org: o, Pool: o.Observed.Pool}
	if t := o.Observed.TokenRotatedAt; !t.IsZero() {
		t = t.UTC()
		v.TokenRotatedAt = &t
	}
	if poolOf != nil {
		v.Pool = poolOf(o)
	}
	return v
}

// New returns a server reading orgs from o.
func New(o Orgs, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{orgs: o, log: log, mux: http.NewServeMux(), checkTimeout: 2 * time.Second}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { s.probe(w, r, s.checks(false)) })
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { s.probe(w, r, s.checks(true)) })
	s.mux.HandleFunc("GET /v1/orgs", s.listOrgs)
	s.mux.HandleFunc("GET /v1/orgs/{id}", s.getOrg)
	return s
}

// AddCheck adds a readiness check (/readyz): the process works but should
// not be relied on until it passes (e.g. "nats", "state", "ingest", "sweep
// not stale").
func (s *Server) AddCheck(name string, fn func(ctx context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readiness = append(s.readiness, check{name, fn})
}

// AddLivenessCheck adds a liveness check (/healthz): failing means the
// process is wedged and should be restarted.
func (s *Server) AddLivenessCheck(name string, fn func(ctx context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.liveness = append(s.liveness, check{name, fn})
}

// Handle registers another handler (e.g. "GET /metrics").
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler is the server's HTTP handler, behind the token check of
// RequireToken.
func (s *Server) Handler() http.Handler { return s.protect(s.mux) }

func (s *Server) checks(ready bool) []check {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if ready {
		return append([]check(nil), s.readiness...)
	}
	return append([]check(nil), s.liveness...)
}

// CheckResult is one check in a probe response.
type CheckResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// ProbeResponse is the body of /healthz and /readyz.
type ProbeResponse struct {
	Status string        `json:"status"` // ok or failing
	Failed []string      `json:"failed,omitempty"`
	Checks []CheckResult `json:"checks"`
}

func (s *Server) probe(w http.ResponseWriter, r *http.Request, checks []check) {
	ctx, cancel := context.WithTimeout(r.Context(), s.checkTimeout)
	defer cancel()
	resp := ProbeResponse{Status: "ok", Checks: make([]CheckResult, len(checks))}
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			err := runCheck(ctx, c.fn)
			resp.Checks[i] = CheckResult{Name: c.name, OK: err == nil}
			if err != nil {
				resp.Checks[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	code := http.StatusOK
	for _, c := range resp.Checks {
		if !c.OK {
			resp.Status, code = "failing", http.StatusServiceUnavailable
			resp.Failed = append(resp.Failed, c.Name)
		}
	}
	writeJSON(w, code, resp)
}

// runCheck runs fn, turning a panic or a hang past ctx into an error.
func runCheck(ctx context.Context, fn func(context.Context) error) (err error) {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("check panicked: %v", r)
			}
		}()
		done <- fn(ctx)
	}()
	select {
	case err = <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("check did not answer in time: %w", ctx.Err())
	}
}

var orgIDPattern = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)

func (s *Server) listOrgs(w http.ResponseWriter, _ *http.Request) {
	orgs, err := s.orgs.List()
	if err != nil {
		s.log.Error("list orgs", "err", err)
		writeError(w, http.StatusInternalServerError, "reading org state failed: "+err.Error())
		return
	}
	views := make([]Org, len(orgs))
	for i := range orgs {
		views[i] = s.viewed(orgs[i])
	}
	body := map[string]any{"orgs": views}
	s.mu.RLock()
	watch, pools := s.watch, s.pools
	s.mu.RUnlock()
	if pools != nil {
		body["pools"] = pools()
	}
	if watch != nil {
		iv := map[string]string{}
		for l, d := range watch() {
			iv[l] = d.String()
		}
		body["watch_intervals"] = iv
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) getOrg(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !orgIDPattern.MatchString(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid org id %q: want lowercase [a-z0-9-], 1..63 characters", id))
		return
	}
	o, ok, err := s.orgs.Get(id)
	switch {
	case err != nil:
		s.log.Error("get org", "org_id", id, "err", err)
		writeError(w, http.StatusInternalServerError, "reading org state failed: "+err.Error())
	case !ok:
		writeError(w, http.StatusNotFound, fmt.Sprintf("org %q not found", id))
	default:
		writeJSON(w, http.StatusOK, s.viewed(o))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// Serve listens on addr and serves until ctx ends, then shuts down
// gracefully. The listener is opened before Serve returns an error, so a
// taken port is reported at once.
func (s *Server) Serve(ctx context.Context, addr string) (wait func() error, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin server: listen on %s: %w", addr, err)
	}
	return s.ServeListener(ctx, l), nil
}

// ServeListener serves on l (opened early, so start-up can check every
// address before it starts anything) until ctx ends, like Serve.
func (s *Server) ServeListener(ctx context.Context, l net.Listener) (wait func() error) {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() {
		err := srv.Serve(l)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return func() error { return <-errc }
}
