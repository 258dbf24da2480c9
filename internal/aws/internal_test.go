package aws

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/secret"
)

func TestClientToken(t *testing.T) {
	a := ClientToken("acme", 1, 0)
	if a != "tw-acme-g1-a0" || a != ClientToken("acme", 1, 0) {
		t.Fatalf("token %q not readable/deterministic", a)
	}
	seen := map[string]bool{}
	for _, tok := range []string{a, ClientToken("acme", 2, 0), ClientToken("acme", 1, 1), ClientToken("acme1", 1, 0), ClientToken("acm", 11, 0)} {
		if seen[tok] {
			t.Fatalf("collision on %q", tok)
		}
		seen[tok] = true
	}
	long := strings.Repeat("o", 63)
	l1, l2 := ClientToken(long, 1, 0), ClientToken(long, 2, 0)
	if len(l1) != 64 || l1 == l2 || l1 != ClientToken(long, 1, 0) {
		t.Fatalf("long org tokens %q %q", l1, l2)
	}
	for _, tok := range []string{l1, ClientToken(long[:50], 123456789, 99)} {
		if len(tok) > 64 {
			t.Fatalf("token %q longer than 64", tok)
		}
	}
}

func TestRedact(t *testing.T) {
	tok := secret.NewToken("TOKENVALUE123")
	base := errors.New("validation: value TOKENVALUE123 too long")
	err := redact(fmt.Errorf("put: %w", base), tok)
	if strings.Contains(err.Error(), "TOKENVALUE123") || !strings.Contains(err.Error(), secret.Redacted) {
		t.Fatalf("not redacted: %v", err)
	}
	if !errors.Is(err, base) {
		t.Fatal("redaction broke the error chain")
	}
	plain := errors.New("other")
	if redact(plain, tok) != plain || redact(nil, tok) != nil {
		t.Fatal("redact changed an error without the token")
	}
}
