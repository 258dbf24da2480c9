// Package config is the reconciler's configuration: one typed struct, filled
// from command-line flags, TUNNELWARD_* environment variables, an optional
// YAML/JSON config file and defaults, in that order of precedence, and
// validated as a whole so that an operator sees every wrong setting at once.
//
// Every setting is declared once (settings.go); flags, environment names,
// config-file keys, --help text and the reference table in
// docs/operations.md are all generated from that one list, so they cannot
// drift apart.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/secret"
)

// EnvPrefix starts every environment variable the reconciler reads.
const EnvPrefix = "TUNNELWARD_"

// Environment variables that are not ordinary settings.
const (
	// EnvConfigFile names the config file when --config is not given.
	EnvConfigFile = "TUNNELWARD_CONFIG"
	// EnvCloudflareAPIToken holds the Cloudflare API token. It has no flag on
	// purpose: a flag value is visible to every user through ps.
	EnvCloudflareAPIToken = "TUNNELWARD_CLOUDFLARE_API_TOKEN"
	// EnvAdminToken holds the admin API's bearer token; no flag, for the
	// same reason.
	EnvAdminToken = "TUNNELWARD_ADMIN_TOKEN"
)

// MinAdminTokenLen is the shortest admin token accepted: the token is the
// only thing between the network and /v1/plan, so it must not be
// guessable.
const MinAdminTokenLen = 16

// ErrHelp is returned by Parse when -h or --help was given; print Usage and
// exit 0.
var ErrHelp = flag.ErrHelp

// Cloud modes.
const (
	ModeSandbox = "sandbox" // in-process emulator
	ModeLive    = "live"    // real Cloudflare and AWS
	ModeURL     = "url"     // a cloudsim process at CloudURL
)

// Sandbox identities (docs/cloudsim.md): the defaults of cloudsim and of the
// sandbox and URL modes, so any client can talk to a sandbox unconfigured.
const (
	SandboxCloudflareToken = "sandbox-token"
	SandboxAccountID       = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
	SandboxZoneID          = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
	SandboxZoneName        = "sandbox.tunnelward.test"
	SandboxPoolName        = "sandbox" // the default pool's name in the sandbox and URL modes
	// The sandbox's second Cloudflare identity, the pool SandboxPool2Name
	// of the sandbox and URL modes: another user (its own token and
	// budget) with its own account and zone (docs/cloudsim.md).
	SandboxPool2Name       = "sandbox2"
	SandboxPool2Token      = "sandbox2-token"
	SandboxPool2AccountID  = "b2c3d4e5f60718293a4b5c6d7e8f90a1"
	SandboxPool2ZoneID     = "e0f1d2c3b4a5968778695a4b3c2d1e0f"
	SandboxPool2ZoneName   = "sandbox2.tunnelward.test"
	SandboxAWSAccessKeyID  = "AKIASANDBOXEXAMPLE"
	SandboxAWSSecretKey    = "sandbox-secret"
	SandboxAWSRegion       = "us-east-1"
	SandboxAMI             = "ami-0123456789abcdef0"
	SandboxSubnet          = "subnet-0123456789abcdef0"
	SandboxInstanceProfile = "tunnelward-instance"
	DefaultSSMPathPrefix   = owner.DefaultParamPrefix
	DefaultIngressService  = "http://localhost:8080"
	DefaultInstanceType    = "t3.micro"
	DefaultDataDir         = "./data"
	DefaultNATSListen      = "127.0.0.1:4222"
	DefaultAdminListen     = "127.0.0.1:8081"
	DefaultSandboxListen   = "127.0.0.1:8787"
	DefaultWorkers         = 4
	// DefaultPoolName is the default pool's name in live mode.
	DefaultPoolName = "default"
	// DefaultMaxTunnels is Cloudflare's tunnel limit per account.
	DefaultMaxTunnels = 1000
	// DefaultMaxDNSRecords is the record limit of a Free zone created since
	// 2024-09-01 (older Free zones: 1000; paid plans: 3500).
	DefaultMaxDNSRecords = 200
	// DefaultLeaseTTL outlasts a NATS leader election of the lease bucket
	// (nats-server's Raft election timeout is 4 to 9 s), so an election
	// pauses writes (fencing) without losing leases; a dead replica's orgs
	// wait three quarters of it when its connection is gone, at most all
	// of it otherwise (internal/cluster/takeover.go).
	DefaultLeaseTTL = 10 * time.Second
	// SandboxRegions are the regions sandbox mode serves (the in-process
	// emulator's account has them all): orgs naming one are launched there.
	SandboxRegions           = "us-east-1,us-east-2,us-west-2,eu-west-1,eu-central-1,ap-southeast-2"
	DefaultSweepInterval     = 5 * time.Minute
	DefaultHealthGrace       = time.Minute // issue 4's default; the engine polls within it, so a quick recovery is seen at once
	DefaultLogFormat         = "auto"
	DefaultLogLevel          = "info"
	cloudflareTokenFileFlag  = "cloudflare-api-token-file"
	cloudflareTokenConfigKey = "cloudflare-api-token"
	adminTokenFileFlag       = "admin-token-file"
	adminTokenConfigKey      = "admin-token"
)

// Config is the reconciler's whole configuration.
type Config struct {
	// Cloud is ModeSandbox, ModeLive or ModeURL; CloudURL is set for ModeURL.
	Cloud    string
	CloudURL string

	DataDir       string
	AdminListen   string
	SandboxListen string
	// Admin is who may call the admin API on AdminListen.
	Admin Admin

	NATS NATS
	// ReplicaID names this replica among those sharing the NATS cluster
	// (default: the host name, see DefaultReplicaID).
	ReplicaID string
	// StreamReplicas is the replica count of the streams and the lease
	// bucket (--stream-replicas).
	StreamReplicas int
	// LeaseTTL is the partition leases' lifetime without renewal.
	LeaseTTL   time.Duration
	Cloudflare Cloudflare
	AWS        AWS
	// Instance is how instances are launched in the default region
	// (AWS.Region); InstanceFor gives the settings of any served region.
	Instance Instance
	// InstanceByRegion holds the regional instance settings (AMI, subnet,
	// security groups) of the extra regions, by region name. After Load it
	// names only served extra regions, and in live mode every one of them
	// with an AMI; in the sandbox and URL modes each one without its own
	// AMI or subnet has the sandbox ones.
	InstanceByRegion map[string]RegionalInstance

	ReservedSlugs []string
	Workers       int
	SweepInterval time.Duration
	// WatchBudgetShare is the share (0.05 for 5%) of each provider's budget
	// the watches may use; 0 turns them off.
	WatchBudgetShare float64
	GC               bool
	HealthGrace      time.Duration
	// TokenMaxAge rotates tunnel tokens older than this (0: never).
	TokenMaxAge time.Duration

	Log Log

	// ConfigFile is the config file that was read, if any.
	ConfigFile string
	// Args are the positional arguments left after the flags.
	Args []string

	sources map[string]string
	// badEntries holds, per per-region setting, the entries that could not
	// be read, for validate to report (see regionMapSetting).
	badEntries map[string][]string
}

// Admin is the admin API's access control.
type Admin struct {
	// Token is the bearer token every admin endpoint but the probes (and
	// /metrics with MetricsPublic) requires. Zero means none: every
	// endpoint is open, which Load allows only on a loopback AdminListen or
	// with Insecure. It never prints: it is a secret.Token.
	Token secret.Token
	// TokenFile is where the token was read from, if from a file.
	TokenFile string
	// MetricsPublic serves /metrics without the token.
	MetricsPublic bool
	// Insecure allows a non-loopback AdminListen without a token.
	Insecure bool
}

// AdminExposed reports whether the admin API listens on an address that is
// not loopback only (a wildcard, an interface address or a host name other
// than localhost).
func (c Config) AdminExposed() bool {
	h, _, err := net.SplitHostPort(c.AdminListen)
	return err != nil || !IsLoopbackHost(h)
}

// IsLoopbackHost reports whether a listen address's host part is reachable
// only from this machine: localhost or a loopback IP. An empty host is the
// wildcard.
func IsLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// NATS is how the reconciler reaches JetStream.
type NATS struct {
	// Listen is the embedded server's client address; used when URL is empty.
	Listen string
	// URL is an external server (comma-separated list allowed); empty means
	// run the embedded server.
	URL string
	// Creds and NKey are files for authenticating to an external server.
	Creds string
	NKey  string
	// TLS files for an external server.
	TLSCA   string
	TLSCert string
	TLSKey  string
}

// Embedded reports whether the reconciler runs its own NATS server.
func (n NATS) Embedded() bool { return n.URL == "" }

// Cloudflare is the default pool (the account, zone and token of the
// --cloudflare-* settings) and the pools the pools file adds.
type Cloudflare struct {
	AccountID string
	ZoneID    string
	ZoneName  string
	// APIToken never prints: it is a secret.Token.
	APIToken secret.Token
	// APITokenFile is where the token was read from, if from a file.
	APITokenFile string

	// Pool is the default pool's name; MaxTunnels and MaxDNSRecords its
	// limits (0: none kept); Budget the name of its API budget (after
	// Load: the budget it shares with the pools on the same token or
	// naming the same budget).
	Pool          string
	MaxTunnels    int
	MaxDNSRecords int
	Budget        string
	// PoolsFile is the file the extra pools were read from, if any.
	PoolsFile string
	// ExtraPools are the pools besides the default one, in the file's
	// order (in the sandbox and URL modes without a file: SandboxPool2Name).
	// Pools lists them all.
	ExtraPools []Pool
	// Placement is how orgs are placed among the pools: PlaceFill or
	// PlaceLeastUsed.
	Placement string
}

// AWS is where instances and parameters live.
type AWS struct {
	// Region is the default region: orgs that name no region go there.
	Region string
	// ExtraRegions are the regions served besides Region (--aws-regions),
	// as given; ServedRegions is the de-duplicated list of all of them.
	ExtraRegions []string
	// Static credentials are set only for the sandbox and URL modes; live mode
	// leaves them empty and uses the SDK's default credential chain.
	AccessKeyID     string
	SecretAccessKey secret.Token
}

// Instance is how each org's EC2 instance is launched.
type Instance struct {
	AMI            string
	Type           string
	Subnet         string
	SecurityGroups []string
	Profile        string // instance profile name or ARN
	SSMPathPrefix  string // parameters live under <prefix>/<org>
	IngressService string // what cloudflared forwards to on the instance
}

// Log is the logging setup; see NewLogger.
type Log struct {
	Format string // auto, text or json
	Level  string // debug, info, warn or error
}

// Sandboxed reports whether the clouds are emulated (sandbox or URL mode).
func (c Config) Sandboxed() bool { return c.Cloud != ModeLive }

// Source says where a setting's value came from: "flag", "env", "file" or
// "default". name is the flag name (or the token's environment variable).
func (c Config) Source(name string) string {
	if s, ok := c.sources[name]; ok {
		return s
	}
	return "default"
}

// Value is one setting's effective value, printable (secrets redacted).
type Value struct {
	Name   string // flag name
	Value  string
	Source string
}

// Values lists every setting's effective value, in declaration order, with
// secrets redacted, for a startup log line or a `config` command.
func (c Config) Values() []Value {
	out := make([]Value, 0, len(settings)+2)
	for _, s := range settings {
		out = append(out, Value{Name: s.name, Value: s.get(&c), Source: c.Source(s.name)})
	}
	shown := func(t secret.Token) string {
		if t.IsZero() {
			return "(not set)"
		}
		return secret.Redacted
	}
	out = append(out, Value{Name: EnvCloudflareAPIToken, Value: shown(c.Cloudflare.APIToken), Source: c.Source(EnvCloudflareAPIToken)})
	for _, p := range c.Cloudflare.ExtraPools {
		src := "file"
		if c.Cloudflare.PoolsFile == "" {
			src = "default"
		}
		out = append(out, Value{Name: "pool " + p.Name, Value: p.Summary(), Source: src})
	}
	out = append(out, Value{Name: EnvAdminToken, Value: shown(c.Admin.Token), Source: c.Source(EnvAdminToken)})
	return out
}

// String prints every setting as name=value, secrets redacted.
func (c Config) String() string {
	var b strings.Builder
	for i, v := range c.Values() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%q", v.Name, v.Value)
	}
	return b.String()
}

// LogValue implements slog.LogValuer: a group of every setting.
func (c Config) LogValue() slog.Value {
	vals := c.Values()
	attrs := make([]slog.Attr, 0, len(vals))
	for _, v := range vals {
		attrs = append(attrs, slog.String(v.Name, v.Value))
	}
	return slog.GroupValue(attrs...)
}

// Problem is one wrong or missing setting.
type Problem struct {
	Setting string // "--workers", or an environment variable for settings without a flag
	Detail  string
}

func (p Problem) String() string { return p.Setting + ": " + p.Detail }

// Error lists every problem found in one pass.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	if len(e.Problems) == 1 {
		b.WriteString("invalid configuration: ")
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, "invalid configuration (%d problems):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Loader fills a Config from a FlagSet it registered its flags on, so a
// subcommand can add flags of its own to the same set.
type Loader struct {
	fs     *flag.FlagSet
	raw    map[string]*rawFlag
	config *string
}

// Register declares every setting's flag (and --config) on fs.
func Register(fs *flag.FlagSet) *Loader {
	l := &Loader{fs: fs, raw: map[string]*rawFlag{}}
	for _, s := range settings {
		r := &rawFlag{boolean: s.kind == kindBool}
		l.raw[s.name] = r
		fs.Var(r, s.name, s.usageLine())
	}
	l.config = fs.String("config", "", "read settings from this YAML or JSON `FILE` (env "+EnvConfigFile+")")
	return l
}

// Parse reads the reconciler's configuration from args (without the program
// name) and env (os.Getenv when nil). -h/--help returns ErrHelp. Any wrong
// setting returns an *Error naming all of them.
func Parse(args []string, env func(string) string) (Config, error) {
	fs := flag.NewFlagSet("reconciler", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	l := Register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, ErrHelp
		}
		return Config{}, fmt.Errorf("%w (see --help)", err)
	}
	return l.Load(env)
}

// Load resolves every setting after the FlagSet was parsed.
func (l *Loader) Load(env func(string) string) (Config, error) {
	if env == nil {
		env = os.Getenv
	}
	var probs problems
	c := Config{sources: map[string]string{}, Args: l.fs.Args()}

	file := *l.config
	if file == "" {
		file = strings.TrimSpace(env(EnvConfigFile))
	}
	var fileVals map[string]string
	if file != "" {
		c.ConfigFile = file
		fileVals = readConfigFile(file, &probs)
	}

	for _, s := range settings {
		raw, src := "", ""
		switch {
		case l.raw[s.name].set:
			raw, src = l.raw[s.name].v, "flag"
		case env(s.env) != "":
			raw, src = env(s.env), "env"
		default:
			if v, ok := fileVals[s.name]; ok {
				raw, src = v, "file"
			}
		}
		if src == "" {
			raw = s.def
		} else {
			c.sources[s.name] = src
		}
		if err := s.set(&c, strings.TrimSpace(raw)); err != nil {
			probs.add(s.flag(), "%s%s", describeSource(s, src, raw), err)
			// Fall back to the default so the checks below do not report
			// the same setting a second time.
			_ = s.set(&c, s.def)
		}
	}
	c.resolveToken(env, &probs)
	adminTokenGiven := c.resolveAdminToken(env, &probs)
	c.applyModeDefaults(env)
	if c.ReplicaID == "" {
		c.ReplicaID = DefaultReplicaID()
	}
	c.validate(&probs)
	c.loadPools(env, &probs) // after validate: the default pool's zone name is normalized
	c.validatePools(&probs)
	c.validateAdmin(adminTokenGiven, &probs)
	if len(probs) > 0 {
		return Config{}, &Error{Problems: probs}
	}
	return c, nil
}

// describeSource says where a bad value came from, for the error line.
func describeSource(s *setting, src, raw string) string {
	switch src {
	case "flag":
		return fmt.Sprintf("%q: ", raw)
	case "env":
		return fmt.Sprintf("%q (from %s): ", raw, s.env)
	case "file":
		return fmt.Sprintf("%q (from the config file): ", raw)
	}
	return fmt.Sprintf("default %q: ", raw)
}

// EnvVars lists every environment variable the reconciler's configuration
// reads, sorted.
func EnvVars() []string {
	out := []string{EnvConfigFile, EnvCloudflareAPIToken, EnvAdminToken, "AWS_REGION", "AWS_DEFAULT_REGION"}
	for _, s := range settings {
		out = append(out, s.env)
	}
	sort.Strings(out)
	return out
}

// FlagNames lists every flag name (without dashes), including config.
func FlagNames() []string {
	out := []string{"config"}
	for _, s := range settings {
		out = append(out, s.name)
	}
	return out
}

type problems []Problem

func (p *problems) add(setting, format string, args ...any) {
	*p = append(*p, Problem{Setting: setting, Detail: fmt.Sprintf(format, args...)})
}

// rawFlag records a flag's text and whether it was given at all, so
// precedence can tell "--workers 4" from the default 4.
type rawFlag struct {
	v       string
	set     bool
	boolean bool
}

func (r *rawFlag) String() string { return r.v }
func (r *rawFlag) Set(v string) error {
	r.v, r.set = v, true
	return nil
}

// IsBoolFlag lets "--gc" stand for "--gc=true".
func (r *rawFlag) IsBoolFlag() bool { return r.boolean }

// DefaultReplicaID is the host name with every character a NATS consumer
// or KV key name cannot hold (dots included) turned into '-', at most 64
// characters; "reconciler" when the host has no name.
func DefaultReplicaID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "reconciler"
	}
	b := []byte(h)
	for i, ch := range b {
		if !replicaIDChar(ch) {
			b[i] = '-'
		}
	}
	if len(b) > maxReplicaID {
		b = b[:maxReplicaID]
	}
	return string(b)
}

const maxReplicaID = 64

func replicaIDChar(ch byte) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_'
}
