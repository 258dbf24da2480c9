package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/metrics"
)

// A cloud emulator that does not accept the reconciler's credentials
// (--cloud URL): /readyz fails, naming each provider's check and what to
// change, and the log says the reconciler is not ready. With matching
// credentials both checks pass.
func TestCredentialsCheckFailsReadinessAgainstEmulator(t *testing.T) {
	t.Parallel()
	sc := cloudsim.DefaultConfig()
	sc.CFToken, sc.AWSAccessKey = "some-other-token", "AKIAOTHEREXAMPLE"
	sim := httptest.NewServer(cloudsim.New(sc).Handler())
	defer sim.Close()
	cfg := testConfig(t, t.TempDir(), "--cloud", sim.URL, "--sweep-interval", "1h")
	logs := &lockedWriter{b: &strings.Builder{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil))) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var body string
	waitFor(t, "/readyz to name both credentials checks", func() bool {
		code, b := readyz(cfg.AdminListen)
		body = b
		return code == http.StatusServiceUnavailable && strings.Contains(b, `"cloudflare-credentials"`) && strings.Contains(b, `"aws-credentials"`) &&
			!strings.Contains(b, "not checked yet")
	})
	for _, want := range []string{"refused the Cloudflare API token", "--cf-token", config.EnvCloudflareAPIToken, "--cloudflare-api-token-file",
		"refused the sandbox AWS key", "--aws-access-key"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz lacks %q:\n%s", want, body)
		}
	}
	for _, secret := range []string{config.SandboxCloudflareToken, config.SandboxAWSSecretKey} {
		if strings.Contains(body, secret) || strings.Contains(logText(logs), secret) {
			t.Errorf("a credential (%s) shows in /readyz or the log", secret)
		}
	}
	if !strings.Contains(logText(logs), "NOT ready") || strings.Contains(logText(logs), "reconciler ready") {
		t.Errorf("the log does not say the reconciler is not ready:\n%s", logText(logs))
	}

	good := httptest.NewServer(cloudsim.New(cloudsim.DefaultConfig()).Handler())
	defer good.Close()
	d := startDaemon(t, testConfig(t, t.TempDir(), "--cloud", good.URL, "--sweep-interval", "1h")) // waits for /readyz 200
	if _, b := readyz(d.cfg.AdminListen); !strings.Contains(b, `"cloudflare-credentials"`) || !strings.Contains(b, `"aws-credentials"`) {
		t.Fatalf("the checks are not listed when they pass:\n%s", b)
	}
}

func readyz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The live checks, kept real (STS GetCallerIdentity through the SDK's own
// endpoint resolution, a Cloudflare tunnel list) and pointed at loopback:
// STS at a small handler via AWS_ENDPOINT_URL_STS (the emulator serves no
// STS), Cloudflare at the emulator.
func TestCredentialsCheckLive(t *testing.T) {
	// Not parallel: sets the process environment (t.Setenv).
	const (
		cfToken  = "cfTok_LiveSecretValue_0123456789abcdefghij"
		awsKey   = "AKIATESTEXAMPLE00001"
		awsValue = "testSecretAccessKeyValue0123456789abcdef"
	)
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(b), "Action=GetCallerIdentity") {
			http.Error(w, "not an STS GetCallerIdentity", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		if !strings.Contains(r.Header.Get("Authorization"), "Credential="+awsKey+"/") {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error><RequestId>r-1</RequestId></ErrorResponse>`)
			return
		}
		_, _ = io.WriteString(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/tunnelward</Arn><UserId>AIDAEXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></GetCallerIdentityResponse>`)
	}))
	defer sts.Close()
	sim := httptest.NewServer(cloudsim.New(cloudsim.DefaultConfig()).Handler())
	defer sim.Close()

	// Nothing of this machine's AWS setup may count, and nothing may leave
	// loopback.
	none := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_DEFAULT_PROFILE": "",
		"AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_ROLE_ARN": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_STS": sts.URL,
	} {
		t.Setenv(k, v)
	}
	env := map[string]string{
		"TUNNELWARD_CLOUD":                 "live",
		"TUNNELWARD_NATS_URL":              "nats://nats.internal:4222",
		"TUNNELWARD_CLOUDFLARE_ACCOUNT_ID": config.SandboxAccountID, // the emulator's account
		"TUNNELWARD_CLOUDFLARE_ZONE_ID":    config.SandboxZoneID,
		"TUNNELWARD_CLOUDFLARE_ZONE_NAME":  "example.com",
		"TUNNELWARD_CLOUDFLARE_API_TOKEN":  cfToken, // not the emulator's
		"TUNNELWARD_AWS_REGION":            "eu-west-1",
		"TUNNELWARD_INSTANCE_AMI":          "ami-0abcdef1234567890",
		"TUNNELWARD_INSTANCE_SUBNET":       "subnet-0abcdef1234567890",
		"TUNNELWARD_INSTANCE_PROFILE":      "tunnelward-instance",
	}
	checks := func() map[string]error {
		t.Helper()
		c, err := config.Parse(nil, func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		cfc, awc := providerConfigs(c, "", slog.New(slog.DiscardHandler), metrics.New())
		cfc.BaseURL = sim.URL + "/client/v4/"
		ks, err := credentialChecks(context.Background(), c, "", []cloudflare.Config{cfc}, awc)
		if err != nil || len(ks) != 2 {
			t.Fatalf("checks: %v %v", ks, err)
		}
		out := map[string]error{}
		for _, k := range ks {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_ = k.run(ctx)
			cancel()
			out[k.name] = k.check(context.Background())
		}
		return out
	}
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}

	got := checks()
	aws, cf := errText(got["aws-credentials"]), errText(got["cloudflare-credentials"])
	for _, want := range []string{"no AWS credentials found", "AWS_ACCESS_KEY_ID", "~/.aws/credentials", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"ECS task role", "EC2 instance role", "--aws-region sets only the region"} {
		if !strings.Contains(aws, want) {
			t.Errorf("no credentials: the error lacks %q: %s", want, aws)
		}
	}
	for _, want := range []string{"Cloudflare refused the API token from " + config.EnvCloudflareAPIToken, "--cloudflare-api-token-file",
		config.SandboxAccountID + " (--cloudflare-account-id)", "Cloudflare Tunnel Edit"} {
		if !strings.Contains(cf, want) {
			t.Errorf("refused token: the error lacks %q: %s", want, cf)
		}
	}
	if strings.Contains(cf, cfToken) {
		t.Errorf("the error shows the token: %s", cf)
	}

	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGEXAMPLE0001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", awsValue)
	aws = errText(checks()["aws-credentials"])
	if !strings.Contains(aws, "AWS refused the credentials the SDK found in EnvConfigCredentials") || !strings.Contains(aws, "InvalidClientTokenId") ||
		strings.Contains(aws, awsValue) {
		t.Errorf("refused key: %s", aws)
	}

	t.Setenv("AWS_ACCESS_KEY_ID", awsKey)
	env["TUNNELWARD_CLOUDFLARE_API_TOKEN"] = config.SandboxCloudflareToken // the emulator's
	for name, err := range checks() {
		if err != nil {
			t.Errorf("%s with accepted credentials: %v", name, err)
		}
	}
}

// Every pool's token is checked, each by a readiness check of its own that
// names the pool: an emulator without the sandbox's second identity
// refuses sandbox2's token and accepts the default pool's.
func TestCredentialsCheckPerPool(t *testing.T) {
	t.Parallel()
	sc := cloudsim.DefaultConfig()
	sc.CFExtra = nil // the first identity only
	sim := httptest.NewServer(cloudsim.New(sc).Handler())
	defer sim.Close()
	c, err := config.Parse([]string{"--cloud", sim.URL}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	_, awc := providerConfigs(c, sim.URL, slog.New(slog.DiscardHandler), nil)
	ks, err := credentialChecks(context.Background(), c, sim.URL, poolConfigs(c, sim.URL, nil), awc)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]error{}
	for _, k := range ks {
		got[k.name] = k.run(context.Background())
	}
	if len(got) != 3 || got["cloudflare-credentials"] != nil || got["aws-credentials"] != nil {
		t.Fatalf("checks %v: want the default pool's and AWS's to pass", got)
	}
	err = got["cloudflare-sandbox2-credentials"]
	if err == nil {
		t.Fatal("sandbox2's token was accepted by an emulator without its identity")
	}
	for _, want := range []string{"pool sandbox2", config.SandboxPool2AccountID, config.SandboxPool2ZoneName, "--cloudflare-pools-file replaces it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the check's error lacks %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), config.SandboxPool2Token) {
		t.Errorf("the check's error shows the token: %v", err)
	}
}
