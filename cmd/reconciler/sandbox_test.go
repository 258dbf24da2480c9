package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// TestSandboxCloudSurvivesRestart runs the reconciler binary in sandbox
// mode (embedded NATS, in-process emulator), builds an org, then restarts
// the reconciler on the same data dir twice: after SIGTERM, and after
// SIGKILL once a second org's resources are in the saved cloud. Each time
// the orgs stay Ready on the SAME tunnel, DNS record and instance: the
// sandbox remembers its cloud, nothing is re-created, and the restarted
// emulator hands out no id twice.
func TestSandboxCloudSurvivesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries")
	}
	t.Parallel()
	bin := filepath.Dir(reconcilerBinary(t))
	publisherBinary(t)
	dataDir := t.TempDir()
	natsAddr, adminAddr, sandboxAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	args := []string{"--data-dir", dataDir, "--nats-listen", natsAddr, "--admin-listen", adminAddr,
		"--sandbox-listen", sandboxAddr, "--log-format", "text"}
	admin, sim := "http://"+adminAddr, "http://"+sandboxAddr
	snapshot := filepath.Join(dataDir, sandboxFile)

	publish := func(org string) {
		t.Helper()
		out, err := exec.Command(filepath.Join(bin, "publisher"), "created", "--org", org, "--slug", org,
			"--nats-url", "nats://"+natsAddr, "--timeout", "10s").CombinedOutput()
		if err != nil {
			t.Fatalf("publish %s: %v\n%s", org, err, out)
		}
	}
	readyOrg := func(id string) state.Observed {
		t.Helper()
		var o state.Org
		waitForLong(t, id+" Ready", 60*time.Second, func() bool {
			resp, err := http.Get(admin + "/v1/orgs/" + id)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			o = state.Org{}
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&o) == nil && reconcile.IsTrue(o, state.CondReady)
		})
		if o.Observed.TunnelID == "" || o.Observed.DNSRecordID == "" || o.Observed.InstanceID == "" {
			t.Fatalf("%s Ready without recorded ids: %+v", id, o.Observed)
		}
		return o.Observed
	}

	rec := start(t, filepath.Join(bin, "reconciler"), args...)
	defer func() { stopProc(t, rec) }()
	waitHTTP(t, admin+"/readyz", 200)
	if !strings.Contains(rec.log(), "sandbox cloud starts empty") {
		t.Errorf("a first start does not say the sandbox starts empty:\n%s", rec.log())
	}
	publish("acme")
	orgs := map[string]state.Observed{"acme": readyOrg("acme")}

	// sameCloud checks, after a restart, that every org is Ready on the
	// resources it had, that the restarted reconciler looked at the cloud
	// and re-created nothing, and that the world is clean.
	sameCloud := func(phase string) {
		t.Helper()
		waitHTTP(t, admin+"/readyz", 200)
		// The sweep at start compares every org with the cloud: Ready orgs
		// whose resources are gone drop out of Ready and are rebuilt.
		waitFor(t, "the first sweep after the restart", func() bool {
			n, _ := sum(scrape(t, admin+"/metrics"), "tunnelward_sweeps_total", map[string]string{"result": "success"})
			return n >= 1
		})
		for id, want := range orgs {
			got := readyOrg(id)
			if got.TunnelID != want.TunnelID || got.DNSRecordID != want.DNSRecordID || got.InstanceID != want.InstanceID {
				t.Errorf("%s: %s now on tunnel %s record %s instance %s, want %s %s %s", phase, id,
					got.TunnelID, got.DNSRecordID, got.InstanceID, want.TunnelID, want.DNSRecordID, want.InstanceID)
			}
		}
		ops := callsOf(t, sim)
		if ops["cf.tunnel.list"] == nil {
			t.Errorf("%s: the restarted reconciler never listed tunnels (calls %v)", phase, ops)
		}
		for _, op := range []string{"ec2.RunInstances", "cf.tunnel.create", "cf.dns.create", "ssm.PutParameter", "ssm.SendCommand", "ec2.TerminateInstances"} {
			if ops[op] != nil {
				t.Errorf("%s: %s after the restart: %v", phase, op, ops[op])
			}
		}
		if strings.Contains(rec.log(), "recorded tunnel is gone") {
			t.Errorf("%s: the reconciler found its tunnel gone:\n%s", phase, rec.log())
		}
		if !strings.Contains(rec.log(), "sandbox cloud loaded") {
			t.Errorf("%s: the log does not say the sandbox cloud was loaded:\n%s", phase, rec.log())
		}
		var inv struct{ Violations []map[string]any }
		getJSON(t, sim+"/_sim/invariants?orgs=acme,globex", &inv)
		if len(inv.Violations) != 0 {
			t.Errorf("%s: violations %v", phase, inv.Violations)
		}
		var st cloudsim.WorldState
		getJSON(t, sim+"/_sim/state", &st)
		for _, tn := range st.Tunnels {
			if tn["deleted_at"] == nil && tn["status"] != "healthy" {
				t.Errorf("%s: tunnel %s is %s", phase, tn["name"], tn["status"])
			}
		}
	}

	// 1. A graceful stop saves the cloud; the next start loads it.
	if code := stopProc(t, rec); code != 0 {
		t.Fatalf("reconciler exit %d after SIGTERM\n%s", code, rec.log())
	}
	if _, err := os.Stat(snapshot); err != nil {
		t.Errorf("no %s after a graceful stop: %v", sandboxFile, err)
	}
	// With the daemon stopped, `plan` reads the cloud it saved: acme is
	// there and converged, so nothing would change.
	var pout, perr bytes.Buffer
	if code := realMain([]string{"plan", "--data-dir", dataDir}, &pout, &perr); code != planNoChanges ||
		!strings.Contains(pout.String(), "acme") || !strings.Contains(perr.String(), "planning against the sandbox cloud it saved") {
		t.Errorf("plan with the daemon stopped: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, planNoChanges, pout.String(), perr.String())
	}
	rec = start(t, filepath.Join(bin, "reconciler"), args...)
	sameCloud("after SIGTERM")

	// 2. A second org, then kill -9 once the autosave holds it connected.
	publish("globex")
	orgs["globex"] = readyOrg("globex")
	waitForLong(t, "globex connected in "+sandboxFile, 30*time.Second, func() bool {
		s, loaded, err := cloudsim.OpenFile(cloudsim.DefaultConfig(), snapshot)
		if err != nil || !loaded {
			return false
		}
		for _, c := range s.State().Connectors {
			if c.InstanceID == orgs["globex"].InstanceID && c.Connected {
				return true
			}
		}
		return false
	})
	if err := rec.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-rec.done
	rec = start(t, filepath.Join(bin, "reconciler"), args...)
	sameCloud("after SIGKILL")
	if t.Failed() {
		t.Logf("reconciler log:\n%s", rec.log())
	}
}

// A sandbox cloud file that cannot be loaded stops the start before NATS,
// naming the file and how to start from empty: the sandbox never starts
// empty in its place (the reconciler would rebuild every org).
func TestSandboxCloudUnreadableStopsStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, sandboxFile)
	if err := os.WriteFile(path, []byte(`{"format":"tunnelward-cloudsim-world","version":1,"sha2`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Bounded: a reconciler that did start would otherwise serve forever.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, testConfig(t, dir), slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("the reconciler started on a damaged sandbox cloud")
	}
	for _, want := range []string{"cannot start: sandbox cloud: cloud emulator state file " + path + " cannot be loaded",
		"damaged or truncated", "to start from an empty world, delete it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nats")); err == nil {
		t.Error("the embedded NATS server was started before the check")
	}
	if b, _ := os.ReadFile(path); !strings.HasSuffix(string(b), `"sha2`) {
		t.Errorf("the damaged file was changed: %q", b)
	}
}

// The sandbox serves two pools out of the box: an org that asks for
// sandbox2 is built in the emulator's second account and zone, one that
// asks for none in the default pool; /v1/orgs and status name each org's
// pool, and the start-up log lists the pools without their tokens.
func TestSandboxServesBothPools(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testConfig(t, t.TempDir(), "--sweep-interval", "1h"))
	d.publish(events.Created{OrgID: "acme", Slug: "acme"}, events.Created{OrgID: "beta", Slug: "beta", Pool: config.SandboxPool2Name})
	d.waitReady("acme", "beta")

	for org, want := range map[string]string{"acme": config.SandboxPoolName, "beta": config.SandboxPool2Name} {
		resp, err := http.Get(d.url("/v1/orgs/" + org))
		if err != nil {
			t.Fatal(err)
		}
		var o admin.Org
		err = json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		if err != nil || o.Pool != want {
			t.Errorf("/v1/orgs/%s: pool %q (%v), want %q", org, o.Pool, err, want)
		}
	}
	resp, err := http.Get("http://" + d.cfg.SandboxListen + "/_sim/state")
	if err != nil {
		t.Fatal(err)
	}
	var ws cloudsim.WorldState
	err = json.NewDecoder(resp.Body).Decode(&ws)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	zones := map[string]string{}
	for _, r := range ws.DNSRecords {
		zones[r["name"].(string)], _ = r["zone_id"].(string)
	}
	if zones["acme."+config.SandboxZoneName] != config.SandboxZoneID || zones["beta."+config.SandboxPool2ZoneName] != config.SandboxPool2ZoneID {
		t.Errorf("records by zone %v: want acme in %s, beta in %s", zones, config.SandboxZoneName, config.SandboxPool2ZoneName)
	}

	// status asks the daemon: each org's pool, and the pools' use.
	var out, errb strings.Builder
	if code := realMain([]string{"status", "--data-dir", d.cfg.DataDir, "--admin-listen", d.cfg.AdminListen,
		"--sandbox-listen", d.cfg.SandboxListen, "--nats-listen", d.cfg.NATS.Listen}, &out, &errb); code != 0 {
		t.Fatalf("status: exit %d\n%s", code, errb.String())
	}
	for _, want := range []string{"POOLS  sandbox (sandbox.tunnelward.test): 1/1000 tunnels, 1/200 dns records  sandbox2 (sandbox2.tunnelward.test): 1/1000 tunnels, 1/200 dns records"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	var header []string
	for _, l := range strings.Split(out.String(), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) > 0 && f[0] == "ORG":
			header = f
		case header != nil && len(f) > 9:
			if want := map[string]string{"acme": "sandbox", "beta": "sandbox2"}[f[0]]; f[9] != want || header[9] != "POOL" {
				t.Errorf("status: %s in %s %q, want %q:\n%s", f[0], header[9], f[9], want, out.String())
			}
		}
	}

	log := d.log()
	line := ""
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `msg="cloudflare pools"`) {
			line = l
		}
	}
	for _, want := range []string{"placement=fill", "count=2", "sandbox: account=" + config.SandboxAccountID + " zone=" + config.SandboxZoneName,
		"sandbox2: account=" + config.SandboxPool2AccountID + " zone=" + config.SandboxPool2ZoneName, "max_tunnels=1000 max_dns_records=200"} {
		if !strings.Contains(line, want) {
			t.Errorf("the pools' start-up line lacks %q: %s", want, line)
		}
	}
	for _, tok := range []string{config.SandboxCloudflareToken, config.SandboxPool2Token} {
		if strings.Contains(log, tok) {
			t.Errorf("the log shows the token %s", tok)
		}
	}
}
