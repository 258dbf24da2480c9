package cloudsim

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The instance metadata options a launch asked for come back on the
// instance, so a client can check that IMDSv2 is required; a launch that
// asked for nothing gets AWS's defaults.
func TestEC2MetadataOptions(t *testing.T) {
	w := newAWSTestWorld(t, Config{BootDelay: time.Second})
	ctx := context.Background()
	want := func(what string, got *types.InstanceMetadataOptionsResponse, state types.InstanceMetadataOptionsState,
		tokens types.HttpTokensState, hops int32, endpoint types.InstanceMetadataEndpointState,
		ipv6 types.InstanceMetadataProtocolState, tags types.InstanceMetadataTagsState) {
		t.Helper()
		if got == nil {
			t.Fatalf("%s: no MetadataOptions", what)
		}
		if got.State != state || got.HttpTokens != tokens || aws.ToInt32(got.HttpPutResponseHopLimit) != hops ||
			got.HttpEndpoint != endpoint || got.HttpProtocolIpv6 != ipv6 || got.InstanceMetadataTags != tags {
			t.Fatalf("%s: MetadataOptions %+v", what, *got)
		}
	}

	// What internal/aws's RunInstance sends: only HttpTokens=required.
	in := runInput("imds-1", nil)
	in.MetadataOptions = &types.InstanceMetadataOptionsRequest{HttpTokens: types.HttpTokensStateRequired}
	out, err := w.ec2.RunInstances(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	want("RunInstances, required", out.Instances[0].MetadataOptions, types.InstanceMetadataOptionsStatePending,
		types.HttpTokensStateRequired, 1, types.InstanceMetadataEndpointStateEnabled,
		types.InstanceMetadataProtocolStateDisabled, types.InstanceMetadataTagsStateDisabled)
	w.clock.Advance(time.Second)
	want("DescribeInstances, required", describeOne(t, w, id).MetadataOptions, types.InstanceMetadataOptionsStateApplied,
		types.HttpTokensStateRequired, 1, types.InstanceMetadataEndpointStateEnabled,
		types.InstanceMetadataProtocolStateDisabled, types.InstanceMetadataTagsStateDisabled)
	if mo, _ := stateInstance(t, w.sim, id)["MetadataOptions"].(map[string]any); mo["HttpTokens"] != "required" {
		t.Fatalf("/_sim/state MetadataOptions %v", mo)
	}

	// Every option echoed.
	in = runInput("imds-2", nil)
	in.MetadataOptions = &types.InstanceMetadataOptionsRequest{
		HttpTokens: types.HttpTokensStateRequired, HttpPutResponseHopLimit: aws.Int32(2),
		HttpEndpoint: types.InstanceMetadataEndpointStateEnabled, HttpProtocolIpv6: types.InstanceMetadataProtocolStateEnabled,
		InstanceMetadataTags: types.InstanceMetadataTagsStateEnabled,
	}
	id2 := runOne(t, w.ec2, in)
	want("all options", describeOne(t, w, id2).MetadataOptions, types.InstanceMetadataOptionsStatePending,
		types.HttpTokensStateRequired, 2, types.InstanceMetadataEndpointStateEnabled,
		types.InstanceMetadataProtocolStateEnabled, types.InstanceMetadataTagsStateEnabled)

	// Nothing asked: AWS's defaults.
	id3 := runOne(t, w.ec2, runInput("", nil))
	want("defaults", describeOne(t, w, id3).MetadataOptions, types.InstanceMetadataOptionsStatePending,
		types.HttpTokensStateOptional, 1, types.InstanceMetadataEndpointStateEnabled,
		types.InstanceMetadataProtocolStateDisabled, types.InstanceMetadataTagsStateDisabled)

	// The options are part of the launch's parameters for its ClientToken.
	in = runInput("imds-1", nil)
	in.MetadataOptions = &types.InstanceMetadataOptionsRequest{HttpTokens: types.HttpTokensStateOptional}
	_, err = w.ec2.RunInstances(ctx, in)
	requireAPIError(t, err, "IdempotentParameterMismatch", http.StatusBadRequest)

	for _, bad := range []types.InstanceMetadataOptionsRequest{
		{HttpTokens: "sometimes"},
		{HttpPutResponseHopLimit: aws.Int32(0)},
		{HttpPutResponseHopLimit: aws.Int32(65)},
		{HttpEndpoint: "on"},
		{HttpProtocolIpv6: "yes"},
		{InstanceMetadataTags: "maybe"},
	} {
		in := runInput("", nil)
		in.MetadataOptions = &bad
		_, err := w.ec2.RunInstances(ctx, in)
		requireAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	}
	if n := len(w.sim.State().Instances); n != 3 {
		t.Fatalf("%d instances after refused launches, want 3", n)
	}
	// A loaded instance (no launch request) shows the defaults too.
	loaded := w.sim.LoadInstance(Instance{ImageID: testAMI, InstanceType: "t3.micro"})
	out2, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{loaded}})
	if err != nil {
		t.Fatal(err)
	}
	if mo := out2.Reservations[0].Instances[0].MetadataOptions; mo == nil || mo.HttpTokens != types.HttpTokensStateOptional {
		t.Fatalf("loaded instance MetadataOptions %+v", mo)
	}
}
