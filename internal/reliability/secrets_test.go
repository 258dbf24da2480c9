package reliability

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
)

// tunnelTokens fetches every tunnel's token (and the secret inside it)
// through the emulator's Cloudflare API, as the reconciler itself does.
func (w *world) tunnelTokens(t *testing.T) []string {
	t.Helper()
	st, err := w.simState()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tun := range st.Tunnels {
		req, _ := http.NewRequest("GET", w.simURL()+"/client/v4/accounts/a1b2c3d4e5f60718293a4b5c6d7e8f90/cfd_tunnel/"+tun.ID+"/token", nil)
		req.Header.Set("Authorization", "Bearer sandbox-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Success bool
			Result  string
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || !body.Success || body.Result == "" {
			continue // deleted tunnels have no token to fetch
		}
		out = append(out, body.Result)
		raw, err := base64.StdEncoding.DecodeString(body.Result)
		if err != nil {
			t.Fatalf("token of %s is not base64: %v", tun.ID, err)
		}
		var tok struct{ S string }
		if err := json.Unmarshal(raw, &tok); err != nil || tok.S == "" {
			t.Fatalf("token of %s does not carry a secret", tun.ID)
		}
		out = append(out, tok.S)
	}
	return out
}

// TestSecretsNeverLeak runs a full lifecycle under injected faults and scans
// everything tunnelward wrote or served for the tunnel tokens, their
// secrets and the API credentials: logs of every reconciler run (debug
// level), /metrics, /healthz, /readyz, /v1 responses, the bbolt file's
// bytes, user-data and tags in the emulator, status and plan output.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	rules := `[{"op":"*","error_rate":0.1,"error_status":502,"throttle_rate":0.05,"retry_after":"1s"}]`
	w := newWorld(t, worldOpts{simArgs: append([]string{"--faults", rules}, fastWorld...)})
	w.startReconciler()
	w.waitReady()
	for _, org := range []string{"keep", "restart", "replace", "gone"} { // one of each fate
		w.create(org)
	}
	if p := w.waitConverged(60 * time.Second); p != "" {
		t.Fatal(p)
	}
	secrets := w.tunnelTokens(t) // before the delete: the deleted org's token too
	for _, a := range []map[string]string{{"action": "kill_connector", "org": "restart"}, {"action": "stop_instance", "org": "replace"}} {
		if err := w.simWorld(a); err != nil {
			t.Fatal(err)
		}
	}
	w.healthFailed("restart")
	w.healthFailed("replace")
	w.delete("gone")
	w.create("later")
	if p := w.waitConverged(60 * time.Second); p != "" {
		t.Fatal(p)
	}
	secrets = append(secrets, w.tunnelTokens(t)...)
	if len(secrets) < 10 {
		t.Fatalf("only %d token values to look for", len(secrets))
	}
	creds := []string{"sandbox-token", "sandbox-secret"}

	// What the running daemon serves.
	artifacts := map[string][]byte{}
	admin := "http://" + w.adminAddr
	for _, p := range []string{"/metrics", "/healthz", "/readyz", "/v1/orgs", "/v1/orgs/keep", "/v1/orgs/restart", "/v1/orgs/replace", "/v1/orgs/gone", "/v1/plan"} {
		_, body, err := httpBody(admin + p)
		if err != nil {
			t.Fatal(err)
		}
		artifacts["GET "+p] = []byte(body)
	}
	// What the emulator holds from tunnelward: user-data (decoded), tags,
	// names, DNS content and comments. Parameter values are shown only as a
	// hash; the value's one legitimate home is the SecureString.
	_, state, _ := httpBody(w.simURL() + "/_sim/state")
	artifacts["cloud resources (/_sim/state)"] = []byte(state)
	if !strings.Contains(state, "UserDataScript") {
		t.Fatal("/_sim/state shows no user-data: the scan would prove nothing")
	}
	if code := w.rec.term(); code != 0 {
		t.Fatalf("reconciler exit %d", code)
	}
	// What the commands print, and what is on disk.
	for _, args := range [][]string{{"status"}, {"status", "-o", "json"}, {"status", "keep"}, {"plan"}, {"plan", "-o", "json"}} {
		cmd := exec.Command(w.recBin, append(args, "--data-dir", w.dataDir, "--cloud", w.simURL())...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !(args[0] == "plan" && errors.As(err, &ee) && ee.ExitCode() == 2) { // plan: 2 = changes pending
			t.Fatalf("reconciler %v: %v\n%s", args, err, tail(string(out), 10))
		}
		if !strings.Contains(string(out), "keep") {
			t.Fatalf("reconciler %v does not show the orgs: the scan would prove nothing\n%s", args, tail(string(out), 10))
		}
		artifacts["reconciler "+strings.Join(args, " ")] = out
	}
	db, err := os.ReadFile(filepath.Join(w.dataDir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	artifacts["state.db bytes"] = db
	for i, f := range w.recLogs {
		b, _ := os.ReadFile(f)
		artifacts[fmt.Sprintf("reconciler log %d (debug)", i+1)] = b
	}

	scanned := 0
	for name, b := range artifacts {
		scanned += len(b)
		for _, s := range append(secrets, creds...) {
			if strings.Contains(string(b), s) {
				i := strings.Index(string(b), s)
				t.Errorf("%s contains a secret (%.12s...) at byte %d: ...%s...", name, s, i, string(b[max(0, i-80):min(len(b), i+20)]))
			}
		}
	}
	if !strings.Contains(string(artifacts["reconciler log 1 (debug)"]), "cloud mutation") {
		t.Fatal("the reconciler log is not the engine's: the scan would prove nothing")
	}
	t.Logf("FIGURE secrets: %d token values and secrets + %d API credentials searched in %d artifacts (%d bytes): 0 occurrences", len(secrets), len(creds), len(artifacts), scanned)
}

// TestAdminLoopbackByDefault starts the reconciler without --admin-listen:
// the admin API answers on 127.0.0.1:8081 and on no other address.
func TestAdminLoopbackByDefault(t *testing.T) {
	// Not parallel: it needs the fixed port 127.0.0.1:8081.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:8081", 200*time.Millisecond); err == nil {
		c.Close()
		t.Skip("127.0.0.1:8081 is taken by another process on this machine")
	}
	w := newWorld(t, worldOpts{simArgs: fastWorld})
	rec := startProc(t, "reconciler", w.recBin, nil, "--data-dir", w.dataDir, "--nats-url", w.natsURL(), "--cloud", w.simURL())
	waitFor(t, 30*time.Second, "admin on 127.0.0.1:8081", func() bool {
		if !rec.running() {
			if strings.Contains(rec.log(), "address already in use") {
				t.Skip("127.0.0.1:8081 was taken by another process meanwhile")
			}
			t.Fatalf("reconciler exited: %s", tail(rec.log(), 20))
		}
		return httpStatus("http://127.0.0.1:8081/healthz") == 200
	})
	addrs, _ := net.InterfaceAddrs()
	others := 0
	for _, a := range addrs {
		ip, _, _ := net.ParseCIDR(a.String())
		if ip == nil || ip.IsLoopback() {
			continue
		}
		others++
		host := net.JoinHostPort(ip.String(), "8081")
		if c, err := net.DialTimeout("tcp", host, 500*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("admin API reachable on %s: it must bind loopback by default", host)
		}
	}
	rec.term()
	t.Logf("FIGURE admin default bind: 127.0.0.1:8081; refused on %d non-loopback addresses", others)
}

// natsAuthServer writes a nats-server config requiring either an nkey user
// or (operator mode is a separate server) nothing else; it returns the seed file.
func nkeyUser(t *testing.T, dir string) (pub, seedFile string) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ = kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile = filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return pub, seedFile
}

// operatorCreds sets up JWT (operator mode) auth: it returns the server
// config lines and a user .creds file.
func operatorCreds(t *testing.T, dir string) (conf, credsFile string) {
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "tw-test"
	opJWT, err := oc.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	sys, _ := nkeys.CreateAccount()
	sysPub, _ := sys.PublicKey()
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, _ := sc.Encode(op)
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "TW"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := ac.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(userPub)
	uc.IssuerAccount = accPub
	userJWT, err := uc.Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile = filepath.Join(dir, "user.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	conf = fmt.Sprintf("operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n %s: %q\n %s: %q\n}\n", opJWT, sysPub, sysPub, sysJWT, accPub, accJWT)
	return conf, credsFile
}

// TestNATSAuth runs the reconciler against auth-enabled nats-servers, with
// an nkey seed and with a JWT .creds file: with its credentials it ingests
// events; without them it fails clearly and in bounded time.
func TestNATSAuth(t *testing.T) {
	t.Parallel()
	recBin := reconcilerBinary(t)
	natsBin := binary(t, "nats-server", "github.com/nats-io/nats-server/v2")
	simBin := binary(t, "cloudsim", "./cmd/cloudsim")
	simAddr := freeAddr(t)
	startProc(t, "cloudsim", simBin, nil, append([]string{"--listen", simAddr}, fastWorld...)...)
	for _, mode := range []string{"nkey", "creds"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			addr := freeAddr(t)
			_, port, _ := net.SplitHostPort(addr)
			conf := fmt.Sprintf("listen: 127.0.0.1:%s\njetstream { store_dir: %q }\n", port, filepath.Join(dir, "js"))
			var flag, file string
			if mode == "nkey" {
				pub, seed := nkeyUser(t, dir)
				conf += fmt.Sprintf("authorization { users = [ { nkey: %s } ] }\n", pub)
				flag, file = "--nkey", seed
			} else {
				c, creds := operatorCreds(t, dir)
				conf += c
				flag, file = "--creds", creds
			}
			confFile := filepath.Join(dir, "nats.conf")
			if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			ns := startProc(t, "nats-server", natsBin, nil, "-c", confFile)
			waitFor(t, 15*time.Second, "nats-server up", func() bool {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					c.Close()
				}
				return err == nil || !ns.running()
			})
			if !ns.running() {
				t.Fatalf("nats-server did not start:\n%s", ns.log())
			}
			base := []string{"--data-dir", filepath.Join(dir, "data"), "--nats-url", "nats://" + addr, "--cloud", "http://" + simAddr, "--sandbox-listen", freeAddr(t)}

			// Without credentials: a clear failure, in bounded time.
			cmd := exec.Command(recBin, append(base, "--admin-listen", freeAddr(t))...)
			start := time.Now()
			out, err := runWithTimeout(cmd, 60*time.Second)
			took := time.Since(start)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("without %s: %v (want a non-zero exit)\n%s", flag, err, tail(out, 20))
			}
			if !strings.Contains(strings.ToLower(out), "authorization") {
				t.Errorf("without %s: exit after %s, but the error does not say authorization failed:\n%s", flag, took.Round(time.Second), tail(out, 10))
			}
			msg := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(strings.ToLower(l), "authorization") {
					msg = l
				}
			}
			t.Logf("FIGURE nats auth (%s): without credentials exit %d after %s: %s", mode, ee.ExitCode(), took.Round(100*time.Millisecond), msg)

			// With them: ready, and an event published with them is applied.
			adminAddr := freeAddr(t)
			rec := startProc(t, "reconciler", recBin, nil, append(base, "--admin-listen", adminAddr, flag, file)...)
			waitFor(t, 30*time.Second, "ready with "+flag, func() bool {
				if !rec.running() {
					t.Fatalf("reconciler with %s exited:\n%s", flag, tail(rec.log(), 20))
				}
				return httpStatus("http://"+adminAddr+"/readyz") == 200
			})
			// An event published with the same kind of credentials is applied.
			opt := nats.UserCredentials(file)
			if mode == "nkey" {
				if opt, err = nats.NkeyOptionFromSeed(file); err != nil {
					t.Fatal(err)
				}
			}
			nc, err := nats.Connect("nats://"+addr, opt)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			v, _ := events.NewValidator()
			ev, _ := events.New(events.Created{OrgID: "authed", Slug: "authed"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := broker.PublishEvent(ctx, js, v, ev); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "event applied", func() bool { return httpStatus("http://"+adminAddr+"/v1/orgs/authed") == 200 })
			rec.term()
		})
	}
}

func runWithTimeout(cmd *exec.Cmd, d time.Duration) (string, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("still running after %s", d)
	}
}
