package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/testbin"
)

func TestRunRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--faults", `[{"op":"","error_rate":0.1}]`}, "op"},
		{[]string{"--faults", `[{"op":"cf.*","error_rate":3}]`}, "error_rate"},
		{[]string{"--faults", `{"op":"cf.*"}`}, "JSON list"},
		{[]string{"--faults", "@/nonexistent/faults.json"}, "no such file"},
		{[]string{"--cf-budget", "0"}, "cf_budget"},
		{[]string{"--instance-role-tag-policy=maybe"}, "instance-role-tag-policy"},
		{[]string{"stray"}, "unexpected arguments"},
		{[]string{"--listen", "256.0.0.1:1"}, "listen"},
		{[]string{"--regions", "us-east-1,mars-1"}, "mars-1"},
		{[]string{"--regions", "eu-west-1,eu-west-1"}, "twice"},
		{[]string{"--regions", " , "}, "--regions: empty"},
		{[]string{"--region", "ap-southeast-2", "--regions", "eu-west-1"}, "not one of regions"},
		{[]string{"--region", "nowhere"}, "not an AWS region"},
		{[]string{"--zone2-name", ""}, "must not be empty"},
		{[]string{"--tunnel-quota", "-1"}, "negative"},
		{[]string{"--zone2-id", cloudsim.DefaultZoneID}, "one name and one account"},
	} {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

func TestParseFlagsRegions(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		home, want string
	}{
		{nil, "us-east-1", "us-east-1,us-east-2,us-west-2,eu-west-1,eu-central-1,ap-southeast-2"},
		// --region alone: the default set grows by it.
		{[]string{"--region", "sa-east-1"}, "sa-east-1", "sa-east-1,us-east-1,us-east-2,us-west-2,eu-west-1,eu-central-1,ap-southeast-2"},
		{[]string{"--region", "eu-west-1", "--regions", "us-east-1, eu-west-1"}, "eu-west-1", "eu-west-1,us-east-1"},
	} {
		o, err := parseFlags(tc.args)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.args, err)
		}
		got := cloudsim.New(o.cfg)
		if got.Config().Region != tc.home || strings.Join(got.Regions(), ",") != tc.want {
			t.Errorf("parse %q: home %s regions %v, want %s and %s", tc.args, got.Config().Region, got.Regions(), tc.home, tc.want)
		}
	}
}

// The second Cloudflare identity is DefaultConfig's unless the flags say
// otherwise; an empty --cf2-token serves the first only.
func TestParseFlagsIdentities(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		want  string
		quota int
	}{
		{nil, "[{sandbox-token a1b2c3d4e5f60718293a4b5c6d7e8f90 f0e1d2c3b4a5968778695a4b3c2d1e0f sandbox.tunnelward.test} " +
			"{sandbox2-token b2c3d4e5f60718293a4b5c6d7e8f90a1 e0f1d2c3b4a5968778695a4b3c2d1e0f sandbox2.tunnelward.test}]", 1000},
		{[]string{"--cf2-token", ""}, "[{sandbox-token a1b2c3d4e5f60718293a4b5c6d7e8f90 f0e1d2c3b4a5968778695a4b3c2d1e0f sandbox.tunnelward.test}]", 1000},
		{[]string{"--cf2-token", "sandbox-token", "--account2-id", cloudsim.DefaultAccountID, "--zone2-id", "0123456789abcdef0123456789abcdef",
			"--zone2-name", "other.test", "--tunnel-quota", "5"},
			"[{sandbox-token a1b2c3d4e5f60718293a4b5c6d7e8f90 f0e1d2c3b4a5968778695a4b3c2d1e0f sandbox.tunnelward.test} " +
				"{sandbox-token a1b2c3d4e5f60718293a4b5c6d7e8f90 0123456789abcdef0123456789abcdef other.test}]", 5},
	} {
		o, err := parseFlags(tc.args)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.args, err)
		}
		if got := fmt.Sprint(o.cfg.CFIdentities()); got != tc.want || o.cfg.TunnelQuota != tc.quota {
			t.Errorf("parse %q: identities %s quota %d, want %s and %d", tc.args, got, o.cfg.TunnelQuota, tc.want, tc.quota)
		}
	}
}

// A mistyped flag is named as typed, with the closest flag and --help.
func TestUnknownFlagNamedAsTyped(t *testing.T) {
	for args, want := range map[string]string{
		"--bogus":   "unknown flag --bogus; see cloudsim --help",
		"--seeed":   "unknown flag --seeed (did you mean --seed?); see cloudsim --help",
		"-cf_token": "unknown flag -cf_token (did you mean --cf-token?); see cloudsim --help",
	} {
		err := run([]string{args, "x"})
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", args, err, want)
		}
	}
}

// --help has the layout of the other commands' generated help (two dashes,
// metavars, wrapped), on stdout, exit 0.
func TestHelpMatchesTheOtherCommands(t *testing.T) {
	var out, errb strings.Builder
	if code := realMain([]string{"--help"}, &out, &errb); code != 0 || errb.Len() != 0 {
		t.Fatalf("--help: exit %d, stderr %q", code, errb.String())
	}
	h := out.String()
	for _, want := range []string{"Usage: cloudsim [flags]\n", "\nFlags:\n", "  --listen HOST:PORT\n      HTTP address", "(default 127.0.0.1:8787)",
		"  --boot-delay DURATION\n", "  --no-rate-limits\n", "  --faults RULES\n", "  --state-file PATH\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("--help lacks %q:\n%s", want, h)
		}
	}
	for _, line := range strings.Split(h, "\n") {
		if len(line) > 80 && !strings.Contains(line, `[{"op"`) {
			t.Errorf("line longer than 80 columns: %q", line)
		}
		if strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
			t.Errorf("Go flag style line: %q", line)
		}
	}
	out.Reset()
	if code := realMain([]string{"--bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "cloudsim: unknown flag --bogus; see cloudsim --help") {
		t.Fatalf("--bogus: exit %d, stderr %q", code, errb.String())
	}
}

// cloudsimRun is serve() in this process until stop.
type cloudsimRun struct {
	url    string
	cancel context.CancelFunc
	done   chan error
}

func startCloudsim(t *testing.T, args ...string) *cloudsimRun {
	t.Helper()
	addr := testbin.FreeAddr(t)
	o, err := parseFlags(append([]string{"--listen", addr, "--no-rate-limits"}, args...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &cloudsimRun{url: "http://" + addr, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- serve(ctx, o, io.Discard) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-r.done:
			t.Fatalf("cloudsim stopped: %v", err)
		default:
		}
		if resp, err := http.Get(r.url + "/_sim/state"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cloudsim did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

func (r *cloudsimRun) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("cloudsim: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cloudsim did not stop")
	}
}

func (r *cloudsimRun) createTunnel(t *testing.T, name string) string {
	t.Helper()
	status, id := r.createTunnelAs(t, cloudsim.DefaultCFToken, cloudsim.DefaultAccountID, name)
	if status != 200 {
		t.Fatalf("create tunnel %s: %d", name, status)
	}
	return id
}

// createTunnelAs creates a tunnel in account with token: the status and id.
func (r *cloudsimRun) createTunnelAs(t *testing.T, token, account, name string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", r.url+"/client/v4/accounts/"+account+"/cfd_tunnel",
		strings.NewReader(`{"name":"`+name+`","config_src":"cloudflare"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Result struct{ ID string } }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("create tunnel %s: %d %v", name, resp.StatusCode, err)
	}
	return resp.StatusCode, out.Result.ID
}

// The process serves the second identity by default, keeps its tunnels in
// the state file, and serves the first only with an empty --cf2-token.
func TestServesTheSecondIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "world.json")
	r := startCloudsim(t, "--state-file", path)
	st, id := r.createTunnelAs(t, cloudsim.DefaultCF2Token, cloudsim.DefaultAccount2ID, "tw-acme")
	if st != 200 || id == "" {
		t.Fatalf("token 2 in account 2: %d", st)
	}
	if st, _ := r.createTunnelAs(t, cloudsim.DefaultCFToken, cloudsim.DefaultAccount2ID, "tw-acme"); st != http.StatusForbidden {
		t.Fatalf("token 1 in account 2: %d, want 403", st)
	}
	r.createTunnel(t, "tw-acme") // the same name in account 1
	r.stop(t)

	r = startCloudsim(t, "--state-file", path)
	if got := r.tunnels(t); got[id] != "tw-acme" || len(got) != 2 {
		t.Fatalf("after a restart: tunnels %v, want account 2's %s among two", got, id)
	}
	if st, _ := r.createTunnelAs(t, cloudsim.DefaultCF2Token, cloudsim.DefaultAccount2ID, "tw-acme"); st != http.StatusConflict {
		t.Fatalf("account 2's tw-acme again after the restart: %d, want 409", st)
	}
	r.stop(t)

	r = startCloudsim(t, "--cf2-token", "")
	if st, _ := r.createTunnelAs(t, cloudsim.DefaultCF2Token, cloudsim.DefaultAccount2ID, "tw-acme"); st != http.StatusForbidden {
		t.Fatalf("token 2 without a second identity: %d, want 403", st)
	}
	r.stop(t)
	// A world holding account 2's tunnels needs an emulator serving it.
	var out, errb strings.Builder
	if code := realMain([]string{"--listen", "127.0.0.1:0", "--state-file", path, "--cf2-token", ""}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), cloudsim.DefaultAccount2ID) {
		t.Fatalf("account 2's world without account 2: exit %d, stderr %q", code, errb.String())
	}
}

func (r *cloudsimRun) tunnels(t *testing.T) map[string]string {
	t.Helper()
	resp, err := http.Get(r.url + "/_sim/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st cloudsim.WorldState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tn := range st.Tunnels {
		out[tn["id"].(string)] = tn["name"].(string)
	}
	return out
}

// --state-file keeps the world across a restart, with new ids after it; a
// file that cannot be loaded stops the start, naming the file and the way
// to start from empty. Without the flag nothing is written.
func TestStateFileKeepsTheWorld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "world.json")

	r := startCloudsim(t, "--state-file", path)
	first := r.createTunnel(t, "tw-acme")
	r.stop(t)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no state file after a graceful stop: %v", err)
	}

	r = startCloudsim(t, "--state-file", path)
	if got := r.tunnels(t); got[first] != "tw-acme" {
		t.Fatalf("after a restart: tunnels %v, want %s", got, first)
	}
	second := r.createTunnel(t, "tw-globex")
	if second == first {
		t.Fatalf("the restarted world handed out %s again", first)
	}
	r.stop(t)

	if err := os.WriteFile(path, []byte(`{"format":"tunnelward-cloudsim-world","vers`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	if code := realMain([]string{"--listen", "127.0.0.1:0", "--state-file", path}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "--state-file: cloud emulator state file "+path+" cannot be loaded") ||
		!strings.Contains(errb.String(), "delete it") {
		t.Fatalf("corrupt state file: exit %d, stderr %q", code, errb.String())
	}

	// Off by default: the hermetic emulator the tests use writes nothing.
	empty := t.TempDir()
	t.Chdir(empty)
	r = startCloudsim(t)
	r.createTunnel(t, "tw-acme")
	r.stop(t)
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("without --state-file cloudsim wrote %v", entries)
	}
}
