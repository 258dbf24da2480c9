package cloudsim

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// GetCallerIdentity answers with the sandbox identity: the account that owns
// the instances and parameters, the IAM user that modifies them.
func TestSTSGetCallerIdentity(t *testing.T) {
	w := newAWSTestWorld(t, Config{Regions: DefaultRegions()})
	ctx := context.Background()
	id, err := STSTestClient(t, w.srv.URL).GetCallerIdentity(ctx, nil)
	if err != nil {
		t.Fatalf("GetCallerIdentity: %v", err)
	}
	account, arn, user := aws.ToString(id.Account), aws.ToString(id.Arn), aws.ToString(id.UserId)
	if account != "123456789012" || arn != "arn:aws:iam::123456789012:user/sandbox" || !regexp.MustCompile(`^AIDA[A-Z0-9]{17}$`).MatchString(user) {
		t.Fatalf("identity: account %q arn %q user id %q", account, arn, user)
	}

	// The same account and user as the resources the emulator builds.
	run, err := w.ec2.RunInstances(ctx, runInput("", nil))
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(run.OwnerId) != account {
		t.Fatalf("RunInstances OwnerId %q, caller account %q", aws.ToString(run.OwnerId), account)
	}
	putParam(t, w, "/tw/x", "v", ssmtypes.ParameterTypeString)
	meta, err := w.ssm.DescribeParameters(ctx, &ssm.DescribeParametersInput{})
	if err != nil || len(meta.Parameters) != 1 {
		t.Fatalf("DescribeParameters: %+v %v", meta, err)
	}
	if p := meta.Parameters[0]; aws.ToString(p.LastModifiedUser) != arn || !strings.Contains(aws.ToString(p.ARN), ":"+account+":") {
		t.Fatalf("parameter modified by %q (ARN %q), caller %q", aws.ToString(p.LastModifiedUser), aws.ToString(p.ARN), arn)
	}

	// Any region of the account answers; a region outside it is refused.
	eu, err := STSTestClient(t, w.srv.URL, func(o *AWSTestOptions) { o.Region = euWest1 }).GetCallerIdentity(ctx, nil)
	if err != nil || aws.ToString(eu.Arn) != arn {
		t.Fatalf("eu-west-1: %+v %v", eu, err)
	}
	_, err = STSTestClient(t, w.srv.URL, func(o *AWSTestOptions) { o.Region = "sa-east-1" }).GetCallerIdentity(ctx, nil)
	requireAPIError(t, err, "SignatureDoesNotMatch", http.StatusForbidden)

	// Credentials are checked as STS checks them.
	_, err = STSTestClient(t, w.srv.URL, func(o *AWSTestOptions) { o.AccessKey = "AKIAWRONGWRONGWRONG" }).GetCallerIdentity(ctx, nil)
	requireAPIError(t, err, "InvalidClientTokenId", http.StatusForbidden)
	_, err = STSTestClient(t, w.srv.URL, func(o *AWSTestOptions) { o.Secret = "wrong" }).GetCallerIdentity(ctx, nil)
	requireAPIError(t, err, "SignatureDoesNotMatch", http.StatusForbidden)

	if n := awsCallCount(w.sim, "sts.GetCallerIdentity", http.StatusOK); n != 2 {
		t.Fatalf("sts.GetCallerIdentity counted %d times with 200, want 2", n)
	}
	// EC2 at the same address is unaffected by STS being served there.
	if _, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Fatalf("DescribeInstances beside STS: %v", err)
	}
}

// An STS action the emulator does not serve is refused as STS refuses an
// unknown action, not as an EC2 or signature error.
func TestSTSUnservedAction(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	_, err := STSTestClient(t, w.srv.URL).GetSessionToken(context.Background(), nil)
	requireAPIError(t, err, "InvalidAction", http.StatusBadRequest)
}
