package cloudsim

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// One account, several regions: each test drives real aws-sdk-go-v2 clients
// signed for different regions at the one endpoint and checks what landed
// where in the emulator's state.

const euWest1 = "eu-west-1"

// regionClients are SDK clients for one region of w.
func regionClients(t *testing.T, url, region string) (*ec2.Client, *ssm.Client) {
	t.Helper()
	return AWSTestClients(t, url, func(o *AWSTestOptions) { o.Region = region })
}

func multiRegionWorld(t *testing.T, cfg Config) *awsTestWorld {
	t.Helper()
	if cfg.Regions == nil {
		cfg.Regions = DefaultRegions()
	}
	return newAWSTestWorld(t, cfg)
}

// stateInstance finds id in State().Instances, as callers outside read it.
func stateInstance(t *testing.T, s *Sim, id string) map[string]any {
	t.Helper()
	for _, m := range s.State().Instances {
		if m["InstanceId"] == id {
			return m
		}
	}
	t.Fatalf("instance %s not in /_sim/state", id)
	return nil
}

func runOne(t *testing.T, ec *ec2.Client, in *ec2.RunInstancesInput) string {
	t.Helper()
	out, err := ec.RunInstances(context.Background(), in)
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	if len(out.Instances) != 1 {
		t.Fatalf("RunInstances: %d instances, want 1", len(out.Instances))
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

func TestRegionsClientTokenIsPerRegion(t *testing.T) {
	w := multiRegionWorld(t, Config{BootDelay: time.Second})
	eu, _ := regionClients(t, w.srv.URL, euWest1)

	usID := runOne(t, w.ec2, runInput("org-acme-gen-1", nil))
	euID := runOne(t, eu, runInput("org-acme-gen-1", nil))
	if usID == euID {
		t.Fatalf("the same ClientToken in two regions gave one instance %s, want two launches", usID)
	}
	// Within a region the token is still idempotent.
	if again := runOne(t, eu, runInput("org-acme-gen-1", nil)); again != euID {
		t.Fatalf("retry in %s launched %s, want the reservation's %s", euWest1, again, euID)
	}
	if n := len(w.sim.State().Instances); n != 2 {
		t.Fatalf("%d instances in the world, want 2 (one per region)", n)
	}
	if r := stateInstance(t, w.sim, usID)["Region"]; r != DefaultRegion {
		t.Fatalf("us instance Region %v", r)
	}
	eum := stateInstance(t, w.sim, euID)
	if eum["Region"] != euWest1 || eum["Placement"].(map[string]string)["AvailabilityZone"] != "eu-west-1a" {
		t.Fatalf("eu instance in state: Region %v Placement %v", eum["Region"], eum["Placement"])
	}

	// What the SDK sees: the placement and private DNS name of the region.
	out, err := eu.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{euID}})
	if err != nil {
		t.Fatal(err)
	}
	got := out.Reservations[0].Instances[0]
	if az := aws.ToString(got.Placement.AvailabilityZone); az != "eu-west-1a" {
		t.Fatalf("eu instance AvailabilityZone %q", az)
	}
	if dns := aws.ToString(got.PrivateDnsName); !strings.HasSuffix(dns, ".eu-west-1.compute.internal") {
		t.Fatalf("eu instance PrivateDnsName %q", dns)
	}
	if arn := w.sim.InstanceARN(euID); arn != "arn:aws:ec2:eu-west-1:"+awsAccountID+":instance/"+euID {
		t.Fatalf("eu instance ARN %s", arn)
	}
	if arn := w.sim.InstanceARN(usID); !strings.HasPrefix(arn, "arn:aws:ec2:us-east-1:") {
		t.Fatalf("us instance ARN %s", arn)
	}
}

func TestRegionsEC2SeesOnlyItsRegion(t *testing.T) {
	w := multiRegionWorld(t, Config{BootDelay: time.Second, ShutdownDelay: time.Second, TerminatedRetention: time.Hour})
	ctx := context.Background()
	eu, _ := regionClients(t, w.srv.URL, euWest1)
	usID := runOne(t, w.ec2, runInput("", map[string]string{"OrgID": "acme"}))
	w.clock.Advance(time.Second)

	out, err := eu.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Reservations) != 0 {
		t.Fatalf("DescribeInstances in %s shows %+v, want nothing of us-east-1", euWest1, out.Reservations)
	}
	_, err = eu.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{usID}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)
	_, err = eu.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{usID}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)
	_, err = eu.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{usID}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)
	_, err = eu.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: []string{usID}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)
	_, err = eu.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{usID}, Tags: []types.Tag{{Key: aws.String("OrgID"), Value: aws.String("evil")}}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)

	m := stateInstance(t, w.sim, usID)
	if st := m["State"].(map[string]any)["Name"]; st != "running" {
		t.Fatalf("after calls in the wrong region the instance is %v, want running", st)
	}
	if tags := m["Tags"].([]map[string]string); len(tags) != 1 || tags[0]["Value"] != "acme" {
		t.Fatalf("tags changed from another region: %v", tags)
	}
	// In its own region it terminates.
	if _, err := w.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{usID}}); err != nil {
		t.Fatalf("terminate in its region: %v", err)
	}
	if st := stateInstance(t, w.sim, usID)["State"].(map[string]any)["Name"]; st != "shutting-down" {
		t.Fatalf("after terminate in its region: %v", st)
	}
}

func TestRegionsSSMParametersAreIndependent(t *testing.T) {
	w := multiRegionWorld(t, Config{})
	ctx := context.Background()
	_, eu := regionClients(t, w.srv.URL, euWest1)
	_, ap := regionClients(t, w.srv.URL, "ap-southeast-2")
	const name = "/tunnelward/acme/tunnel-token"
	put := func(c *ssm.Client, v string) {
		t.Helper()
		if _, err := c.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Type: ssmtypes.ParameterTypeString, Value: aws.String(v)}); err != nil {
			t.Fatalf("PutParameter %s: %v", v, err)
		}
	}
	put(w.ssm, "us-value")
	put(eu, "eu-value") // not ParameterAlreadyExists: another region
	get := func(c *ssm.Client) (*ssmtypes.Parameter, error) {
		out, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
		if err != nil {
			return nil, err
		}
		return out.Parameter, nil
	}
	for c, want := range map[*ssm.Client][2]string{w.ssm: {"us-value", "us-east-1"}, eu: {"eu-value", euWest1}} {
		p, err := get(c)
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(p.Value) != want[0] || aws.ToString(p.ARN) != "arn:aws:ssm:"+want[1]+":"+awsAccountID+":parameter"+name {
			t.Fatalf("GetParameter in %s: %s %s", want[1], aws.ToString(p.Value), aws.ToString(p.ARN))
		}
	}
	_, err := get(ap)
	requireAPIError(t, err, "ParameterNotFound", http.StatusBadRequest)

	// Listing, tagging and deleting act in the request's region only.
	desc, err := eu.DescribeParameters(ctx, &ssm.DescribeParametersInput{})
	if err != nil || len(desc.Parameters) != 1 || !strings.Contains(aws.ToString(desc.Parameters[0].ARN), euWest1) {
		t.Fatalf("DescribeParameters in %s: %v %+v", euWest1, err, desc)
	}
	byPath, err := ap.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/tunnelward"), Recursive: aws.Bool(true)})
	if err != nil || len(byPath.Parameters) != 0 {
		t.Fatalf("GetParametersByPath in ap-southeast-2: %v %+v", err, byPath)
	}
	if _, err := eu.AddTagsToResource(ctx, &ssm.AddTagsToResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter,
		ResourceId: aws.String(name), Tags: []ssmtypes.Tag{{Key: aws.String("Where"), Value: aws.String("eu")}}}); err != nil {
		t.Fatal(err)
	}
	_, err = ap.ListTagsForResource(ctx, &ssm.ListTagsForResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String(name)})
	requireAPIError(t, err, "InvalidResourceId", http.StatusBadRequest)
	usTags, err := w.ssm.ListTagsForResource(ctx, &ssm.ListTagsForResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String(name)})
	if err != nil || len(usTags.TagList) != 0 {
		t.Fatalf("us parameter tags after tagging the eu one: %v %+v", err, usTags)
	}
	_, err = ap.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)})
	requireAPIError(t, err, "ParameterNotFound", http.StatusBadRequest)
	if _, err := eu.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)}); err != nil {
		t.Fatal(err)
	}

	// The state: the us parameter alone is left, with its region and ARN.
	ps := w.sim.State().Parameters
	if len(ps) != 1 || ps[0]["Region"] != DefaultRegion || ps[0]["Value"] != "us-value" ||
		ps[0]["ARN"] != "arn:aws:ssm:us-east-1:"+awsAccountID+":parameter"+name {
		t.Fatalf("parameters after deleting the eu one: %+v", ps)
	}
}

func TestRegionsRunCommandOnlyInTheInstancesRegion(t *testing.T) {
	w := multiRegionWorld(t, Config{BootDelay: time.Second})
	ctx := context.Background()
	eu, euSSM := regionClients(t, w.srv.URL, euWest1)
	id := runOne(t, eu, runInput("", nil))
	w.clock.Advance(time.Second)
	in := &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{id},
		Parameters: map[string][]string{"commands": {"systemctl is-active cloudflared"}}}
	_, err := w.ssm.SendCommand(ctx, in)
	requireAPIError(t, err, "InvalidInstanceId", http.StatusBadRequest)
	out, err := euSSM.SendCommand(ctx, in)
	if err != nil {
		t.Fatalf("SendCommand in the instance's region: %v", err)
	}
	w.clock.Advance(time.Second)
	get := &ssm.GetCommandInvocationInput{CommandId: out.Command.CommandId, InstanceId: aws.String(id)}
	_, err = w.ssm.GetCommandInvocation(ctx, get)
	requireAPIError(t, err, "InvocationDoesNotExist", http.StatusBadRequest)
	inv, err := euSSM.GetCommandInvocation(ctx, get)
	if err != nil || inv.Status == ssmtypes.CommandInvocationStatusPending || inv.Status == ssmtypes.CommandInvocationStatusInProgress {
		t.Fatalf("invocation in its region: %v %+v", err, inv)
	}
	w.sim.mu.Lock()
	n, region := len(w.sim.commands), w.sim.commands[aws.ToString(out.Command.CommandId)].Region
	w.sim.mu.Unlock()
	if n != 1 || region != euWest1 {
		t.Fatalf("%d commands recorded, region %q; want one in %s", n, region, euWest1)
	}
}

// A request signed for a region the account does not have is refused as
// AWS refuses a bad credential scope, and changes nothing.
func TestRegionsOutsideTheAccountRefused(t *testing.T) {
	w := multiRegionWorld(t, Config{})
	ctx := context.Background()
	sa, saSSM := regionClients(t, w.srv.URL, "sa-east-1")
	_, err := sa.RunInstances(ctx, runInput("", nil))
	requireAPIError(t, err, "SignatureDoesNotMatch", http.StatusForbidden)
	if !strings.Contains(err.Error(), "Credential should be scoped to a valid region, not 'sa-east-1'.") {
		t.Fatalf("refusal does not name the region: %v", err)
	}
	_, err = saSSM.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/x"), Type: ssmtypes.ParameterTypeString, Value: aws.String("v")})
	requireAPIError(t, err, "InvalidSignatureException", http.StatusBadRequest)
	st := w.sim.State()
	if len(st.Instances) != 0 || len(st.Parameters) != 0 {
		t.Fatalf("a refused request changed the world: %+v", st)
	}
	// Every region of the account is served.
	for _, r := range DefaultRegions() {
		ec, _ := regionClients(t, w.srv.URL, r)
		if _, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
			t.Errorf("DescribeInstances in %s: %v", r, err)
		}
	}
}

// AWS limits an account per region: exhausting one region's bucket leaves
// the others full.
func TestRegionsRateLimitBucketsArePerRegion(t *testing.T) {
	w := multiRegionWorld(t, Config{Limits: RateLimits{EC2Enabled: true, EC2Scale: 1, SSMEnabled: true, SSMReadTPS: 2}})
	ctx := context.Background()
	eu, euSSM := regionClients(t, w.srv.URL, euWest1)
	launch := func(c *ec2.Client) (ok int, err error) {
		for i := 0; i < 6; i++ {
			if _, err = c.RunInstances(ctx, runInput("", nil)); err != nil {
				return ok, err
			}
			ok++
		}
		return ok, nil
	}
	ok, err := launch(w.ec2)
	requireAPIError(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
	if ok != 5 {
		t.Fatalf("us-east-1: %d launches before throttling, want 5", ok)
	}
	ok, err = launch(eu)
	requireAPIError(t, err, "RequestLimitExceeded", http.StatusServiceUnavailable)
	if ok != 5 {
		t.Fatalf("eu-west-1 after us-east-1's bucket ran dry: %d launches, want its own burst of 5", ok)
	}
	if n := len(w.sim.State().Instances); n != 10 {
		t.Fatalf("%d instances, want 5 per region", n)
	}

	for _, c := range []*ssm.Client{w.ssm, euSSM} {
		if _, err := c.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/t/x"), Type: ssmtypes.ParameterTypeString, Value: aws.String("v")}); err != nil {
			t.Fatal(err)
		}
	}
	read := func(c *ssm.Client) error {
		_, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/t/x")})
		return err
	}
	for i := 0; i < 2; i++ {
		if err := read(w.ssm); err != nil {
			t.Fatalf("us read %d: %v", i, err)
		}
	}
	requireAPIError(t, read(w.ssm), "ThrottlingException", http.StatusBadRequest)
	if err := read(euSSM); err != nil {
		t.Fatalf("eu read while us-east-1 is throttled: %v", err)
	}
}

// The world: cloudflared reads its token in its instance's region. A token
// parameter in another region is not there for it (and the invariant
// checker says why); one in its own region connects the tunnel.
func TestRegionsConnectorReadsItsInstancesRegion(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.BootDelay, c.ConnectDelay, c.RetryInterval = time.Second, time.Second, 5*time.Second
	})
	ec, usSSM := AWSTestClients(t, e.srv.URL)
	euEC2, euSSM := regionClients(t, e.srv.URL, euWest1)
	tid := e.createTunnel("tw-acme")
	iid := e.runInstance(euEC2, "acme", tid, acmeParam)
	arn := e.sim.InstanceARN(iid)
	if !strings.Contains(arn, ":"+euWest1+":") {
		t.Fatalf("eu instance ARN %s", arn)
	}

	// The token in us-east-1, tagged for the eu instance: never read.
	e.putToken(usSSM, acmeParam, tid)
	e.tagParam(usSSM, acmeParam, arn)
	e.clock.Advance(20 * time.Second)
	c := e.connector(iid)
	if c.Connected || c.Region != euWest1 || !strings.Contains(c.LastError, "parameter does not exist") ||
		!strings.Contains(c.LastError, "arn:aws:ssm:eu-west-1:") {
		t.Fatalf("connector on an eu instance with the token in us-east-1: %+v", c)
	}
	if st := e.status(tid); st != "inactive" {
		t.Fatalf("tunnel: %s, want inactive", st)
	}
	v := e.sim.CheckInvariants([]string{"acme"})
	if len(v) != 1 || v[0].Kind != ViolationRegionMismatch || v[0].Org != "acme" || v[0].Resource != "instance:"+iid || v[0].Region != euWest1 {
		t.Fatalf("invariants with the token in the wrong region: %+v", v)
	}

	// The token in eu-west-1 too: the next retry reads it.
	e.putToken(euSSM, acmeParam, tid)
	e.tagParam(euSSM, acmeParam, arn)
	e.clock.Advance(6 * time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("with the token in the instance's region: %s (connector %+v)", st, e.connector(iid))
	}
	v = e.sim.CheckInvariants([]string{"acme"})
	if len(v) != 1 || v[0].Kind != ViolationDupParameter || v[0].Region != "" ||
		v[0].Resource != "parameter:"+acmeParam+","+acmeParam+"@"+euWest1 {
		t.Fatalf("invariants with a token parameter in each region: %+v", v)
	}

	// Out of band: delete the us-east-1 copy only.
	var res WorldResult
	status := postWorld(t, e, WorldAction{Action: "delete", Kind: "parameter", ID: acmeParam, Region: DefaultRegion}, &res)
	if status != http.StatusOK || len(res.Affected) != 1 || res.Affected[0] != "parameter:"+acmeParam {
		t.Fatalf("delete the us-east-1 parameter: %d %+v", status, res)
	}
	if v := e.sim.CheckInvariants([]string{"acme"}); len(v) != 0 {
		t.Fatalf("violations with one instance and its token in eu-west-1: %+v", v)
	}
	ps := e.sim.State().Parameters
	if len(ps) != 1 || ps[0]["Region"] != euWest1 {
		t.Fatalf("parameters after deleting the us-east-1 copy: %+v", ps)
	}
	// The us-east-1 side of the account saw nothing of it all.
	if out, err := ec.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{}); err != nil || len(out.Reservations) != 0 {
		t.Fatalf("us-east-1 DescribeInstances: %v %+v", err, out)
	}
}

func postWorld(t *testing.T, e *env, a WorldAction, out any) int {
	t.Helper()
	b, _ := json.Marshal(a)
	resp, err := e.srv.Client().Post(e.srv.URL+"/_sim/world", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func TestRegionsWorldActionsAndState(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BootDelay = time.Second })
	_, usSSM := AWSTestClients(t, e.srv.URL)
	euEC2, euSSM := regionClients(t, e.srv.URL, euWest1)
	usEC2, _ := AWSTestClients(t, e.srv.URL)
	usID := e.runInstance(usEC2, "acme", "", acmeParam)
	euID := e.runInstance(euEC2, "acme", "", acmeParam)
	e.clock.Advance(time.Second)
	for _, c := range []*ssm.Client{usSSM, euSSM} {
		if _, err := c.PutParameter(context.Background(), &ssm.PutParameterInput{Name: aws.String(acmeParam),
			Type: ssmtypes.ParameterTypeSecureString, Value: aws.String("not-a-token")}); err != nil {
			t.Fatal(err)
		}
	}

	// /_sim/state over HTTP: the account's regions, a Region on each instance and parameter.
	resp, err := e.srv.Client().Get(e.srv.URL + "/_sim/state")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Regions    []string
		Instances  []struct{ InstanceId, Region string }
		Parameters []struct{ Name, Region, ARN string }
		Connectors []struct {
			InstanceID string `json:"instance_id"`
			Region     string `json:"region"`
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(st.Regions, ",") != strings.Join(DefaultRegions(), ",") {
		t.Fatalf("state regions %v", st.Regions)
	}
	regionOf := map[string]string{}
	for _, i := range st.Instances {
		regionOf[i.InstanceId] = i.Region
	}
	for _, c := range st.Connectors {
		if c.Region != regionOf[c.InstanceID] {
			t.Fatalf("connector of %s in %q, its instance in %q", c.InstanceID, c.Region, regionOf[c.InstanceID])
		}
	}
	if regionOf[usID] != DefaultRegion || regionOf[euID] != euWest1 || len(st.Connectors) != 2 {
		t.Fatalf("state instances %+v connectors %+v", st.Instances, st.Connectors)
	}
	if len(st.Parameters) != 2 || st.Parameters[0].Region != DefaultRegion || st.Parameters[1].Region != euWest1 ||
		!strings.Contains(st.Parameters[1].ARN, ":eu-west-1:") {
		t.Fatalf("state parameters %+v", st.Parameters)
	}

	// Two live instances in two regions are one duplicate.
	v := e.sim.CheckInvariants(nil)
	kinds := map[string]int{}
	for _, x := range v {
		kinds[x.Kind]++
	}
	if kinds[ViolationDupInstance] != 1 || kinds[ViolationDupParameter] != 1 {
		t.Fatalf("invariants with an instance and a parameter per region: %+v", v)
	}
	// Orphans are found in every region, the eu parameter named with its region.
	orphans := map[string]string{}
	for _, x := range e.sim.CheckInvariants([]string{}) {
		if x.Kind == ViolationOrphan {
			orphans[x.Resource] = x.Region
		}
	}
	if orphans["instance:"+euID] != euWest1 || orphans["instance:"+usID] != DefaultRegion ||
		orphans["parameter:"+acmeParam+"@"+euWest1] != euWest1 || orphans["parameter:"+acmeParam] != DefaultRegion {
		t.Fatalf("orphans: %v", orphans)
	}

	// A region restricts an org target; a region outside the account or on a
	// Cloudflare resource is refused.
	var res WorldResult
	if st := postWorld(t, e, WorldAction{Action: "stop_instance", Org: "acme", Region: euWest1}, &res); st != http.StatusOK ||
		len(res.Affected) != 1 || res.Affected[0] != "instance:"+euID {
		t.Fatalf("stop_instance org=acme region=%s: %d %+v", euWest1, st, res)
	}
	if got := stateInstance(t, e.sim, usID)["State"].(map[string]any)["Name"]; got != "running" {
		t.Fatalf("the us instance was touched: %v", got)
	}
	var bad map[string]string
	if st := postWorld(t, e, WorldAction{Action: "kill_connector", Org: "acme", Region: "sa-east-1"}, &bad); st != http.StatusBadRequest ||
		!strings.Contains(bad["error"], "sa-east-1") {
		t.Fatalf("unknown region: %d %v", st, bad)
	}
	if st := postWorld(t, e, WorldAction{Action: "delete", Kind: "tunnel", Org: "acme", Region: euWest1}, &bad); st != http.StatusBadRequest ||
		!strings.Contains(bad["error"], "instances and parameters only") {
		t.Fatalf("region on a tunnel: %d %v", st, bad)
	}
	// Without a region, delete acts on every match.
	res = WorldResult{}
	if st := postWorld(t, e, WorldAction{Action: "delete", Kind: "parameter", ID: acmeParam}, &res); st != http.StatusOK ||
		strings.Join(res.Affected, " ") != "parameter:"+acmeParam+" parameter:"+acmeParam+"@"+euWest1 {
		t.Fatalf("delete parameter in every region: %d %+v", st, res)
	}
	if n := len(e.sim.State().Parameters); n != 0 {
		t.Fatalf("%d parameters left", n)
	}
}

func TestRegionsConfigNormaliseAndValidate(t *testing.T) {
	s := New(Config{})
	if s.Config().Region != DefaultRegion || strings.Join(s.Regions(), ",") != DefaultRegion {
		t.Fatalf("zero Config: region %q regions %v", s.Config().Region, s.Regions())
	}
	// A home region outside the list joins it, first; blanks and repeats go.
	s = New(Config{Region: "sa-east-1", Regions: []string{"eu-west-1", "", "eu-west-1", "us-east-1"}})
	if got := strings.Join(s.Regions(), ","); got != "sa-east-1,eu-west-1,us-east-1" {
		t.Fatalf("normalised regions %s", got)
	}
	d := DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	for _, want := range []string{"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"} {
		if !strings.Contains(","+strings.Join(d.Regions, ",")+",", ","+want+",") {
			t.Errorf("DefaultConfig regions %v lack %s", d.Regions, want)
		}
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Region: "us-east-1", Regions: []string{"eu-west-1"}}, "not one of regions"},
		{Config{Region: "US-EAST-1"}, "not an AWS region"},
		{Config{Regions: []string{"eu-west-1", "eu-west-1"}}, "twice"},
		{Config{Regions: []string{"eu-west"}}, `"eu-west"`},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate %+v: %v, want an error naming %q", tc.cfg.Regions, err, tc.want)
		}
	}
}
