package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/cluster"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/state"
)

// app holds the running parts of the daemon: NATS, bbolt, ingest, the
// engine, the admin server and the metrics they all report to.
type app struct {
	cfg        config.Config
	log        *slog.Logger
	metrics    *metrics.Metrics
	store      *state.Store
	nats       *broker.Embedded // nil with --nats-url
	nc         *nats.Conn
	js         jetstream.JetStream
	validator  *events.Validator
	admin      *admin.Server
	ingest     *ingest.Ingester
	consumer   jetstream.Consumer
	engine     *reconcile.Engine
	cluster    *cluster.Manager     // partition leases (cluster.go)
	placements *cluster.Placements  // the pools' shared counts (cluster.go)
	cfs        []*cloudflare.Client // the engine's, one per pool, for their share of the budgets
	aws        []*aws.Client        // the engine's, one per region, likewise
	// cloudURL is the cloud emulator's base URL in sandbox or URL mode, ""
	// in live mode.
	cloudURL string
	// sandbox is the in-process emulator (sandbox mode), loaded from
	// sandboxPath by preflight; sandboxLoaded says it was there.
	sandbox       *cloudsim.Sim
	sandboxLoaded bool
	// adminLn and sandboxLn are bound by preflight, served later.
	adminLn, sandboxLn net.Listener
	// credsOK: every cloud credentials check passed at start.
	credsOK bool

	// onApplied receives every org id whose desired state an event changed,
	// after the commit. The reconcile engine sets it (its workqueue's Add).
	onApplied func(orgID string)

	closers []func() // run in reverse order at shutdown
}

// run starts everything, serves until ctx ends, then shuts down in order:
// stop fetching, commit and ack the batch in hand, stop the admin server,
// close bbolt, drain NATS, stop the embedded server.
func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	a := &app{cfg: cfg, log: log, metrics: metrics.New()}
	defer a.close()
	if err := a.start(ctx); err != nil {
		return err
	}
	ictx, stopIngest := context.WithCancel(context.Background())
	ingestDone := make(chan error, 1)
	go func() { ingestDone <- a.ingest.Run(ictx) }()
	if a.credsOK {
		log.Info("reconciler ready", "admin", "http://"+cfg.AdminListen, "nats", a.nc.ConnectedUrlRedacted(), "state", a.store.Path())
	} else {
		log.Error("reconciler running but NOT ready: a cloud credentials check failed (see above); /readyz answers 503 until it passes",
			"admin", "http://"+cfg.AdminListen, "nats", a.nc.ConnectedUrlRedacted(), "state", a.store.Path())
	}

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
	c, log := a.cfg, a.log
	logAdminAccess(c, log)
	// The host first (data dir, state file, every listen address), all
	// problems at once: a second reconciler on this data dir or a taken
	// port stops here with a clear message, before touching NATS.
	if err := a.preflight(); err != nil {
		return err
	}

	var err error
	if a.validator, err = newValidator(c); err != nil {
		return err
	}

	natsURL := c.NATS.URL
	if natsURL == "" {
		a.nats, err = broker.StartEmbedded(c.NATS.Listen, natsDir(c))
		if err != nil {
			return err
		}
		a.closers = append(a.closers, func() {
			a.nats.Shutdown()
			log.Info("embedded nats stopped")
		})
		natsURL = a.nats.ClientURL()
		log.Info("embedded nats-server with JetStream", "listen", c.NATS.Listen, "store", natsDir(c))
	} else {
		log.Info("external nats", "url", secret.RedactURL(natsURL))
	}
	if a.nc, err = connectNATS(ctx, natsURL, c.NATS, "tunnelward-reconciler", log); err != nil {
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
	if err := broker.EnsureStreamsReplicated(sctx, a.js, c.StreamReplicas, log); err != nil {
		return withNATSCause(a.nc, err)
	}
	if err := a.startCluster(sctx); err != nil {
		return err
	}

	if err := a.startCloud(ctx); err != nil {
		return err
	}

	a.ingest, err = ingest.New(ctx, ingest.Config{
		Consumer: ingest.ConsumerFor(c.ReplicaID),
		JS:       a.js, Store: a.store, Validator: a.validator, Log: log, Metrics: a.metrics,
		OnApplied: func(orgID string) {
			if a.onApplied != nil {
				a.onApplied(orgID)
			}
		},
	})
	if err != nil {
		return err
	}
	if a.consumer, err = a.js.Consumer(sctx, events.Stream, ingest.ConsumerFor(c.ReplicaID)); err != nil {
		return fmt.Errorf("bind consumer %s on %s: %w", ingest.ConsumerFor(c.ReplicaID), events.Stream, err)
	}
	a.metrics.SetConsumerStatsFunc(a.consumerStats)

	a.admin = admin.New(a.store, log)
	var open []string // besides the probes
	if c.Admin.MetricsPublic {
		open = append(open, "/metrics")
	}
	a.admin.RequireToken(c.Admin.Token, open...)
	a.admin.Handle("GET /metrics", a.metrics.Handler())
	// The status page is one more admin handler, so the admin API's access
	// rules cover it like /v1/orgs.
	a.admin.Handle("GET /{$}", admin.NewStatusPage(a.store, statusSource{js: a.js, m: a.metrics}, log))
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
	a.admin.AddCheck("consumer", func(ctx context.Context) error {
		_, err := a.consumerStats(ctx)
		return err
	})
	a.admin.AddCheck("state", func(context.Context) error { return a.store.Ping() })
	a.admin.AddCheck("ingest", a.ingest.Check)
	_, awc := providerConfigs(c, a.cloudURL, log, a.metrics)
	creds, err := credentialChecks(ctx, c, a.cloudURL, poolConfigs(c, a.cloudURL, a.metrics), awc)
	if err != nil {
		return err
	}
	for _, k := range creds {
		a.admin.AddCheck(k.name, k.check) // failing ("not checked yet") until the first probe passes
	}
	actx, stopAdmin := context.WithCancel(context.Background())
	wait := a.admin.ServeListener(actx, a.adminLn)
	a.closers = append(a.closers, func() {
		stopAdmin()
		if err := wait(); err != nil {
			log.Error("admin server", "err", err)
		}
	})
	if err := a.startEngine(ctx); err != nil { // engine.go
		return err
	}
	a.credsOK = a.startCredentialChecks(ctx, creds) // credcheck.go
	return nil
}

// logAdminAccess says at start who may call the admin API, loudly when
// anyone who reaches a non-loopback address may (--admin-insecure; without
// it config refuses such a setup before anything starts).
func logAdminAccess(c config.Config, log *slog.Logger) {
	switch {
	case !c.Admin.Token.IsZero():
		log.Info("admin API requires a bearer token except on /healthz and /readyz",
			"listen", c.AdminListen, "metrics_public", c.Admin.MetricsPublic)
	case c.AdminExposed():
		log.Warn("**************************************************************************")
		log.Warn("ADMIN API WITHOUT AUTHENTICATION on an address that is not loopback (--admin-insecure): "+
			"anyone who reaches it can read every org and run /v1/plan, which reads the clouds", "listen", c.AdminListen)
		log.Warn("to require a token, set --admin-token-file or " + config.EnvAdminToken)
		log.Warn("**************************************************************************")
	}
}

// consumerStats reads the durable consumer's state: the "consumer bound"
// readiness check and the pending/redelivered gauges.
func (a *app) consumerStats(ctx context.Context) (metrics.ConsumerStats, error) {
	info, err := a.consumer.Info(ctx)
	if err != nil {
		return metrics.ConsumerStats{}, fmt.Errorf("consumer %s on %s: %w", ingest.ConsumerFor(a.cfg.ReplicaID), events.Stream, err)
	}
	return metrics.ConsumerStats{Pending: info.NumPending, AckPending: uint64(info.NumAckPending),
		Redelivered: uint64(info.NumRedelivered)}, nil
}

func newValidator(c config.Config) (*events.Validator, error) {
	var opts []events.Option
	if c.Source("reserved-slugs") != "default" {
		opts = append(opts, events.WithReservedSlugs(c.ReservedSlugs))
	}
	return events.NewValidator(opts...)
}

// sandboxConfig is the in-process emulator's configuration: it accepts the
// identities the engine is configured with (the sandbox ones unless
// overridden: the default pool's first, then one per other pool), and its
// account has every region served.
func sandboxConfig(c config.Config) cloudsim.Config {
	sc := cloudsim.DefaultConfig()
	sc.CFToken, sc.AccountID, sc.ZoneID, sc.ZoneName = c.Cloudflare.APIToken.Reveal(), c.Cloudflare.AccountID, c.Cloudflare.ZoneID, c.Cloudflare.ZoneName
	sc.CFExtra = nil
	for _, p := range c.Cloudflare.ExtraPools {
		sc.CFExtra = append(sc.CFExtra, cloudsim.CFIdentity{Token: p.APIToken.Reveal(), AccountID: p.AccountID, ZoneID: p.ZoneID, ZoneName: p.ZoneName})
	}
	sc.AWSAccessKey, sc.AWSSecret, sc.Region = c.AWS.AccessKeyID, c.AWS.SecretAccessKey.Reveal(), c.AWS.Region
	for _, r := range c.ServedRegions() {
		if !slices.Contains(sc.Regions, r) {
			sc.Regions = append(sc.Regions, r)
		}
	}
	return sc
}

// openSandbox loads the sandbox's cloud from the data dir (or starts an
// empty one when there is none yet). A file that cannot be loaded stops
// the start: an empty sandbox in its place would make the reconciler
// rebuild every org with new ids, which is what keeping it avoids.
func (a *app) openSandbox() error {
	sim, loaded, err := cloudsim.OpenFile(sandboxConfig(a.cfg), sandboxPath(a.cfg))
	if err != nil {
		return fmt.Errorf("sandbox cloud: %w; the reconciler then builds every org again in the empty sandbox", err)
	}
	a.sandbox, a.sandboxLoaded = sim, loaded
	return nil
}

// startCloud serves the in-process emulator in sandbox mode and says loudly
// that nothing real is touched.
func (a *app) startCloud(context.Context) error {
	c, log := a.cfg, a.log
	switch c.Cloud {
	case config.ModeSandbox:
		l := a.sandboxLn // bound by preflight
		sim, path := a.sandbox, sandboxPath(c)
		autosave := sim.StartAutosave(path, 0, func(err error) {
			log.Error("cannot save the sandbox cloud; retrying after the next change", "err", err)
		})
		// Closers run in reverse: the server stops first, so the last save
		// holds every change.
		a.closers = append(a.closers, func() {
			if err := autosave.Close(); err != nil {
				log.Error("sandbox cloud not saved at shutdown", "err", err)
				return
			}
			log.Info("sandbox cloud saved", "file", path)
		})
		srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
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
		if a.sandboxLoaded {
			log.Warn("sandbox cloud loaded: the emulated tunnels, records, tokens and instances of the last run are kept",
				"file", path, "counts", fmt.Sprint(sim.Counts()))
		} else {
			log.Warn("sandbox cloud starts empty; it is kept across restarts", "file", path)
		}
		log.Warn("to start the sandbox from an empty cloud: stop the reconciler, delete " + path)
		log.Warn("live mode is explicit: --cloud live (or --cloud URL of a cloudsim)")
		log.Warn("**************************************************************************")
	case config.ModeLive:
		log.Warn("LIVE MODE: real Cloudflare and AWS APIs")
	default:
		a.cloudURL = strings.TrimRight(c.CloudURL, "/")
		log.Warn("cloud emulator at a URL: not real Cloudflare/AWS", "cloudsim", a.cloudURL)
	}
	return nil
}
