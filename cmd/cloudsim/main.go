// Command cloudsim serves the cloud emulator (Cloudflare API v4 under
// /client/v4/, EC2, SSM and STS at the root, its own endpoints under /_sim/) as
// its own process, for compose and for process-level tests.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tunnelward/tunnelward/internal/cliflag"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/textwrap"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain is main without the exit: --help prints on stdout (exit 0),
// errors on stderr (exit 2).
func realMain(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args)
	var help *helpRequest
	if errors.As(err, &help) {
		fmt.Fprint(stdout, help.usage)
		return 0
	}
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = serve(ctx, o, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "cloudsim:", err)
		return 2
	}
	return 0
}

// helpRequest is parseFlags' answer to -h/--help: the usage to print.
type helpRequest struct{ usage string }

func (h *helpRequest) Error() string        { return "help requested" }
func (h *helpRequest) Is(target error) bool { return target == flag.ErrHelp }

const about = "Serves an emulated Cloudflare API v4 (/client/v4/), EC2, SSM and STS (/) and the emulator's own endpoints " +
	"(/_sim/state, /_sim/invariants, /_sim/calls, /_sim/faults, /_sim/world, /_sim/resolve) on one address. See docs/cloudsim.md."

// usage is --help, in the layout of the other commands' generated help.
func usage(fs *flag.FlagSet) string {
	return "Usage: cloudsim [flags]\n\n" + textwrap.Wrap(about, 0, 80) + "\n\nFlags:\n" + cliflag.Usage(fs)
}

// options is what the flags ask for.
type options struct {
	listen   string
	state    string // --state-file; "" keeps the world in memory only
	cfg      cloudsim.Config
	settings cloudsim.FaultSettings
	noLimits bool
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, o, os.Stderr)
}

// parseFlags reads and checks the flags; nothing is started.
func parseFlags(args []string) (options, error) {
	d := cloudsim.DefaultConfig()
	fs := flag.NewFlagSet("cloudsim", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // realMain prints help and errors once
	listen := fs.String("listen", "127.0.0.1:8787", "HTTP address `HOST:PORT` to listen on (loopback unless you mean otherwise)")
	stateFile := fs.String("state-file", "",
		"keep the emulated world in `PATH`: load it at start (no file yet: an empty world), save it crash-safely shortly after each change and at shutdown; "+
			"delete the file to start from empty. Without it (the default) every run starts empty, its ids drawn from --seed alone")
	cfg := d
	fs.StringVar(&cfg.CFToken, "cf-token", d.CFToken, "Cloudflare API `TOKEN` clients must send as Bearer")
	fs.StringVar(&cfg.AccountID, "account-id", d.AccountID, "Cloudflare account `ID`")
	fs.StringVar(&cfg.ZoneID, "zone-id", d.ZoneID, "Cloudflare zone `ID`")
	fs.StringVar(&cfg.ZoneName, "zone-name", d.ZoneName, "Cloudflare zone `NAME`")
	d2 := d.CFExtra[0]
	cf2Token := fs.String("cf2-token", d2.Token,
		"the second Cloudflare identity's API `TOKEN`: it reaches --account2-id and --zone2-id (and only those); the same token as --cf-token is one user "+
			"with access to both identities (one rate budget). Empty: serve the first identity only")
	account2 := fs.String("account2-id", d2.AccountID, "the second identity's Cloudflare account `ID` (the same as --account-id: a second zone in one account)")
	zone2 := fs.String("zone2-id", d2.ZoneID, "the second identity's Cloudflare zone `ID`")
	zone2Name := fs.String("zone2-name", d2.ZoneName, "the second identity's Cloudflare zone `NAME`")
	fs.IntVar(&cfg.TunnelQuota, "tunnel-quota", d.TunnelQuota, "live tunnels per Cloudflare account (1000: Cloudflare's limit)")
	fs.StringVar(&cfg.AWSAccessKey, "aws-access-key", d.AWSAccessKey, "AWS access key `ID` clients sign with")
	fs.StringVar(&cfg.AWSSecret, "aws-secret", d.AWSSecret, "AWS secret access `KEY` clients sign with")
	fs.StringVar(&cfg.Region, "region", d.Region, "the AWS account's home `REGION` (Go loaders' default; always one of --regions)")
	regions := fs.String("regions", strings.Join(d.Regions, ","),
		"the AWS regions the emulated account has, comma-separated (`REGION,...`); EC2 and SSM are per region, told apart by the SigV4 credential scope, and a request scoped to any other region is refused")
	fs.DurationVar(&cfg.BootDelay, "boot-delay", d.BootDelay, "EC2 pending -> running")
	fs.DurationVar(&cfg.ConnectDelay, "connect-delay", d.ConnectDelay, "cloudflared token read -> tunnel connections up")
	fs.DurationVar(&cfg.ShutdownDelay, "shutdown-delay", d.ShutdownDelay, "EC2 stopping/shutting-down -> stopped/terminated")
	fs.DurationVar(&cfg.TerminatedRetention, "terminated-retention", d.TerminatedRetention, "how long terminated instances stay visible")
	fs.DurationVar(&cfg.RetryInterval, "retry-interval", d.RetryInterval, "how often a cloudflared without a valid token retries")
	fs.BoolVar(&cfg.InstanceRoleTagPolicy, "instance-role-tag-policy", d.InstanceRoleTagPolicy,
		"a cloudflared may read only the parameter tagged InstanceArn=<its instance ARN>, as deploy/iam/instance-role-policy.json allows (=false: any parameter)")
	fs.IntVar(&cfg.DNSQuota, "dns-quota", d.DNSQuota, "DNS records per zone (200: a new free zone)")
	fs.Int64Var(&cfg.Seed, "seed", d.Seed, "seed for fault injection and ids")
	noLimits := fs.Bool("no-rate-limits", false, "turn every provider rate limit off")
	cfBudget := fs.Int("cf-budget", d.Limits.CFBudget, "Cloudflare requests per window before 429")
	cfWindow := fs.Duration("cf-window", time.Duration(d.Limits.CFWindow), "Cloudflare rate-limit window")
	ec2Scale := fs.Float64("ec2-scale", d.Limits.EC2Scale, "multiplier on EC2 bucket sizes and refill rates")
	ssmTPS := fs.Float64("ssm-read-tps", d.Limits.SSMReadTPS, "SSM parameter reads per second")
	faults := fs.String("faults", "", "fault `RULES` as JSON, or @FILE: "+`[{"op":"cf.*","error_rate":0.05,"latency_min":"20ms","latency_max":"80ms"}]`)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, &helpRequest{usage: usage(fs)}
		}
		return options{}, cliflag.Explain(err, fs, args, "cloudsim --help")
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}

	cfg.Regions = nil
	for _, r := range strings.Split(*regions, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.Regions = append(cfg.Regions, r)
		}
	}
	regionsSet := false
	fs.Visit(func(f *flag.Flag) { regionsSet = regionsSet || f.Name == "regions" })
	if len(cfg.Regions) == 0 {
		return options{}, fmt.Errorf("--regions: empty; name at least one region, like %s", cloudsim.DefaultRegion)
	}
	if !regionsSet && !slices.Contains(cfg.Regions, cfg.Region) {
		// Only --region was given: the default set grows by it.
		cfg.Regions = append(cfg.Regions, cfg.Region)
	}
	cfg.CFExtra = nil
	if *cf2Token != "" {
		if *account2 == "" || *zone2 == "" || *zone2Name == "" {
			return options{}, fmt.Errorf("--cf2-token: --account2-id, --zone2-id and --zone2-name must not be empty (an empty --cf2-token serves the first identity only)")
		}
		cfg.CFExtra = []cloudsim.CFIdentity{{Token: *cf2Token, AccountID: *account2, ZoneID: *zone2, ZoneName: *zone2Name}}
	}
	if err := cfg.ValidateCF(); err != nil {
		return options{}, fmt.Errorf("Cloudflare identities (--cf-token, --account-id, --zone-id, --zone-name, their --cf2-* / *2-* twins, --tunnel-quota, --dns-quota): %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return options{}, fmt.Errorf("--region / --regions: %w", err)
	}

	cfg.Limits = cloudsim.RateLimits{
		CFEnabled: !*noLimits, CFBudget: *cfBudget, CFWindow: cloudsim.Duration(*cfWindow),
		EC2Enabled: !*noLimits, EC2Scale: *ec2Scale,
		SSMEnabled: !*noLimits, SSMReadTPS: *ssmTPS,
	}
	settings := cloudsim.FaultSettings{Limits: cfg.Limits}
	if *faults != "" {
		raw := []byte(*faults)
		if name, ok := strings.CutPrefix(*faults, "@"); ok {
			b, err := os.ReadFile(name)
			if err != nil {
				return options{}, fmt.Errorf("--faults: %w", err)
			}
			raw = b
		}
		if err := json.Unmarshal(raw, &settings.Rules); err != nil {
			return options{}, fmt.Errorf("--faults: want a JSON list of rules: %w", err)
		}
	}
	if err := settings.Validate(); err != nil {
		return options{}, fmt.Errorf("--faults / rate-limit flags: %w", err)
	}

	return options{listen: *listen, state: *stateFile, cfg: cfg, settings: settings, noLimits: *noLimits}, nil
}

// serve runs the emulator until ctx ends (SIGINT/SIGTERM), logging to logw.
func serve(ctx context.Context, o options, logw io.Writer) error {
	cfg, settings := o.cfg, o.settings
	log := slog.New(slog.NewTextHandler(logw, nil))
	sim := cloudsim.New(cfg)
	if o.state != "" {
		// A file that cannot be loaded stops the start: an empty world in
		// its place would silently lose every resource it holds.
		s, loaded, err := cloudsim.OpenFile(cfg, o.state)
		if err != nil {
			return fmt.Errorf("--state-file: %w", err)
		}
		sim = s
		if loaded {
			log.Info("world loaded", "state_file", o.state, "counts", fmt.Sprint(sim.Counts()))
		} else {
			log.Info("no state file yet: the world starts empty and is kept there", "state_file", o.state)
		}
	}
	if err := sim.SetFaultSettings(settings); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.listen, err)
	}
	var autosave *cloudsim.Autosave
	if o.state != "" {
		autosave = sim.StartAutosave(o.state, 0, func(err error) { log.Error("cannot save the world; retrying", "err", err) })
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
		log.Warn("cloudsim listens beyond loopback; it has no real security", "addr", ln.Addr().String())
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("cloudsim serving: Cloudflare at /client/v4/, EC2, SSM and STS at /, emulator at /_sim/",
		"addr", "http://"+ln.Addr().String(), "account_id", cfg.AccountID, "zone_id", cfg.ZoneID,
		"zone_name", cfg.ZoneName, "more_cf_identities", identities(cfg.CFExtra), "region", cfg.Region, "regions", strings.Join(sim.Regions(), ","), "instance_role_tag_policy", cfg.InstanceRoleTagPolicy, "rate_limits", !o.noLimits, "fault_rules", len(settings.Rules), "seed", cfg.Seed, "state_file", o.state)
	select {
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		log.Info("cloudsim shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = srv.Shutdown(sctx)
	}
	if autosave != nil {
		// After the server stopped, so the last save holds every change.
		if serr := autosave.Close(); serr != nil {
			err = errors.Join(err, serr)
		} else {
			log.Info("world saved", "state_file", o.state)
		}
	}
	return err
}

// identities names extra Cloudflare identities for the start log: account
// and zone, never the token.
func identities(ids []cloudsim.CFIdentity) string {
	var out []string
	for _, id := range ids {
		out = append(out, "account "+id.AccountID+" zone "+id.ZoneID+" ("+id.ZoneName+")")
	}
	return strings.Join(out, "; ")
}
