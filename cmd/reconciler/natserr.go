package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// withNATSCause adds the connection's last error to err: when the server
// refuses our credentials the client closes the connection, and the call
// that notices only says "connection closed" — the cause (authorization
// violation, TLS) lives in LastError.
func withNATSCause(nc *nats.Conn, err error) error {
	le := nc.LastError()
	if le == nil || errors.Is(err, le) || strings.Contains(err.Error(), le.Error()) {
		return err
	}
	hint := ""
	if strings.Contains(strings.ToLower(le.Error()), "authorization") || strings.Contains(strings.ToLower(le.Error()), "authentication") {
		hint = "; the server requires credentials: pass --creds FILE or --nkey FILE"
	}
	return fmt.Errorf("%w (nats server said: %v%s)", err, le, hint)
}
