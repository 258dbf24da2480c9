package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/testbin"
)

// TestProcesses runs the built reconciler and publisher binaries against a
// standalone nats-server process: the deployment shape with an external
// broker.
func TestProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	t.Parallel()
	bin := filepath.Dir(reconcilerBinary(t))
	publisherBinary(t)
	binary(t, "nats-server", "github.com/nats-io/nats-server/v2")
	natsPort, adminAddr, sandboxAddr := freePort(t), freeAddr(t), freeAddr(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	ns := start(t, filepath.Join(bin, "nats-server"), "-js", "-sd", t.TempDir(), "-a", "127.0.0.1", "-p", fmt.Sprint(natsPort))
	defer stopProc(t, ns)

	dataDir := t.TempDir()
	recArgs := []string{"--data-dir", dataDir, "--nats-url", natsURL, "--admin-listen", adminAddr, "--sandbox-listen", sandboxAddr}
	rec := start(t, filepath.Join(bin, "reconciler"), recArgs...)
	waitHTTP(t, "http://"+adminAddr+"/readyz", 200)
	if !strings.Contains(rec.log(), "SANDBOX MODE") {
		t.Fatalf("reconciler does not say it runs against the sandbox:\n%s", rec.log())
	}

	pub := func(wantCode int, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "publisher"), append(args, "--nats-url", natsURL, "--timeout", "10s")...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantCode {
			t.Fatalf("publisher %v: exit %d, want %d\n%s", args, code, wantCode, out)
		}
		return string(out)
	}
	pub(0, "created", "--org", "acme", "--slug", "acme", "--id", "p-1")
	if out := pub(0, "created", "--org", "acme", "--slug", "acme", "--id", "p-1"); !strings.Contains(out, "duplicate") {
		t.Fatalf("second publish of p-1: %s", out)
	}
	pub(0, "health-failed", "--org", "acme", "--reason", "530 from edge", "--observer", "probe")
	pub(0, "created", "--org", "globex", "--slug", "globex")
	pub(0, "deleted", "--org", "globex")
	if out := pub(2, "created", "--org", "bad", "--slug", "admin"); !strings.Contains(out, "/data/slug") {
		t.Fatalf("invalid publish: %s", out)
	}
	// Another publisher ignoring the contract: dead-lettered by the reconciler.
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(context.Background(), "orgs.rogue.created", []byte(`{"type":"org.created"}`)); err != nil {
		t.Fatal(err)
	}
	pub(0, "created", "--org", "last", "--slug", "last")

	waitFor(t, "last org via admin API", func() bool { return httpCode("http://"+adminAddr+"/v1/orgs/last") == 200 })
	var acme state.Org
	getJSON(t, "http://"+adminAddr+"/v1/orgs/acme", &acme)
	if acme.Desired.Presence != state.Present || len(acme.HealthReports) != 1 || acme.LastSeq != 2 {
		t.Fatalf("acme: %+v", acme)
	}
	waitFor(t, "dead letter", func() bool {
		s, err := js.Stream(context.Background(), events.DLQStream)
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	})
	dl, err := js.Stream(context.Background(), events.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dl.GetMsg(context.Background(), 1)
	if err != nil || m.Header.Get(ingest.HeaderOriginalSubject) != "orgs.rogue.created" || m.Header.Get(ingest.HeaderOriginalSeq) != "5" {
		t.Fatalf("dead letter: %v %+v", err, m)
	}

	// Graceful stop on SIGTERM, then status reads bbolt directly.
	if code := stopProc(t, rec); code != 0 {
		t.Fatalf("reconciler exit %d after SIGTERM\n%s", code, rec.log())
	}
	out, err := exec.Command(filepath.Join(bin, "reconciler"), "status", "-o", "json", "--data-dir", dataDir).Output()
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Orgs []state.Org }
	if err := json.Unmarshal(out, &st); err != nil || len(st.Orgs) != 3 || st.Orgs[1].ID != "globex" || st.Orgs[1].Desired.Presence != state.Deleted {
		t.Fatalf("status: %v %s", err, out)
	}
	table, _ := exec.Command(filepath.Join(bin, "reconciler"), "status", "acme", "--data-dir", dataDir).Output()
	if !strings.Contains(string(table), "acme") || !strings.Contains(string(table), "present") {
		t.Fatalf("status table: %s", table)
	}

	// Replay rebuilds the same desired state.
	if out, err := exec.Command(filepath.Join(bin, "reconciler"), "replay", "--data-dir", dataDir, "--nats-url", natsURL).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "replayed 6 events (1 invalid skipped)") || !strings.Contains(string(out), "0 with changed desired state") {
		t.Fatalf("replay: %v\n%s", err, out)
	}

	// Restart resumes from the durable consumer: only the new event applies.
	rec = start(t, filepath.Join(bin, "reconciler"), recArgs...)
	defer stopProc(t, rec)
	waitHTTP(t, "http://"+adminAddr+"/readyz", 200)
	pub(0, "deleted", "--org", "acme")
	waitFor(t, "acme deleted", func() bool {
		var o state.Org
		getJSON(t, "http://"+adminAddr+"/v1/orgs/acme", &o)
		return o.Desired.Presence == state.Deleted && o.LastSeq == 7
	})
}

type proc struct {
	cmd  *exec.Cmd
	out  *lockedWriter
	done chan struct{}
}

func (p *proc) log() string {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	return p.out.b.String()
}

func start(t *testing.T, path string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(path, args...), out: &lockedWriter{b: &strings.Builder{}}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p
}

// stopProc sends SIGTERM and waits (30 s, the shutdown budget); returns
// the exit code.
func stopProc(t *testing.T, p *proc) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 30s of SIGTERM", p.cmd.Path)
	}
	return p.cmd.ProcessState.ExitCode()
}

// freePort is a loopback port free now and never returned before in this
// test binary.
func freePort(t *testing.T) int { t.Helper(); return testbin.FreePort(t) }

func freeAddr(t *testing.T) string { t.Helper(); return testbin.FreeAddr(t) }

func httpCode(url string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitHTTP(t *testing.T, url string, code int) {
	t.Helper()
	waitFor(t, url, func() bool { return httpCode(url) == code })
}

func getJSON(t *testing.T, url string, into any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForLong(t, what, 30*time.Second, cond)
}

// waitForLong is this package's one polling loop: cond every 50 ms until
// it holds, failing the test after limit.
func waitForLong(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
