package cloudsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

func (e *env) putFaults(body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/_sim/faults", strings.NewReader(body))
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestFaultRulesThroughSDK(t *testing.T) {
	e := newEnv(t, nil)
	id := e.createTunnel("tw-f")

	if code, body := e.putFaults(`{"rules":[{"op":"cf.tunnel.get","error_rate":1,"error_status":503}]}`); code != 200 {
		t.Fatalf("PUT faults: %d %s", code, body)
	}
	_, err := e.getTunnel(id)
	if cfErrOf(t, err).StatusCode != 503 {
		t.Fatalf("injected error: %v", err)
	}
	// Other operations are untouched.
	if _, err := e.getTunnelList(context.Background(), e.tun); err != nil {
		t.Fatalf("unmatched op failed: %v", err)
	}

	if code, body := e.putFaults(`{"rules":[{"op":"cf.*","throttle_rate":1,"retry_after":"2s"}]}`); code != 200 {
		t.Fatalf("PUT faults: %d %s", code, body)
	}
	_, err = e.getTunnel(id)
	wantCFError(t, err, http.StatusTooManyRequests, 971)
	if ra := cfErrOf(t, err).Response.Header.Get("Retry-After"); ra != "2" {
		t.Fatalf("Retry-After %q", ra)
	}
	calls := e.sim.Calls()["cf.tunnel.get"]
	if calls[503] != 1 || calls[429] != 1 {
		t.Fatalf("calls: %v", calls)
	}

	// Bad settings are refused, naming what is wrong, and change nothing.
	for body, want := range map[string]string{
		`{"rules":[{"op":"cf.*","error_rate":2}]}`:       "error_rate",
		`{"rules":[{"op":"","error_rate":0.1}]}`:         "op",
		`{"rules":[{"op":"cf.*","error_status":404}]}`:   "error_status",
		`{"rules":[{"op":"cf.*","latency_min":"fast"}]}`: "duration",
		`{"rulez":[]}`: "unknown field",
	} {
		if code, msg := e.putFaults(body); code != 400 || !strings.Contains(msg, want) {
			t.Errorf("PUT %s: %d %s, want 400 naming %q", body, code, msg, want)
		}
	}
	if fs := e.sim.FaultSettings(); len(fs.Rules) != 1 || fs.Rules[0].ThrottleRate != 1 {
		t.Fatalf("settings changed by a refused PUT: %+v", fs)
	}
}

// A hang holds the request until the client gives up; latency longer than
// the client's timeout does the same.
func TestFaultHangAndLatency(t *testing.T) {
	e := newEnv(t, nil)
	e.putFaults(`{"rules":[{"op":"cf.dns.list","hang_rate":1},{"op":"cf.tunnel.list","latency_min":"5s"}]}`)
	var lp dns.RecordListParams
	set(&lp.ZoneID, e.zone)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := e.rec.List(ctx, lp); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung request: %v", err)
	}
	waitFor(t, "the hang to be counted", func() bool { return e.sim.Calls()["cf.dns.list"][0] == 1 })

	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := e.getTunnelList(ctx2, e.tun); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow request: %v", err)
	}
}

// Decisions depend only on the seed and the per-operation request count.
func TestFaultsDeterministicUnderSeed(t *testing.T) {
	draw := func(seed int64, interleave bool) string {
		s := New(Config{Seed: seed})
		if err := s.SetFaultSettings(FaultSettings{Rules: []FaultRule{{Op: "*", ErrorRate: 0.5}}}); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for i := 0; i < 64; i++ {
			if interleave {
				s.injectFault(context.Background(), "ec2.DescribeInstances")
			}
			if s.injectFault(context.Background(), "cf.tunnel.get").Kind == FaultError {
				b.WriteByte('x')
			} else {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	a, b := draw(7, false), draw(7, true)
	if a != b {
		t.Fatalf("same seed, other operations interleaved, different faults:\n%s\n%s", a, b)
	}
	if c := draw(8, false); c == a {
		t.Fatalf("different seeds gave the same 64 draws: %s", a)
	}
	if !strings.Contains(a, "x") || !strings.Contains(a, ".") {
		t.Fatalf("error rate 0.5 drew %s", a)
	}
}

func awsErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestEC2AndSSMRateLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Limits = RateLimits{EC2Enabled: true, EC2Scale: 0.05, SSMEnabled: true, SSMReadTPS: 3} // Describe*: burst 5, 1/s
	})
	ec, sc := AWSTestClients(t, e.srv.URL)
	ctx := context.Background()
	describe := func() error { _, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); return err }
	for i := 0; i < 5; i++ {
		if err := describe(); err != nil {
			t.Fatalf("describe %d within burst: %v", i, err)
		}
	}
	if err := describe(); awsErrorCode(err) != "RequestLimitExceeded" {
		t.Fatalf("describe over the bucket: %v", err)
	}
	e.clock.Advance(time.Second) // refills one token
	if err := describe(); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	if err := describe(); awsErrorCode(err) != "RequestLimitExceeded" {
		t.Fatalf("second call after one token refilled: %v", err)
	}

	if _, err := sc.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/t/x"), Type: ssmtypes.ParameterTypeString, Value: aws.String("v")}); err != nil {
		t.Fatal(err)
	}
	get := func() error {
		_, err := sc.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/t/x")})
		return err
	}
	for i := 0; i < 3; i++ {
		if err := get(); err != nil {
			t.Fatalf("read %d within TPS: %v", i, err)
		}
	}
	if err := get(); awsErrorCode(err) != "ThrottlingException" {
		t.Fatalf("read over TPS: %v", err)
	}
	// Writes are not parameter reads.
	if _, err := sc.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/t/y"), Type: ssmtypes.ParameterTypeString, Value: aws.String("v")}); err != nil {
		t.Fatalf("write while reads are throttled: %v", err)
	}
	calls := e.sim.Calls()
	if calls["ec2.DescribeInstances"][503] != 2 || calls["ssm.GetParameter"][400] != 1 {
		t.Fatalf("throttles counted: %v", calls)
	}
}

func TestFaultsEndpointRoundTrip(t *testing.T) {
	e := newEnv(t, nil)
	body := `{"rules":[{"op":"ec2.RunInstances","error_rate":0.25,"latency_min":"10ms","latency_max":"20ms"}],"rate_limits":{"cf_enabled":true,"cf_budget":1200,"cf_window":"5m0s","ec2_enabled":false,"ssm_enabled":false}}`
	if code, msg := e.putFaults(body); code != 200 {
		t.Fatalf("%d %s", code, msg)
	}
	res, err := e.srv.Client().Get(e.srv.URL + "/_sim/faults")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var fs FaultSettings
	if err := json.NewDecoder(res.Body).Decode(&fs); err != nil {
		t.Fatal(err)
	}
	if len(fs.Rules) != 1 || fs.Rules[0].ErrorRate != 0.25 || time.Duration(fs.Rules[0].LatencyMax) != 20*time.Millisecond ||
		!fs.Limits.CFEnabled || fs.Limits.CFBudget != 1200 || time.Duration(fs.Limits.CFWindow) != 5*time.Minute {
		t.Fatalf("read back: %+v", fs)
	}
	// /_sim/calls resets.
	e.createTunnel("tw-calls")
	req, _ := http.NewRequest(http.MethodDelete, e.srv.URL+"/_sim/calls", bytes.NewReader(nil))
	if r, err := e.srv.Client().Do(req); err != nil || r.StatusCode != 200 {
		t.Fatalf("reset calls: %v", err)
	}
	if n := e.sim.CallCount("cf.tunnel.create"); n != 0 {
		t.Fatalf("calls after reset: %d", n)
	}
}

// A lost response: the operation is applied, then the body breaks off. The
// SDKs see an error; the world holds the result; a retry with the same
// ClientToken launches nothing new.
func TestFaultLostResponseApplied(t *testing.T) {
	e := newEnv(t, nil)
	if code, body := e.putFaults(`{"rules":[{"op":"cf.tunnel.create","lost_rate":1},{"op":"ec2.RunInstances","lost_rate":1}]}`); code != 200 {
		t.Fatalf("PUT faults: %d %s", code, body)
	}
	var tp zero_trust.TunnelCloudflaredNewParams
	set(&tp.AccountID, e.acct)
	set(&tp.Name, "tw-lost")
	set(&tp.ConfigSrc, zero_trust.TunnelCloudflaredNewParamsConfigSrcCloudflare)
	if _, err := e.tun.New(context.Background(), tp); err == nil {
		t.Fatal("create with its response lost succeeded")
	}
	if n := len(e.sim.State().Tunnels); n != 1 {
		t.Fatalf("tunnels after a lost create: %d, want 1 (applied)", n)
	}

	// The SDK does not retry a body cut short (unexpected EOF); the caller
	// does, with the same ClientToken.
	ec, _ := AWSTestClients(t, e.srv.URL)
	for range 3 {
		_, err := ec.RunInstances(context.Background(), runInput("tok-lost", map[string]string{"OrgID": "lost"}))
		if err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
			t.Fatalf("RunInstances with its response lost: %v", err)
		}
	}
	if n := len(e.sim.State().Instances); n != 1 {
		t.Fatalf("instances after 3 lost RunInstances with one ClientToken: %d, want 1", n)
	}
	lost := e.sim.LostCalls()
	if lost["cf.tunnel.create"] != 1 || lost["ec2.RunInstances"] != 3 {
		t.Fatalf("lost calls: %v", lost)
	}
	if c := e.sim.Calls()["ec2.RunInstances"]; c[200] != 3 {
		t.Fatalf("RunInstances counted %v, want 3 answered 200", c)
	}

	// lost_rate is a probability like the others.
	if code, body := e.putFaults(`{"rules":[{"op":"*","lost_rate":1.5}]}`); code != 400 || !strings.Contains(body, "lost_rate") {
		t.Fatalf("lost_rate 1.5: %d %s", code, body)
	}
}
