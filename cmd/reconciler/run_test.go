package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/state"
)

func testOptions(t *testing.T, dataDir string) options {
	return options{dataDir: dataDir, natsListen: freeAddr(t), adminListen: freeAddr(t), sandboxListen: freeAddr(t), cloud: "sandbox"}
}

func TestRunServesAndStopsOnCancel(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, slog.New(slog.DiscardHandler)) }()
	waitHTTP(t, "http://"+o.adminListen+"/readyz", 200)
	waitHTTP(t, "http://"+o.sandboxListen+"/_sim/state", 200)

	// A second reconciler on the same data dir refuses clearly.
	o2 := testOptions(t, dir)
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
	s, err := state.Open(o.statePath(), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestRunRejectsBadCloud(t *testing.T) {
	o := testOptions(t, t.TempDir())
	o.cloud = "aws"
	if err := run(context.Background(), o, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--cloud") {
		t.Fatalf("%v", err)
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
