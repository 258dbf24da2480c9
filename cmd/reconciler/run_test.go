package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/state"
)

// testConfig is a sandbox configuration on free ports, resolved by
// internal/config as the command line would be (extra flags appended).
func testConfig(t *testing.T, dataDir string, extra ...string) config.Config {
	t.Helper()
	args := append([]string{"--data-dir", dataDir, "--nats-listen", freeAddr(t), "--admin-listen", freeAddr(t),
		"--sandbox-listen", freeAddr(t)}, extra...)
	c, err := config.Parse(args, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRunServesAndStopsOnCancel(t *testing.T) {
	dir := t.TempDir()
	o := testConfig(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, slog.New(slog.DiscardHandler)) }()
	waitHTTP(t, "http://"+o.AdminListen+"/readyz", 200)
	waitHTTP(t, "http://"+o.SandboxListen+"/_sim/state", 200)

	// A second reconciler on the same data dir refuses clearly.
	o2 := testConfig(t, dir)
	err := run(context.Background(), o2, slog.New(slog.DiscardHandler))
	if !errors.Is(err, state.ErrLocked) || !strings.Contains(err.Error(), "state.db") {
		t.Fatalf("second instance: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30s")
	}
	// Everything was released: bbolt can be opened again.
	s, err := state.Open(statePath(o), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestRunRejectsBadCloud(t *testing.T) {
	var out, errb strings.Builder
	code := realMain([]string{"--cloud", "aws", "--data-dir", t.TempDir()}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "--cloud") {
		t.Fatalf("%d %q", code, errb.String())
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errb strings.Builder
	if code := realMain([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("%d %q", code, errb.String())
	}
	errb.Reset()
	if code := realMain([]string{"status", "--data-dir", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no state file") {
		t.Fatalf("%d %q", code, errb.String())
	}
}
