package aws

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/tunnelward/tunnelward/internal/apicall"
)

// Error kinds of VerifyCredentials, matched with errors.Is.
var (
	// ErrNoCredentials: the SDK's credential chain found nothing to sign with.
	ErrNoCredentials = errors.New("no AWS credentials found")
	// ErrCredentialsRefused: AWS refused the credentials it was given.
	ErrCredentialsRefused = errors.New("AWS refused the credentials")
)

// authCodes are AWS's answers to credentials it does not accept.
var authCodes = []string{"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
	"UnrecognizedClientException", "AuthFailure", "InvalidAccessKeyId", "AccessDenied", "AccessDeniedException"}

// Identity is who the credentials are.
type Identity struct {
	Source  string // where the SDK found them, e.g. EnvConfigCredentials
	Account string // empty against the emulator
	ARN     string
}

// VerifyCredentials checks that the client has credentials and that AWS
// accepts them, with one read: STS GetCallerIdentity (it needs no IAM
// permission, so it tests the credentials alone), or, against the
// emulator, which serves no STS, an EC2 DescribeInstances that matches
// nothing. Missing credentials are ErrNoCredentials (no request is sent),
// refused ones ErrCredentialsRefused; anything else (an outage) is returned
// as is.
func (c *Client) VerifyCredentials(ctx context.Context) (Identity, error) {
	creds, err := c.creds.Retrieve(ctx)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrNoCredentials, err)
	}
	id := Identity{Source: creds.Source}
	if c.sts == nil {
		_, err = c.DescribeOrgInstances(ctx, "tunnelward-credentials-check")
	} else {
		err = c.stsCall.Do(ctx, "GetCallerIdentity", "", func(ctx context.Context) error {
			out, err := c.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
			if err == nil {
				id.Account, id.ARN = aws.ToString(out.Account), aws.ToString(out.Arn)
			}
			return err
		})
	}
	if hasCode(err, authCodes...) {
		return id, apicall.WithKind(err, ErrCredentialsRefused)
	}
	return id, err
}
