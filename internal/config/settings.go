package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelward/tunnelward/internal/events"
)

type kind int

const (
	kindString kind = iota
	kindInt
	kindDuration
	kindBool
	kindList
	kindRegionMap // REGION=VALUE,...; a mapping in the config file
)

// setting is the one declaration of a configuration setting. The flag is
// --name, the environment variable is env, the config-file key is name.
type setting struct {
	name    string
	env     string
	group   string
	metavar string
	kind    kind
	def     string // default, as text
	// sandboxDef documents the value the sandbox and URL modes use when the
	// setting is not given (applyModeDefaults).
	sandboxDef string
	help       string
	set        func(c *Config, v string) error
	get        func(c *Config) string
}

func (s *setting) flag() string { return "--" + s.name }

// usageLine is the flag's one-line help, with its env name and default.
func (s *setting) usageLine() string {
	var b strings.Builder
	b.WriteString(s.help)
	b.WriteString(" (env ")
	b.WriteString(s.env)
	if s.def != "" {
		fmt.Fprintf(&b, "; default %s", s.def)
	}
	if s.sandboxDef != "" {
		fmt.Fprintf(&b, "; sandbox %s", s.sandboxDef)
	}
	b.WriteString(")")
	return b.String()
}

// Groups, in help order.
const (
	groupMode        = "Mode and addresses"
	groupAdmin       = "Admin API"
	groupNATS        = "NATS"
	groupCloudflare  = "Cloudflare"
	groupAWS         = "AWS and instances"
	groupEngine      = "Reconciler"
	groupReplication = "Replication"
	groupLog         = "Logging"
)

var groups = []string{groupMode, groupAdmin, groupNATS, groupCloudflare, groupAWS, groupEngine, groupReplication, groupLog}

func str(p func(c *Config) *string) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error { *p(c) = v; return nil },
		func(c *Config) string { return *p(c) }
}

func durationSetting(p func(c *Config) *time.Duration) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return errors.New("not a duration (use e.g. 30s, 5m, 1h30m)")
			}
			*p(c) = d
			return nil
		},
		func(c *Config) string { return p(c).String() }
}

func intSetting(p func(c *Config) *int) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return errors.New("not a whole number")
			}
			*p(c) = n
			return nil
		},
		func(c *Config) string { return strconv.Itoa(*p(c)) }
}

func boolSetting(p func(c *Config) *bool) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("not a boolean (use true or false)")
			}
			*p(c) = b
			return nil
		},
		func(c *Config) string { return strconv.FormatBool(*p(c)) }
}

func listSetting(p func(c *Config) *[]string) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error { *p(c) = splitList(v); return nil },
		func(c *Config) string { return strings.Join(*p(c), ",") }
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// settings is every setting, in help order within its group. The Cloudflare
// API token and the admin token are deliberately absent: they have no flag
// and no config-file key (see resolveToken, resolveAdminToken).
var settings = func() []*setting {
	s := []*setting{
		{name: "cloud", env: "TUNNELWARD_CLOUD", group: groupMode, metavar: "MODE", def: ModeSandbox,
			help: "clouds to converge: sandbox (in-process emulator), live (real Cloudflare and AWS) or the http(s) URL of a cloudsim"},
		{name: "data-dir", env: "TUNNELWARD_DATA_DIR", group: groupMode, metavar: "DIR", def: DefaultDataDir,
			help: "directory for state.db, the embedded NATS server's JetStream files and, in sandbox mode, the emulated cloud (sandbox-cloud.json: delete it, the reconciler stopped, to start the sandbox from empty)"},
		{name: "sandbox-listen", env: "TUNNELWARD_SANDBOX_LISTEN", group: groupMode, metavar: "HOST:PORT", def: DefaultSandboxListen,
			help: "HTTP address of the in-process emulator (sandbox mode only)"},

		{name: "admin-listen", env: "TUNNELWARD_ADMIN_LISTEN", group: groupAdmin, metavar: "HOST:PORT", def: DefaultAdminListen,
			help: "admin HTTP address (/healthz, /readyz, /metrics, /v1/orgs, /v1/plan); an address that is not loopback needs an admin token or --admin-insecure"},
		{name: adminTokenFileFlag, env: "TUNNELWARD_ADMIN_TOKEN_FILE", group: groupAdmin, metavar: "FILE",
			help: "file holding the admin API's bearer token (or set " + EnvAdminToken + "; never a flag value): every endpoint but /healthz, /readyz and a public /metrics then needs Authorization: Bearer <token>; status and plan send it"},
		{name: "admin-metrics-public", env: "TUNNELWARD_ADMIN_METRICS_PUBLIC", group: groupAdmin, metavar: "BOOL", kind: kindBool, def: "false",
			help: "with an admin token set, still serve /metrics without it, for scrapers that cannot send one (Prometheus can: authorization.credentials_file)"},
		{name: "admin-insecure", env: "TUNNELWARD_ADMIN_INSECURE", group: groupAdmin, metavar: "BOOL", kind: kindBool, def: "false",
			help: "serve the admin API without a token on an address that is not loopback: anyone who reaches it can read every org and run /v1/plan (logged as a warning at start)"},

		{name: "nats-listen", env: "TUNNELWARD_NATS_LISTEN", group: groupNATS, metavar: "HOST:PORT", def: DefaultNATSListen,
			help: "client address of the embedded NATS server (used when --nats-url is empty)"},
		{name: "nats-url", env: "TUNNELWARD_NATS_URL", group: groupNATS, metavar: "URL",
			help: "external NATS server(s), comma-separated, instead of the embedded one"},
		{name: "replica-id", env: "TUNNELWARD_REPLICA_ID", group: groupReplication, metavar: "ID",
			help: "this replica's name among the reconcilers sharing the NATS cluster, unique among them: names its durable consumer (reconciler-<ID>), its partition leases and its announcement; letters, digits, - and _ (default: the host name, other characters turned into -)"},
		{name: "stream-replicas", env: "TUNNELWARD_STREAM_REPLICAS", group: groupReplication, metavar: "N", kind: kindInt, def: "1",
			help: "copies of ORG_EVENTS, ORG_EVENTS_DLQ and the lease and placement buckets: 1 on a single server (the embedded one), 3 on a 3-node JetStream cluster; checked against existing streams at start, never changed"},
		{name: "lease-ttl", env: "TUNNELWARD_LEASE_TTL", group: groupReplication, metavar: "DURATION", kind: kindDuration, def: DefaultLeaseTTL.String(),
			help: "lifetime of a partition lease without renewal (the lease bucket's TTL; the same on every replica): a dead replica's orgs are taken over after at most this long, after three quarters of it when NATS says the replica's connection is gone; renewed every quarter of it, and a replica stops cloud writes half of it after its last renewal"},
		{name: "creds", env: "TUNNELWARD_NATS_CREDS", group: groupNATS, metavar: "FILE",
			help: "NATS user credentials (JWT + seed) file for --nats-url"},
		{name: "nkey", env: "TUNNELWARD_NATS_NKEY", group: groupNATS, metavar: "FILE",
			help: "NATS nkey seed file for --nats-url"},
		{name: "tls-ca", env: "TUNNELWARD_NATS_TLS_CA", group: groupNATS, metavar: "FILE",
			help: "CA bundle to verify the NATS server's certificate"},
		{name: "tls-cert", env: "TUNNELWARD_NATS_TLS_CERT", group: groupNATS, metavar: "FILE",
			help: "client certificate for NATS mutual TLS (with --tls-key)"},
		{name: "tls-key", env: "TUNNELWARD_NATS_TLS_KEY", group: groupNATS, metavar: "FILE",
			help: "client key for NATS mutual TLS (with --tls-cert)"},

		{name: "cloudflare-account-id", env: "TUNNELWARD_CLOUDFLARE_ACCOUNT_ID", group: groupCloudflare, metavar: "ID",
			sandboxDef: SandboxAccountID, help: "Cloudflare account that owns the tunnels (32 hex digits)"},
		{name: "cloudflare-zone-id", env: "TUNNELWARD_CLOUDFLARE_ZONE_ID", group: groupCloudflare, metavar: "ID",
			sandboxDef: SandboxZoneID, help: "Cloudflare zone that holds the org CNAMEs (32 hex digits)"},
		{name: "cloudflare-zone-name", env: "TUNNELWARD_CLOUDFLARE_ZONE_NAME", group: groupCloudflare, metavar: "NAME",
			sandboxDef: SandboxZoneName, help: "DNS name of that zone; orgs get <slug>.<zone name>"},
		{name: cloudflareTokenFileFlag, env: "TUNNELWARD_CLOUDFLARE_API_TOKEN_FILE", group: groupCloudflare, metavar: "FILE",
			help: "file holding the Cloudflare API token (or set " + EnvCloudflareAPIToken + "; never a flag value)"},

		{name: poolNameFlag, env: "TUNNELWARD_CLOUDFLARE_POOL", group: groupCloudflare, metavar: "NAME", def: DefaultPoolName,
			sandboxDef: SandboxPoolName,
			help:       "name of the default pool: the account, zone and token above (lowercase letters, digits and -, at most 32, starting with a letter); orgs placed before pools existed are in it"},
		{name: "cloudflare-max-tunnels", env: "TUNNELWARD_CLOUDFLARE_MAX_TUNNELS", group: groupCloudflare, metavar: "N", kind: kindInt,
			def:  strconv.Itoa(DefaultMaxTunnels),
			help: "tunnels the default pool may hold in its account (Cloudflare allows 1000 per account); pools in one account share it; 0: no limit kept"},
		{name: "cloudflare-max-dns-records", env: "TUNNELWARD_CLOUDFLARE_MAX_DNS_RECORDS", group: groupCloudflare, metavar: "N", kind: kindInt,
			def:  strconv.Itoa(DefaultMaxDNSRecords),
			help: "DNS records the default pool may hold in its zone: 200 on a Free zone created since September 2024, 1000 on an older Free zone, 3500 on a paid plan; 0: no limit kept"},
		{name: poolsFileFlag, env: "TUNNELWARD_CLOUDFLARE_POOLS_FILE", group: groupCloudflare, metavar: "FILE",
			help: "YAML or JSON file declaring more pools (each an account, a zone in it, a token named by api_token_env or api_token_file, limits and a budget; docs/operations.md, Cloudflare pools); without it the sandbox and URL modes serve a second pool, " + SandboxPool2Name},
		{name: "pool-placement", env: "TUNNELWARD_POOL_PLACEMENT", group: groupCloudflare, metavar: "POLICY", def: PlaceFill,
			help: "how an org that names no pool is placed: fill (the first pool in order with room: the default pool, then the file's) or least-used (the pool with the most room left)"},

		{name: "aws-region", env: "TUNNELWARD_AWS_REGION", group: groupAWS, metavar: "REGION",
			sandboxDef: SandboxAWSRegion, help: "default AWS region: orgs that name no region are launched here (falls back to AWS_REGION, AWS_DEFAULT_REGION); credentials come from the SDK's default chain"},
		{name: "aws-regions", env: "TUNNELWARD_AWS_REGIONS", group: groupAWS, metavar: "REGION,...", kind: kindList,
			sandboxDef: SandboxRegions + " in sandbox mode",
			help:       "further AWS regions served besides --aws-region, comma-separated; an org naming one of them is launched there, an org naming a region not served is launched nowhere"},
		{name: "instance-ami", env: "TUNNELWARD_INSTANCE_AMI", group: groupAWS, metavar: "AMI",
			sandboxDef: SandboxAMI, help: "AMI of org instances in the default region (ami-...; ideally with cloudflared baked in)"},
		{name: amiByRegion, env: "TUNNELWARD_INSTANCE_AMI_BY_REGION", group: groupAWS, metavar: "REGION=AMI,...", kind: kindRegionMap,
			sandboxDef: "REGION=" + SandboxAMI, help: "AMI of org instances in each region of --aws-regions (AMIs are regional); required for every one in live mode"},
		{name: "instance-type", env: "TUNNELWARD_INSTANCE_TYPE", group: groupAWS, metavar: "TYPE", def: DefaultInstanceType,
			help: "EC2 instance type when the org.created event names none"},
		{name: "instance-subnet", env: "TUNNELWARD_INSTANCE_SUBNET", group: groupAWS, metavar: "SUBNET",
			sandboxDef: SandboxSubnet, help: "subnet of org instances in the default region (subnet-...)"},
		{name: subnetByRgn, env: "TUNNELWARD_INSTANCE_SUBNET_BY_REGION", group: groupAWS, metavar: "REGION=SUBNET,...", kind: kindRegionMap,
			sandboxDef: "REGION=" + SandboxSubnet, help: "subnet of org instances in each region of --aws-regions; a region without one uses the default subnets of its default VPC"},
		{name: "instance-security-groups", env: "TUNNELWARD_INSTANCE_SECURITY_GROUPS", group: groupAWS, metavar: "SG,...",
			help: "security groups of org instances in the default region, comma-separated (sg-...); cloudflared needs egress only"},
		{name: sgsByRegion, env: "TUNNELWARD_INSTANCE_SECURITY_GROUPS_BY_REGION", group: groupAWS, metavar: "REGION=SG+SG,...", kind: kindRegionMap,
			help: "security groups of org instances in each region of --aws-regions, one region's joined with +; a region without them uses its VPC's default security group"},
		{name: "instance-profile", env: "TUNNELWARD_INSTANCE_PROFILE", group: groupAWS, metavar: "NAME|ARN",
			sandboxDef: SandboxInstanceProfile, help: "instance profile whose role may read only its own token parameter (deploy/iam/)"},
		{name: "ssm-path-prefix", env: "TUNNELWARD_SSM_PATH_PREFIX", group: groupAWS, metavar: "PATH", def: DefaultSSMPathPrefix,
			help: "SSM parameter path under which each org's tunnel token is stored"},
		{name: "ingress-service", env: "TUNNELWARD_INGRESS_SERVICE", group: groupAWS, metavar: "URL", def: DefaultIngressService,
			help: "service cloudflared forwards each org's hostname to, on the instance"},

		{name: "reserved-slugs", env: "TUNNELWARD_RESERVED_SLUGS", group: groupEngine, metavar: "SLUG,...",
			def: strings.Join(events.DefaultReservedSlugs, ", "), help: "slugs no org may take, comma-separated (replaces the default list)"},
		{name: "workers", env: "TUNNELWARD_WORKERS", group: groupEngine, metavar: "N", kind: kindInt, def: strconv.Itoa(DefaultWorkers),
			help: "orgs reconciled in parallel"},
		{name: "sweep-interval", env: "TUNNELWARD_SWEEP_INTERVAL", group: groupEngine, metavar: "DURATION", kind: kindDuration, def: "5m",
			help: "how often every org is resynced, drift found and orphans collected"},
		{name: "watch-budget-share", env: "TUNNELWARD_WATCH_BUDGET_SHARE", group: groupEngine, metavar: "PERCENT", def: "5%",
			help: "share of each provider's API budget the watches may use between sweeps (each listing on its own interval, at most --sweep-interval); 0% turns them off"},
		{name: "gc", env: "TUNNELWARD_GC", group: groupEngine, metavar: "BOOL", kind: kindBool, def: "true",
			help: "collect orphans (owned resources of no known org) during the sweep"},
		{name: "health-grace", env: "TUNNELWARD_HEALTH_GRACE", group: groupEngine, metavar: "DURATION", kind: kindDuration, def: "1m",
			help: "how long a tunnel may stay unhealthy after a cloudflared restart before the instance is replaced"},
		{name: "token-max-age", env: "TUNNELWARD_TOKEN_MAX_AGE", group: groupEngine, metavar: "DURATION", kind: kindDuration, def: "0s",
			help: "rotate tunnel tokens older than this (0s: never; 2160h is 90 days), spread over 5% of it so a fleet's tokens are not rotated at once"},

		{name: "log-format", env: "TUNNELWARD_LOG_FORMAT", group: groupLog, metavar: "FORMAT", def: DefaultLogFormat,
			help: "auto (text on a terminal, JSON otherwise), text or json"},
		{name: "log-level", env: "TUNNELWARD_LOG_LEVEL", group: groupLog, metavar: "LEVEL", def: DefaultLogLevel,
			help: "debug, info, warn or error"},
	}
	bind := map[string]func(s *setting){
		"cloud": func(s *setting) {
			s.set = func(c *Config, v string) error {
				switch v {
				case ModeSandbox, ModeLive:
					c.Cloud = v
				default:
					c.Cloud, c.CloudURL = ModeURL, v
				}
				return nil
			}
			s.get = func(c *Config) string {
				if c.Cloud == ModeURL {
					return c.CloudURL
				}
				return c.Cloud
			}
		},
		"data-dir":             func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.DataDir }) },
		"admin-listen":         func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.AdminListen }) },
		"sandbox-listen":       func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.SandboxListen }) },
		adminTokenFileFlag:     func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Admin.TokenFile }) },
		"admin-metrics-public": func(s *setting) { s.set, s.get = boolSetting(func(c *Config) *bool { return &c.Admin.MetricsPublic }) },
		"admin-insecure":       func(s *setting) { s.set, s.get = boolSetting(func(c *Config) *bool { return &c.Admin.Insecure }) },
		"nats-listen":          func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.NATS.Listen }) },
		"nats-url":             func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.NATS.URL }) },
		"replica-id":           func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.ReplicaID }) },
		"stream-replicas": func(s *setting) {
			s.set = func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil {
					return errors.New("not a whole number")
				}
				c.StreamReplicas = n
				return nil
			}
			s.get = func(c *Config) string { return strconv.Itoa(c.StreamReplicas) }
		},
		"lease-ttl": func(s *setting) {
			s.set, s.get = durationSetting(func(c *Config) *time.Duration { return &c.LeaseTTL })
		},
		"creds":                 func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.NATS.Creds }) },
		"nkey":                  func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.NATS.NKey }) },
		"tls-ca":                func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.NATS.TLSCA }) },
		"tls-cert":              func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.NATS.TLSCert }) },
		"tls-key":               func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.NATS.TLSKey }) },
		"cloudflare-account-id": func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Cloudflare.AccountID }) },
		"cloudflare-zone-id":    func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Cloudflare.ZoneID }) },
		"cloudflare-zone-name":  func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Cloudflare.ZoneName }) },
		cloudflareTokenFileFlag: func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Cloudflare.APITokenFile }) },
		"aws-region":            func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.AWS.Region }) },
		"aws-regions":           func(s *setting) { s.set, s.get = listSetting(func(c *Config) *[]string { return &c.AWS.ExtraRegions }) },
		"instance-ami":          func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Instance.AMI }) },
		amiByRegion:             func(s *setting) { s.set, s.get = regionMapSetting(amiByRegion) },
		subnetByRgn:             func(s *setting) { s.set, s.get = regionMapSetting(subnetByRgn) },
		sgsByRegion:             func(s *setting) { s.set, s.get = regionMapSetting(sgsByRegion) },
		"instance-type":         func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Instance.Type }) },
		"instance-subnet":       func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Instance.Subnet }) },
		"instance-security-groups": func(s *setting) {
			s.set, s.get = listSetting(func(c *Config) *[]string { return &c.Instance.SecurityGroups })
		},
		"instance-profile": func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Instance.Profile }) },
		"ssm-path-prefix":  func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Instance.SSMPathPrefix }) },
		"ingress-service":  func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Instance.IngressService }) },
		"reserved-slugs":   func(s *setting) { s.set, s.get = listSetting(func(c *Config) *[]string { return &c.ReservedSlugs }) },
		poolNameFlag: func(s *setting) {
			s.set, s.get = str(func(c *Config) *string { return &c.Cloudflare.Pool })
		},
		"cloudflare-max-tunnels": func(s *setting) {
			s.set, s.get = intSetting(func(c *Config) *int { return &c.Cloudflare.MaxTunnels })
		},
		"cloudflare-max-dns-records": func(s *setting) {
			s.set, s.get = intSetting(func(c *Config) *int { return &c.Cloudflare.MaxDNSRecords })
		},
		poolsFileFlag: func(s *setting) {
			s.set, s.get = str(func(c *Config) *string { return &c.Cloudflare.PoolsFile })
		},
		"pool-placement": func(s *setting) {
			s.set, s.get = str(func(c *Config) *string { return &c.Cloudflare.Placement })
		},
		"workers": func(s *setting) {
			s.set = func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil {
					return errors.New("not a whole number")
				}
				c.Workers = n
				return nil
			}
			s.get = func(c *Config) string { return strconv.Itoa(c.Workers) }
		},
		"sweep-interval": func(s *setting) {
			s.set, s.get = durationSetting(func(c *Config) *time.Duration { return &c.SweepInterval })
		},
		"health-grace": func(s *setting) {
			s.set, s.get = durationSetting(func(c *Config) *time.Duration { return &c.HealthGrace })
		},
		"token-max-age": func(s *setting) {
			s.set, s.get = durationSetting(func(c *Config) *time.Duration { return &c.TokenMaxAge })
		},
		"watch-budget-share": func(s *setting) {
			s.set = func(c *Config, v string) error {
				n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
				if err != nil {
					return errors.New("not a percentage (e.g. 5%)")
				}
				c.WatchBudgetShare = n / 100
				return nil
			}
			s.get = func(c *Config) string { return strconv.FormatFloat(c.WatchBudgetShare*100, 'f', -1, 64) + "%" }
		},
		"gc":         func(s *setting) { s.set, s.get = boolSetting(func(c *Config) *bool { return &c.GC }) },
		"log-format": func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Log.Format }) },
		"log-level":  func(s *setting) { s.set, s.get = str(func(c *Config) *string { return &c.Log.Level }) },
	}
	for _, x := range s {
		b, ok := bind[x.name]
		if !ok {
			panic("config: setting " + x.name + " has no binding")
		}
		b(x)
	}
	return s
}()

func lookup(name string) *setting {
	for _, s := range settings {
		if s.name == name {
			return s
		}
	}
	return nil
}
