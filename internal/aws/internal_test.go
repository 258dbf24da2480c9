package aws

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/secret"
)

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
