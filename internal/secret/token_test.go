package secret

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const raw = "eyJhIjoiYWNjdCIsInQiOiJ0dW5uZWwiLCJzIjoic2VjcmV0In0="

func TestTokenNeverPrints(t *testing.T) {
	tok := NewToken(raw)
	type holder struct {
		Name  string
		Token Token
		Ptr   *Token
	}
	h := holder{Name: "acme", Token: tok, Ptr: &tok}

	var outs []string
	for _, verb := range []string{"%s", "%v", "%+v", "%#v", "%q", "%x", "%X", "%d", "%10s", "%-5v"} {
		outs = append(outs, fmt.Sprintf(verb, tok), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &tok))
	}
	outs = append(outs, fmt.Sprint(tok), fmt.Sprintln(tok, h), tok.String(), tok.GoString())
	outs = append(outs, fmt.Errorf("put token %v: %w", tok, errors.New("boom")).Error())

	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	m, err := json.Marshal(map[string]any{"t": tok})
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(m))
	x, err := xml.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(x))

	var buf bytes.Buffer
	for _, hd := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
		l := slog.New(hd)
		l.Info("token fetched", "token", tok, "holder", h, slog.Any("ptr", &tok))
		l.With("tok", tok).Info("again")
		l.Info("group", slog.Group("g", "token", tok))
	}
	outs = append(outs, buf.String())

	for _, o := range outs {
		if strings.Contains(o, raw) || strings.Contains(o, "eyJ") || strings.Contains(o, "c2VjcmV0") {
			t.Errorf("token leaked in %q", o)
		}
	}
	if !strings.Contains(buf.String(), Redacted) {
		t.Errorf("log does not show %s: %s", Redacted, buf.String())
	}
	if got := fmt.Sprintf("%v|%s|%q", tok, tok, tok); got != `[redacted]|[redacted]|"[redacted]"` {
		t.Errorf("formatting = %s", got)
	}
}

func TestReveal(t *testing.T) {
	tok := NewToken(raw)
	if tok.Reveal() != raw {
		t.Fatalf("Reveal lost the value")
	}
	if tok.IsZero() || !NewToken("").IsZero() || !(Token{}).IsZero() {
		t.Fatalf("IsZero wrong")
	}
}
