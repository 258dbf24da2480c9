package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/testbin"
)

// busy holds a listener on a free loopback port for the test's duration.
func busy(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// Every taken listen address is reported in one go, and with an external
// NATS server the failed start created no stream there.
func TestBusyPortsReportedAtOnceBeforeNATS(t *testing.T) {
	t.Parallel()
	ns, err := broker.StartEmbedded("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	admin, sandbox, natsListen := busy(t), busy(t), busy(t)
	env := func(string) string { return "" }

	external, err := config.Parse([]string{"--data-dir", t.TempDir(), "--nats-url", ns.ClientURL(),
		"--admin-listen", admin, "--sandbox-listen", sandbox}, env)
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := config.Parse([]string{"--data-dir", t.TempDir(), "--nats-listen", natsListen,
		"--admin-listen", admin, "--sandbox-listen", sandbox}, env)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cfg  config.Config
		want []string
	}{
		"external nats": {external, []string{"--admin-listen " + admin, "--sandbox-listen " + sandbox}},
		"embedded nats": {embedded, []string{"--admin-listen " + admin, "--sandbox-listen " + sandbox, "--nats-listen " + natsListen}},
	} {
		err := run(context.Background(), tc.cfg, slog.New(slog.DiscardHandler))
		var se *startError
		if !errors.As(err, &se) || len(se.problems) != len(tc.want) {
			t.Fatalf("%s: want %d start-up problems, got %v", name, len(tc.want), err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w+": address already in use") {
				t.Errorf("%s: error does not report %s as taken: %v", name, w, err)
			}
		}
	}

	nc, err := broker.Connect(ns.ClientURL(), "", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, events.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("a start that failed on a taken port touched NATS: stream %s: %v", events.Stream, err)
	}
}

// A data dir the reconciler may not write is named with its flag and a fix,
// together with a taken port, before anything starts. Run as a process
// under a user that lacks the permission (nobody, when the tests run as
// root).
func TestDataDirNotWritableNamesFlagAndFix(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the reconciler")
	}
	t.Parallel()
	root, err := os.MkdirTemp("", "tw-preflight-")
	if err != nil {
		t.Fatal(err)
	}
	locked := filepath.Join(root, "locked")
	t.Cleanup(func() {
		_ = os.Chmod(locked, 0o755)
		_ = os.RemoveAll(root)
	})
	if err := os.Chmod(root, 0o755); err != nil { // the other user runs the binary from here
		t.Fatal(err)
	}
	// A copy the other user may reach (the shared one may be under a home
	// directory only its owner enters).
	bin, err := testbin.CopyTo(root, "reconciler", "./cmd/reconciler")
	if err != nil {
		t.Fatal(err)
	}
	// Writable by its owner only; as root, run as nobody, who is not it.
	if err := os.Mkdir(locked, 0o555); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(locked, "data")
	admin := busy(t)
	cmd := exec.Command(bin, "--data-dir", dataDir, "--admin-listen", admin, "--sandbox-listen", freeAddr(t), "--nats-listen", freeAddr(t), "--log-format", "text")
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v\n%s", err, out)
	}
	for _, want := range []string{"--data-dir " + dataDir, "permission denied", "fix:", "choose a writable directory with --data-dir DIR",
		"--admin-listen " + admin + ": address already in use", "2 start-up problem(s)", "nothing was started"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data dir exists after a refused start: %v", err)
	}
}
