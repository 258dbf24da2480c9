package secret

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
)

// TunnelSecretSize is the size of a tunnel secret: cloudflared's own
// `tunnel create` draws 32 random bytes, and Cloudflare refuses fewer.
const TunnelSecretSize = 32

// TunnelSecret is a Cloudflare Tunnel's secret: whoever holds it (with the
// account tag and tunnel id, which are not secret) can run the tunnel. It
// is held like a Token: every formatting path prints "[redacted]", and the
// value leaves only through Base64, where it is sent to Cloudflare or put
// into the token.
type TunnelSecret struct {
	b []byte
}

// NewTunnelSecret draws a fresh secret from crypto/rand.
func NewTunnelSecret() (TunnelSecret, error) {
	b := make([]byte, TunnelSecretSize)
	if _, err := rand.Read(b); err != nil {
		return TunnelSecret{}, fmt.Errorf("draw tunnel secret: %w", err)
	}
	return TunnelSecret{b: b}, nil
}

// Base64 is the secret in the form Cloudflare's API and the token carry it
// (standard encoding). Never pass the result to a logger or an error.
func (s TunnelSecret) Base64() string { return base64.StdEncoding.EncodeToString(s.b) }

// IsZero reports whether the secret is empty.
func (s TunnelSecret) IsZero() bool { return len(s.b) == 0 }

// String implements fmt.Stringer.
func (s TunnelSecret) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (s TunnelSecret) GoString() string { return "secret.TunnelSecret{" + Redacted + "}" }

// Format implements fmt.Formatter so every verb redacts.
func (s TunnelSecret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = f.Write([]byte(s.GoString()))
	case verb == 'q':
		_, _ = f.Write([]byte(`"` + Redacted + `"`))
	default:
		_, _ = f.Write([]byte(Redacted))
	}
}

// LogValue implements slog.LogValuer.
func (s TunnelSecret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON implements json.Marshaler.
func (s TunnelSecret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (s TunnelSecret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
