// Package secret holds values that must never be printed: the Cloudflare
// tunnel token. Every formatting path (fmt verbs, slog, JSON, text) prints
// "[redacted]"; the value leaves only through Reveal, at the one place it
// must go over the wire (the SSM PutParameter call).
package secret

import (
	"fmt"
	"log/slog"
)

// Redacted is what a Token prints as.
const Redacted = "[redacted]"

// Token is a tunnel token. The zero value is empty.
type Token struct {
	// v is unexported so reflection-based printers (fmt %+v of a containing
	// struct, encoding/json) cannot reach it either.
	v string
}

// NewToken wraps a token value.
func NewToken(v string) Token { return Token{v: v} }

// Reveal returns the raw value. Call it only where the value must be sent to
// its store; never pass the result to a logger or an error.
func (t Token) Reveal() string { return t.v }

// IsZero reports whether the token is empty.
func (t Token) IsZero() bool { return t.v == "" }

// String implements fmt.Stringer.
func (t Token) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (t Token) GoString() string { return "secret.Token{" + Redacted + "}" }

// Format implements fmt.Formatter so every verb (%s %v %q %x %d ...) redacts.
func (t Token) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(t.GoString()))
		return
	}
	if verb == 'q' {
		_, _ = f.Write([]byte(`"` + Redacted + `"`))
		return
	}
	_, _ = f.Write([]byte(Redacted))
}

// LogValue implements slog.LogValuer.
func (t Token) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON implements json.Marshaler.
func (t Token) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (t Token) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
