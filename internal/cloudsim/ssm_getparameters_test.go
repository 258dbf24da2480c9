package cloudsim

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// GetParameters reads up to 10 names at once: the ones found as GetParameter
// shows them, in the order asked, and the names not found in
// InvalidParameters, never an error for them.
func TestSSMGetParameters(t *testing.T) {
	w := multiRegionWorld(t, Config{})
	ctx := context.Background()
	const secret = "eyJhIjoiYWNjdCIsInQiOiJ0dW4iLCJzIjoic2VjcmV0In0="
	putParam(t, w, "/tw/a", "alpha", ssmtypes.ParameterTypeString)
	putParam(t, w, "/tw/b", secret, ssmtypes.ParameterTypeSecureString)
	putParam(t, w, "plain", "p", ssmtypes.ParameterTypeString)
	w.clock.Advance(time.Second)

	get := func(decrypt bool, names ...string) *ssm.GetParametersOutput {
		t.Helper()
		out, err := w.ssm.GetParameters(ctx, &ssm.GetParametersInput{Names: names, WithDecryption: aws.Bool(decrypt)})
		if err != nil {
			t.Fatalf("GetParameters %v: %v", names, err)
		}
		return out
	}
	one := func(name string, decrypt bool) ssmtypes.Parameter {
		t.Helper()
		out, err := w.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name), WithDecryption: aws.Bool(decrypt)})
		if err != nil {
			t.Fatalf("GetParameter %s: %v", name, err)
		}
		return *out.Parameter
	}
	show := func(p ssmtypes.Parameter) string {
		return fmt.Sprintf("%s %s %s v%d %s %s %v", aws.ToString(p.Name), p.Type, aws.ToString(p.Value), p.Version,
			aws.ToString(p.ARN), aws.ToString(p.DataType), p.LastModifiedDate.UTC())
	}

	for _, decrypt := range []bool{false, true} {
		out := get(decrypt, "/tw/b", "/tw/missing", "/tw/a", "plain", "/tw/a")
		var got, want []string
		for _, p := range out.Parameters {
			got = append(got, show(p))
		}
		for _, n := range []string{"/tw/b", "/tw/a", "plain"} {
			want = append(want, show(one(n, decrypt)))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("WithDecryption=%v:\n got %v\nwant %v", decrypt, got, want)
		}
		if fmt.Sprint(out.InvalidParameters) != "[/tw/missing]" {
			t.Fatalf("InvalidParameters %v", out.InvalidParameters)
		}
		if v := aws.ToString(out.Parameters[0].Value); (v == secret) != decrypt {
			t.Fatalf("WithDecryption=%v: SecureString value shown as %q", decrypt, v)
		}
	}

	// Nothing found is an answer, not an error.
	none := get(false, "/nope", "/nope/2")
	if len(none.Parameters) != 0 || fmt.Sprint(none.InvalidParameters) != "[/nope /nope/2]" {
		t.Fatalf("none found: %+v %v", none.Parameters, none.InvalidParameters)
	}
	// Per region: the us-east-1 names do not exist in eu-west-1.
	_, euSSM := regionClients(t, w.srv.URL, euWest1)
	eu, err := euSSM.GetParameters(ctx, &ssm.GetParametersInput{Names: []string{"/tw/a"}})
	if err != nil || len(eu.Parameters) != 0 || fmt.Sprint(eu.InvalidParameters) != "[/tw/a]" {
		t.Fatalf("eu-west-1: %+v, %v", eu, err)
	}

	// 1..10 names.
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = fmt.Sprintf("/tw/n%d", i)
	}
	_, err = w.ssm.GetParameters(ctx, &ssm.GetParametersInput{Names: eleven})
	requireAPIError(t, err, "ValidationException", http.StatusBadRequest)
	get(false, eleven[:10]...)
	_, err = w.ssm.GetParameters(ctx, &ssm.GetParametersInput{Names: []string{}})
	requireAPIError(t, err, "ValidationException", http.StatusBadRequest)
	if n := awsCallCount(w.sim, "ssm.GetParameters", http.StatusOK); n != 5 {
		t.Fatalf("ssm.GetParameters counted %d times with 200, want 5", n)
	}
}

// GetParameters is a parameter read: it draws on the region's read TPS like
// GetParameter does.
func TestSSMGetParametersRateLimited(t *testing.T) {
	w := newAWSTestWorld(t, Config{Limits: RateLimits{SSMEnabled: true, SSMReadTPS: 1}})
	ctx := context.Background()
	in := &ssm.GetParametersInput{Names: []string{"/x"}}
	if _, err := w.ssm.GetParameters(ctx, in); err != nil {
		t.Fatal(err)
	}
	_, err := w.ssm.GetParameters(ctx, in)
	requireAPIError(t, err, "ThrottlingException", http.StatusBadRequest)
	w.clock.Advance(time.Second)
	if _, err := w.ssm.GetParameters(ctx, in); err != nil {
		t.Fatalf("after a second: %v", err)
	}
}
