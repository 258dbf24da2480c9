package main

import (
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/config"
)

// connectNATS dials NATS with the configured authentication (credentials
// file or nkey seed) and TLS, through broker.Connect (which keeps retrying in
// the background when the server is briefly unreachable, at start too).
func connectNATS(url string, n config.NATS, name string, log *slog.Logger) (*nats.Conn, error) {
	var auth []nats.Option
	if n.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(n.NKey)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed file %s: %w", n.NKey, err)
		}
		auth = append(auth, o)
	}
	if n.TLSCA != "" {
		auth = append(auth, nats.RootCAs(n.TLSCA))
	}
	if n.TLSCert != "" {
		auth = append(auth, nats.ClientCert(n.TLSCert, n.TLSKey))
	}
	return broker.Connect(url, n.Creds, name, log, auth...)
}
