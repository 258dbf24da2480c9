package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestTunnelSecretNeverPrints(t *testing.T) {
	s, err := NewTunnelSecret()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(s.Base64())
	if err != nil || len(raw) != TunnelSecretSize {
		t.Fatalf("Base64 = %d bytes (%v), want %d", len(raw), err, TunnelSecretSize)
	}
	b64 := s.Base64()
	h := struct {
		Name   string
		Secret TunnelSecret
	}{"acme", s}
	var outs []string
	for _, verb := range []string{"%s", "%v", "%+v", "%#v", "%q", "%x", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &s))
	}
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j), fmt.Errorf("create with %v", s).Error())
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s, "h", h)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "secret", s, "h", h)
	outs = append(outs, buf.String())
	for _, o := range outs {
		if strings.Contains(o, b64) || strings.Contains(o, b64[:12]) || strings.Contains(o, fmt.Sprintf("%x", raw[:6])) {
			t.Errorf("secret leaked in %q", o)
		}
	}
	s2, _ := NewTunnelSecret()
	if s2.Base64() == b64 {
		t.Error("two secrets are equal")
	}
	if !(TunnelSecret{}).IsZero() || s.IsZero() {
		t.Error("IsZero wrong")
	}
}
