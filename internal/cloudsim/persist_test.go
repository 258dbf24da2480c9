package cloudsim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

// persistDelays are slow enough that a test can stop the world between a
// transition's start and its end.
func persistDelays(c *Config) {
	c.BootDelay, c.ConnectDelay, c.ShutdownDelay, c.RetryInterval = 20*time.Second, 3*time.Second, 5*time.Second, 5*time.Second
	c.Regions = []string{DefaultRegion, euWest1}
}

// launch runs one instance in ec's region with a ClientToken.
func launch(t *testing.T, ec *ec2.Client, org, tunnelID, param, token string) string {
	t.Helper()
	out, err := ec.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), UserData: userDataFor(param), ClientToken: aws.String(token),
		IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("tunnelward-instance")},
		MetadataOptions:    &ec2types.InstanceMetadataOptionsRequest{HttpTokens: ec2types.HttpTokensStateRequired},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: []ec2types.Tag{
			{Key: aws.String("ManagedBy"), Value: aws.String("tunnelward")},
			{Key: aws.String("OrgID"), Value: aws.String(org)},
			{Key: aws.String("TunnelID"), Value: aws.String(tunnelID)},
		}}},
	})
	if err != nil {
		t.Fatalf("run instance for %s: %v", org, err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

// richWorld holds one of everything a snapshot must keep, several of them
// caught mid-transition.
type richWorld struct {
	e                                *env
	ec, ecEU                         *ec2.Client
	sc, scEU                         *ssm.Client
	acmeTunnel, globexTunnel, oldTun string
	acme, globex, booting, dying     string
	stopping, broken                 string
	pendingCmd                       string
}

func buildRichWorld(t *testing.T) *richWorld {
	t.Helper()
	e := newEnv(t, persistDelays)
	w := &richWorld{e: e}
	w.ec, w.sc = AWSTestClients(t, e.srv.URL)
	w.ecEU, w.scEU = regionClients(t, e.srv.URL, euWest1)
	ctx := context.Background()

	w.acmeTunnel, w.globexTunnel, w.oldTun = e.createTunnel("tw-acme"), e.createTunnel("tw-globex"), e.createTunnel("tw-old")
	var dp zero_trust.TunnelCloudflaredDeleteParams
	set(&dp.AccountID, e.acct)
	if _, err := e.tun.Delete(ctx, w.oldTun, dp); err != nil {
		t.Fatal(err)
	}
	// A configuration with a key the emulator only keeps and returns.
	req := httptest.NewRequest("PUT", "/client/v4/accounts/"+e.acct+"/cfd_tunnel/"+w.acmeTunnel+"/configurations",
		strings.NewReader(`{"config":{"ingress":[{"hostname":"acme.sandbox.tunnelward.test","service":"http://localhost:8080"},{"service":"http_status:404"}],"originRequest":{"connectTimeout":10}}}`))
	req.Header.Set("Authorization", "Bearer "+DefaultCFToken)
	rr := httptest.NewRecorder()
	e.sim.Handler().ServeHTTP(rr, req)
	if rr.Code != 200 {
		t.Fatalf("put config: %d %s", rr.Code, rr.Body)
	}
	for _, org := range []string{"acme", "globex"} {
		tid := map[string]string{"acme": w.acmeTunnel, "globex": w.globexTunnel}[org]
		if _, err := e.createCNAME(org, tid+".cfargotunnel.com", "tunnelward:org="+org); err != nil {
			t.Fatal(err)
		}
	}

	e.putToken(w.sc, acmeParam, w.acmeTunnel)
	e.putToken(w.sc, acmeParam, w.acmeTunnel) // version 2
	e.putToken(w.scEU, "/tunnelward/globex/tunnel-token", w.globexTunnel)
	if _, err := w.sc.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/plain/setting"), Type: ssmtypes.ParameterTypeString,
		Value: aws.String("v1"), Tags: []ssmtypes.Tag{{Key: aws.String("team"), Value: aws.String("edge")}}}); err != nil {
		t.Fatal(err)
	}

	w.acme = launch(t, w.ec, "acme", w.acmeTunnel, acmeParam, "tok-acme")
	e.tagFor(w.ec, w.sc, acmeParam, w.acme)
	w.globex = launch(t, w.ecEU, "globex", w.globexTunnel, "/tunnelward/globex/tunnel-token", "tok-globex")
	e.tagParam(w.scEU, "/tunnelward/globex/tunnel-token", e.sim.InstanceARN(w.globex))
	w.dying = launch(t, w.ec, "dying", w.acmeTunnel, acmeParam, "tok-dying")
	w.stopping = launch(t, w.ec, "stopping", w.acmeTunnel, acmeParam, "tok-stopping")
	w.broken = launch(t, w.ec, "broken", w.acmeTunnel, "/tunnelward/nothing", "tok-broken")
	e.clock.Advance(23 * time.Second) // booted and connected
	if st := e.status(w.acmeTunnel); st != "healthy" {
		t.Fatalf("acme: %s", st)
	}

	// Done and in-flight SSM commands.
	send := func() string {
		out, err := w.sc.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"),
			InstanceIds: []string{w.acme}, Parameters: map[string][]string{"commands": {"systemctl is-active cloudflared"}}})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Command.CommandId)
	}
	send()
	e.clock.Advance(time.Second)
	w.pendingCmd = send()

	e.world(WorldAction{Action: "degrade_connector", Org: "globex"})
	e.world(WorldAction{Action: "break_connector", ID: w.broken})
	if _, err := w.ec.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{w.dying}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ec.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{w.stopping}}); err != nil {
		t.Fatal(err)
	}
	e.putToken(w.scEU, "/tunnelward/booting/tunnel-token", w.globexTunnel)
	w.booting = launch(t, w.ecEU, "booting", w.globexTunnel, "/tunnelward/booting/tunnel-token", "tok-booting")
	e.tagParam(w.scEU, "/tunnelward/booting/tunnel-token", e.sim.InstanceARN(w.booting))
	return w
}

// comparableSnapshot is a snapshot without what a load changes on purpose:
// the time of the save and the id generator (reseeded on every load).
func comparableSnapshot(t *testing.T, s *Sim) string {
	t.Helper()
	b, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var env snapshotEnvelope
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	var w map[string]any
	if err := json.Unmarshal(env.World, &w); err != nil {
		t.Fatal(err)
	}
	delete(w, "saved_at")
	delete(w, "id_seed")
	delete(w, "id_draws")
	out, _ := json.MarshalIndent(w, "", " ")
	return string(out)
}

func stateJSON(t *testing.T, s *Sim) string {
	t.Helper()
	b, err := json.MarshalIndent(s.State(), "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A saved and loaded world is the same world: the same /_sim/state, the
// same snapshot (secrets, configurations, ClientTokens, commands, pending
// events), clean invariants; and it goes on as the original does when the
// clock moves on (in-flight boots, terminations, stops and commands end, a
// ClientToken still returns its reservation).
func TestSnapshotRoundTrip(t *testing.T) {
	w := buildRichWorld(t)
	orig := w.e.sim
	snap, err := orig.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	cfg := orig.Config()
	loaded, err := Restore(cfg, snap)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if a, b := stateJSON(t, orig), stateJSON(t, loaded); a != b {
		t.Fatalf("/_sim/state differs after a load:\n--- saved\n%s\n--- loaded\n%s", a, b)
	}
	if a, b := comparableSnapshot(t, orig), comparableSnapshot(t, loaded); a != b {
		t.Fatalf("snapshot differs after a load:\n--- saved\n%s\n--- loaded\n%s", a, b)
	}
	for name, s := range map[string]*Sim{"saved": orig, "loaded": loaded} {
		if v := s.CheckInvariants([]string{"acme", "globex", "dying", "stopping", "broken", "booting"}); len(v) != 0 {
			t.Errorf("%s world: violations %+v", name, v)
		}
	}

	// Both worlds move on with the same clock.
	srv := httptest.NewServer(loaded.Handler())
	defer srv.Close()
	w.e.clock.Advance(30 * time.Second)
	type view struct {
		Instances map[string]string
		Tunnels   map[string]string
		Conns     map[string][3]any // running, connected, tunnel
		Command   string
	}
	look := func(s *Sim) view {
		st := s.State()
		v := view{Instances: map[string]string{}, Tunnels: map[string]string{}, Conns: map[string][3]any{}}
		for _, in := range st.Instances {
			v.Instances[in["InstanceId"].(string)] = in["State"].(map[string]any)["Name"].(string)
		}
		for _, tn := range st.Tunnels {
			v.Tunnels[tn["id"].(string)] = tn["status"].(string)
		}
		for _, c := range st.Connectors {
			v.Conns[c.InstanceID] = [3]any{c.Running, c.Connected, c.TunnelID}
		}
		s.mu.Lock()
		v.Command = s.commands[w.pendingCmd].Invocations[w.acme].Status
		s.mu.Unlock()
		return v
	}
	a, b := look(orig), look(loaded)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("the loaded world went on differently:\nsaved  %+v\nloaded %+v", a, b)
	}
	want := map[string]string{w.acme: "running", w.globex: "running", w.dying: "terminated", w.stopping: "stopped", w.broken: "running", w.booting: "running"}
	if !reflect.DeepEqual(b.Instances, want) || b.Command != "Success" || b.Tunnels[w.acmeTunnel] != "healthy" || b.Conns[w.booting][1] != true {
		t.Fatalf("in-flight transitions did not complete after the load: %+v", b)
	}

	// The ClientToken of a launch before the save still names its
	// reservation.
	ec, _ := AWSTestClients(t, srv.URL)
	if id := launch(t, ec, "acme", w.acmeTunnel, acmeParam, "tok-acme"); id != w.acme {
		t.Fatalf("ClientToken after a load launched %s, want the original %s", id, w.acme)
	}
	if v := loaded.CheckInvariants(nil); len(v) != 0 {
		t.Errorf("violations after the world went on: %+v", v)
	}
}

// allIDs is every id a world has handed out and still knows: tunnels
// (deleted ones too), their connections, records, instances and
// reservations, commands and connector client ids.
func allIDs(s *Sim) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for id, t := range s.tunnels {
		out[id] = true
		for _, c := range t.Connections {
			out[c.ID] = true
		}
	}
	for id := range s.dnsRecords {
		out[id] = true
	}
	for id, in := range s.instances {
		out[id], out[in.ReservationID] = true, true
	}
	for id := range s.commands {
		out[id] = true
	}
	for _, c := range s.connectors {
		out[c.ClientID] = true
	}
	return out
}

// Ids are never handed out twice: not by a world loaded from a snapshot
// (whatever it creates next is new, deleted tunnels included), not after a
// crash that lost ids handed out after the last save, and not by a world
// started from empty in place of a deleted file.
func TestSnapshotIDsNeverRepeat(t *testing.T) {
	makeStuff := func(t *testing.T, e *env, org string) {
		t.Helper()
		ec, sc := AWSTestClients(t, e.srv.URL)
		tid := e.createTunnel("tw-" + org)
		if _, err := e.createCNAME(org, tid+".cfargotunnel.com", "tunnelward:org="+org); err != nil {
			t.Fatal(err)
		}
		gone := e.createTunnel("tw-" + org + "-gone")
		var dp zero_trust.TunnelCloudflaredDeleteParams
		set(&dp.AccountID, e.acct)
		if _, err := e.tun.Delete(context.Background(), gone, dp); err != nil {
			t.Fatal(err)
		}
		param := "/tunnelward/" + org + "/tunnel-token"
		e.putToken(sc, param, tid)
		iid := launch(t, ec, org, tid, param, "tok-"+org)
		e.tagFor(ec, sc, param, iid)
		e.clock.Advance(25 * time.Second)
		if _, err := sc.SendCommand(context.Background(), &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"),
			InstanceIds: []string{iid}, Parameters: map[string][]string{"commands": {"true"}}}); err != nil {
			t.Fatal(err)
		}
	}
	first := newEnv(t, persistDelays)
	makeStuff(t, first, "acme")
	snap, err := first.sim.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	saved := allIDs(first.sim)
	// The crashed run goes on after its last save: these ids were handed
	// out, then lost with the process.
	makeStuff(t, first, "lost")
	crashed := allIDs(first.sim)

	cfg := first.sim.Config()
	first.clock.Advance(time.Minute) // the restart takes a while
	loaded, err := Restore(cfg, snap)
	if err != nil {
		t.Fatal(err)
	}
	second := envFor(t, loaded, first.clock)
	makeStuff(t, second, "globex")
	after := allIDs(loaded)

	dir := t.TempDir()
	fresh, existed, err := OpenFile(cfg, filepath.Join(dir, "deleted.json"))
	if err != nil || existed {
		t.Fatalf("open a missing file: %v, loaded %v", err, existed)
	}
	third := envFor(t, fresh, first.clock)
	makeStuff(t, third, "initech")
	reset := allIDs(fresh)

	for id := range after {
		if saved[id] {
			continue // the same resource, loaded
		}
		if crashed[id] {
			t.Errorf("loaded world handed out %s again (the crashed run had it)", id)
		}
	}
	for id := range reset {
		if crashed[id] || after[id] {
			t.Errorf("world started from empty handed out %s again", id)
		}
	}
	if len(after) <= len(saved) || len(reset) == 0 {
		t.Fatalf("nothing was created: saved %d, after %d, reset %d", len(saved), len(after), len(reset))
	}
}

// envFor serves an existing world (a loaded one) as newEnv serves a new
// one, on clock.
func envFor(t *testing.T, s *Sim, clock *fakeClock) *env {
	t.Helper()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	cfg := s.Config()
	e := &env{t: t, sim: s, srv: srv, clock: clock, acct: cfg.AccountID, zone: cfg.ZoneID}
	e.cfOpts = []option.RequestOption{
		option.WithBaseURL(srv.URL + "/client/v4/"),
		option.WithAPIToken(cfg.CFToken),
		option.WithHTTPClient(srv.Client()),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(10 * time.Second),
	}
	e.tun = zero_trust.NewTunnelCloudflaredService(e.cfOpts...)
	e.rec = dns.NewRecordService(e.cfOpts...)
	return e
}

// A crash between writing the new snapshot and renaming it over the old one
// (the process killed, the temporary file cut short) leaves the previous
// snapshot whole: it loads, with the world as it was saved.
func TestSaveKilledMidWayKeepsThePreviousSnapshot(t *testing.T) {
	e := newEnv(t, persistDelays)
	path := filepath.Join(t.TempDir(), "world.json")
	first := e.createTunnel("tw-first")
	if err := e.sim.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	before := stateJSON(t, e.sim)
	second := e.createTunnel("tw-second")

	beforeRename = func(tmp string) error {
		st, err := os.Stat(tmp)
		if err != nil {
			return err
		}
		if err := os.Truncate(tmp, st.Size()/2); err != nil {
			return err
		}
		return errors.New("killed")
	}
	err := e.sim.SaveFile(path)
	beforeRename = nil
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("save through a crash: %v", err)
	}
	if _, err := os.Stat(path + ".tmp"); err != nil {
		t.Fatalf("the crash should leave its temporary file behind: %v", err)
	}

	s, loaded, err := OpenFile(e.sim.Config(), path)
	if err != nil || !loaded {
		t.Fatalf("load after the crash: %v (loaded %v)", err, loaded)
	}
	if got := stateJSON(t, s); got != before {
		t.Fatalf("the previous snapshot changed:\n--- saved\n%s\n--- loaded\n%s", before, got)
	}
	ids := allIDs(s)
	if !ids[first] || ids[second] {
		t.Fatalf("loaded tunnels: want %s without %s, got %v", first, second, ids)
	}

	// The next save goes through the leftover temporary file.
	if err := e.sim.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	if s, _, err = OpenFile(e.sim.Config(), path); err != nil || !allIDs(s)[second] {
		t.Fatalf("save after the crash: %v", err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the file holds secrets; want mode 0600: %v %v", st.Mode(), err)
	}
}

// reEnvelope wraps a world's JSON as a valid file (right checksum), so a
// test can hand Restore a world that is well formed but wrong.
func reEnvelope(t *testing.T, snap []byte, edit func(w map[string]any)) []byte {
	t.Helper()
	var env snapshotEnvelope
	if err := json.Unmarshal(snap, &env); err != nil {
		t.Fatal(err)
	}
	var w map[string]any
	if err := json.Unmarshal(env.World, &w); err != nil {
		t.Fatal(err)
	}
	edit(w)
	world, _ := json.Marshal(w)
	sum := sha256.Sum256(world)
	out, _ := json.Marshal(map[string]any{"format": snapshotFormat, "version": snapshotVersion, "sha256": hex.EncodeToString(sum[:]), "world": json.RawMessage(world)})
	return out
}

// A state file that exists but cannot be loaded is an error naming the
// file and how to start from empty; never an empty world, never a panic.
func TestCorruptSnapshotNamed(t *testing.T) {
	w := buildRichWorld(t)
	cfg := w.e.sim.Config()
	good, err := w.e.sim.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	i := bytes.Index(flipped, []byte(`"tw-acme"`))
	flipped[i+4] = 'X'
	otherZone := reEnvelope(t, good, func(w map[string]any) { w["zone_id"] = "00000000000000000000000000000000" })
	badEvent := reEnvelope(t, good, func(w map[string]any) {
		w["events"] = append(w["events"].([]any), map[string]any{"at": "2030-01-01T00:00:00Z", "kind": "explode"})
	})
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "the file is empty"},
		{"truncated", good[:len(good)/2], "damaged or truncated"},
		{"garbage", []byte("hello\n"), "damaged or truncated"},
		{"bit flip", flipped, "checksum mismatch"},
		{"other format", []byte(`{"format":"something-else","version":1}`), "not a cloud emulator snapshot"},
		{"newer version", bytes.Replace(good, []byte(fmt.Sprintf(`"version":%d`, snapshotVersion)), []byte(`"version":9`), 1), "version 9"},
		{"other zone", otherZone, "not of account"},
		{"unknown event", badEvent, `unknown kind "explode"`},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json")
		if err := os.WriteFile(path, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, _, err := OpenFile(cfg, path)
		var se *SnapshotError
		if s != nil || !errors.As(err, &se) || se.Path != path {
			t.Errorf("%s: got world %v, error %v; want a *SnapshotError for %s", tc.name, s != nil, err, path)
			continue
		}
		msg := err.Error()
		for _, want := range []string{path, tc.want, "to start from an empty world, delete it"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error %q does not say %q", tc.name, msg, want)
			}
		}
	}
	// A path that cannot be read at all.
	if _, _, err := OpenFile(cfg, dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("a directory as state file: %v", err)
	}
}

// A world loaded into an emulator with fewer regions keeps the regions its
// resources live in: an account does not lose a region.
func TestRestoreKeepsTheWorldsRegions(t *testing.T) {
	w := buildRichWorld(t)
	snap, err := w.e.sim.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.e.sim.Config()
	cfg.Regions = nil // just the home region
	s, err := Restore(cfg, snap)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Regions(), ","); got != DefaultRegion+","+euWest1 {
		t.Fatalf("regions after load: %s", got)
	}
}

// Autosave writes the world shortly after it changes, and Close writes it
// a last time; OpenFile then loads what was served.
func TestAutosave(t *testing.T) {
	clock := newFakeClock()
	cfg := DefaultConfig()
	cfg.Now, cfg.Limits = clock.Now, RateLimits{}
	path := filepath.Join(t.TempDir(), "world.json")
	s, existed, err := OpenFile(cfg, path)
	if err != nil || existed {
		t.Fatalf("open: %v %v", err, existed)
	}
	e := envFor(t, s, clock)
	a := s.StartAutosave(path, 10*time.Millisecond, func(err error) { t.Errorf("autosave: %v", err) })

	first := e.createTunnel("tw-first")
	waitFor(t, "the change saved", func() bool {
		got, _, err := OpenFile(s.Config(), path)
		return err == nil && allIDs(got)[first]
	})
	second := e.createTunnel("tw-second")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got, _, err := OpenFile(s.Config(), path)
	if err != nil || !allIDs(got)[second] {
		t.Fatalf("after Close: %v", err)
	}
	if a, b := stateJSON(t, s), stateJSON(t, got); a != b {
		t.Fatalf("saved world differs:\n%s\n%s", a, b)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
