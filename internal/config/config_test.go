package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/events"
)

// envMap turns a map into the env lookup Parse takes.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// liveEnv is a complete, valid live-mode environment.
func liveEnv() map[string]string {
	return map[string]string{
		"TUNNELWARD_CLOUD":                 "live",
		"TUNNELWARD_NATS_URL":              "nats://nats.internal:4222",
		"TUNNELWARD_CLOUDFLARE_ACCOUNT_ID": "0123456789abcdef0123456789abcdef",
		"TUNNELWARD_CLOUDFLARE_ZONE_ID":    "fedcba9876543210fedcba9876543210",
		"TUNNELWARD_CLOUDFLARE_ZONE_NAME":  "example.com",
		"TUNNELWARD_CLOUDFLARE_API_TOKEN":  "cfTok_LiveSecretValue_0123456789abcdefghij",
		"TUNNELWARD_AWS_REGION":            "eu-west-1",
		"TUNNELWARD_INSTANCE_AMI":          "ami-0abcdef1234567890",
		"TUNNELWARD_INSTANCE_SUBNET":       "subnet-0abcdef1234567890",
		"TUNNELWARD_INSTANCE_PROFILE":      "tunnelward-instance",
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"Cloud":         ModeSandbox,
		"DataDir":       "./data",
		"AdminListen":   "127.0.0.1:8081",
		"SandboxListen": "127.0.0.1:8787",
		"NATS.Listen":   "127.0.0.1:4222",
		"NATS.URL":      "",
		"Workers":       DefaultWorkers,
		"SweepInterval": DefaultSweepInterval,
		"HealthGrace":   DefaultHealthGrace,
		"GC":            true,
		"AccountID":     SandboxAccountID,
		"ZoneID":        SandboxZoneID,
		"ZoneName":      SandboxZoneName,
		"Token":         SandboxCloudflareToken,
		"Region":        SandboxAWSRegion,
		"AccessKey":     SandboxAWSAccessKeyID,
		"SecretKey":     SandboxAWSSecretKey,
		"AMI":           SandboxAMI,
		"Type":          "t3.micro",
		"SSMPrefix":     "/tunnelward/tunnels",
		"Ingress":       "http://localhost:8080",
		"LogFormat":     "auto",
		"LogLevel":      "info",
	}
	got := map[string]any{
		"Cloud": c.Cloud, "DataDir": c.DataDir, "AdminListen": c.AdminListen, "SandboxListen": c.SandboxListen,
		"NATS.Listen": c.NATS.Listen, "NATS.URL": c.NATS.URL, "Workers": c.Workers, "SweepInterval": c.SweepInterval,
		"HealthGrace": c.HealthGrace, "GC": c.GC, "AccountID": c.Cloudflare.AccountID, "ZoneID": c.Cloudflare.ZoneID,
		"ZoneName": c.Cloudflare.ZoneName, "Token": c.Cloudflare.APIToken.Reveal(), "Region": c.AWS.Region,
		"AccessKey": c.AWS.AccessKeyID, "SecretKey": c.AWS.SecretAccessKey.Reveal(), "AMI": c.Instance.AMI,
		"Type": c.Instance.Type, "SSMPrefix": c.Instance.SSMPathPrefix, "Ingress": c.Instance.IngressService,
		"LogFormat": c.Log.Format, "LogLevel": c.Log.Level,
	}
	for k, w := range want {
		if !reflect.DeepEqual(got[k], w) {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	if !slices.Equal(c.ReservedSlugs, events.DefaultReservedSlugs) {
		t.Errorf("reserved slugs = %v, want the events package's defaults", c.ReservedSlugs)
	}
	if !c.Sandboxed() || !c.NATS.Embedded() {
		t.Errorf("default config should be sandboxed with embedded NATS")
	}
	if s := c.Source("workers"); s != "default" {
		t.Errorf("source of workers = %q, want default", s)
	}
}

func TestLiveModeLeavesCredentialsToTheChain(t *testing.T) {
	c, err := Parse(nil, envMap(liveEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sandboxed() || c.AWS.AccessKeyID != "" || !c.AWS.SecretAccessKey.IsZero() {
		t.Fatalf("live mode must not carry static AWS credentials: %+v", c.AWS)
	}
	if c.Cloudflare.APIToken.Reveal() != liveEnv()[EnvCloudflareAPIToken] {
		t.Fatalf("token not read from %s", EnvCloudflareAPIToken)
	}
	if c.Source(EnvCloudflareAPIToken) != "env" {
		t.Fatalf("token source = %q", c.Source(EnvCloudflareAPIToken))
	}
	if c.HealthGrace != DefaultHealthGrace {
		t.Fatalf("live health grace = %v, want %v", c.HealthGrace, DefaultHealthGrace)
	}
	// An explicit value wins in the sandbox too.
	if s, err := Parse([]string{"--health-grace", "7m"}, envMap(nil)); err != nil || s.HealthGrace != 7*time.Minute {
		t.Fatalf("sandbox --health-grace 7m: %v %v", s.HealthGrace, err)
	}
}

func TestCloudURLMode(t *testing.T) {
	c, err := Parse([]string{"--cloud", "http://cloudsim:8787"}, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cloud != ModeURL || c.CloudURL != "http://cloudsim:8787" || !c.Sandboxed() {
		t.Fatalf("cloud = %q url %q", c.Cloud, c.CloudURL)
	}
	if c.Cloudflare.ZoneID != SandboxZoneID || c.Cloudflare.APIToken.Reveal() != SandboxCloudflareToken {
		t.Fatalf("URL mode should default to the sandbox identities")
	}
}

func TestPrecedence(t *testing.T) {
	type layer map[string]string // setting name -> raw value
	cases := []struct {
		name            string
		flag, env, file layer
		setting         string
		want            string
		source          string
	}{
		{"default only", nil, nil, nil, "data-dir", "./data", "default"},
		{"file over default", nil, nil, layer{"data-dir": "/from/file"}, "data-dir", "/from/file", "file"},
		{"env over file", nil, layer{"data-dir": "/from/env"}, layer{"data-dir": "/from/file"}, "data-dir", "/from/env", "env"},
		{"flag over env and file", layer{"data-dir": "/from/flag"}, layer{"data-dir": "/from/env"}, layer{"data-dir": "/from/file"}, "data-dir", "/from/flag", "flag"},
		{"flag over file", layer{"workers": "9"}, nil, layer{"workers": "3"}, "workers", "9", "flag"},
		{"int from file", nil, nil, layer{"workers": "7"}, "workers", "7", "file"},
		{"duration env over file", nil, layer{"sweep-interval": "90s"}, layer{"sweep-interval": "10m"}, "sweep-interval", "1m30s", "env"},
		{"bool flag false over env true", layer{"gc": "false"}, layer{"gc": "true"}, nil, "gc", "false", "flag"},
		{"bool file false", nil, nil, layer{"gc": "false"}, "gc", "false", "file"},
		{"list env", nil, layer{"reserved-slugs": "www, api ,mail"}, nil, "reserved-slugs", "www,api,mail", "env"},
		{"list file beats default", nil, nil, layer{"reserved-slugs": "a,b"}, "reserved-slugs", "a,b", "file"},
		{"empty env is unset", nil, layer{"log-level": ""}, layer{"log-level": "debug"}, "log-level", "debug", "file"},
		{"cloud url flag", layer{"cloud": "http://127.0.0.1:9999"}, layer{"cloud": "sandbox"}, nil, "cloud", "http://127.0.0.1:9999", "flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			for k, v := range tc.flag {
				args = append(args, "--"+k+"="+v)
			}
			env := map[string]string{}
			for k, v := range tc.env {
				env[lookup(k).env] = v
			}
			if tc.file != nil {
				b, _ := json.Marshal(tc.file)
				args = append(args, "--config", writeFile(t, "c.json", string(b)))
			}
			c, err := Parse(args, envMap(env))
			if err != nil {
				t.Fatal(err)
			}
			if got := lookup(tc.setting).get(&c); got != tc.want {
				t.Errorf("%s = %q, want %q", tc.setting, got, tc.want)
			}
			if got := c.Source(tc.setting); got != tc.source {
				t.Errorf("source = %q, want %q", got, tc.source)
			}
		})
	}
}

func TestConfigFileYAMLAndEnvName(t *testing.T) {
	yml := writeFile(t, "tw.yaml", `
# a comment
data-dir: /var/lib/tunnelward
workers: 12
gc: false
sweep-interval: 2m
reserved-slugs: [www, api, mail]
instance-security-groups:
  - sg-0123456789abcdef0
  - sg-01234567
`)
	c, err := Parse(nil, envMap(map[string]string{EnvConfigFile: yml}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ConfigFile != yml || c.DataDir != "/var/lib/tunnelward" || c.Workers != 12 || c.GC || c.SweepInterval != 2*time.Minute {
		t.Fatalf("file not applied: %v", c)
	}
	if !slices.Equal(c.ReservedSlugs, []string{"www", "api", "mail"}) ||
		!slices.Equal(c.Instance.SecurityGroups, []string{"sg-0123456789abcdef0", "sg-01234567"}) {
		t.Fatalf("lists: %v %v", c.ReservedSlugs, c.Instance.SecurityGroups)
	}
	// --config beats TUNNELWARD_CONFIG.
	other := writeFile(t, "other.json", `{"workers": 2}`)
	c, err = Parse([]string{"--config", other}, envMap(map[string]string{EnvConfigFile: yml}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 2 || c.ConfigFile != other {
		t.Fatalf("--config should win over %s: workers %d from %s", EnvConfigFile, c.Workers, c.ConfigFile)
	}
}

// problemSettings returns the settings an *Error names, sorted.
func problemSettings(t *testing.T, err error) []string {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *config.Error, got %T: %v", err, err)
	}
	var out []string
	for _, p := range e.Problems {
		out = append(out, p.Setting)
	}
	sort.Strings(out)
	return out
}

func TestValidationMessages(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "exists.creds")
	if err := os.WriteFile(existing, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string // on top of an empty environment
		live bool              // start from a valid live environment
		file string            // config file content (YAML)
		// want maps each setting that must be named to a fragment of its message.
		want map[string]string
	}{
		{name: "cloud mode", args: []string{"--cloud", "production"}, want: map[string]string{"--cloud": `"production" is not sandbox, live or the http(s) URL of a cloudsim`}},
		{name: "cloud url scheme", args: []string{"--cloud", "ftp://x"}, want: map[string]string{"--cloud": "scheme must be http or https"}},
		{name: "empty data dir", args: []string{"--data-dir="}, want: map[string]string{"--data-dir": "must not be empty"}},
		{name: "data dir is a file", args: []string{"--data-dir", existing}, want: map[string]string{"--data-dir": "is not a directory"}},
		{name: "admin listen", args: []string{"--admin-listen", "8081"}, want: map[string]string{"--admin-listen": "want HOST:PORT"}},
		{name: "listen port range", args: []string{"--nats-listen", "127.0.0.1:70000"}, want: map[string]string{"--nats-listen": `port "70000" is not a number from 0 to 65535`}},
		{name: "port clash", args: []string{"--admin-listen", ":4222", "--admin-insecure"}, want: map[string]string{"--nats-listen": `uses the same port as --admin-listen`}},
		{name: "nats url scheme", args: []string{"--nats-url", "http://nats:4222"}, want: map[string]string{"--nats-url": "scheme must be nats, tls, ws or wss"}},
		{name: "nats url password", args: []string{"--nats-url", "nats://u:hunter2@nats:4222"}, want: map[string]string{"--nats-url": "credentials in the URL are not accepted"}},
		{name: "nats listen with url", args: []string{"--nats-url", "nats://n:4222", "--nats-listen", "127.0.0.1:4333"}, want: map[string]string{"--nats-listen": "set one of them"}},
		{name: "creds without url", args: []string{"--creds", existing}, want: map[string]string{"--creds": "only applies to an external server"}},
		{name: "creds missing file", args: []string{"--nats-url", "nats://n:4222", "--creds", filepath.Join(dir, "nope.creds")}, want: map[string]string{"--creds": "does not exist"}},
		{name: "creds and nkey", args: []string{"--nats-url", "nats://n:4222", "--creds", existing, "--nkey", existing}, want: map[string]string{"--nkey": "set one of them"}},
		{name: "tls cert without key", args: []string{"--nats-url", "tls://n:4222", "--tls-cert", existing}, want: map[string]string{"--tls-cert": "set both or neither"}},
		{name: "tls ca is a directory", args: []string{"--nats-url", "tls://n:4222", "--tls-ca", dir}, want: map[string]string{"--tls-ca": "is a directory"}},
		{name: "account id", args: []string{"--cloudflare-account-id", "acct-1"}, want: map[string]string{"--cloudflare-account-id": "32 lowercase hex digits"}},
		{name: "zone id", args: []string{"--cloudflare-zone-id", "F0E1D2C3B4A5968778695A4B3C2D1E0F"}, want: map[string]string{"--cloudflare-zone-id": "32 lowercase hex digits"}},
		{name: "zone name one label", args: []string{"--cloudflare-zone-name", "localhost"}, want: map[string]string{"--cloudflare-zone-name": "at least two labels"}},
		{name: "zone name bad label", args: []string{"--cloudflare-zone-name", "exa_mple.com"}, want: map[string]string{"--cloudflare-zone-name": `label "exa_mple" is not a lowercase DNS label`}},
		{name: "region", args: []string{"--aws-region", "Europe"}, want: map[string]string{"--aws-region": "not an AWS region name"}},
		{name: "ami", args: []string{"--instance-ami", "ami-12345"}, want: map[string]string{"--instance-ami": `"ami-12345" is not an AMI id`}},
		{name: "instance type", args: []string{"--instance-type", "big"}, want: map[string]string{"--instance-type": "not an EC2 instance type"}},
		{name: "subnet", args: []string{"--instance-subnet", "sub-1"}, want: map[string]string{"--instance-subnet": "not a subnet id"}},
		{name: "security groups", args: []string{"--instance-security-groups", "sg-01234567,default"}, want: map[string]string{"--instance-security-groups": `"default" is not a security group id`}},
		{name: "instance profile", args: []string{"--instance-profile", "arn:aws:iam::123:role/x y"}, want: map[string]string{"--instance-profile": "neither an instance profile name nor an instance-profile ARN"}},
		{name: "ssm prefix trailing slash", args: []string{"--ssm-path-prefix", "/tunnelward/"}, want: map[string]string{"--ssm-path-prefix": "no trailing slash"}},
		{name: "ssm prefix reserved", args: []string{"--ssm-path-prefix", "/aws/tunnels"}, want: map[string]string{"--ssm-path-prefix": "may not start with aws or ssm"}},
		{name: "ingress", args: []string{"--ingress-service", "localhost:8080"}, want: map[string]string{"--ingress-service": "want a cloudflared origin URL"}},
		{name: "reserved slugs", args: []string{"--reserved-slugs", "www,Api,a.b,ok"}, want: map[string]string{"--reserved-slugs": `"Api", "a.b" are not a DNS label`}},
		{name: "workers zero", args: []string{"--workers", "0"}, want: map[string]string{"--workers": "0 is out of range; want 1 to 1024"}},
		{name: "workers negative env", env: map[string]string{"TUNNELWARD_WORKERS": "-3"}, want: map[string]string{"--workers": "-3 is out of range"}},
		{name: "workers not a number", env: map[string]string{"TUNNELWARD_WORKERS": "four"}, want: map[string]string{"--workers": `"four" (from TUNNELWARD_WORKERS): not a whole number`}},
		{name: "sweep interval no unit", args: []string{"--sweep-interval", "30"}, want: map[string]string{"--sweep-interval": `"30": not a duration`}},
		{name: "sweep interval negative", args: []string{"--sweep-interval", "-1m"}, want: map[string]string{"--sweep-interval": "must be positive"}},
		{name: "health grace zero", args: []string{"--health-grace", "0s"}, want: map[string]string{"--health-grace": "must be positive"}},
		{name: "watch share not a number", args: []string{"--watch-budget-share", "lots"}, want: map[string]string{"--watch-budget-share": "not a percentage"}},
		{name: "watch share too large", args: []string{"--watch-budget-share", "60%"}, want: map[string]string{"--watch-budget-share": "out of range"}},
		{name: "gc not bool", args: []string{"--gc=maybe"}, want: map[string]string{"--gc": "not a boolean"}},
		{name: "log format", args: []string{"--log-format", "xml"}, want: map[string]string{"--log-format": "want auto, text or json"}},
		{name: "log level", env: map[string]string{"TUNNELWARD_LOG_LEVEL": "loud"}, want: map[string]string{"--log-level": "want debug, info, warn or error"}},
		{name: "file unknown key", file: "data_dir: /x\n", want: map[string]string{"--config": `unknown setting "data_dir"`}},
		{name: "file token key", file: "cloudflare-api-token: abc\n", want: map[string]string{"--config": "never from the config file"}},
		{name: "file not a mapping", file: "- a\n- b\n", want: map[string]string{"--config": "not a YAML or JSON mapping"}},
		{name: "file bad value in file", file: "workers: many\n", want: map[string]string{"--workers": `"many" (from the config file): not a whole number`}},
		{name: "file nested map", file: "nats-url: {a: b}\n", want: map[string]string{"--config": "must be a single value or a list"}},
		{name: "missing config file", args: []string{"--config", filepath.Join(dir, "missing.yaml")}, want: map[string]string{"--config": "cannot read config file"}},
		{name: "token both sources", env: map[string]string{EnvCloudflareAPIToken: "abc", "TUNNELWARD_CLOUDFLARE_API_TOKEN_FILE": existing}, want: map[string]string{"--cloudflare-api-token-file": "set only one"}},
		{name: "token file missing", args: []string{"--cloudflare-api-token-file", filepath.Join(dir, "tok")}, want: map[string]string{"--cloudflare-api-token-file": "cannot read token file"}},
		{name: "token with whitespace", env: map[string]string{EnvCloudflareAPIToken: "abc def"}, want: map[string]string{EnvCloudflareAPIToken: "contains whitespace"}},
		{name: "admin on all interfaces without a token", args: []string{"--admin-listen", "0.0.0.0:8081"},
			want: map[string]string{"--admin-listen": `"0.0.0.0:8081" is not a loopback address, so the admin API needs a token: set --admin-token-file FILE or TUNNELWARD_ADMIN_TOKEN`}},
		{name: "admin wildcard host without a token", env: map[string]string{"TUNNELWARD_ADMIN_LISTEN": ":8081"}, want: map[string]string{"--admin-listen": "or --admin-insecure"}},
		{name: "admin ipv6 wildcard without a token", args: []string{"--admin-listen", "[::]:8081"}, want: map[string]string{"--admin-listen": "--admin-token-file"}},
		{name: "admin interface address without a token", args: []string{"--admin-listen", "10.0.0.5:8081"}, want: map[string]string{"--admin-listen": "--admin-token-file"}},
		{name: "admin host name without a token", args: []string{"--admin-listen", "reconciler.internal:8081"}, want: map[string]string{"--admin-listen": "--admin-token-file"}},
		{name: "admin insecure not a bool", args: []string{"--admin-insecure=sure"}, want: map[string]string{"--admin-insecure": "not a boolean"}},
		{name: "admin token short", env: map[string]string{EnvAdminToken: "hunter2"}, want: map[string]string{EnvAdminToken: "shorter than 16 characters"}},
		{name: "admin token file short", args: []string{"--admin-listen", "0.0.0.0:8081", "--admin-token-file", existing},
			want: map[string]string{"--admin-token-file": "shorter than 16 characters"}},
		{name: "admin token with whitespace", env: map[string]string{EnvAdminToken: "0123456789abcdef 0123456789abcdef"}, want: map[string]string{EnvAdminToken: "contains whitespace; the admin token is a single word"}},
		{name: "admin token both sources", env: map[string]string{EnvAdminToken: "0123456789abcdef0123", "TUNNELWARD_ADMIN_TOKEN_FILE": existing}, want: map[string]string{"--admin-token-file": "set only one"}},
		// A broken token is reported once, not again as a missing one.
		{name: "admin token file missing", args: []string{"--admin-listen", "0.0.0.0:8081", "--admin-token-file", filepath.Join(dir, "admin-token")},
			want: map[string]string{"--admin-token-file": "cannot read token file"}},
		{name: "file admin token key", file: "admin-token: 0123456789abcdef0123\n", want: map[string]string{"--config": "sets admin-token; the token is read only from TUNNELWARD_ADMIN_TOKEN or --admin-token-file, never from the config file"}},
		{name: "live without zone id", live: true, env: map[string]string{"TUNNELWARD_CLOUDFLARE_ZONE_ID": ""}, want: map[string]string{"--cloudflare-zone-id": "required with --cloud live (or set TUNNELWARD_CLOUDFLARE_ZONE_ID)"}},
		{name: "live without token", live: true, env: map[string]string{EnvCloudflareAPIToken: ""}, want: map[string]string{EnvCloudflareAPIToken: "required with --cloud live"}},
		{name: "live without ami", live: true, env: map[string]string{"TUNNELWARD_INSTANCE_AMI": ""}, want: map[string]string{"--instance-ami": "required with --cloud live"}},
		{
			name: "live with nothing names every missing setting at once", args: []string{"--cloud", "live"},
			want: map[string]string{
				"--cloudflare-account-id": "required", "--cloudflare-zone-id": "required", "--cloudflare-zone-name": "required",
				"--aws-region": "required", "--instance-ami": "required", "--instance-subnet": "required", "--instance-profile": "required",
				EnvCloudflareAPIToken: "required",
			},
		},
		{
			name: "several wrong settings at once", args: []string{"--workers", "0", "--sweep-interval", "soon", "--instance-ami", "ami-x", "--reserved-slugs", "WWW"},
			want: map[string]string{"--workers": "out of range", "--sweep-interval": "not a duration", "--instance-ami": "not an AMI id", "--reserved-slugs": `"WWW" is not a DNS label`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			if tc.live {
				env = liveEnv()
			}
			for k, v := range tc.env {
				env[k] = v
			}
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, "c.yaml", tc.file))
			}
			_, err := Parse(args, envMap(env))
			if err == nil {
				t.Fatal("Parse accepted a wrong setting")
			}
			var wantSettings []string
			for s := range tc.want {
				wantSettings = append(wantSettings, s)
			}
			sort.Strings(wantSettings)
			if got := problemSettings(t, err); !slices.Equal(got, wantSettings) {
				t.Fatalf("problems name %v, want exactly %v:\n%v", got, wantSettings, err)
			}
			var e *Error
			errors.As(err, &e)
			for _, p := range e.Problems {
				if !strings.Contains(p.Detail, tc.want[p.Setting]) {
					t.Errorf("%s: %q does not say %q", p.Setting, p.Detail, tc.want[p.Setting])
				}
			}
		})
	}
}

func TestValidLiveVariants(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "user.creds")
	tok := filepath.Join(dir, "cf-token")
	os.WriteFile(creds, []byte("-----BEGIN NATS USER JWT-----"), 0o600)
	os.WriteFile(tok, []byte("cfTokFromFile0123456789\n"), 0o600)
	adminTok := filepath.Join(dir, "admin-token")
	os.WriteFile(adminTok, []byte("adminTokFromFile0123456789\n"), 0o600)
	env := liveEnv()
	delete(env, EnvCloudflareAPIToken)
	delete(env, "TUNNELWARD_AWS_REGION")
	env["AWS_REGION"] = "ap-southeast-2"
	args := []string{
		"--cloudflare-api-token-file", tok, "--creds", creds, "--nats-url", "tls://a:4222,tls://b:4222",
		"--instance-profile", "arn:aws:iam::123456789012:instance-profile/tunnelward/tunnelward-instance",
		"--instance-security-groups", "sg-0123456789abcdef0", "--admin-listen", "0.0.0.0:8081", "--admin-token-file", adminTok,
		"--cloudflare-zone-name", "example.com.", "org-a",
	}
	c, err := Parse(args, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cloudflare.APIToken.Reveal() != "cfTokFromFile0123456789" || c.Source(EnvCloudflareAPIToken) != "file" {
		t.Fatalf("token file not read or not trimmed")
	}
	if c.Admin.Token.Reveal() != "adminTokFromFile0123456789" || c.Source(EnvAdminToken) != "file" {
		t.Fatalf("admin token file not read or not trimmed")
	}
	if c.AWS.Region != "ap-southeast-2" {
		t.Fatalf("region fallback to AWS_REGION: %q", c.AWS.Region)
	}
	if c.Cloudflare.ZoneName != "example.com" {
		t.Fatalf("zone name %q", c.Cloudflare.ZoneName)
	}
	if !slices.Equal(c.Args, []string{"org-a"}) {
		t.Fatalf("positional args: %v", c.Args)
	}
}

// The admin API may be open on loopback only: elsewhere it takes a token
// or an explicit --admin-insecure.
func TestAdminAccess(t *testing.T) {
	const tok = "adm_0123456789abcdef0123456789"
	file := writeFile(t, "admin-token", "\n"+tok+"\n")
	cases := []struct {
		name             string
		args             []string
		env              map[string]string
		token, source    string
		insecure, public bool
		exposed          bool
	}{
		{name: "default loopback, open"},
		{name: "localhost", args: []string{"--admin-listen", "localhost:8081"}},
		{name: "ipv6 loopback", args: []string{"--admin-listen", "[::1]:8081"}},
		{name: "other loopback ip", args: []string{"--admin-listen", "127.0.0.2:8081"}},
		{name: "loopback with a token", env: map[string]string{EnvAdminToken: tok}, token: tok, source: "env"},
		{name: "all interfaces with a token in the environment", args: []string{"--admin-listen", "0.0.0.0:8081"},
			env: map[string]string{EnvAdminToken: tok}, token: tok, source: "env", exposed: true},
		{name: "all interfaces with a token file", env: map[string]string{"TUNNELWARD_ADMIN_LISTEN": ":8081", "TUNNELWARD_ADMIN_TOKEN_FILE": file},
			token: tok, source: "file", exposed: true},
		{name: "all interfaces insecure", args: []string{"--admin-listen", "0.0.0.0:8081", "--admin-insecure"}, insecure: true, exposed: true},
		{name: "insecure from the environment", args: []string{"--admin-listen", "10.1.2.3:8081"},
			env: map[string]string{"TUNNELWARD_ADMIN_INSECURE": "true"}, insecure: true, exposed: true},
		{name: "public metrics", args: []string{"--admin-metrics-public", "--admin-token-file", file}, token: tok, source: "file", public: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, envMap(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.Admin.Token.Reveal() != tc.token || c.Admin.Insecure != tc.insecure || c.Admin.MetricsPublic != tc.public || c.AdminExposed() != tc.exposed {
				t.Fatalf("token set %v (want %v), insecure %v, metrics public %v, exposed %v; want %+v",
					!c.Admin.Token.IsZero(), tc.token != "", c.Admin.Insecure, c.Admin.MetricsPublic, c.AdminExposed(), tc)
			}
			if tc.source != "" && c.Source(EnvAdminToken) != tc.source {
				t.Fatalf("token source %q, want %q", c.Source(EnvAdminToken), tc.source)
			}
		})
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	const tok = "cfTok_NeverPrintMe_0123456789abcdef"
	const adminTok = "admTok_NeverPrintMe_0123456789abcdef"
	env := liveEnv()
	env[EnvCloudflareAPIToken] = tok
	env[EnvAdminToken] = adminTok
	c, err := Parse(nil, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", c)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", c)
	js, _ := json.Marshal(c)
	outputs := map[string]string{
		"String": c.String(), "%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c),
		"slog": logged.String(), "json": string(js), "Usage": Usage("reconciler"),
	}
	for name, out := range outputs {
		if strings.Contains(out, tok) || strings.Contains(out, adminTok) {
			t.Errorf("%s prints a token: %s", name, out)
		}
	}
	if !strings.Contains(c.String(), EnvCloudflareAPIToken+`="[redacted]"`) || !strings.Contains(c.String(), EnvAdminToken+`="[redacted]"`) {
		t.Errorf("String should show the tokens as redacted: %s", c.String())
	}
	// Errors about the admin token never quote it (nor, when short, its length).
	for _, bad := range []string{adminTok + " x", "adm_short"} {
		_, err := Parse(nil, envMap(map[string]string{EnvAdminToken: bad}))
		if err == nil || strings.Contains(err.Error(), strings.Fields(bad)[0]) || strings.Contains(err.Error(), " 9 ") {
			t.Errorf("error for a malformed admin token leaks it or is missing: %v", err)
		}
	}
	// Errors about the token never quote it either.
	for _, bad := range []string{tok + " x", "\t" + tok + "\n" + tok} {
		env[EnvCloudflareAPIToken] = bad
		_, err := Parse(nil, envMap(env))
		if err == nil || strings.Contains(err.Error(), tok) {
			t.Errorf("error for a malformed token leaks it or is missing: %v", err)
		}
	}
	file := writeFile(t, "tok", tok+"\n"+tok+"\n")
	_, err = Parse([]string{"--cloudflare-api-token-file", file}, envMap(map[string]string{}))
	if err == nil || strings.Contains(err.Error(), tok) {
		t.Errorf("error for a malformed token file leaks it or is missing: %v", err)
	}
}

func TestHelp(t *testing.T) {
	for _, a := range []string{"-h", "--help"} {
		if _, err := Parse([]string{a}, envMap(nil)); !errors.Is(err, ErrHelp) {
			t.Errorf("%s: err = %v, want ErrHelp", a, err)
		}
	}
	if _, err := Parse([]string{"--no-such-flag"}, envMap(nil)); err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("unknown flag: %v", err)
	}
	u := Usage("reconciler")
	for _, s := range settings {
		if !strings.Contains(u, "--"+s.name+" ") || !strings.Contains(strings.Join(strings.Fields(u), " "), s.env) {
			t.Errorf("usage lacks --%s or %s", s.name, s.env)
		}
	}
	for _, e := range EnvVars() {
		if !strings.Contains(u, e) {
			t.Errorf("usage does not mention %s", e)
		}
	}
}

func TestDeclarations(t *testing.T) {
	// README and docs/operations.md name these flags; checks and tests rely on them.
	for _, f := range []string{"data-dir", "nats-listen", "nats-url", "admin-listen", "sandbox-listen", "cloud", "creds"} {
		if lookup(f) == nil {
			t.Errorf("flag --%s missing", f)
		}
	}
	seen := map[string]bool{}
	for _, s := range settings {
		want := EnvPrefix + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
		if s.group == groupNATS && s.name != "nats-listen" && s.name != "nats-url" {
			want = EnvPrefix + "NATS_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
		}
		if s.env != want {
			t.Errorf("--%s reads %s, want %s", s.name, s.env, want)
		}
		if seen[s.env] {
			t.Errorf("%s declared twice", s.env)
		}
		seen[s.env] = true
		if s.help == "" || s.metavar == "" || s.group == "" {
			t.Errorf("--%s lacks help, metavar or group", s.name)
		}
		if !slices.Contains(EnvVars(), s.env) {
			t.Errorf("EnvVars lacks %s", s.env)
		}
	}
	// Every default must itself be valid and round-trip through get.
	c, err := Parse(nil, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if s.def == "" {
			continue
		}
		c2 := c
		if err := s.set(&c2, s.def); err != nil {
			t.Errorf("--%s default %q does not parse: %v", s.name, s.def, err)
		}
	}
}

func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	cases := []struct {
		log      Log
		terminal bool
		json     bool
	}{
		{Log{Format: "auto"}, true, false},
		{Log{Format: "auto"}, false, true},
		{Log{Format: "text"}, false, false},
		{Log{Format: "json"}, true, true},
	}
	for _, tc := range cases {
		buf.Reset()
		slog.New(tc.log.Handler(&buf, tc.terminal)).Info("hello", "org_id", "acme")
		isJSON := json.Valid(bytes.TrimSpace(buf.Bytes()))
		if isJSON != tc.json {
			t.Errorf("%+v terminal=%v: JSON=%v, want %v: %s", tc.log, tc.terminal, isJSON, tc.json, buf.String())
		}
	}
	buf.Reset()
	slog.New(Log{Format: "json", Level: "warn"}.Handler(&buf, false)).Info("quiet")
	if buf.Len() != 0 {
		t.Errorf("info logged at level warn: %s", buf.String())
	}
}

// Durations read as durations in both log formats, not as nanoseconds.
func TestLogDurationsReadable(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b strings.Builder
		slog.New(Log{Format: format}.Handler(&b, false)).Info("sweep done", "took", 1500*time.Millisecond)
		if !strings.Contains(b.String(), "1.5s") || strings.Contains(b.String(), "1500000000") {
			t.Errorf("%s log line: %s", format, b.String())
		}
	}
}

// A password in --nats-url is refused without being echoed, from a flag or
// the environment, in a well-formed URL, a list or a malformed one.
func TestNATSURLPasswordNeverEchoed(t *testing.T) {
	const pw = "hunter2Secret"
	for _, u := range []string{
		"nats://app:" + pw + "@nats.internal:4222",
		"nats://ok.internal:4222,nats://app:" + pw + "@nats.internal:4222",
		"nats://app:" + pw + "@nats.internal:abc",
	} {
		for _, how := range []string{"flag", "env"} {
			var args []string
			env := map[string]string{}
			if how == "flag" {
				args = []string{"--nats-url", u}
			} else {
				env["TUNNELWARD_NATS_URL"] = u
			}
			_, err := Parse(args, envMap(env))
			if err == nil || !strings.Contains(err.Error(), "--nats-url") || !strings.Contains(err.Error(), "[redacted]") {
				t.Errorf("%s %q: want an error naming --nats-url with the password redacted, got %v", how, u, err)
				continue
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("%s %q: the error echoes the password: %v", how, u, err)
			}
		}
	}
}

func TestWatchBudgetShare(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want float64
	}{
		{nil, 0.05},
		{[]string{"--watch-budget-share", "10%"}, 0.10},
		{[]string{"--watch-budget-share", "2.5"}, 0.025},
		{[]string{"--watch-budget-share", "0%"}, 0},
	} {
		c, err := Parse(tc.args, envMap(nil))
		if err != nil || c.WatchBudgetShare != tc.want {
			t.Errorf("%v: share %v (%v), want %v", tc.args, c.WatchBudgetShare, err, tc.want)
		}
	}
}
