package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/state"
)

// app holds the running parts, so later wiring (the reconcile engine,
// metrics) has one place to reach them.
type app struct {
	opts      options
	log       *slog.Logger
	store     *state.Store
	nats      *broker.Embedded // nil with --nats-url
	nc        *nats.Conn
	js        jetstream.JetStream
	validator *events.Validator
	admin     *admin.Server
	ingest    *ingest.Ingester
	// cloudURL is the cloud emulator's base URL in sandbox or URL mode, ""
	// in live mode.
	cloudURL string

	// onApplied receives every org id whose desired state an event changed,
	// after the commit. The reconcile engine sets it (its workqueue's Add).
	onApplied func(orgID string)

	closers []func() // run in reverse order at shutdown
}

// run starts everything, serves until ctx ends, then shuts down in order:
// stop fetching, commit and ack the batch in hand, stop the admin server,
// close bbolt, drain NATS, stop the embedded server.
func run(ctx context.Context, o options, log *slog.Logger) error {
	a := &app{opts: o, log: log}
	defer a.close()
	if err := a.start(ctx); err != nil {
		return err
	}
	ictx, stopIngest := context.WithCancel(context.Background())
	ingestDone := make(chan error, 1)
	go func() { ingestDone <- a.ingest.Run(ictx) }()
	log.Info("reconciler ready", "admin", "http://"+o.adminListen, "nats", a.nc.ConnectedUrlRedacted(), "state", a.store.Path())

	var err error
	select {
	case <-ctx.Done():
		log.Info("signal received; shutting down (finishing the open batch)")
	case err = <-ingestDone:
		err = fmt.Errorf("ingest stopped: %w", err)
	}
	stopIngest()
	if ierr := <-ingestDone; ierr != nil && err == nil {
		err = ierr
	}
	log.Info("ingest stopped", "stats", fmt.Sprintf("%+v", a.ingest.Stats()))
	return err
}

func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

func (a *app) start(ctx context.Context) error {
	o, log := a.opts, a.log
	if err := checkCloud(o.cloud); err != nil {
		return err
	}
	if err := os.MkdirAll(o.dataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir %s: %w", o.dataDir, err)
	}

	// The state file first: a second reconciler on this data dir stops
	// here with a clear message, before touching NATS.
	store, err := state.Open(o.statePath(), state.Options{Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	a.store = store
	a.closers = append(a.closers, func() {
		if err := store.Close(); err != nil {
			log.Error("close state", "err", err)
		}
	})

	var opts []events.Option
	if o.reservedSlugs != "" {
		opts = append(opts, events.WithReservedSlugs(strings.Split(o.reservedSlugs, ",")))
	}
	if a.validator, err = events.NewValidator(opts...); err != nil {
		return err
	}

	natsURL := o.natsURL
	if natsURL == "" {
		a.nats, err = broker.StartEmbedded(o.natsListen, o.natsDir())
		if err != nil {
			return err
		}
		a.closers = append(a.closers, func() {
			a.nats.Shutdown()
			log.Info("embedded nats stopped")
		})
		natsURL = a.nats.ClientURL()
		log.Info("embedded nats-server with JetStream", "listen", o.natsListen, "store", o.natsDir())
	} else if o.creds == "" {
		log.Info("external nats", "url", redactURL(natsURL))
	}
	if a.nc, err = broker.Connect(natsURL, o.creds, "tunnelward-reconciler", log); err != nil {
		return err
	}
	a.closers = append(a.closers, func() {
		if err := a.nc.Drain(); err != nil {
			a.nc.Close()
		}
		for i := 0; i < 50 && !a.nc.IsClosed(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	if a.js, err = jetstream.New(a.nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := broker.EnsureStreams(sctx, a.js, log); err != nil {
		return err
	}

	if err := a.startCloud(ctx); err != nil {
		return err
	}

	// The reconcile engine is wired here: build it from a.store and
	// a.cloudURL (or live clients), set a.onApplied to its queue's Add,
	// start its workers with a.closers for shutdown, and add its checks
	// (e.g. "sweep not stale") with a.admin.AddCheck below.

	a.ingest, err = ingest.New(ctx, ingest.Config{
		JS: a.js, Store: a.store, Validator: a.validator, Log: log,
		OnApplied: func(orgID string) {
			if a.onApplied != nil {
				a.onApplied(orgID)
			}
		},
	})
	if err != nil {
		return err
	}

	a.admin = admin.New(a.store, log)
	a.admin.AddLivenessCheck("ingest", func(context.Context) error {
		if err := a.ingest.Check(context.Background()); err != nil && strings.Contains(err.Error(), "not running") {
			return err
		}
		return nil
	})
	a.admin.AddCheck("nats", func(context.Context) error {
		if s := a.nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats connection is %s", s)
		}
		return nil
	})
	a.admin.AddCheck("state", func(context.Context) error { return a.store.Ping() })
	a.admin.AddCheck("ingest", a.ingest.Check)
	actx, stopAdmin := context.WithCancel(context.Background())
	wait, err := a.admin.Serve(actx, o.adminListen)
	if err != nil {
		stopAdmin()
		return err
	}
	a.closers = append(a.closers, func() {
		stopAdmin()
		if err := wait(); err != nil {
			log.Error("admin server", "err", err)
		}
	})
	return a.startEngine(ctx) // engine.go
}

func checkCloud(mode string) error {
	switch {
	case mode == "sandbox", mode == "live":
		return nil
	case strings.HasPrefix(mode, "http://"), strings.HasPrefix(mode, "https://"):
		if u, err := url.Parse(mode); err == nil && u.Host != "" {
			return nil
		}
	}
	return fmt.Errorf("--cloud %q: want sandbox, live, or the http(s) URL of a cloudsim", mode)
}

// startCloud serves the in-process emulator in sandbox mode and says loudly
// that nothing real is touched.
func (a *app) startCloud(context.Context) error {
	o, log := a.opts, a.log
	switch {
	case o.cloud == "sandbox":
		l, err := net.Listen("tcp", o.sandboxListen)
		if err != nil {
			return fmt.Errorf("sandbox cloud emulator: listen on %s (use --sandbox-listen): %w", o.sandboxListen, err)
		}
		srv := &http.Server{Handler: cloudsim.New(cloudsim.DefaultConfig()).Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("sandbox server", "err", err)
			}
		}()
		a.closers = append(a.closers, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		})
		a.cloudURL = "http://" + l.Addr().String()
		log.Warn("**************************************************************************")
		log.Warn("SANDBOX MODE: running against the in-process cloud emulator, NOT real Cloudflare/AWS",
			"sandbox", a.cloudURL, "state", a.cloudURL+"/_sim/state")
		log.Warn("live mode is explicit: --cloud live (or --cloud URL of a cloudsim)")
		log.Warn("**************************************************************************")
	case o.cloud == "live":
		log.Warn("LIVE MODE: real Cloudflare and AWS APIs")
	default:
		a.cloudURL = strings.TrimRight(o.cloud, "/")
		log.Warn("cloud emulator at a URL: not real Cloudflare/AWS", "cloudsim", a.cloudURL)
	}
	return nil
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = url.User("redacted")
	return u.String()
}
