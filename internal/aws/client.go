// Package aws is tunnelward's thin client over aws-sdk-go-v2 for the EC2 and
// SSM calls it needs. SDK retries are off (NopRetryer); every HTTP attempt
// goes through an apicall.Caller holding the shared per-action EC2 buckets or
// the SSM limiter, and the one retry policy.
package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
)

// Error kinds, matched with errors.Is.
var (
	ErrNotFound                    = errors.New("not found")
	ErrIdempotentParameterMismatch = errors.New("client token reused with different parameters")
)

// Config says where and as whom to call AWS.
type Config struct {
	// Endpoint is a sandbox URL (cloudsim); "" means real AWS, with the
	// default credential chain (env, shared files, IMDS, ...).
	Endpoint string
	Region   string
	// Static credentials, used (and required) when Endpoint is set.
	AccessKeyID     string
	SecretAccessKey string
	// HTTPClient is optional (default: the SDK's buildable client).
	HTTPClient *http.Client
	PageSize   int // DescribeInstances/DescribeParameters page size; default: largest allowed

	EC2Buckets ratelimit.EC2Buckets // default ratelimit.DefaultEC2()
	SSMBucket  ratelimit.Bucket     // default ratelimit.DefaultSSM
	Policy     apicall.Policy
	Observe    apicall.Observer
	// Logger receives the SDK's own warnings (e.g. a response body it could
	// not drain) as structured lines; nil: slog.Default().
	Logger *slog.Logger
}

// Client holds the EC2 and SSM service clients. Safe for concurrent use;
// share one per process so the limiters are shared.
type Client struct {
	ec2      *ec2.Client
	ssm      *ssm.Client
	ec2Call  *apicall.Caller
	ssmCall  *apicall.Caller
	pageSize int
	region   string // for instance ARNs

	// The limiters and the buckets they were built from (SetBudgetShare).
	ec2Lim  *ratelimit.EC2
	ssmLim  *ratelimit.Resizable
	buckets ratelimit.EC2Buckets
	ssmB    ratelimit.Bucket

	// For VerifyCredentials: the credential chain, and STS (nil with an
	// endpoint override: the emulator serves no STS).
	creds   aws.CredentialsProvider
	sts     *sts.Client
	stsCall *apicall.Caller
}

// New loads the SDK configuration and builds the clients. In sandbox mode
// (Endpoint set) nothing may reach a real AWS endpoint: shared config and
// credential files are ignored, IMDS is disabled and the credentials are
// the static ones given.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Region == "" {
		return nil, errors.New("aws config: missing region")
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRegion(cfg.Region),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }), // apicall is the one retry layer
	}
	if cfg.Endpoint != "" {
		if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
			return nil, errors.New("aws config: an endpoint override needs static credentials (access key id and secret)")
		}
		opts = append(opts,
			config.WithSharedConfigFiles([]string{}),
			config.WithSharedCredentialsFiles([]string{}),
			config.WithEC2IMDSClientEnableState(imds.ClientDisabled),
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")),
		)
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	awsCfg.Logger = sdkLogger(cfg.Logger)
	if cfg.HTTPClient != nil {
		awsCfg.HTTPClient = cfg.HTTPClient
	}
	if awsCfg.HTTPClient == nil {
		// The SDK only fills this in when it had to build its own (e.g. for
		// AWS_CA_BUNDLE); otherwise each service would build a default one,
		// which the wrapper below must not receive as nil.
		awsCfg.HTTPClient = awshttp.NewBuildableClient()
	}
	// Each attempt's status reaches apicall through this wrapper; the SDK's
	// own client (built above, honouring AWS_CA_BUNDLE) stays underneath.
	awsCfg.HTTPClient = apicall.WrapDoer(awsCfg.HTTPClient)
	// The endpoint is set per service, after the SDK resolved its own
	// (AWS_ENDPOINT_URL_* env), so a sandbox can never be redirected.
	var ec2Opts []func(*ec2.Options)
	var ssmOpts []func(*ssm.Options)
	if cfg.Endpoint != "" {
		ep := aws.String(strings.TrimSuffix(cfg.Endpoint, "/"))
		ec2Opts = append(ec2Opts, func(o *ec2.Options) { o.BaseEndpoint = ep })
		ssmOpts = append(ssmOpts, func(o *ssm.Options) { o.BaseEndpoint = ep })
	}
	if cfg.EC2Buckets.PerAction == nil && cfg.EC2Buckets.Mutating.Rate == 0 {
		cfg.EC2Buckets = ratelimit.DefaultEC2()
	}
	if cfg.SSMBucket.Rate == 0 {
		cfg.SSMBucket = ratelimit.DefaultSSM
	}
	ec2Lim := ratelimit.NewEC2(cfg.EC2Buckets)
	ssmLim := ratelimit.NewSSM(cfg.SSMBucket)
	var stsClient *sts.Client
	if cfg.Endpoint == "" {
		// Its endpoint is the SDK's (AWS_ENDPOINT_URL_STS honoured), as for
		// any AWS tool.
		stsClient = sts.NewFromConfig(awsCfg)
	}
	return &Client{
		creds:   awsCfg.Credentials,
		sts:     stsClient,
		stsCall: apicall.New(apicall.Options{Provider: "sts", Policy: cfg.Policy, Observe: cfg.Observe, Classify: classify}),
		ec2:     ec2.NewFromConfig(awsCfg, ec2Opts...),
		ssm:     ssm.NewFromConfig(awsCfg, ssmOpts...),
		ec2Call: apicall.New(apicall.Options{Provider: "ec2", Policy: cfg.Policy, Observe: cfg.Observe, Classify: classify,
			Limit: func(op string) ratelimit.Limiter { return ec2Lim.For(op) }}),
		ssmCall: apicall.New(apicall.Options{Provider: "ssm", Policy: cfg.Policy, Observe: cfg.Observe, Classify: classify,
			Limit: func(string) ratelimit.Limiter { return ssmLim }}),
		pageSize: cfg.PageSize,
		region:   cfg.Region,
		ec2Lim:   ec2Lim, ssmLim: ssmLim, buckets: cfg.EC2Buckets, ssmB: cfg.SSMBucket,
	}, nil
}

// SetBudgetShare makes this client spend share (0..1] of the account's EC2
// and SSM buckets in its region: replicas of one account split them by the
// partitions they own, as they split Cloudflare's.
func (c *Client) SetBudgetShare(share float64) {
	c.ec2Lim.SetShare(c.buckets, share)
	ratelimit.SetBucketShare(c.ssmLim, c.ssmB, share)
}

// sdkLogger turns the SDK's printf-style log lines into slog records, so
// they keep the process's log format instead of going raw to stderr. With
// no ClientLogMode set the SDK logs only warnings, which carry no request
// or credential data.
func sdkLogger(l *slog.Logger) logging.Logger {
	if l == nil {
		l = slog.Default()
	}
	return logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
		level := slog.LevelWarn
		if c == logging.Debug {
			level = slog.LevelDebug
		}
		l.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "aws-sdk")
	})
}

// EC2Caller and SSMCaller expose the call policies (Retry-After pauses).
func (c *Client) EC2Caller() *apicall.Caller { return c.ec2Call }
func (c *Client) SSMCaller() *apicall.Caller { return c.ssmCall }

// throttleCodes are AWS error codes meaning "slow down".
var throttleCodes = map[string]bool{
	"RequestLimitExceeded": true, "Throttling": true, "ThrottlingException": true,
	"TooManyRequestsException": true, "RequestThrottled": true, "RequestThrottledException": true,
}

// retryCodes are server-side failures worth another attempt.
var retryCodes = map[string]bool{
	"InternalError": true, "InternalFailure": true, "InternalServerError": true,
	"ServiceUnavailable": true, "Unavailable": true,
}

func classify(err error, a apicall.Attempt) apicall.Class {
	if code := errorCode(err); code != "" {
		switch {
		case throttleCodes[code]:
			return apicall.Throttled
		case retryCodes[code]:
			return apicall.Retryable
		}
	}
	return apicall.ClassifyHTTP(err, a)
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// hasCode reports whether err carries one of the AWS error codes.
func hasCode(err error, codes ...string) bool {
	code := errorCode(err)
	for _, c := range codes {
		if code == c {
			return true
		}
	}
	return false
}

// allPages fetches every page of an SDK paginator, each page one call under
// the call policy (limiter, retries, observer), and hands it to take. It
// returns how many pages it fetched, so sweeps can show their cost.
func allPages[Out, Opts any](ctx context.Context, call *apicall.Caller, op, what string,
	more func() bool, next func(context.Context, ...func(*Opts)) (Out, error), take func(Out)) (int, error) {
	pages := 0
	for more() {
		var page Out
		err := call.Do(ctx, op, what, func(ctx context.Context) error {
			var err error
			page, err = next(ctx)
			return err
		})
		if err != nil {
			return pages, err
		}
		pages++
		take(page)
	}
	return pages, nil
}
