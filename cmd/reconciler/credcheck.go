package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/config"
)

// credCheck is the start-up check of one provider's credentials: one cheap
// read, so that missing or refused credentials show in /readyz and the log
// with where credentials are looked for, instead of as an SDK error at the
// first sweep. It fails readiness until the provider accepted them once.
type credCheck struct {
	name  string                          // readiness check name
	probe func(ctx context.Context) error // nil, or an error that says what to do

	mu       sync.Mutex
	err      error
	verified bool
}

// definite marks a probe error that retrying cannot change (missing or
// refused credentials), as opposed to an outage.
type definite struct{ error }

func (d definite) Unwrap() error { return d.error }

func (k *credCheck) check(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.verified:
		return nil
	case k.err == nil:
		return errors.New("credentials not checked yet")
	}
	return k.err
}

func (k *credCheck) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, credCheckTimeout)
	defer cancel()
	err := k.probe(ctx)
	k.mu.Lock()
	k.err, k.verified = err, err == nil
	k.mu.Unlock()
	return err
}

// credCheckTimeout bounds one probe (the providers' clients retry inside
// it); an unanswered probe is tried again later.
const credCheckTimeout = 15 * time.Second

// credentialChecks builds the checks for the configured clouds: one per
// Cloudflare pool (cfcs in c.Pools' order; "cloudflare-credentials" is the
// default pool's, "cloudflare-<pool>-credentials" another's) and AWS's.
// Sandbox mode has none: its in-process emulator is built from the very
// identities the engine uses, so they cannot disagree.
func credentialChecks(ctx context.Context, c config.Config, cloudURL string, cfcs []cloudflare.Config, awc aws.Config) ([]*credCheck, error) {
	if c.Cloud == config.ModeSandbox {
		return nil, nil
	}
	pools := c.Pools()
	var checks []*credCheck
	for i, cfc := range cfcs {
		cf, err := cloudflare.New(cfc)
		if err != nil {
			return nil, fmt.Errorf("cloudflare client of pool %s for the credentials check: %w", pools[i].Name, err)
		}
		p, isDefault := pools[i], i == 0
		name := "cloudflare-credentials"
		if !isDefault {
			name = "cloudflare-" + p.Name + "-credentials"
		}
		checks = append(checks, &credCheck{name: name, probe: func(ctx context.Context) error {
			if isDefault {
				return explainCloudflare(c, cloudURL, cf.VerifyToken(ctx))
			}
			return explainPool(c, p, cloudURL, cf.VerifyToken(ctx))
		}})
	}
	aw, err := aws.New(ctx, awc)
	if err != nil {
		return nil, fmt.Errorf("aws client for the credentials check: %w", err)
	}
	return append(checks, &credCheck{name: "aws-credentials", probe: func(ctx context.Context) error {
		id, err := aw.VerifyCredentials(ctx)
		return explainAWS(c, cloudURL, id, err)
	}}), nil
}

// awsChain says where the AWS SDK's default chain looks, in its order.
const awsChain = "tunnelward takes no AWS credential flags (--aws-region sets only the region); the AWS SDK's default chain looks, in order, at: " +
	"the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, with AWS_SESSION_TOKEN for temporary keys); " +
	"the profile AWS_PROFILE (else \"default\") in the shared files ~/.aws/credentials and ~/.aws/config " +
	"(or those named by AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE), SSO and assume-role profiles included; " +
	"web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN); " +
	"the ECS task role (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI); " +
	"then the EC2 instance role (IMDS, unless AWS_EC2_METADATA_DISABLED=true)"

func explainAWS(c config.Config, cloudURL string, id aws.Identity, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, aws.ErrNoCredentials):
		sdk := strings.TrimPrefix(err.Error(), aws.ErrNoCredentials.Error()+": ")
		return definite{fmt.Errorf("no AWS credentials found. %s (SDK: %s)", awsChain, sdk)}
	case errors.Is(err, aws.ErrCredentialsRefused) && cloudURL != "":
		// URL mode always signs with the sandbox key (config).
		return definite{fmt.Errorf("the cloud emulator at %s refused the sandbox AWS key %s: run cloudsim with its default --aws-access-key and --aws-secret (%w)",
			cloudURL, c.AWS.AccessKeyID, err)}
	case errors.Is(err, aws.ErrCredentialsRefused):
		return definite{fmt.Errorf("AWS refused the credentials the SDK found in %s: renew or replace them there, or remove them so the next source is used. %s (%w)",
			id.Source, awsChain, err)}
	}
	return fmt.Errorf("could not check the AWS credentials yet (retrying): %w", err)
}

func explainCloudflare(c config.Config, cloudURL string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cloudflare.ErrTokenRefused) && cloudURL != "":
		return definite{fmt.Errorf("the cloud emulator at %s refused the Cloudflare API token %s: run cloudsim with --cf-token set to the same token, "+
			"or set %s (or --cloudflare-api-token-file) to its token (%w)", cloudURL, tokenSource(c), config.EnvCloudflareAPIToken, err)}
	case errors.Is(err, cloudflare.ErrTokenRefused):
		return definite{fmt.Errorf("Cloudflare refused the API token %s for account %s (--cloudflare-account-id): the token is read from %s or the file named by "+
			"--cloudflare-api-token-file, never from a flag; it must be valid and allow Account: Cloudflare Tunnel Edit on that account and Zone: DNS Edit "+
			"on the zone (docs/operations.md, Cloudflare API token) (%w)", tokenSource(c), c.Cloudflare.AccountID, config.EnvCloudflareAPIToken, err)}
	}
	return fmt.Errorf("could not check the Cloudflare API token yet (retrying): %w", err)
}

// explainPool is explainCloudflare for a pool of the pools file (or the
// sandbox's second pool).
func explainPool(c config.Config, p config.Pool, cloudURL string, err error) error {
	where := "--cloudflare-pools-file " + c.Cloudflare.PoolsFile
	if c.Cloudflare.PoolsFile == "" {
		where = "the sandbox's second pool; a --cloudflare-pools-file replaces it"
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cloudflare.ErrTokenRefused) && cloudURL != "":
		return definite{fmt.Errorf("the cloud emulator at %s refused the Cloudflare API token of pool %s %s (%s): run cloudsim with an identity of that token, "+
			"account %s and zone %s, or correct the pool's api_token_env or api_token_file (%w)", cloudURL, p.Name, p.TokenSource(), where, p.AccountID, p.ZoneName, err)}
	case errors.Is(err, cloudflare.ErrTokenRefused):
		return definite{fmt.Errorf("Cloudflare refused the API token of pool %s %s for account %s (%s): the token must be valid and allow "+
			"Account: Cloudflare Tunnel Edit on that account and Zone: DNS Edit on the zone %s (docs/operations.md, Cloudflare API token) (%w)",
			p.Name, p.TokenSource(), p.AccountID, where, p.ZoneName, err)}
	}
	return fmt.Errorf("could not check the Cloudflare API token of pool %s yet (retrying): %w", p.Name, err)
}

// tokenSource says where the token came from, never what it is.
func tokenSource(c config.Config) string {
	switch c.Source(config.EnvCloudflareAPIToken) {
	case "env":
		return "from " + config.EnvCloudflareAPIToken
	case "file":
		return "from the file " + c.Cloudflare.APITokenFile + " (--cloudflare-api-token-file)"
	}
	return "(the sandbox default)"
}

// startCredentialChecks runs every check once (together, bounded by
// credCheckTimeout), logs the outcome and keeps re-checking the failed ones
// in the background with backoff (2 s doubling to 2 min) until each passes,
// logging every failure, so fixed credentials turn the reconciler ready
// without a restart. It reports whether all passed.
func (a *app) startCredentialChecks(ctx context.Context, checks []*credCheck) bool {
	var wg sync.WaitGroup
	for _, k := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.logCheck(k, k.run(ctx), 0)
		}()
	}
	wg.Wait()
	var failed []*credCheck
	for _, k := range checks {
		if k.check(context.Background()) != nil {
			failed = append(failed, k)
		}
	}
	if len(failed) == 0 {
		return true
	}
	ctx, stop := context.WithCancel(context.Background()) // outlives start's ctx; stopped at close
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait := 2 * time.Second
		for len(failed) > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait = min(2*wait, 2*time.Minute)
			still := failed[:0]
			for _, k := range failed {
				if err := k.run(ctx); err != nil {
					if ctx.Err() != nil {
						return
					}
					a.logCheck(k, err, wait)
					still = append(still, k)
					continue
				}
				a.logCheck(k, nil, 0)
			}
			failed = still
		}
	}()
	a.closers = append(a.closers, func() { stop(); <-done })
	return false
}

func (a *app) logCheck(k *credCheck, err error, next time.Duration) {
	provider := strings.TrimSuffix(k.name, "-credentials") // cloudflare-<pool> for a pool besides the default
	if err == nil {
		a.log.Info("cloud credentials accepted", "provider", provider)
		return
	}
	level := slog.LevelWarn
	var d definite
	if errors.As(err, &d) {
		level = slog.LevelError
	}
	args := []any{"provider", provider, "check", k.name, "err", err}
	if next > 0 {
		args = append(args, "next_check_in", next)
	} else {
		args = append(args, "next_check_in", 2*time.Second)
	}
	a.log.Log(context.Background(), level, "cloud credentials check failed; /readyz fails until it passes, re-checking", args...)
}
