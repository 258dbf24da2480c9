package cloudsim

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// Injected faults reach the AWS SDK as the providers' own errors, and the
// SDK's retryer treats them as retryable (it makes every attempt it may).
func TestAWSFaultsVisibleToSDK(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	if err := w.sim.SetFaultSettings(FaultSettings{Rules: []FaultRule{
		{Op: "ec2.DescribeInstances", ThrottleRate: 1},
		{Op: "ec2.RunInstances", ErrorRate: 1, ErrorStatus: 503},
		{Op: "ssm.GetParameter", ThrottleRate: 1},
		{Op: "ssm.PutParameter", ErrorRate: 1},
	}}); err != nil {
		t.Fatal(err)
	}

	_, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	requireAPIError(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
	_, err = w.ec2.RunInstances(ctx, runInput("t", nil))
	requireAPIError(t, err, "Unavailable", http.StatusServiceUnavailable)
	_, err = w.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/x")})
	requireAPIError(t, err, "ThrottlingException", http.StatusBadRequest)
	_, err = w.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/x"), Value: aws.String("v"), Type: ssmtypes.ParameterTypeString})
	requireAPIError(t, err, "InternalServerError", http.StatusInternalServerError)

	// With retries on, the SDK retries each of them to its attempt limit.
	e3, s3 := AWSTestClients(t, w.srv.URL, func(o *AWSTestOptions) { o.MaxAttempts = 3; o.MaxBackoff = time.Millisecond })
	before := awsCallCount(w.sim, "ec2.DescribeInstances", 503)
	_, err = e3.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	requireAPIError(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
	if got := awsCallCount(w.sim, "ec2.DescribeInstances", 503) - before; got != 3 {
		t.Fatalf("SDK made %d DescribeInstances attempts on RequestLimitExceeded, want 3", got)
	}
	before = awsCallCount(w.sim, "ssm.GetParameter", 400)
	_, err = s3.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/x")})
	requireAPIError(t, err, "ThrottlingException", http.StatusBadRequest)
	if got := awsCallCount(w.sim, "ssm.GetParameter", 400) - before; got != 3 {
		t.Fatalf("SDK made %d GetParameter attempts on ThrottlingException, want 3", got)
	}
	before = awsCallCount(w.sim, "ssm.PutParameter", 500)
	_, err = s3.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/x"), Value: aws.String("v"), Type: ssmtypes.ParameterTypeString})
	requireAPIError(t, err, "InternalServerError", http.StatusInternalServerError)
	if got := awsCallCount(w.sim, "ssm.PutParameter", 500) - before; got != 3 {
		t.Fatalf("SDK made %d PutParameter attempts on InternalServerError, want 3", got)
	}

	// A failed call changed nothing; once the faults are lifted it works.
	if err := w.sim.SetFaultSettings(FaultSettings{}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ec2.RunInstances(ctx, runInput("t", nil)); err != nil {
		t.Fatalf("RunInstances after faults lifted: %v", err)
	}
	w.sim.mu.Lock()
	n := len(w.sim.instances)
	w.sim.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d instances after one failed and one good RunInstances, want 1", n)
	}

	// A hang answers nothing: the client gives up on its own deadline, and
	// the emulator counts the request with status 0.
	if err := w.sim.SetFaultSettings(FaultSettings{Rules: []FaultRule{{Op: "ssm.DeleteParameter", HangRate: 1}}}); err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := w.ssm.DeleteParameter(hctx, &ssm.DeleteParameterInput{Name: aws.String("/x")}); err == nil {
		t.Fatal("hung DeleteParameter succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for awsCallCount(w.sim, "ssm.DeleteParameter", 0) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("hung request never counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The EC2 RunInstances bucket (burst 5) throttles the sixth launch in a row,
// and the SDK sees RequestLimitExceeded.
func TestEC2RateLimitBucket(t *testing.T) {
	w := newAWSTestWorld(t, Config{Limits: RateLimits{EC2Enabled: true, EC2Scale: 1}})
	ctx := context.Background()
	var err error
	ok := 0
	for i := 0; i < 6; i++ {
		if _, err = w.ec2.RunInstances(ctx, runInput("", nil)); err == nil {
			ok++
		} else {
			break
		}
	}
	requireAPIError(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
	if ok != 5 {
		t.Fatalf("%d launches before throttling, want the burst of 5", ok)
	}
}
