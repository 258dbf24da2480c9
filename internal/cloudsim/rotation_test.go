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
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/cloudflare/cloudflare-go/v7/shared"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

// Token rotation (issue 16) as Cloudflare documents it: PATCH cfd_tunnel/{id}
// with a new tunnel_secret, after which cloudflared can no longer open new
// connections with the old token while connectors already running keep
// theirs.

// rotationDelays: a boot and a connect of a second each, retries every 5 s.
func rotationDelays(c *Config) {
	c.BootDelay, c.ConnectDelay, c.RetryInterval = time.Second, time.Second, 5*time.Second
}

// newSecret is a tunnel secret of n bytes (fill b), base64 as cloudflared
// and `openssl rand -base64 32` write it.
func newSecret(b byte, n int) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, n))
}

// rotate edits the tunnel's secret through the SDK, as the reconciler would.
func (e *env) rotate(tid, secret string) (*shared.CloudflareTunnel, error) {
	var p zero_trust.TunnelCloudflaredEditParams
	set(&p.AccountID, e.acct)
	set(&p.TunnelSecret, secret)
	return e.tun.Edit(context.Background(), tid, p)
}

func (e *env) token(tid string) string {
	e.t.Helper()
	var p zero_trust.TunnelCloudflaredTokenGetParams
	set(&p.AccountID, e.acct)
	tok, err := e.tun.Token.Get(context.Background(), tid, p)
	if err != nil {
		e.t.Fatalf("token of %s: %v", tid, err)
	}
	return *tok
}

// connectorIDs lists the tunnel's connectors as GET .../connections shows
// them (their client ids), each with how many connections it holds.
func (e *env) connectorIDs(tid string) map[string]int {
	e.t.Helper()
	var p zero_trust.TunnelCloudflaredConnectionGetParams
	set(&p.AccountID, e.acct)
	res, err := e.tun.Connections.Get(context.Background(), tid, p)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]int{}
	for _, c := range res.Result {
		out[c.ID] = len(c.Conns)
	}
	return out
}

func (e *env) deleteConns(tid, clientID string) {
	e.t.Helper()
	var p zero_trust.TunnelCloudflaredConnectionDeleteParams
	set(&p.AccountID, e.acct)
	if clientID != "" {
		set(&p.ClientID, clientID)
	}
	if _, err := e.tun.Connections.Delete(context.Background(), tid, p); err != nil {
		e.t.Fatalf("delete connections of %s (client %q): %v", tid, clientID, err)
	}
}

// shell runs commands on iid through SSM Run Command and waits (on the
// world's clock) for its success.
func (e *env) shell(sc *ssm.Client, iid string, commands ...string) {
	e.t.Helper()
	ctx := context.Background()
	out, err := sc.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{iid},
		Parameters: map[string][]string{"commands": commands},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.clock.Advance(ssmCommandRunDelay)
	inv, err := sc.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: out.Command.CommandId, InstanceId: aws.String(iid)})
	if err != nil || inv.Status != ssmtypes.CommandInvocationStatusSuccess {
		e.t.Fatalf("%v on %s: %v %+v", commands, iid, err, inv)
	}
}

func (e *env) wantStatus(tid, want, when string) {
	e.t.Helper()
	if st := e.status(tid); st != want {
		e.t.Fatalf("%s: tunnel %s, want %s (connectors %+v)", when, st, want, e.sim.Connectors(tid))
	}
}

func sameKeys(m map[string]int, ids ...string) bool {
	if len(m) != len(ids) {
		return false
	}
	for _, id := range ids {
		if m[id] != connsPerConnector {
			return false
		}
	}
	return true
}

// Rotation end to end, with two connectors on one tunnel (instances a and b,
// each reading its own parameter): the new secret changes the token, old
// connections stay, the old token opens nothing new, a cloudflared
// restarted on the new token is a new connector, and deleting one
// connector's connections by client_id drops only those; the tunnel stays
// healthy throughout.
func TestRotationTwoConnectors(t *testing.T) {
	e := newEnv(t, rotationDelays)
	ec, sc := AWSTestClients(t, e.srv.URL)
	const paramB = "/tunnelward/acme-b/tunnel-token"
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	e.putToken(sc, paramB, tid)
	a := e.runInstance(ec, "acme", tid, acmeParam)
	b := e.runInstance(ec, "acme-b", tid, paramB)
	e.tagFor(ec, sc, acmeParam, a)
	e.tagFor(ec, sc, paramB, b)
	e.clock.Advance(2 * time.Second)
	e.wantStatus(tid, "healthy", "two connectors up")
	a0, b0 := e.connector(a), e.connector(b)
	if !a0.Current || !b0.Current || a0.TokenGeneration != 0 || a0.ClientID == b0.ClientID {
		t.Fatalf("before rotation: %+v %+v", a0, b0)
	}
	oldTok := e.token(tid)

	// Refused secrets change nothing.
	for _, bad := range []string{newSecret(7, 31), "not base64!", ""} {
		_, err := e.rotate(tid, bad)
		wantCFError(t, err, http.StatusBadRequest, 1001)
	}
	if e.token(tid) != oldTok {
		t.Fatal("a refused tunnel_secret changed the token")
	}

	// Rotate.
	secret := newSecret(1, 32)
	tun, err := e.rotate(tid, secret)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if tun.ID != tid || tun.Name != "tw-acme" || tun.Status != "healthy" {
		t.Fatalf("PATCH answer: %+v", tun)
	}
	newTok := e.token(tid)
	built, _ := json.Marshal(struct { // the token's fields, in Cloudflare's order
		A string `json:"a"`
		T string `json:"t"`
		S string `json:"s"`
	}{e.acct, tid, secret})
	if newTok == oldTok || newTok != base64.StdEncoding.EncodeToString(built) {
		t.Fatalf("token after rotation: %q (old %q, built from the secret %q)", newTok, oldTok, base64.StdEncoding.EncodeToString(built))
	}
	// The same secret again is no rotation.
	if _, err := e.rotate(tid, secret); err != nil || e.token(tid) != newTok {
		t.Fatalf("PATCH with the current secret: %v", err)
	}

	// Connections opened with the old token stay.
	e.clock.Advance(time.Minute)
	e.wantStatus(tid, "healthy", "after rotation")
	if ids := e.connectorIDs(tid); !sameKeys(ids, a0.ClientID, b0.ClientID) {
		t.Fatalf("connections after rotation: %v", ids)
	}
	for _, c := range e.sim.Connectors(tid) {
		if !c.Connected || c.Current || c.TokenGeneration != 0 {
			t.Fatalf("connector after rotation: %+v", c)
		}
	}

	// a restarts while its parameter still holds the old token: it cannot
	// connect, and retries every RetryInterval. b keeps the tunnel healthy.
	e.shell(sc, a, "systemctl restart cloudflared")
	e.wantStatus(tid, "healthy", "a restarted on the old token")
	e.clock.Advance(10 * time.Second)
	if c := e.connector(a); c.Connected || !c.Running || c.Current || c.Attempts < 3 || !strings.Contains(c.LastError, "Invalid tunnel secret") {
		t.Fatalf("a on the old token: %+v", c)
	}
	e.wantStatus(tid, "healthy", "a failing, b on the old token")
	if ids := e.connectorIDs(tid); !sameKeys(ids, b0.ClientID) {
		t.Fatalf("connections with a failing: %v", ids)
	}

	// The new token in a's parameter, cloudflared restarted through SSM: a
	// new connector on the new token.
	e.putToken(sc, acmeParam, tid)
	e.shell(sc, a, "systemctl restart cloudflared")
	e.clock.Advance(time.Second)
	a1 := e.connector(a)
	if !a1.Connected || !a1.Current || a1.TokenGeneration != 1 || a1.ClientID == a0.ClientID {
		t.Fatalf("a on the new token: %+v (was %+v)", a1, a0)
	}
	e.wantStatus(tid, "healthy", "a new, b old")
	if ids := e.connectorIDs(tid); !sameKeys(ids, a1.ClientID, b0.ClientID) {
		t.Fatalf("connections a new, b old: %v", ids)
	}

	// Delete the old connector's connections by client_id: only b's go, and
	// b cannot come back on the old token (its parameter still holds it).
	e.deleteConns(tid, b0.ClientID)
	e.wantStatus(tid, "healthy", "right after deleting b's connections")
	if ids := e.connectorIDs(tid); !sameKeys(ids, a1.ClientID) {
		t.Fatalf("connections after deleting b's: %v", ids)
	}
	for range 4 {
		e.clock.Advance(5 * time.Second)
		e.wantStatus(tid, "healthy", "b refused")
	}
	if c := e.connector(b); c.Connected || c.Current || !strings.Contains(c.LastError, "Invalid tunnel secret") {
		t.Fatalf("b after its connections were deleted: %+v", c)
	}
	if ids := e.connectorIDs(tid); !sameKeys(ids, a1.ClientID) {
		t.Fatalf("b came back on the old token: %v", ids)
	}
	if e.connector(a).ClientID != a1.ClientID {
		t.Fatal("deleting b's connections touched a")
	}

	// b's parameter gets the new token: systemd starts the cloudflared that
	// gave up again, a new connector on the new token.
	e.putToken(sc, paramB, tid)
	e.clock.Advance(6 * time.Second)
	b1 := e.connector(b)
	if !b1.Connected || !b1.Current || b1.ClientID == b0.ClientID {
		t.Fatalf("b on the new token: %+v", b1)
	}
	if ids := e.connectorIDs(tid); !sameKeys(ids, a1.ClientID, b1.ClientID) {
		t.Fatalf("connections both on the new token: %v", ids)
	}

	// A connector on the current token whose connections are deleted dials
	// again at once with the token it holds: the same connector, back after
	// ConnectDelay.
	e.deleteConns(tid, a1.ClientID)
	e.wantStatus(tid, "healthy", "a's connections deleted")
	e.clock.Advance(time.Second)
	if c := e.connector(a); !c.Connected || c.ClientID != a1.ClientID || !c.Current {
		t.Fatalf("a after its connections were deleted: %+v", c)
	}
	if ids := e.connectorIDs(tid); !sameKeys(ids, a1.ClientID, b1.ClientID) {
		t.Fatalf("connections after a re-dialled: %v", ids)
	}
	if v := e.sim.CheckInvariants(nil); len(v) != 0 {
		t.Fatalf("violations: %+v", v)
	}
}

// A rotation between a cloudflared's token read and its registration: the
// edge refuses the registration, and the connector, still reading the old
// token, keeps failing; an instance rebooted while the parameter holds the
// old token cannot connect either.
func TestRotationDuringConnectAndReboot(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		rotationDelays(c)
		c.ConnectDelay = 3 * time.Second
	})
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)
	e.tagFor(ec, sc, acmeParam, iid)
	e.clock.Advance(2 * time.Second) // booted and read the token; registers at 4 s
	if _, err := e.rotate(tid, newSecret(2, 48)); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	if c := e.connector(iid); c.Connected || !strings.Contains(c.LastError, "Invalid tunnel secret") {
		t.Fatalf("registration after a rotation: %+v", c)
	}
	e.wantStatus(tid, "inactive", "never registered")
	e.clock.Advance(time.Minute)
	e.wantStatus(tid, "inactive", "old token in the parameter")

	// The new token: the next retry connects.
	e.putToken(sc, acmeParam, tid)
	e.clock.Advance(5*time.Second + 3*time.Second)
	e.wantStatus(tid, "healthy", "new token in the parameter")

	// Rotate again, reboot: the old token (still in the parameter) fails.
	if _, err := e.rotate(tid, newSecret(3, 32)); err != nil {
		t.Fatal(err)
	}
	e.wantStatus(tid, "healthy", "rotated again")
	if _, err := ec.RebootInstances(context.Background(), &ec2.RebootInstancesInput{InstanceIds: []string{iid}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.wantStatus(tid, "down", "rebooted onto an old token")
	if c := e.connector(iid); c.Connected || c.Current || !strings.Contains(c.LastError, "Invalid tunnel secret") {
		t.Fatalf("connector rebooted onto an old token: %+v", c)
	}
}

// A rotation survives a save and a load: the loaded world still refuses the
// old token and shows which connectors hold it, and a connector on the old
// token keeps its connections across the restart of the emulator.
func TestRotationAcrossSaveLoad(t *testing.T) {
	e := newEnv(t, rotationDelays)
	ec, sc := AWSTestClients(t, e.srv.URL)
	const paramB = "/tunnelward/acme-b/tunnel-token"
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	e.putToken(sc, paramB, tid)
	a := e.runInstance(ec, "acme", tid, acmeParam)
	b := e.runInstance(ec, "acme-b", tid, paramB)
	e.tagFor(ec, sc, acmeParam, a)
	e.tagFor(ec, sc, paramB, b)
	e.clock.Advance(2 * time.Second)
	if _, err := e.rotate(tid, newSecret(4, 32)); err != nil {
		t.Fatal(err)
	}
	newTok := e.token(tid)
	e.putToken(sc, acmeParam, tid)
	e.shell(sc, a, "systemctl restart cloudflared")
	e.clock.Advance(time.Second)
	a1, b0 := e.connector(a), e.connector(b)
	if !a1.Current || b0.Current || !b0.Connected {
		t.Fatalf("before the save: a %+v b %+v", a1, b0)
	}

	snap, err := e.sim.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := Restore(e.sim.Config(), snap)
	if err != nil {
		t.Fatal(err)
	}
	l := envFor(t, loaded, e.clock)
	if tok := l.token(tid); tok != newTok {
		t.Fatalf("token after the load: %q, want %q", tok, newTok)
	}
	l.wantStatus(tid, "healthy", "after the load")
	if la, lb := l.connector(a), l.connector(b); la.ClientID != a1.ClientID || !la.Current || la.TokenGeneration != 1 ||
		lb.ClientID != b0.ClientID || lb.Current || !lb.Connected || lb.TokenGeneration != 0 {
		t.Fatalf("connectors after the load: a %+v b %+v", la, lb)
	}
	// The loaded world still refuses the old token: b restarted on it fails.
	_, lsc := AWSTestClients(t, l.srv.URL)
	l.shell(lsc, b, "systemctl restart cloudflared")
	l.clock.Advance(10 * time.Second)
	if c := l.connector(b); c.Connected || !strings.Contains(c.LastError, "Invalid tunnel secret") {
		t.Fatalf("b on the old token after the load: %+v", c)
	}
	l.wantStatus(tid, "healthy", "a alone after the load")
	// And takes the new one.
	l.putToken(lsc, paramB, tid)
	l.clock.Advance(6 * time.Second)
	if c := l.connector(b); !c.Connected || !c.Current || c.TokenGeneration != 1 {
		t.Fatalf("b on the new token after the load: %+v", c)
	}

	// A tunnel never rotated writes no generation: the file of a world
	// without rotations is the file it was.
	f := newEnv(t, rotationDelays)
	f.createTunnel("tw-plain")
	plain, err := f.sim.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(plain, []byte("SecretGen")) || bytes.Contains(plain, []byte("TokenGen")) {
		t.Fatalf("a world without rotations writes generations: %s", plain)
	}
}

// /_sim/state shows per connector its client id and whether it holds the
// current token, never the token or the secret.
func TestRotationStateShowsNoSecret(t *testing.T) {
	e := newEnv(t, rotationDelays)
	ec, sc := AWSTestClients(t, e.srv.URL)
	tid := e.createTunnel("tw-acme")
	e.putToken(sc, acmeParam, tid)
	iid := e.runInstance(ec, "acme", tid, acmeParam)
	e.tagFor(ec, sc, acmeParam, iid)
	e.clock.Advance(2 * time.Second)
	oldTok := e.token(tid)
	secret := newSecret(5, 32)
	if _, err := e.rotate(tid, secret); err != nil {
		t.Fatal(err)
	}
	res, err := e.srv.Client().Get(e.srv.URL + "/_sim/state")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(res.Body); err != nil {
		t.Fatal(err)
	}
	body := buf.String()
	for _, s := range []string{oldTok, e.token(tid), secret} {
		if strings.Contains(body, s) {
			t.Fatalf("/_sim/state shows a token or secret")
		}
	}
	var st struct {
		Connectors []map[string]any `json:"connectors"`
	}
	if err := json.Unmarshal(buf.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	c := st.Connectors[0]
	if len(st.Connectors) != 1 || c["client_id"] != e.connector(iid).ClientID || c["token_current"] != false || c["token_generation"] != float64(0) {
		t.Fatalf("/_sim/state connectors: %+v", st.Connectors)
	}
}
