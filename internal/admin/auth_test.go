package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/state"
)

const testToken = "tw-admin-test-token-5f1e0c9a7b3d"

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// authServer is an admin server over a store with one org, /metrics and a
// /v1/plan stand-in registered, and its log captured.
func authServer(t *testing.T) (*Server, *syncBuffer) {
	t.Helper()
	st, err := state.Open(filepath.Join(t.TempDir(), "s.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Apply([]state.Fact{{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "acme", Slug: "acme"}}); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	s := New(st, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	s.AddCheck("state", func(context.Context) error { return st.Ping() })
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.Handle("GET /metrics", ok)
	s.Handle("GET /v1/plan", ok)
	return s, logs
}

type authCase struct {
	name, path, header string
	code               int
	// challenge is the WWW-Authenticate value a 401 must carry; errPart a
	// fragment of its JSON error.
	challenge, errPart string
}

func request(t *testing.T, h http.Handler, path, header string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if header != "" {
		req.Header.Set("Authorization", header)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func checkAuthCases(t *testing.T, h http.Handler, cases []authCase) {
	t.Helper()
	for _, tc := range cases {
		rec := request(t, h, tc.path, tc.header)
		if rec.Code != tc.code {
			t.Errorf("%s: GET %s: %d, want %d: %s", tc.name, tc.path, rec.Code, tc.code, rec.Body)
			continue
		}
		if strings.Contains(rec.Body.String(), testToken[4:]) {
			t.Errorf("%s: the answer echoes the token: %s", tc.name, rec.Body)
		}
		if tc.code != http.StatusUnauthorized {
			if rec.Header().Get("WWW-Authenticate") != "" {
				t.Errorf("%s: a %d carries a challenge", tc.name, rec.Code)
			}
			continue
		}
		if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, got, tc.challenge)
		}
		var body struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: 401 body is not a JSON error (%v): %s", tc.name, err, rec.Body)
			continue
		}
		if !strings.Contains(body.Error, tc.errPart) || !strings.Contains(body.Error, "Authorization: Bearer <token>") {
			t.Errorf("%s: error %q does not say %q and how to authenticate", tc.name, body.Error, tc.errPart)
		}
	}
}

const (
	bare     = `Bearer realm="tunnelward-admin"`
	badToken = `Bearer realm="tunnelward-admin", error="invalid_token"`
	badReq   = `Bearer realm="tunnelward-admin", error="invalid_request"`
)

// With a token, every endpoint but the probes answers 401 without it, and
// the answer names what is missing or wrong without echoing what was sent.
func TestTokenRequiredExceptProbes(t *testing.T) {
	s, logs := authServer(t)
	s.RequireToken(secret.NewToken(testToken))
	h := s.Handler()
	good := "Bearer " + testToken
	checkAuthCases(t, h, []authCase{
		{name: "orgs without a token", path: "/v1/orgs", code: 401, challenge: bare, errPart: "missing bearer token"},
		{name: "orgs with the token", path: "/v1/orgs", header: good, code: 200},
		{name: "scheme is case-insensitive", path: "/v1/orgs", header: "bearer  " + testToken + " ", code: 200},
		{name: "one org with the token", path: "/v1/orgs/acme", header: good, code: 200},
		{name: "one org without", path: "/v1/orgs/acme", code: 401, challenge: bare, errPart: "missing bearer token"},
		{name: "wrong token", path: "/v1/orgs", header: "Bearer not-the-admin-token-at-all", code: 401, challenge: badToken, errPart: "invalid bearer token"},
		{name: "token prefix", path: "/v1/orgs", header: good[:len(good)-1], code: 401, challenge: badToken, errPart: "invalid bearer token"},
		{name: "token with a suffix", path: "/v1/orgs", header: good + "0", code: 401, challenge: badToken, errPart: "invalid bearer token"},
		{name: "basic auth", path: "/v1/orgs", header: "Basic YWRtaW46" + testToken, code: 401, challenge: badReq, errPart: "not a bearer token"},
		{name: "token without a scheme", path: "/v1/orgs", header: testToken, code: 401, challenge: badReq, errPart: "not a bearer token"},
		{name: "empty bearer", path: "/v1/orgs", header: "Bearer ", code: 401, challenge: bare, errPart: "missing bearer token"},
		{name: "plan without a token", path: "/v1/plan", code: 401, challenge: bare, errPart: "missing bearer token"},
		{name: "plan with the token", path: "/v1/plan", header: good, code: 200},
		{name: "metrics without a token", path: "/metrics", code: 401, challenge: bare, errPart: "missing bearer token"},
		{name: "metrics with the token", path: "/metrics", header: good, code: 200},
		{name: "unknown path without a token", path: "/v2/secrets", code: 401, challenge: bare, errPart: "missing bearer token"},
		{name: "unknown path with the token", path: "/v2/secrets", header: good, code: 404},
		{name: "healthz without a token", path: "/healthz", code: 200},
		{name: "readyz without a token", path: "/readyz", code: 200},
		{name: "readyz with a wrong token", path: "/readyz", header: "Bearer wrong", code: 200},
		{name: "near a probe path", path: "/healthz/", code: 401, challenge: bare, errPart: "missing bearer token"},
	})
	l := logs.String()
	if !strings.Contains(l, "admin API request refused") || !strings.Contains(l, `"reason":"missing_token"`) {
		t.Errorf("refusals are not logged:\n%s", l)
	}
	if strings.Contains(l, testToken[4:]) {
		t.Errorf("the log holds the token:\n%s", l)
	}
}

// --admin-metrics-public: /metrics answers without the token, nothing
// else does.
func TestTokenWithPublicMetrics(t *testing.T) {
	s, _ := authServer(t)
	s.RequireToken(secret.NewToken(testToken), "/metrics")
	checkAuthCases(t, s.Handler(), []authCase{
		{name: "metrics without a token", path: "/metrics", code: 200},
		{name: "orgs without a token", path: "/v1/orgs", code: 401, challenge: bare, errPart: "missing bearer token"},
		{name: "plan without a token", path: "/v1/plan", code: 401, challenge: bare, errPart: "missing bearer token"},
		{name: "healthz without a token", path: "/healthz", code: 200},
	})
}

// Without a token (the loopback default) every endpoint stays open, as
// before.
func TestNoTokenEverythingOpen(t *testing.T) {
	s, _ := authServer(t)
	s.RequireToken(secret.Token{})
	checkAuthCases(t, s.Handler(), []authCase{
		{name: "orgs", path: "/v1/orgs", code: 200},
		{name: "org", path: "/v1/orgs/acme", code: 200},
		{name: "plan", path: "/v1/plan", code: 200},
		{name: "metrics", path: "/metrics", code: 200},
		{name: "healthz", path: "/healthz", code: 200},
		{name: "a stray Authorization header is ignored", path: "/v1/orgs", header: "Bearer whatever", code: 200},
	})
}
