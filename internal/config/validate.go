package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/tunnelward/tunnelward/internal/secret"
)

var (
	reHexID       = regexp.MustCompile(`^[0-9a-f]{32}$`)
	reDNSLabel    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	reRegion      = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	reAMI         = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	reSubnet      = regexp.MustCompile(`^subnet-([0-9a-f]{8}|[0-9a-f]{17})$`)
	reSG          = regexp.MustCompile(`^sg-([0-9a-f]{8}|[0-9a-f]{17})$`)
	reInstType    = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9]+$`)
	reProfileName = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)
	reProfileARN  = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/([\w+=,.@-]+/)*[\w+=,.@-]{1,128}$`)
	reSSMPath     = regexp.MustCompile(`^(/[A-Za-z0-9_.-]+)+$`)
)

// Limits.
const (
	maxWorkers      = 1024
	maxTokenBytes   = 4 << 10
	maxConfigBytes  = 1 << 20
	maxSSMPrefixLen = 900 // parameter names are at most 1011 characters; leave room for the org part
)

// resolveToken reads the Cloudflare API token from its environment variable
// or from --cloudflare-api-token-file. No message here ever includes the
// token's text.
func (c *Config) resolveToken(env func(string) string, probs *problems) {
	tok, src, _ := c.readSecret(env, EnvCloudflareAPIToken, cloudflareTokenFileFlag, c.Cloudflare.APITokenFile, "a Cloudflare API token", probs)
	if tok != "" {
		c.Cloudflare.APIToken = secret.NewToken(tok)
		c.sources[EnvCloudflareAPIToken] = src
	}
}

// resolveAdminToken reads the admin API's bearer token from its
// environment variable or from --admin-token-file. given reports whether
// either was set, readable or not, so that validateAdmin does not report a
// broken token a second time as a missing one.
func (c *Config) resolveAdminToken(env func(string) string, probs *problems) (given bool) {
	tok, src, given := c.readSecret(env, EnvAdminToken, adminTokenFileFlag, c.Admin.TokenFile, "the admin token", probs)
	if tok == "" {
		return given
	}
	if len(tok) < MinAdminTokenLen {
		// Neither the token nor its length goes into the message.
		where := EnvAdminToken
		if src == "file" {
			where = "--" + adminTokenFileFlag
		}
		probs.add(where, "the admin token is shorter than %d characters; use a long random one (e.g. openssl rand -hex 32)", MinAdminTokenLen)
		return given
	}
	c.Admin.Token = secret.NewToken(tok)
	c.sources[EnvAdminToken] = src
	return given
}

// readSecret reads a token from the environment variable envName or from
// file (the value of --fileFlag); setting both is an error. src is "env" or
// "file"; given reports whether either was set. No message here ever
// includes the token's text.
func (c *Config) readSecret(env func(string) string, envName, fileFlag, file, what string, probs *problems) (tok, src string, given bool) {
	fromEnv := strings.TrimSpace(env(envName))
	switch {
	case fromEnv != "" && file != "":
		probs.add("--"+fileFlag, "both %s and a token file are set; set only one", envName)
		return "", "", true
	case file != "":
		tok, err := readTokenFile(file)
		if err != nil {
			probs.add("--"+fileFlag, "%v", err)
			return "", "", true
		}
		return tok, "file", true
	case fromEnv != "":
		if strings.ContainsAny(fromEnv, " \t\r\n") {
			probs.add(envName, "contains whitespace; %s is a single word", what)
			return "", "", true
		}
		return fromEnv, "env", true
	}
	return "", "", false
}

func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read token file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("cannot read token file %s: %w", path, err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("token file %s is larger than %d bytes; it should hold only the token", path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s holds more than one word; it should hold only the token", path)
	}
	return tok, nil
}

// applyModeDefaults fills what the chosen cloud mode implies: the sandbox
// identities in the sandbox and URL modes, the AWS region fallbacks in live
// mode.
func (c *Config) applyModeDefaults(env func(string) string) {
	if c.Cloud == ModeLive {
		if c.AWS.Region == "" {
			c.AWS.Region = strings.TrimSpace(env("AWS_REGION"))
		}
		if c.AWS.Region == "" {
			c.AWS.Region = strings.TrimSpace(env("AWS_DEFAULT_REGION"))
		}
		return
	}
	fill := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	fill(&c.Cloudflare.AccountID, SandboxAccountID)
	fill(&c.Cloudflare.ZoneID, SandboxZoneID)
	fill(&c.Cloudflare.ZoneName, SandboxZoneName)
	fill(&c.AWS.Region, SandboxAWSRegion)
	fill(&c.Instance.AMI, SandboxAMI)
	fill(&c.Instance.Subnet, SandboxSubnet)
	fill(&c.Instance.Profile, SandboxInstanceProfile)
	if c.Cloudflare.APIToken.IsZero() {
		c.Cloudflare.APIToken = secret.NewToken(SandboxCloudflareToken)
	}
	if c.Cloud == ModeSandbox && len(c.AWS.ExtraRegions) == 0 {
		// The in-process emulator has these regions; serve them all, so
		// an org naming one works out of the box (a cloudsim at --cloud URL
		// may have others: name them there).
		for _, r := range strings.Split(SandboxRegions, ",") {
			if r != c.AWS.Region {
				c.AWS.ExtraRegions = append(c.AWS.ExtraRegions, r)
			}
		}
	}
	c.fillSandboxRegions()
	c.AWS.AccessKeyID = SandboxAWSAccessKeyID
	c.AWS.SecretAccessKey = secret.NewToken(SandboxAWSSecretKey)
}

// validate checks every setting and every combination, adding one problem
// per wrong setting.
func (c *Config) validate(probs *problems) {
	f := func(name string) string { return "--" + name }

	// Mode and addresses.
	if c.Cloud == ModeURL {
		if err := checkHTTPURL(c.CloudURL); err != nil {
			probs.add(f("cloud"), "%q is not sandbox, live or the http(s) URL of a cloudsim: %v", c.CloudURL, err)
		}
	}
	if c.DataDir == "" {
		probs.add(f("data-dir"), "must not be empty")
	} else if st, err := os.Stat(c.DataDir); err == nil && !st.IsDir() {
		probs.add(f("data-dir"), "%s exists and is not a directory", c.DataDir)
	}
	checkListen(probs, "admin-listen", c.AdminListen)
	if c.Cloud == ModeSandbox {
		checkListen(probs, "sandbox-listen", c.SandboxListen)
	}

	// NATS.
	if c.NATS.URL == "" {
		checkListen(probs, "nats-listen", c.NATS.Listen)
		for _, n := range []string{"creds", "nkey", "tls-ca", "tls-cert", "tls-key"} {
			if lookup(n).get(c) != "" {
				probs.add(f(n), "only applies to an external server; set --nats-url too")
			}
		}
	} else {
		for _, u := range strings.Split(c.NATS.URL, ",") {
			if err := checkNATSURL(strings.TrimSpace(u)); err != nil {
				// The refused URL may hold the very password refused.
				probs.add(f("nats-url"), "%q: %v", secret.RedactURL(u), err)
			}
		}
		if c.Source("nats-listen") != "default" {
			probs.add(f("nats-listen"), "set together with --nats-url; the embedded server runs only without --nats-url, so set one of them")
		}
		if c.NATS.Creds != "" && c.NATS.NKey != "" {
			probs.add(f("nkey"), "set together with --creds; a connection authenticates one way, so set one of them")
		}
		if (c.NATS.TLSCert == "") != (c.NATS.TLSKey == "") {
			probs.add(f("tls-cert"), "--tls-cert and --tls-key go together; set both or neither")
		}
		for _, n := range []string{"creds", "nkey", "tls-ca", "tls-cert", "tls-key"} {
			if p := lookup(n).get(c); p != "" {
				if err := checkFile(p); err != nil {
					probs.add(f(n), "%v", err)
				}
			}
		}
	}
	if c.Cloud == ModeSandbox && c.NATS.URL == "" {
		checkPortClash(probs, map[string]string{"admin-listen": c.AdminListen, "nats-listen": c.NATS.Listen, "sandbox-listen": c.SandboxListen})
	} else if c.NATS.URL == "" {
		checkPortClash(probs, map[string]string{"admin-listen": c.AdminListen, "nats-listen": c.NATS.Listen})
	}

	// Live mode needs every identity spelled out.
	if c.Cloud == ModeLive {
		for _, n := range []string{"cloudflare-account-id", "cloudflare-zone-id", "cloudflare-zone-name", "aws-region", "instance-ami", "instance-subnet", "instance-profile"} {
			s := lookup(n)
			if s.get(c) == "" {
				probs.add(s.flag(), "required with --cloud live (or set %s)", s.env)
			}
		}
		if c.Cloudflare.APIToken.IsZero() && c.Cloudflare.APITokenFile == "" {
			probs.add(EnvCloudflareAPIToken, "required with --cloud live: set it, or --%s to a file holding the token", cloudflareTokenFileFlag)
		}
	}

	// Cloudflare.
	if v := c.Cloudflare.AccountID; v != "" && !reHexID.MatchString(v) {
		probs.add(f("cloudflare-account-id"), "%q is not a Cloudflare account id (32 lowercase hex digits)", v)
	}
	if v := c.Cloudflare.ZoneID; v != "" && !reHexID.MatchString(v) {
		probs.add(f("cloudflare-zone-id"), "%q is not a Cloudflare zone id (32 lowercase hex digits)", v)
	}
	// A fully qualified "example.com." names the same zone; hostnames are
	// built as <slug>.<zone>, so keep the form without the root dot.
	c.Cloudflare.ZoneName = strings.TrimSuffix(c.Cloudflare.ZoneName, ".")
	if v := c.Cloudflare.ZoneName; v != "" {
		if err := checkZoneName(v); err != nil {
			probs.add(f("cloudflare-zone-name"), "%q: %v", v, err)
		}
	}

	// AWS and instances.
	if v := c.AWS.Region; v != "" {
		if err := checkRegion(v); err != nil {
			probs.add(f("aws-region"), "%q %v", v, err)
		}
	}
	c.validateRegions(probs)
	if v := c.Instance.AMI; v != "" && !reAMI.MatchString(v) {
		probs.add(f("instance-ami"), "%q is not an AMI id (ami- and 8 or 17 hex digits)", v)
	}
	if v := c.Instance.Type; !reInstType.MatchString(v) {
		probs.add(f("instance-type"), "%q is not an EC2 instance type (like t3.micro)", v)
	}
	if v := c.Instance.Subnet; v != "" && !reSubnet.MatchString(v) {
		probs.add(f("instance-subnet"), "%q is not a subnet id (subnet- and 8 or 17 hex digits)", v)
	}
	for _, sg := range c.Instance.SecurityGroups {
		if !reSG.MatchString(sg) {
			probs.add(f("instance-security-groups"), "%q is not a security group id (sg- and 8 or 17 hex digits)", sg)
		}
	}
	if v := c.Instance.Profile; v != "" && !reProfileName.MatchString(v) && !reProfileARN.MatchString(v) {
		probs.add(f("instance-profile"), "%q is neither an instance profile name nor an instance-profile ARN", v)
	}
	if err := checkSSMPrefix(c.Instance.SSMPathPrefix); err != nil {
		probs.add(f("ssm-path-prefix"), "%q: %v", c.Instance.SSMPathPrefix, err)
	}
	if err := checkIngress(c.Instance.IngressService); err != nil {
		probs.add(f("ingress-service"), "%q: %v", c.Instance.IngressService, err)
	}

	// Reconciler.
	var badSlugs []string
	for _, s := range c.ReservedSlugs {
		if !reDNSLabel.MatchString(s) {
			badSlugs = append(badSlugs, strconv.Quote(s))
		}
	}
	if len(badSlugs) > 0 {
		probs.add(f("reserved-slugs"), "%s not a DNS label (lowercase letters, digits and inner hyphens, at most 63)", pluralIs(badSlugs))
	}
	if n := len(c.ReplicaID); n > maxReplicaID || strings.IndexFunc(c.ReplicaID, func(r rune) bool { return r > 127 || !replicaIDChar(byte(r)) }) >= 0 {
		probs.add(f("replica-id"), "%q: want 1 to %d letters, digits, - or _ (it names a NATS consumer and KV keys)", c.ReplicaID, maxReplicaID)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		probs.add(f("stream-replicas"), "%d is out of range; want 1 to 5 (JetStream's limit; 1 on a single server, 3 on a 3-node cluster)", c.StreamReplicas)
	} else if c.NATS.Embedded() && c.StreamReplicas != 1 {
		probs.add(f("stream-replicas"), "%d needs a JetStream cluster; the embedded server is a single node (use 1, or --nats-url to a cluster)", c.StreamReplicas)
	}
	if c.LeaseTTL < 2*time.Second || c.LeaseTTL > 10*time.Minute {
		probs.add(f("lease-ttl"), "%s is out of range; want 2s to 10m (the default %s outlasts a NATS leader election)", c.LeaseTTL, DefaultLeaseTTL)
	}
	if c.Workers < 1 || c.Workers > maxWorkers {
		probs.add(f("workers"), "%d is out of range; want 1 to %d", c.Workers, maxWorkers)
	}
	if c.SweepInterval <= 0 {
		probs.add(f("sweep-interval"), "%v must be positive", c.SweepInterval)
	}
	if c.HealthGrace <= 0 {
		probs.add(f("health-grace"), "%v must be positive", c.HealthGrace)
	}
	if c.TokenMaxAge < 0 || (c.TokenMaxAge > 0 && c.TokenMaxAge < time.Hour) {
		probs.add(f("token-max-age"), "%v is out of range; want 0s (off) or at least 1h (the docs recommend 2160h, 90 days)", c.TokenMaxAge)
	}
	if c.WatchBudgetShare < 0 || c.WatchBudgetShare > 0.5 {
		// Above half, the watches would starve the repairs they exist for.
		probs.add(f("watch-budget-share"), "%g%% is out of range; want 0%% to 50%%", c.WatchBudgetShare*100)
	}

	// Logging.
	switch c.Log.Format {
	case "auto", "text", "json":
	default:
		probs.add(f("log-format"), "%q: want auto, text or json", c.Log.Format)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		probs.add(f("log-level"), "%v", err)
	}
}

// validateAdmin refuses an admin API that anyone on the network could
// call: /v1/orgs shows every org and /v1/plan spends the Cloudflare budget.
// It runs at Load, so the refusal comes before NATS or bbolt is touched.
func (c *Config) validateAdmin(tokenGiven bool, probs *problems) {
	h, _, err := splitListen(c.AdminListen)
	if err != nil || tokenGiven || c.Admin.Insecure || IsLoopbackHost(h) {
		return // a bad address is reported by validate
	}
	probs.add("--admin-listen", "%q is not a loopback address, so the admin API needs a token: set --%s FILE or %s "+
		"(at least %d characters, e.g. openssl rand -hex 32), or --admin-insecure to serve it to anyone who reaches the port",
		c.AdminListen, adminTokenFileFlag, EnvAdminToken, MinAdminTokenLen)
}

func pluralIs(items []string) string {
	if len(items) == 1 {
		return items[0] + " is"
	}
	return strings.Join(items, ", ") + " are"
}

func checkListen(probs *problems, name, v string) {
	if _, _, err := splitListen(v); err != nil {
		probs.add("--"+name, "%q: %v", v, err)
	}
}

// splitListen checks a HOST:PORT listen address.
func splitListen(v string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0, errors.New("want HOST:PORT (like 127.0.0.1:8081 or :8081)")
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	return h, n, nil
}

// checkPortClash reports two listeners of this process that would fight over
// one port.
func checkPortClash(probs *problems, addrs map[string]string) {
	names := []string{"admin-listen", "nats-listen", "sandbox-listen"}
	for i, a := range names {
		for _, b := range names[i+1:] {
			va, oka := addrs[a]
			vb, okb := addrs[b]
			if !oka || !okb {
				continue
			}
			ha, pa, errA := splitListen(va)
			hb, pb, errB := splitListen(vb)
			if errA != nil || errB != nil || pa == 0 || pa != pb {
				continue
			}
			if ha == hb || isWildcard(ha) || isWildcard(hb) {
				probs.add("--"+b, "%q uses the same port as --%s %q", vb, a, va)
			}
		}
	}
}

func isWildcard(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }

func checkHTTPURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	return nil
}

func checkNATSURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL")
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return errors.New("scheme must be nats, tls, ws or wss")
	}
	if u.Hostname() == "" {
		return errors.New("no host")
	}
	if u.User != nil {
		// A password in a URL ends up in ps, logs and this error; use --creds.
		return errors.New("credentials in the URL are not accepted; use --creds or --nkey")
	}
	return nil
}

func checkFile(p string) error {
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file %s does not exist", p)
	}
	if err != nil {
		return fmt.Errorf("cannot use %s: %w", p, err)
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory, not a file", p)
	}
	return nil
}

func checkZoneName(v string) error {
	labels := strings.Split(v, ".")
	if len(labels) < 2 {
		return errors.New("a zone name has at least two labels (like example.com)")
	}
	if len(v) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, l := range labels {
		if !reDNSLabel.MatchString(l) {
			return fmt.Errorf("label %q is not a lowercase DNS label", l)
		}
	}
	return nil
}

func checkSSMPrefix(v string) error {
	if !reSSMPath.MatchString(v) {
		return errors.New("want an absolute parameter path like /tunnelward/tunnels (no trailing slash; letters, digits, _ . -)")
	}
	if len(v) > maxSSMPrefixLen {
		return fmt.Errorf("longer than %d characters", maxSSMPrefixLen)
	}
	first := strings.ToLower(strings.SplitN(v[1:], "/", 2)[0])
	if strings.HasPrefix(first, "aws") || strings.HasPrefix(first, "ssm") {
		return errors.New("parameter paths may not start with aws or ssm (reserved by AWS)")
	}
	return nil
}

func checkIngress(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL")
	}
	switch u.Scheme {
	case "http", "https", "tcp", "ssh", "rdp":
		if u.Host == "" {
			return errors.New("no host")
		}
	case "unix", "unix+tls":
		if u.Path == "" {
			return errors.New("no socket path")
		}
	default:
		return errors.New("want a cloudflared origin URL (http, https, tcp, ssh, rdp or unix)")
	}
	return nil
}

// readConfigFile reads a flat YAML or JSON mapping of setting names (the
// flag names) to values. Lists may be YAML sequences or comma-separated.
func readConfigFile(path string, probs *problems) map[string]string {
	const setting = "--config"
	f, err := os.Open(path)
	if err != nil {
		probs.add(setting, "cannot read config file: %v", err)
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		probs.add(setting, "cannot read config file %s: %v", path, err)
		return nil
	}
	if len(b) > maxConfigBytes {
		probs.add(setting, "config file %s is larger than %d bytes", path, maxConfigBytes)
		return nil
	}
	var doc map[string]any
	// YAML is a superset of JSON, so one decoder reads both.
	if err := yaml.Unmarshal(b, &doc); err != nil {
		probs.add(setting, "config file %s is not a YAML or JSON mapping: %v", path, err)
		return nil
	}
	out := map[string]string{}
	for k, v := range doc {
		if secretEnv, fileFlag, ok := secretKey(k); ok {
			probs.add(setting, "config file %s sets %s; the token is read only from %s or --%s, never from the config file",
				path, k, secretEnv, fileFlag)
			continue
		}
		if lookup(k) == nil {
			probs.add(setting, "config file %s: unknown setting %q (keys are the flag names, like data-dir)", path, k)
			continue
		}
		s, err := scalarText(v)
		if m, ok := v.(map[string]any); ok && lookup(k).kind == kindRegionMap {
			s, err = regionMapText(k, m)
		}
		if err != nil {
			probs.add(setting, "config file %s: %s: %v", path, k, err)
			continue
		}
		if v != nil {
			out[k] = s
		}
	}
	return out
}

// secretKey reports whether a config-file key is a token (refused: config
// files get committed), with where the token is read from instead.
func secretKey(k string) (env, fileFlag string, ok bool) {
	switch k {
	case cloudflareTokenConfigKey:
		return EnvCloudflareAPIToken, cloudflareTokenFileFlag, true
	case adminTokenConfigKey:
		return EnvAdminToken, adminTokenFileFlag, true
	}
	return "", "", false
}

func scalarText(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(x), nil
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, err := scalarText(e)
			if err != nil || strings.Contains(s, ",") {
				return "", errors.New("list items must be plain values without commas")
			}
			if _, nested := e.([]any); nested {
				return "", errors.New("lists may not nest")
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", errors.New("must be a single value or a list")
}
