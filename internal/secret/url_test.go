package secret

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                      "nats://127.0.0.1:4222",
		"nats://u:hunter2@nats.internal:4222":        "nats://u:[redacted]@nats.internal:4222",
		"tls://s3cr3tT0ken@nats.internal:4222":       "tls://[redacted]@nats.internal:4222",
		"u:hunter2@nats.internal:4222":               "u:[redacted]@nats.internal:4222",
		"nats://u:hunter2@a:4222,nats://u:hunter2@b": "nats://u:[redacted]@a:4222,nats://u:[redacted]@b",
		// Malformed (a bad port, an @ in the password): still hidden.
		"nats://u:hunter2@host:abc":    "nats://u:[redacted]@host:abc",
		"nats://u:hun@ter2@host:4222/": "nats://u:[redacted]@host:4222/",
		"ws://host:80/path@x":          "ws://host:80/path@x",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactURLsIn(t *testing.T) {
	urls := "nats://u:hunter2@host:abc,nats://tok3n@b:4222"
	text := `connect: parse "nats://u:hunter2@host:abc": invalid port ":abc" after host; nats://tok3n@b:4222 refused`
	got := RedactURLsIn(text, urls)
	if strings.Contains(got, "hunter2") || strings.Contains(got, "tok3n") || !strings.Contains(got, "nats://u:[redacted]@host:abc") {
		t.Fatalf("RedactURLsIn: %q", got)
	}
}
