package aws_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/userdata"
)

var ctx = context.Background()

type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) observe(provider, op string, status int, _ time.Duration, throttled bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, fmt.Sprintf("%s %s %d %v", provider, op, status, throttled))
}

func (r *recorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.log {
		if l == s {
			n++
		}
	}
	return n
}

type world struct {
	sim *cloudsim.Sim
	url string
	rec *recorder
}

func newWorld(t *testing.T, mutate func(*cloudsim.Config)) *world {
	t.Helper()
	cfg := cloudsim.DefaultConfig()
	cfg.Limits = cloudsim.RateLimits{}
	cfg.BootDelay, cfg.ConnectDelay, cfg.ShutdownDelay = 0, 0, 0
	if mutate != nil {
		mutate(&cfg)
	}
	sim := cloudsim.New(cfg)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return &world{sim: sim, url: srv.URL, rec: &recorder{}}
}

// loose limits so only the limiter tests wait on buckets.
var loose = ratelimit.EC2Buckets{
	Mutating:    ratelimit.Bucket{Burst: 10000, Rate: 10000},
	NonMutating: ratelimit.Bucket{Burst: 10000, Rate: 10000},
}

func (w *world) client(t *testing.T, mutate func(*aws.Config)) *aws.Client {
	t.Helper()
	cfg := aws.Config{
		Endpoint: w.url, Region: cloudsim.DefaultRegion,
		AccessKeyID: cloudsim.DefaultAWSAccessKey, SecretAccessKey: cloudsim.DefaultAWSSecret,
		EC2Buckets: loose, SSMBucket: ratelimit.Bucket{Burst: 10000, Rate: 10000},
		Policy:  apicall.Policy{BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond, CallTimeout: 5 * time.Second},
		Observe: w.rec.observe,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := aws.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func spec(org string, gen int64) aws.InstanceSpec {
	return aws.InstanceSpec{
		OrgID: org, TunnelID: "tun-" + org, Name: "tw-" + org,
		ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro",
		SubnetID: "subnet-0abc", SecurityGroupIDs: []string{"sg-0abc"},
		InstanceProfile: "tunnelward-instance",
		UserData:        "#!/bin/bash\nTUNNEL_TOKEN_PARAMETER='/tunnelward/" + org + "/tunnel-token'\n",
		ClientToken:     owner.ClientToken(org, gen, 0),
		Tags:            map[string]string{"Generation": fmt.Sprint(gen), "OrgID": "spoofed", "Team": "platform"},
	}
}

func instanceState(w *world, id string) map[string]any {
	for _, in := range w.sim.State().Instances {
		if in["InstanceId"] == id {
			return in
		}
	}
	return nil
}

func TestConfigValidation(t *testing.T) {
	if _, err := aws.New(ctx, aws.Config{Endpoint: "http://127.0.0.1:1", Region: "us-east-1"}); err == nil || !strings.Contains(err.Error(), "static credentials") {
		t.Fatalf("sandbox without credentials: %v", err)
	}
	if _, err := aws.New(ctx, aws.Config{}); err == nil || !strings.Contains(err.Error(), "region") {
		t.Fatalf("no region: %v", err)
	}
}

// formRecorder keeps the form body of every EC2 request.
type formRecorder struct {
	mu    sync.Mutex
	forms []url.Values
}

func (f *formRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Header.Get("X-Amz-Target") == "" {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		if v, err := url.ParseQuery(string(b)); err == nil {
			f.mu.Lock()
			f.forms = append(f.forms, v)
			f.mu.Unlock()
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestRunInstanceIdempotentAndTagged(t *testing.T) {
	w := newWorld(t, nil)
	fr := &formRecorder{}
	c := w.client(t, func(cfg *aws.Config) { cfg.HTTPClient = &http.Client{Transport: fr} })
	s := spec("acme", 1)
	in, err := c.RunInstance(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	// No public IP whatever the subnet's default: the interface says so.
	f := fr.forms[0]
	for k, want := range map[string]string{
		"Action": "RunInstances", "NetworkInterface.1.AssociatePublicIpAddress": "false",
		"NetworkInterface.1.SubnetId": "subnet-0abc", "NetworkInterface.1.SecurityGroupId.1": "sg-0abc",
		"NetworkInterface.1.DeviceIndex": "0", "MetadataOptions.HttpTokens": "required",
		"IamInstanceProfile.Name": "tunnelward-instance", "ClientToken": s.ClientToken,
	} {
		if f.Get(k) != want {
			t.Errorf("RunInstances %s = %q, want %q", k, f.Get(k), want)
		}
	}
	if f.Has("SubnetId") || f.Has("SecurityGroupId.1") {
		t.Errorf("top-level subnet/groups sent beside the interface: %v", f)
	}
	if in.Tags["Generation"] != "1" || in.Tags["Team"] != "platform" {
		t.Fatalf("extra tags missing: %v", in.Tags)
	}
	if in.ID == "" || in.OrgID() != "acme" || in.Tags[aws.TagManagedBy] != "tunnelward" || in.Tags[aws.TagTunnelID] != "tun-acme" || in.Tags[aws.TagName] != "tw-acme" {
		t.Fatalf("launched %+v", in)
	}
	st := instanceState(w, in.ID)
	if st["UserDataScript"] != s.UserData || st["ClientToken"] != s.ClientToken {
		t.Fatalf("emulator holds %v", st)
	}
	if raw, _ := base64.StdEncoding.DecodeString(st["UserData"].(string)); string(raw) != s.UserData {
		t.Fatal("user-data not base64 of the script")
	}

	// Same token, same spec: the original instance, not a second one.
	again, err := c.RunInstance(ctx, s)
	if err != nil || again.ID != in.ID {
		t.Fatalf("retry with the same token: %+v %v", again, err)
	}
	// Same token, changed spec: refused.
	changed := s
	changed.InstanceType = "t3.small"
	if _, err := c.RunInstance(ctx, changed); !errors.Is(err, aws.ErrIdempotentParameterMismatch) {
		t.Fatalf("changed spec: %v", err)
	}
	if n := len(w.sim.State().Instances); n != 1 {
		t.Fatalf("%d instances, want 1", n)
	}

	found, err := c.DescribeOrgInstances(ctx, "acme")
	if err != nil || len(found) != 1 || found[0].ID != in.ID || !found[0].Live() {
		t.Fatalf("DescribeOrgInstances: %+v %v", found, err)
	}
	if other, err := c.DescribeOrgInstances(ctx, "acme2"); err != nil || len(other) != 0 {
		t.Fatalf("other org: %+v %v", other, err)
	}
	if err := c.RebootInstances(ctx, in.ID); err != nil {
		t.Fatal(err)
	}

	ch, err := c.TerminateInstances(ctx, in.ID)
	if err != nil || len(ch) != 1 || ch[0].ID != in.ID || ch[0].Current == "running" {
		t.Fatalf("terminate: %+v %v", ch, err)
	}
	if _, err := c.TerminateInstances(ctx, in.ID); err != nil {
		t.Fatalf("terminate again: %v", err)
	}
	waitFor(t, "instance gone from the org's live instances", func() bool {
		f, err := c.DescribeOrgInstances(ctx, "acme")
		return err == nil && len(f) == 0
	})
	if g, err := c.GetInstance(ctx, in.ID); err != nil || g.Live() {
		t.Fatalf("GetInstance terminated: %+v %v", g, err)
	}
	if _, err := c.GetInstance(ctx, "i-0000000000000000a"); !errors.Is(err, aws.ErrNotFound) {
		t.Fatalf("GetInstance unknown: %v", err)
	}

	// A new generation launches a new instance.
	next, err := c.RunInstance(ctx, spec("acme", 2))
	if err != nil || next.ID == in.ID {
		t.Fatalf("generation 2: %+v %v", next, err)
	}
}

func TestListManagedInstancesPages(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t, func(cfg *aws.Config) { cfg.PageSize = 5 })
	for i := range 12 {
		if _, err := c.RunInstance(ctx, spec(fmt.Sprintf("org%d", i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	got, pages, err := c.ListManagedInstances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 12 || pages != 3 {
		t.Fatalf("%d instances in %d pages, want 12 in 3", len(got), pages)
	}
	orgs := map[string]bool{}
	for _, in := range got {
		orgs[in.OrgID()] = true
	}
	if len(orgs) != 12 {
		t.Fatalf("duplicates across pages: %d distinct orgs", len(orgs))
	}
	if n := w.sim.Calls()["ec2.DescribeInstances"][200]; n != 3 {
		t.Fatalf("emulator saw %d DescribeInstances, want 3", n)
	}
}

// TestRunInstancesRetriedUnder5xx: half of RunInstances answers are 500;
// with the ClientToken every org still ends with exactly one instance.
func TestRunInstancesRetriedUnder5xx(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t, func(cfg *aws.Config) { cfg.Policy.MaxAttempts = 12 })
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{
		{Op: "ec2.RunInstances", ErrorRate: 0.5},
		{Op: "ec2.DescribeInstances", ThrottleRate: 0.5},
	}}); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := c.RunInstance(ctx, spec(fmt.Sprintf("org%d", i), 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.DescribeOrgInstances(ctx, fmt.Sprintf("org%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	calls := w.sim.Calls()
	if calls["ec2.RunInstances"][500] == 0 || calls["ec2.DescribeInstances"][503] == 0 {
		t.Fatalf("no faults were injected: %v", calls)
	}
	if n := len(w.sim.State().Instances); n != 6 {
		t.Fatalf("%d instances for 6 orgs", n)
	}
	if w.rec.count("ec2 DescribeInstances 503 true") == 0 || w.rec.count("ec2 RunInstances 500 false") == 0 {
		t.Fatalf("observer: %v", w.rec.log)
	}
}

// TestRunInstancesBucket: 8 launches at once against the emulator's EC2
// throttling (RunInstances burst 5, 2/s). The client bucket of the same
// shape keeps every call under it; the control run without it is throttled.
func TestRunInstancesBucket(t *testing.T) {
	limits := func(cfg *cloudsim.Config) { cfg.Limits = cloudsim.RateLimits{EC2Enabled: true, EC2Scale: 1} }
	launch := func(c *aws.Client) (failed int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range 8 {
			wg.Go(func() {
				if _, err := c.RunInstance(ctx, spec(fmt.Sprintf("org%d", i), 1)); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return failed
	}
	w := newWorld(t, limits)
	c := w.client(t, func(cfg *aws.Config) { cfg.EC2Buckets = ratelimit.DefaultEC2() })
	if f := launch(c); f != 0 {
		t.Fatalf("%d launches failed", f)
	}
	if n := w.sim.Calls()["ec2.RunInstances"][503]; n != 0 {
		t.Fatalf("emulator throttled %d RunInstances", n)
	}
	if n := len(w.sim.State().Instances); n != 8 {
		t.Fatalf("%d instances", n)
	}

	w2 := newWorld(t, limits)
	c2 := w2.client(t, func(cfg *aws.Config) { cfg.Policy.MaxAttempts = 1 })
	if f := launch(c2); f == 0 || w2.sim.Calls()["ec2.RunInstances"][503] == 0 {
		t.Fatal("control run without the bucket was not throttled; the test proves nothing")
	}
}

func TestParameters(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t, func(cfg *aws.Config) { cfg.PageSize = 2 })
	tok := secret.NewToken("eyJhIjoiYWNjdCIsInQiOiJ0dW4iLCJzIjoic2VjcmV0In0=")
	name := "/tunnelward/acme/tunnel-token"
	tags := map[string]string{"ManagedBy": "tunnelward", "OrgID": "acme"}

	res, err := c.PutToken(ctx, name, tok, tags)
	if err != nil || !res.Created || res.Version != 1 {
		t.Fatalf("first put: %+v %v", res, err)
	}
	res, err = c.PutToken(ctx, name, secret.NewToken("rotated-token-value"), tags)
	if err != nil || res.Created || res.Version != 2 {
		t.Fatalf("overwrite: %+v %v", res, err)
	}
	if got, err := c.ParameterTags(ctx, name); err != nil || got["ManagedBy"] != "tunnelward" || got["OrgID"] != "acme" {
		t.Fatalf("tags after overwrite: %v %v", got, err)
	}
	var st map[string]any
	for _, p := range w.sim.State().Parameters {
		if p["Name"] == name {
			st = p
		}
	}
	if st["Type"] != "SecureString" || st["Value"] != nil {
		t.Fatalf("emulator parameter %v", st)
	}
	if _, err := c.PutToken(ctx, name, secret.Token{}, tags); err == nil {
		t.Fatal("empty token stored")
	}

	meta, err := c.GetParameterMeta(ctx, name)
	if err != nil || meta.Type != "SecureString" || meta.Version != 2 {
		t.Fatalf("meta %+v %v", meta, err)
	}
	for i := range 4 {
		if _, err := c.PutToken(ctx, fmt.Sprintf("/tunnelward/org%d/tunnel-token", i), tok, tags); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.PutToken(ctx, "/elsewhere/x", tok, nil); err != nil {
		t.Fatal(err)
	}
	list, pages, err := c.ListParameters(ctx, "/tunnelward/")
	if err != nil || len(list) != 5 || pages < 3 {
		t.Fatalf("listed %d in %d pages (%v), want 5 in >= 3", len(list), pages, err)
	}
	for _, m := range list {
		if !strings.HasPrefix(m.Name, "/tunnelward/") {
			t.Fatalf("listed %s outside the path", m.Name)
		}
	}
	if _, _, err := c.ListParameters(ctx, "tunnelward"); err == nil {
		t.Fatal("relative path accepted")
	}

	existed, err := c.DeleteParameter(ctx, name)
	if err != nil || !existed {
		t.Fatalf("delete: %v %v", existed, err)
	}
	existed, err = c.DeleteParameter(ctx, name)
	if err != nil || existed {
		t.Fatalf("second delete: %v %v", existed, err)
	}
	if _, err := c.GetParameterMeta(ctx, name); !errors.Is(err, aws.ErrNotFound) {
		t.Fatalf("meta after delete: %v", err)
	}
	if _, err := c.ParameterTags(ctx, name); !errors.Is(err, aws.ErrNotFound) {
		t.Fatalf("tags after delete: %v", err)
	}
}

func TestSSMThrottlingRetried(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t, func(cfg *aws.Config) { cfg.Policy.MaxAttempts = 12 })
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{
		{Op: "ssm.PutParameter", ThrottleRate: 0.5},
	}}); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := c.PutToken(ctx, fmt.Sprintf("/tw/o%d/tunnel-token", i), secret.NewToken("v"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if w.sim.Calls()["ssm.PutParameter"][400] == 0 || w.rec.count("ssm PutParameter 400 true") == 0 {
		t.Fatalf("no throttling seen: %v", w.sim.Calls()["ssm.PutParameter"])
	}
	// A permanent 400 (validation) is not retried.
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{}); err != nil {
		t.Fatal(err)
	}
	before := w.sim.CallCount("ssm.PutParameter")
	_, err := c.PutToken(ctx, "/tw/bad name!/tunnel-token", secret.NewToken("v"), nil)
	if err == nil || w.sim.CallCount("ssm.PutParameter")-before != 1 || apicall.StatusOf(err) != 400 {
		t.Fatalf("validation error retried or accepted: %v (%d calls)", err, w.sim.CallCount("ssm.PutParameter")-before)
	}
	if !strings.Contains(err.Error(), "ssm PutParameter /tw/bad name!/tunnel-token") {
		t.Fatalf("error does not name the call: %v", err)
	}
}

// TestEndToEndConnectAndRestart drives the flow the engine will: tunnel and
// token from Cloudflare, the token into SSM, an instance whose rendered
// user-data names the parameter; the emulated cloudflared connects. A killed
// connector is brought back with the SSM restart command.
func TestEndToEndConnectAndRestart(t *testing.T) {
	// The instance boots at once and its cloudflared may read before the
	// tag lands; a short retry keeps the wait short.
	w := newWorld(t, func(c *cloudsim.Config) { c.RetryInterval = 50 * time.Millisecond })
	a := w.client(t, nil)
	cf, err := cloudflare.New(cloudflare.Config{BaseURL: w.url + "/client/v4/", APIToken: cloudsim.DefaultCFToken,
		AccountID: cloudsim.DefaultAccountID, ZoneID: cloudsim.DefaultZoneID, ZoneName: cloudsim.DefaultZoneName,
		Budget: ratelimit.WindowBudget{Requests: 100000, Window: time.Second, Burst: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	tun, err := cf.CreateTunnel(ctx, "tw-acme")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cf.Token(ctx, tun.ID)
	if err != nil {
		t.Fatal(err)
	}
	param := "/tunnelward/acme/tunnel-token"
	if _, err := a.PutToken(ctx, param, tok, map[string]string{"ManagedBy": "tunnelward", "OrgID": "acme"}); err != nil {
		t.Fatal(err)
	}
	script, err := userdata.Render(userdata.Params{OrgID: "acme", ParameterName: param})
	if err != nil {
		t.Fatal(err)
	}
	s := spec("acme", 1)
	s.TunnelID, s.UserData = tun.ID, script
	in, err := a.RunInstance(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprint(instanceState(w, in.ID)), tok.Reveal()) {
		t.Fatal("token visible in the instance")
	}
	// The instance role may read only the parameter tagged with the
	// instance's ARN (deploy/iam/instance-role-policy.json, enforced by the
	// emulator): the ARN this client builds from ownerId must be the one
	// the emulator's policy wants.
	if in.ARN == "" || in.ARN != w.sim.InstanceARN(in.ID) {
		t.Fatalf("instance ARN %q, the emulator's policy wants %q", in.ARN, w.sim.InstanceARN(in.ID))
	}
	for what, get := range map[string]func() (aws.Instance, error){
		"GetInstance": func() (aws.Instance, error) { return a.GetInstance(ctx, in.ID) },
		"DescribeOrgInstances": func() (aws.Instance, error) {
			l, err := a.DescribeOrgInstances(ctx, "acme")
			if err == nil && len(l) != 1 {
				err = fmt.Errorf("%d instances, want 1", len(l))
			}
			if err != nil {
				return aws.Instance{}, err
			}
			return l[0], nil
		},
	} {
		if got, err := get(); err != nil || got.ARN != in.ARN {
			t.Fatalf("%s: ARN %q (%v), want %q as RunInstances gave", what, got.ARN, err, in.ARN)
		}
	}
	if err := a.TagParameter(ctx, param, map[string]string{"InstanceArn": in.ARN}); err != nil {
		t.Fatal(err)
	}
	healthy := func() bool {
		g, err := cf.GetTunnel(ctx, tun.ID)
		return err == nil && g.Healthy()
	}
	waitFor(t, "tunnel healthy", healthy)

	if _, err := cf.DeleteTunnel(ctx, tun.ID); !errors.Is(err, cloudflare.ErrActiveConnections) {
		t.Fatalf("delete with live connections: %v", err)
	}

	if _, err := w.sim.ApplyWorld(cloudsim.WorldAction{Action: "kill_connector", ID: in.ID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "tunnel down", func() bool { return !healthy() })

	cmd, err := a.SendCommand(ctx, in.ID, userdata.RestartCommands(""), "tunnelward: restart cloudflared for org acme")
	if err != nil {
		t.Fatal(err)
	}
	var inv aws.Invocation
	waitFor(t, "command done", func() bool {
		var err error
		inv, err = a.GetCommandInvocation(ctx, cmd, in.ID)
		if errors.Is(err, aws.ErrNotFound) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return inv.Done()
	})
	if inv.Status != "Success" {
		t.Fatalf("restart command: %+v", inv)
	}
	waitFor(t, "tunnel healthy again", healthy)
	if _, err := a.GetCommandInvocation(ctx, "00000000-0000-0000-0000-000000000000", in.ID); !errors.Is(err, aws.ErrNotFound) {
		t.Fatalf("unknown invocation: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Without AWS_CA_BUNDLE (production, most machines) the SDK leaves its HTTP
// client unset; the client must still work, not dereference nil.
func TestWorksWithoutCABundle(t *testing.T) {
	t.Setenv("AWS_CA_BUNDLE", "")
	os.Unsetenv("AWS_CA_BUNDLE")
	w := newWorld(t, nil)
	c := w.client(t, nil)
	if _, err := c.RunInstance(ctx, spec("nobundle", 1)); err != nil {
		t.Fatalf("RunInstance without AWS_CA_BUNDLE: %v", err)
	}
	if n := len(w.sim.State().Instances); n != 1 {
		t.Fatalf("instances in the emulator = %d, want 1", n)
	}
}

// Responses cut short after the operation ran are retried under the call
// policy (the outcome is unknown, the step is safe to repeat), and the SDK's
// own warning about the undrained body reaches our structured log.
func TestLostResponsesRetried(t *testing.T) {
	w := newWorld(t, nil)
	var logs syncBuf
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	c := w.client(t, func(cfg *aws.Config) { cfg.Logger = log })
	if _, err := c.RunInstance(ctx, spec("lost", 1)); err != nil {
		t.Fatal(err)
	}
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{{Op: "ec2.DescribeInstances", LostRate: 1}}}); err != nil {
		t.Fatal(err)
	}
	_, err := c.DescribeOrgInstances(ctx, "lost")
	if err == nil || !strings.Contains(err.Error(), "after 5 attempts") {
		t.Fatalf("every response lost: want a failure after 5 attempts, got %v", err)
	}
	if n := w.sim.LostCalls()["ec2.DescribeInstances"]; n != 5 {
		t.Fatalf("lost DescribeInstances %d, want 5 (one per attempt)", n)
	}
	if !strings.Contains(logs.String(), `"component":"aws-sdk"`) {
		t.Fatalf("the SDK's warning did not reach the structured log:\n%s", logs.String())
	}
	// A third of the responses lost: each call still succeeds within its attempts.
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{{Op: "ec2.DescribeInstances", LostRate: 0.3}}}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		got, err := c.DescribeOrgInstances(ctx, "lost")
		if err != nil || len(got) != 1 {
			t.Fatalf("a third of the responses lost: %d instances, %v", len(got), err)
		}
	}
	if n := w.sim.LostCalls()["ec2.DescribeInstances"]; n <= 5 {
		t.Fatalf("no response lost at rate 0.3 (lost %d in all)", n)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// VerifyCredentials against the emulator (no STS there): a read signed
// with the configured key; a key the emulator does not know is
// ErrCredentialsRefused, an outage is not.
func TestVerifyCredentialsAgainstEmulator(t *testing.T) {
	w := newWorld(t, nil)
	id, err := w.client(t, nil).VerifyCredentials(ctx)
	if err != nil || id.Source == "" {
		t.Fatalf("accepted key: %+v %v", id, err)
	}
	_, err = w.client(t, func(c *aws.Config) { c.AccessKeyID = "AKIAUNKNOWNEXAMPLE01" }).VerifyCredentials(ctx)
	if !errors.Is(err, aws.ErrCredentialsRefused) || strings.Contains(err.Error(), cloudsim.DefaultAWSSecret) {
		t.Fatalf("unknown key: %v", err)
	}
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{{Op: "ec2.DescribeInstances", ErrorRate: 1, ErrorStatus: 503}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.client(t, nil).VerifyCredentials(ctx); err == nil || errors.Is(err, aws.ErrCredentialsRefused) || errors.Is(err, aws.ErrNoCredentials) {
		t.Fatalf("an outage must not read as refused credentials: %v", err)
	}
}
