package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tunnelward/tunnelward/internal/secret"
)

// Paths that never need the token: orchestrators probe them without
// credentials, and they show no org data.
var probePaths = []string{"/healthz", "/readyz"}

// auth is the bearer-token check in front of the mux.
type auth struct {
	// sum is the SHA-256 of the token: comparing digests takes the same
	// time whatever the presented token's length, which comparing the raw
	// values with subtle.ConstantTimeCompare would not.
	sum  [sha256.Size]byte
	open map[string]bool // exact paths served without a token

	refused atomic.Int64   // requests refused since the last log line
	logGate rate.Sometimes // one log line per interval, so a scan cannot flood the log
}

// RequireToken makes every endpoint except /healthz, /readyz and the
// exact paths in open (e.g. "/metrics") answer 401 unless the request
// carries "Authorization: Bearer <tok>". A zero token leaves every endpoint
// open. Call it before Serve or Handler.
func (s *Server) RequireToken(tok secret.Token, open ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok.IsZero() {
		s.auth = nil
		return
	}
	a := &auth{sum: sha256.Sum256([]byte(tok.Reveal())), open: map[string]bool{},
		logGate: rate.Sometimes{First: 1, Interval: time.Minute}}
	for _, p := range append(append([]string(nil), probePaths...), open...) {
		a.open[p] = true
	}
	s.auth = a
}

// Reasons a request is refused, for the log line (never with the token).
const (
	reasonMissing   = "missing_token"
	reasonMalformed = "malformed_authorization"
	reasonInvalid   = "invalid_token"
)

// protect wraps h with the token check, when one is required.
func (s *Server) protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.RLock()
		a := s.auth
		s.mu.RUnlock()
		// Exact paths only: anything else, "/healthz/" or "/metrics/x"
		// included, needs the token, so a routing quirk cannot open a door.
		if a == nil || a.open[r.URL.Path] {
			h.ServeHTTP(w, r)
			return
		}
		reason, msg := a.check(r.Header.Get("Authorization"))
		if reason == "" {
			h.ServeHTTP(w, r)
			return
		}
		a.refused.Add(1)
		a.logGate.Do(func() {
			s.log.Warn("admin API request refused: no valid bearer token",
				"reason", reason, "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
				"refused_since_last_line", a.refused.Swap(0))
		})
		// RFC 6750: a request without credentials gets the bare challenge;
		// one with bad credentials also says why.
		challenge := `Bearer realm="tunnelward-admin"`
		switch reason {
		case reasonMalformed:
			challenge += `, error="invalid_request"`
		case reasonInvalid:
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, http.StatusUnauthorized, msg)
	})
}

// check says why an Authorization header value does not carry the token
// ("" when it does). The messages never include what was sent.
func (a *auth) check(header string) (reason, msg string) {
	const how = "send Authorization: Bearer <token> with the admin token (the reconciler's --admin-token-file or TUNNELWARD_ADMIN_TOKEN)"
	scheme, tok, _ := strings.Cut(strings.TrimSpace(header), " ")
	tok = strings.TrimSpace(tok)
	bearer := strings.EqualFold(scheme, "Bearer")
	if scheme == "" || (bearer && tok == "") {
		return reasonMissing, "missing bearer token: this endpoint needs the admin token; " + how
	}
	if !bearer {
		return reasonMalformed, "the Authorization header is not a bearer token; " + how
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], a.sum[:]) != 1 {
		return reasonInvalid, "invalid bearer token: it is not the admin token; " + how
	}
	return "", ""
}
