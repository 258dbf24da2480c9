package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/tunnelward/tunnelward/internal/broker"
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
		hint = "; " + natsHint(broker.ReasonAuth, true)
	}
	return fmt.Errorf("%w (nats server said: %v%s)", err, le, hint)
}

// natsHint says what to check when a NATS server cannot be used, naming
// the flags. The embedded server gets none: its address is ours.
func natsHint(r broker.Reason, external bool) string {
	if !external {
		return ""
	}
	switch r {
	case broker.ReasonRefused:
		return "nothing listens there: is the NATS server running, and are the host and port in --nats-url right?"
	case broker.ReasonNoHost:
		return "the host name does not resolve: check it in --nats-url (and the DNS of this host)"
	case broker.ReasonTimeout:
		return "no answer in time: check the address in --nats-url and that no firewall drops the traffic"
	case broker.ReasonAuth:
		return "the server requires credentials: pass --creds FILE or --nkey FILE"
	case broker.ReasonTLS:
		return "check --tls-ca (the CA that signed the server's certificate), --tls-cert/--tls-key, and that a tls:// URL points at a TLS listener"
	}
	return ""
}

// withHint appends the hint for a connection error from broker.Dial.
func withHint(err error, external bool) error {
	var ce *broker.ConnectError
	if errors.As(err, &ce) {
		if h := natsHint(ce.Reason, external); h != "" {
			return fmt.Errorf("%w; %s", err, h)
		}
	}
	return err
}

func joinCauses(e *broker.ConnectError) string { return strings.Join(e.Causes, "; ") }
