package cloudsim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

const acmeParam = "/tunnelward/acme/tunnel-token"

func userDataFor(param string) *string {
	script := "#!/bin/bash\nset -euo pipefail\nTUNNEL_TOKEN_PARAMETER='" + param + "'\n"
	return aws.String(base64.StdEncoding.EncodeToString([]byte(script)))
}

func (e *env) runInstance(ec *ec2.Client, org, tunnelID, param string) string {
	e.t.Helper()
	out, err := ec.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), UserData: userDataFor(param),
		IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("tunnelward-instance")},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{
			{Key: aws.String("ManagedBy"), Value: aws.String("tunnelward")},
			{Key: aws.String("OrgID"), Value: aws.String(org)},
			{Key: aws.String("TunnelID"), Value: aws.String(tunnelID)},
		}}},
	})
	if err != nil {
		e.t.Fatalf("run instance for %s: %v", org, err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

func (e *env) putToken(sc *ssm.Client, name, tunnelID string) {
	e.t.Helper()
	var tp zero_trust.TunnelCloudflaredTokenGetParams
	set(&tp.AccountID, e.acct)
	tok, err := e.tun.Token.Get(context.Background(), tunnelID, tp)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := sc.PutParameter(context.Background(), &ssm.PutParameterInput{
		Name: aws.String(name), Type: ssmtypes.ParameterTypeSecureString, Value: tok, Overwrite: aws.Bool(true),
	}); err != nil {
		e.t.Fatalf("put parameter %s: %v", name, err)
	}
}

// instanceARNOf builds the instance's ARN from what DescribeInstances
// reports (the reservation's ownerId) and the region, as tunnelward's EC2
// client does: the emulator's policy must accept exactly that.
func (e *env) instanceARNOf(ec *ec2.Client, iid string) string {
	e.t.Helper()
	out, err := ec.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{iid}})
	if err != nil || len(out.Reservations) != 1 || aws.ToString(out.Reservations[0].OwnerId) == "" {
		e.t.Fatalf("describe %s for its owner: %v %+v", iid, err, out)
	}
	return "arn:aws:ec2:" + e.sim.Config().Region + ":" + aws.ToString(out.Reservations[0].OwnerId) + ":instance/" + iid
}

// tagFor tags parameter name InstanceArn=<iid's ARN>, as the reconciler
// does after a launch, so the instance role may read it.
func (e *env) tagFor(ec *ec2.Client, sc *ssm.Client, name, iid string) {
	e.t.Helper()
	e.tagParam(sc, name, e.instanceARNOf(ec, iid))
}

func (e *env) tagParam(sc *ssm.Client, name, arn string) {
	e.t.Helper()
	if _, err := sc.AddTagsToResource(context.Background(), &ssm.AddTagsToResourceInput{
		ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String(name),
		Tags: []ssmtypes.Tag{{Key: aws.String(TagInstanceArn), Value: aws.String(arn)}},
	}); err != nil {
		e.t.Fatalf("tag parameter %s: %v", name, err)
	}
}

// status reads the tunnel status through the SDK, as a poller would.
func (e *env) status(id string) string {
	e.t.Helper()
	st, err := e.getTunnel(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) world(a WorldAction) {
	e.t.Helper()
	b, _ := json.Marshal(a)
	res, err := e.srv.Client().Post(e.srv.URL+"/_sim/world", "application/json", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		var m map[string]string
		_ = json.NewDecoder(res.Body).Decode(&m)
		e.t.Fatalf("world %s: %d %s", a.Action, res.StatusCode, m["error"])
	}
}

func (e *env) connector(instanceID string) ConnectorState {
	for _, c := range e.sim.State().Connectors {
		if c.InstanceID == instanceID {
			return c
		}
	}
	return ConnectorState{}
}

// The world end to end: put the token parameter, run an instance whose
// user-data names it, the tunnel becomes healthy; kill the connector, the
// tunnel goes down; restart cloudflared through SendCommand, healthy again.
func TestWorldEndToEnd(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.BootDelay, c.ConnectDelay, c.RetryInterval = 20*time.Second, 3*time.Second, 5*time.Second
	})
	ec, sc := AWSTestClients(t, e.srv.URL)
	ctx := context.Background()

	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)
	e.tagFor(ec, sc, acmeParam, iid)

	if st := e.status(tid); st != "inactive" {
		t.Fatalf("before boot: %s", st)
	}
	e.clock.Advance(20 * time.Second) // booted; cloudflared read the token
	if st := e.status(tid); st != "inactive" {
		t.Fatalf("before ConnectDelay: %s", st)
	}
	e.clock.Advance(3 * time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("after boot + connect delay: %s (connector %+v)", st, e.connector(iid))
	}
	var cg zero_trust.TunnelCloudflaredConnectionGetParams
	set(&cg.AccountID, e.acct)
	conns, err := e.tun.Connections.Get(ctx, tid, cg)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns.Result) != 1 || len(conns.Result[0].Conns) != 4 || conns.Result[0].ID != e.connector(iid).ClientID {
		t.Fatalf("connections: %+v", conns.Result)
	}
	var gp zero_trust.TunnelCloudflaredGetParams
	set(&gp.AccountID, e.acct)
	tun, _ := e.tun.Get(ctx, tid, gp)
	if tun.ConnsActiveAt.IsZero() || !tun.ConnsInactiveAt.IsZero() {
		t.Fatalf("healthy tunnel times: active %v inactive %v", tun.ConnsActiveAt, tun.ConnsInactiveAt)
	}

	// A connected tunnel cannot be deleted.
	var dp zero_trust.TunnelCloudflaredDeleteParams
	set(&dp.AccountID, e.acct)
	_, err = e.tun.Delete(ctx, tid, dp)
	wantCFError(t, err, http.StatusBadRequest, 1022)

	// Kill the connector: down, with conns_inactive_at.
	e.clock.Advance(time.Minute)
	e.world(WorldAction{Action: "kill_connector", Org: "acme"})
	if st := e.status(tid); st != "down" {
		t.Fatalf("after kill: %s", st)
	}
	tun, _ = e.tun.Get(ctx, tid, gp)
	if tun.ConnsInactiveAt.IsZero() {
		t.Fatal("down tunnel has no conns_inactive_at")
	}
	e.clock.Advance(time.Hour)
	if st := e.status(tid); st != "down" {
		t.Fatalf("a killed connector came back by itself: %s", st)
	}

	// Remediation: restart through SSM, then read /ready back.
	cmd, err := sc.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{iid},
		Parameters: map[string][]string{"commands": {"systemctl restart cloudflared"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var inv *ssm.GetCommandInvocationOutput
	for i := 0; i < 20; i++ {
		e.clock.Advance(time.Second)
		inv, err = sc.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: cmd.Command.CommandId, InstanceId: aws.String(iid)})
		if err == nil && inv.Status == ssmtypes.CommandInvocationStatusSuccess {
			break
		}
	}
	if inv == nil || inv.Status != ssmtypes.CommandInvocationStatusSuccess {
		t.Fatalf("restart command did not succeed: %v %+v", err, inv)
	}
	e.clock.Advance(3 * time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("after restart via SendCommand: %s (connector %+v)", st, e.connector(iid))
	}
	ready, err := sc.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{iid},
		Parameters: map[string][]string{"commands": {"curl -fsS http://127.0.0.1:20241/ready"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		e.clock.Advance(time.Second)
		inv, err = sc.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: ready.Command.CommandId, InstanceId: aws.String(iid)})
		if err == nil && inv.Status == ssmtypes.CommandInvocationStatusSuccess {
			break
		}
	}
	if err != nil || !strings.Contains(aws.ToString(inv.StandardOutputContent), `"readyConnections":4`) {
		t.Fatalf("ready output: %v %q", err, aws.ToString(inv.StandardOutputContent))
	}

	// Stopping the instance takes the tunnel down; so does terminating.
	e.world(WorldAction{Action: "stop_instance", ID: iid})
	if st := e.status(tid); st != "down" {
		t.Fatalf("after stop: %s", st)
	}
	// The world is clean for org acme: one tunnel, one instance, token only in SSM.
	if v := e.sim.CheckInvariants([]string{"acme"}); len(v) != 0 {
		t.Fatalf("violations in a clean world: %+v", v)
	}
}

// A token written after the instance booted is still picked up: the
// connector retries every RetryInterval and records why it could not connect.
// Under the instance role's tag policy a missing parameter is denied, as
// AWS evaluates the policy before it looks the parameter up.
func TestWorldLateTokenAndBadToken(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.BootDelay, c.ConnectDelay, c.RetryInterval = time.Second, time.Second, 5*time.Second
	})
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-late")
	iid := e.runInstance(ec, "late", tid, "/tunnelward/late/tunnel-token")
	e.clock.Advance(10 * time.Second)
	if st := e.status(tid); st != "inactive" {
		t.Fatalf("without a parameter: %s", st)
	}
	if c := e.connector(iid); !strings.Contains(c.LastError, "AccessDeniedException") || c.Attempts < 2 {
		t.Fatalf("connector without parameter: %+v", c)
	}

	// A parameter that holds no valid token (tagged for this instance at
	// creation): still refused.
	if _, err := sc.PutParameter(context.Background(), &ssm.PutParameterInput{
		Name: aws.String("/tunnelward/late/tunnel-token"), Type: ssmtypes.ParameterTypeSecureString, Value: aws.String("bm90LWEtdG9rZW4="),
		Tags: []ssmtypes.Tag{{Key: aws.String(TagInstanceArn), Value: aws.String(e.instanceARNOf(ec, iid))}},
	}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(5 * time.Second)
	if c := e.connector(iid); !strings.Contains(c.LastError, "does not hold a tunnel token") {
		t.Fatalf("connector with a bad token: %+v", c)
	}
	e.putToken(sc, "/tunnelward/late/tunnel-token", tid)
	e.clock.Advance(5 * time.Second) // next retry reads it
	e.clock.Advance(time.Second)     // connect delay
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("after the late token: %s (connector %+v)", st, e.connector(iid))
	}

	// DELETE connections drops them; the running cloudflared dials again.
	var dc zero_trust.TunnelCloudflaredConnectionDeleteParams
	set(&dc.AccountID, e.acct)
	if _, err := e.tun.Connections.Delete(context.Background(), tid, dc); err != nil {
		t.Fatal(err)
	}
	if st := e.status(tid); st != "down" {
		t.Fatalf("right after DELETE connections: %s", st)
	}
	e.clock.Advance(time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("cloudflared did not reconnect: %s", st)
	}

	// Half the edge connections lost: degraded, until cloudflared restarts.
	e.world(WorldAction{Action: "degrade_connector", ID: iid})
	if st := e.status(tid); st != "degraded" {
		t.Fatalf("after degrade_connector: %s", st)
	}
	e.world(WorldAction{Action: "restart_connector", Org: "late"})
	e.clock.Advance(time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("after restart_connector: %s", st)
	}

	// Terminate the instance, clean the connections: now the tunnel can go.
	e.world(WorldAction{Action: "terminate_instance", Org: "late"})
	if st := e.status(tid); st != "down" {
		t.Fatalf("after terminate: %s", st)
	}
	var dp zero_trust.TunnelCloudflaredDeleteParams
	set(&dp.AccountID, e.acct)
	if _, err := e.tun.Delete(context.Background(), tid, dp); err != nil {
		t.Fatalf("delete a tunnel with no connections: %v", err)
	}
}

func TestShellScriptUnderstoodCommands(t *testing.T) {
	s := New(Config{ConnectDelay: time.Second})
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := &Instance{ID: "i-0", State: "running"}
	s.instances[inst.ID] = inst
	out, code := s.runShellScript(inst, []string{"systemctl is-active cloudflared"})
	if out != "inactive\n" || code != 3 {
		t.Fatalf("is-active of a never-started cloudflared: %q %d", out, code)
	}
	out, code = s.runShellScript(inst, []string{"echo hello; uname -a"})
	if out != "" || code != 0 {
		t.Fatalf("unknown commands: %q %d", out, code)
	}
	out, code = s.runShellScript(inst, []string{"systemctl restart cloudflared && curl -fsS http://127.0.0.1:20241/ready"})
	if code != 22 || !strings.Contains(out, `"status":503`) {
		t.Fatalf("ready right after restart (no token): %q %d", out, code)
	}
}

// Time in the world advances lazily, but the world must not depend on when
// someone looks: a restart that nobody observes for a minute connected
// ConnectDelay after the command ran, not ConnectDelay after the next request.
func TestWorldLazyTimeIsEventTime(t *testing.T) {
	// BootDelay 1s leaves room to tag the parameter before cloudflared's
	// first read (tagging is itself a request, and a request ticks first).
	e := newEnv(t, func(c *Config) { c.BootDelay, c.ConnectDelay = time.Second, 3*time.Second })
	ec, sc := AWSTestClients(t, e.srv.URL)
	ctx := context.Background()
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)
	e.tagFor(ec, sc, acmeParam, iid)
	e.clock.Advance(4 * time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("after boot + connect: %s", st)
	}
	e.world(WorldAction{Action: "kill_connector", Org: "acme"})
	sent := e.clock.Now()
	if _, err := sc.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{iid},
		Parameters: map[string][]string{"commands": {"systemctl restart cloudflared"}},
	}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute) // nobody looks meanwhile
	c := e.connector(iid)
	if !c.Connected {
		t.Fatalf("a minute after the restart the connector is not connected: %+v", c)
	}
	want := sent.Add(ssmCommandRunDelay + 3*time.Second)
	if c.ConnectedAt == nil || !c.ConnectedAt.Equal(want) {
		t.Fatalf("connected at %v, want %v (command time + run delay + ConnectDelay)", c.ConnectedAt, want)
	}
}

// A broken connector stays down through every restart, SSM or world, and a
// fresh instance on the same tunnel connects: restarts cannot cure it,
// replacement can.
func TestWorldBrokenConnectorNeedsNewInstance(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BootDelay, c.ConnectDelay = time.Second, time.Second })
	ec, sc := AWSTestClients(t, e.srv.URL)
	ctx := context.Background()
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)
	e.tagFor(ec, sc, acmeParam, iid)
	e.clock.Advance(3 * time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("after boot + connect: %s", st)
	}
	e.world(WorldAction{Action: "break_connector", Org: "acme"})
	if st := e.status(tid); st != "down" {
		t.Fatalf("after break_connector: %s", st)
	}
	out, err := sc.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{iid},
		Parameters: map[string][]string{"commands": {"systemctl restart cloudflared"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.world(WorldAction{Action: "restart_connector", ID: iid})
	e.clock.Advance(time.Minute)
	if st := e.status(tid); st != "down" {
		t.Fatalf("a broken connector came back after restarts (command %s): %s", *out.Command.CommandId, st)
	}
	c := e.connector(iid)
	if c.Running || !c.Broken || !strings.Contains(c.LastError, "broken") {
		t.Fatalf("broken connector state: %+v", c)
	}
	// A replacement instance has its own, healthy cloudflared.
	e.world(WorldAction{Action: "terminate_instance", ID: iid})
	iid2 := e.runInstance(ec, "acme", tid, acmeParam)
	e.tagFor(ec, sc, acmeParam, iid2)
	e.clock.Advance(3 * time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("replacement instance: %s (connector %+v)", st, e.connector(iid2))
	}
}
