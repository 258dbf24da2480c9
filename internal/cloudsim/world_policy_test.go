package cloudsim

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// Under Config.InstanceRoleTagPolicy (on in DefaultConfig) the simulated
// cloudflared may read only the parameter tagged InstanceArn=<its own
// instance ARN>, as deploy/iam/instance-role-policy.json allows. These tests
// run the world on a fake clock: boot 1s, connect 1s, retry every 5s.
func policyEnv(t *testing.T, policy bool) *env {
	return newEnv(t, func(c *Config) {
		c.BootDelay, c.ConnectDelay, c.RetryInterval = time.Second, time.Second, 5*time.Second
		c.InstanceRoleTagPolicy = policy
	})
}

func TestDefaultConfigEnforcesInstanceRoleTagPolicy(t *testing.T) {
	if !DefaultConfig().InstanceRoleTagPolicy {
		t.Fatal("DefaultConfig: InstanceRoleTagPolicy off; the sandbox must behave like the deployed policy")
	}
}

// An untagged parameter keeps the instance out for good: the connector
// retries every RetryInterval and says it was denied; the tunnel never
// connects.
func TestPolicyUntaggedParameterIsDenied(t *testing.T) {
	e := policyEnv(t, true)
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)

	e.clock.Advance(time.Second) // booted: first read
	first := e.connector(iid)
	if !strings.Contains(first.LastError, "AccessDeniedException") || !strings.Contains(first.LastError, "no InstanceArn tag") {
		t.Fatalf("untagged parameter, first read: %+v", first)
	}
	e.clock.Advance(10 * time.Minute)
	c := e.connector(iid)
	if c.Connected || !c.Running || !strings.Contains(c.LastError, "AccessDeniedException") {
		t.Fatalf("untagged parameter after 10 min: %+v", c)
	}
	// 10 minutes at one read every 5 s: it kept retrying, it did not give up.
	if c.Attempts < 100 {
		t.Fatalf("connector tried %d times in 10 min, want one read every 5 s", c.Attempts)
	}
	if !strings.Contains(c.LastError, e.instanceARNOf(ec, iid)) {
		t.Errorf("the denial does not name the ARN the policy wants: %s", c.LastError)
	}
	if st := e.status(tid); st != "inactive" {
		t.Fatalf("tunnel with an untagged token parameter: %s, want inactive", st)
	}
	// The error names the parameter, never its value (the token).
	e.sim.mu.Lock()
	tok := e.sim.params[paramKey{DefaultRegion, acmeParam}].Value
	e.sim.mu.Unlock()
	if strings.Contains(c.LastError, tok) {
		t.Fatal("the denial leaks the token")
	}
}

// A parameter tagged for another instance (a replacement launched before
// the reconciler re-tagged, or a copy-paste) is denied; the other instance,
// the one it names, reads it.
func TestPolicyParameterTaggedForAnotherInstanceIsDenied(t *testing.T) {
	e := policyEnv(t, true)
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	first := e.runInstance(ec, "acme", tid, acmeParam)
	second := e.runInstance(ec, "acme", tid, acmeParam)
	e.tagFor(ec, sc, acmeParam, first)

	e.clock.Advance(20 * time.Second)
	c := e.connector(second)
	if c.Connected || !strings.Contains(c.LastError, "AccessDeniedException") ||
		!strings.Contains(c.LastError, "tagged InstanceArn="+e.instanceARNOf(ec, first)) {
		t.Fatalf("instance %s read the parameter tagged for %s: %+v", second, first, c)
	}
	if c := e.connector(first); !c.Connected {
		t.Fatalf("the instance the tag names did not connect: %+v", c)
	}

	// A tag with the right instance id but another account or region is
	// not the instance's ARN either.
	e.tagParam(sc, acmeParam, "arn:aws:ec2:eu-west-1:123456789012:instance/"+second)
	e.clock.Advance(5 * time.Second)
	if c := e.connector(second); c.Connected || !strings.Contains(c.LastError, "AccessDeniedException") {
		t.Fatalf("a tag naming another region let %s in: %+v", second, c)
	}
}

// Tagging later lets the instance in on its next retry: the read after the
// tag succeeds, and the tunnel is up ConnectDelay after it.
func TestPolicyTaggingLaterConnectsOnNextRetry(t *testing.T) {
	e := policyEnv(t, true)
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)

	e.clock.Advance(time.Second + 5*time.Second + 2*time.Second) // reads at 1s and 6s denied
	before := e.connector(iid)
	if before.Connected || before.Attempts != 2 || !strings.Contains(before.LastError, "AccessDeniedException") {
		t.Fatalf("before the tag: %+v", before)
	}
	e.tagFor(ec, sc, acmeParam, iid)                  // at 8s
	e.clock.Advance(4*time.Second - time.Millisecond) // 11.999s
	if st := e.status(tid); st != "inactive" {
		t.Fatalf("connected before the next retry (11s) plus ConnectDelay: %s", st)
	}
	e.clock.Advance(time.Millisecond) // 12s: read at 11s, connected at 12s
	c := e.connector(iid)
	if st := e.status(tid); st != "healthy" || !c.Connected || c.Attempts != 3 || c.LastError != "" {
		t.Fatalf("after tagging, next retry: status %s connector %+v", st, c)
	}
	if v := e.sim.CheckInvariants([]string{"acme"}); len(v) != 0 {
		t.Fatalf("violations: %+v", v)
	}
}

// The policy also covers a parameter created with the tag (PutParameter
// Tags) and survives a value overwrite (tags stay with the parameter).
func TestPolicyTagAtCreationAndOverwrite(t *testing.T) {
	e := policyEnv(t, true)
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-acme")
	iid := e.runInstance(ec, "acme", tid, acmeParam)
	if _, err := sc.PutParameter(context.Background(), &ssm.PutParameterInput{
		Name: aws.String(acmeParam), Type: ssmtypes.ParameterTypeSecureString, Value: aws.String("bm90LWEtdG9rZW4="),
		Tags: []ssmtypes.Tag{{Key: aws.String(TagInstanceArn), Value: aws.String(e.instanceARNOf(ec, iid))}},
	}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	if c := e.connector(iid); !strings.Contains(c.LastError, "does not hold a tunnel token") {
		t.Fatalf("tagged at creation, bad value: want past the policy to the token check, got %+v", c)
	}
	e.putToken(sc, acmeParam, tid) // Overwrite: keeps the tag
	e.clock.Advance(5*time.Second + time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("after overwriting the value: %s (connector %+v)", st, e.connector(iid))
	}
}

// With the switch off the world is lenient, as before the policy existed:
// any instance with an instance profile reads any parameter.
func TestPolicyOffIsLenient(t *testing.T) {
	e := policyEnv(t, false)
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)
	e.clock.Advance(2 * time.Second)
	if st := e.status(tid); st != "healthy" {
		t.Fatalf("policy off, untagged parameter: %s (connector %+v)", st, e.connector(iid))
	}
}

// /_sim/state shows the denial on the connector, so an operator of the
// sandbox sees why an instance never connected.
func TestPolicyDenialInSimState(t *testing.T) {
	e := policyEnv(t, true)
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)
	e.clock.Advance(2 * time.Second)
	res, err := e.srv.Client().Get(e.srv.URL + "/_sim/state")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var st struct {
		Connectors []ConnectorState `json:"connectors"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("/_sim/state: %v: %s", err, b)
	}
	if len(st.Connectors) != 1 || st.Connectors[0].InstanceID != iid || !strings.Contains(st.Connectors[0].LastError, "AccessDeniedException") {
		t.Fatalf("/_sim/state connectors: %+v", st.Connectors)
	}
}
