package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/config"
)

// natsStartBudget is how long start-up keeps retrying an unreachable NATS
// server before it gives up (a restart by the supervisor then logs it
// again); tests shorten it.
var natsStartBudget = 30 * time.Second

// connectNATS dials NATS with the configured authentication (credentials
// file or nkey seed) and TLS. An unreachable server is retried for
// natsStartBudget, each attempt logged with the URL, what went wrong and
// when the next one comes; refused credentials or TLS fail at once. Once
// connected, the connection reconnects by itself for as long as it runs.
func connectNATS(ctx context.Context, url string, n config.NATS, name string, log *slog.Logger) (*nats.Conn, error) {
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
	ctx, cancel := context.WithTimeout(ctx, natsStartBudget)
	defer cancel()
	deadline, _ := ctx.Deadline()
	external := n.URL != ""
	nc, err := broker.Dial(ctx, url, broker.DialOptions{Creds: n.Creds, Name: name, Log: log, Extra: auth,
		OnRetry: func(r broker.Retry) {
			args := []any{"url", r.Err.URL, "err", joinCauses(r.Err), "attempt", r.Attempt,
				"retry_in", r.Wait.Round(time.Millisecond), "gives_up_in", time.Until(deadline).Round(time.Second)}
			if h := natsHint(r.Err.Reason, external); h != "" {
				args = append(args, "hint", h)
			}
			log.Warn("cannot reach NATS; retrying", args...)
		}})
	if err != nil {
		return nil, withHint(err, external)
	}
	return nc, nil
}
