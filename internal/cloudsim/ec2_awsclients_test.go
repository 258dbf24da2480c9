package cloudsim

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/tunnelward/tunnelward/internal/apicall"
)

// AWSTestOptions changes what AWSTestClients builds; the zero value means
// the sandbox identities and a single attempt per call.
type AWSTestOptions struct {
	AccessKey   string // default DefaultAWSAccessKey
	Secret      string // default DefaultAWSSecret
	Region      string // default DefaultRegion
	MaxAttempts int    // SDK attempts per call; default 1 (no retries), so counts are exact
	// MaxBackoff caps the SDK retry delay when MaxAttempts > 1 (default 50ms).
	MaxBackoff time.Duration
}

// AWSTestClients builds the real aws-sdk-go-v2 EC2 and SSM clients pointed
// at a cloudsim served at baseURL (for example an httptest.Server's URL),
// with static credentials, no shared config files and IMDS disabled, so
// nothing can reach a real AWS endpoint. Shared by every test of this
// package (EC2, SSM, and the world tests).
func AWSTestClients(t testing.TB, baseURL string, opts ...func(*AWSTestOptions)) (*ec2.Client, *ssm.Client) {
	t.Helper()
	cfg := awsTestConfig(t, opts...)
	e := ec2.NewFromConfig(cfg, func(eo *ec2.Options) { eo.BaseEndpoint = aws.String(baseURL) })
	s := ssm.NewFromConfig(cfg, func(so *ssm.Options) { so.BaseEndpoint = aws.String(baseURL) })
	return e, s
}

// STSTestClient is the real aws-sdk-go-v2 STS client for a cloudsim at
// baseURL, configured as AWSTestClients configures EC2 and SSM.
func STSTestClient(t testing.TB, baseURL string, opts ...func(*AWSTestOptions)) *sts.Client {
	t.Helper()
	return sts.NewFromConfig(awsTestConfig(t, opts...), func(so *sts.Options) { so.BaseEndpoint = aws.String(baseURL) })
}

// awsTestConfig is the SDK configuration every test client shares.
func awsTestConfig(t testing.TB, opts ...func(*AWSTestOptions)) aws.Config {
	t.Helper()
	o := AWSTestOptions{AccessKey: DefaultAWSAccessKey, Secret: DefaultAWSSecret, Region: DefaultRegion, MaxAttempts: 1, MaxBackoff: 50 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
		config.WithRegion(o.Region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(o.AccessKey, o.Secret, "")),
		config.WithEC2IMDSClientEnableState(imds.ClientDisabled),
	)
	if err != nil {
		t.Fatalf("aws config: %v", err)
	}
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = o.MaxAttempts
			so.MaxBackoff = o.MaxBackoff
			so.RateLimiter = ratelimit.None // no retry quota: tests count attempts exactly
		})
	}
	// As tunnelward's own client does: the transport gets its own copy of
	// each request body, so the SDK closing its stream early cannot break
	// the connection under a response (aws-sdk-go-v2#2737).
	cfg.HTTPClient = apicall.WrapDoer(awshttp.NewBuildableClient())
	return cfg
}

// awsTestWorld is one emulated world behind a real HTTP server, plus SDK
// clients for it.
type awsTestWorld struct {
	sim   *Sim
	srv   *httptest.Server
	ec2   *ec2.Client
	ssm   *ssm.Client
	clock *awsFakeClock
}

// newAWSTestWorld starts a world on a fake clock (unless cfg.Now is set).
func newAWSTestWorld(t *testing.T, cfg Config) *awsTestWorld {
	t.Helper()
	clock := &awsFakeClock{t: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	if cfg.AWSAccessKey == "" {
		cfg.AWSAccessKey, cfg.AWSSecret, cfg.Region = DefaultAWSAccessKey, DefaultAWSSecret, DefaultRegion
	}
	sim := New(cfg)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	e, s := AWSTestClients(t, srv.URL)
	return &awsTestWorld{sim: sim, srv: srv, ec2: e, ssm: s, clock: clock}
}

// awsFakeClock is a manually advanced clock for Config.Now.
type awsFakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *awsFakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *awsFakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// requireAPIError fails unless err is an API error with the given code and
// HTTP status (status 0: not checked).
func requireAPIError(t *testing.T, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s error, got success", code)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %s, got %T: %v", code, err, err)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("want error code %s, got %s (%v)", code, ae.ErrorCode(), err)
	}
	if status != 0 {
		var re *awshttp.ResponseError
		if !errors.As(err, &re) {
			t.Fatalf("want an HTTP response error, got %T", err)
		}
		if re.HTTPStatusCode() != status {
			t.Fatalf("%s: want HTTP %d, got %d", code, status, re.HTTPStatusCode())
		}
	}
}

// awsCallCount reads the emulator's request counter for op and status.
func awsCallCount(s *Sim, op string, status int) int {
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	return s.calls.m[op][status]
}
