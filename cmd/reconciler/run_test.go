package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
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
	t.Parallel()
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
	t.Parallel()
	var out, errb strings.Builder
	code := realMain([]string{"--cloud", "aws", "--data-dir", t.TempDir()}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "--cloud") {
		t.Fatalf("%d %q", code, errb.String())
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	var out, errb strings.Builder
	if code := realMain([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("%d %q", code, errb.String())
	}
	errb.Reset()
	if code := realMain([]string{"status", "--data-dir", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no state file") {
		t.Fatalf("%d %q", code, errb.String())
	}
}

// A flag the reconciler does not know is named as typed (not Go's -bogus),
// with the closest known flag and the command's --help.
func TestUnknownFlagNamedAsTyped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--bogus"}, 2, "reconciler run: unknown flag --bogus; see reconciler --help\n"},
		{[]string{"status", "--data_dir", "x"}, 2, "reconciler status: unknown flag --data_dir (did you mean --data-dir?); see reconciler status --help\n"},
		{[]string{"plan", "acme", "--sweep-intervall", "1m"}, 1, "reconciler plan: unknown flag --sweep-intervall (did you mean --sweep-interval?); see reconciler plan --help\n"},
		{[]string{"run", "--workers"}, 2, "reconciler run: flag --workers needs a value (--workers VALUE); see reconciler run --help\n"},
	} {
		var out, errb strings.Builder
		if code := realMain(tc.args, &out, &errb); code != tc.code || errb.String() != tc.want {
			t.Errorf("%q: exit %d, stderr %q; want exit %d, %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}

// --help of the reconciler and of every command is generated from the
// definitions: every setting, each command's own flags, every command.
func TestHelpEveryCommand(t *testing.T) {
	t.Parallel()
	var out, errb strings.Builder
	if code := realMain([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help: exit %d %s", code, errb.String())
	}
	for _, c := range commands {
		if !strings.Contains(out.String(), "  "+c.name) {
			t.Errorf("--help lacks command %s", c.name)
		}
	}
	for _, c := range commands {
		out.Reset()
		if code := realMain([]string{c.name, "--help"}, &out, &errb); code != 0 {
			t.Fatalf("%s --help: exit %d", c.name, code)
		}
		h := out.String()
		if c.name != "run" && !strings.HasPrefix(h, "Usage: reconciler "+c.name) {
			t.Errorf("%s --help starts %q", c.name, h[:min(60, len(h))])
		}
		for _, f := range config.FlagNames() {
			if !strings.Contains(h, "--"+f+" ") {
				t.Errorf("%s --help lacks --%s", c.name, f)
			}
		}
		if c.output != strings.Contains(h, "  -o FORMAT") {
			t.Errorf("%s --help: -o shown %v, command takes it %v", c.name, !c.output, c.output)
		}
	}
}

// Every wrong setting is named at once, from flags and environment alike,
// and nothing starts (exit 2; plan's errors exit 1 since its 2 means changes).
func TestConfigErrorsNamedBeforeStart(t *testing.T) {
	// Not parallel: replaces getenv, which parallel tests read.
	getenv = func(k string) string {
		return map[string]string{"TUNNELWARD_SWEEP_INTERVAL": "often", "TUNNELWARD_ADMIN_LISTEN": "nowhere"}[k]
	}
	defer func() { getenv = os.Getenv }()
	dir := t.TempDir()
	for cmd, want := range map[string]int{"run": 2, "status": 2, "replay": 2, "plan": 1} {
		var out, errb strings.Builder
		code := realMain([]string{cmd, "--data-dir", dir, "--workers", "0", "--log-format", "xml"}, &out, &errb)
		if code != want {
			t.Errorf("%s: exit %d, want %d", cmd, code, want)
		}
		for _, s := range []string{"--workers", "--log-format", "--sweep-interval", "TUNNELWARD_SWEEP_INTERVAL", "--admin-listen"} {
			if !strings.Contains(errb.String(), s) {
				t.Errorf("%s: error does not name %s:\n%s", cmd, s, errb.String())
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("something started: %v", entries)
	}
}

// --cloud live on the command line with every other setting in the
// environment reaches the engine as live settings (no sandbox identities):
// the engine is built from the one resolved configuration.
func TestLiveFlagWithEnvironmentReachesTheEngine(t *testing.T) {
	// Not parallel: replaces getenv, which parallel tests read.
	env := map[string]string{
		"TUNNELWARD_NATS_URL":              "nats://nats.internal:4222",
		"TUNNELWARD_CLOUDFLARE_ACCOUNT_ID": "0123456789abcdef0123456789abcdef",
		"TUNNELWARD_CLOUDFLARE_ZONE_ID":    "fedcba9876543210fedcba9876543210",
		"TUNNELWARD_CLOUDFLARE_ZONE_NAME":  "example.com",
		"TUNNELWARD_CLOUDFLARE_API_TOKEN":  "cfTok_LiveSecretValue_0123456789abcdefghij",
		"TUNNELWARD_AWS_REGION":            "eu-west-1",
		"TUNNELWARD_INSTANCE_AMI":          "ami-0abcdef1234567890",
		"TUNNELWARD_INSTANCE_SUBNET":       "subnet-0abcdef1234567890",
		"TUNNELWARD_INSTANCE_PROFILE":      "tunnelward-instance",
		"TUNNELWARD_WORKERS":               "9",
		// Nothing may reach a real AWS endpoint or credential source.
		"AWS_EC2_METADATA_DISABLED": "true",
	}
	getenv = func(k string) string { return env[k] }
	defer func() { getenv = os.Getenv }()
	var errb strings.Builder
	_, cx, code := parseCommand([]string{"--cloud", "live", "--data-dir", t.TempDir()}, getenv, &errb, &errb)
	if cx == nil {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if cx.cfg.Cloud != config.ModeLive || cx.cfg.Source("cloud") != "flag" || cx.cfg.Source("cloudflare-zone-name") != "env" {
		t.Fatalf("config: cloud %q (from %s), zone name from %s", cx.cfg.Cloud, cx.cfg.Source("cloud"), cx.cfg.Source("cloudflare-zone-name"))
	}
	ecfg, _, err := engineConfig(context.Background(), cx.cfg, "", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ecfg.ZoneName != "example.com" || ecfg.Instance.ImageID != "ami-0abcdef1234567890" ||
		ecfg.Instance.SubnetID != "subnet-0abcdef1234567890" || ecfg.Workers != 9 || ecfg.HealthGrace != config.DefaultHealthGrace {
		t.Fatalf("engine config is not the live one: %+v", ecfg)
	}
	if cx.cfg.AWS.AccessKeyID != "" {
		t.Fatalf("live mode carries the sandbox AWS key %q", cx.cfg.AWS.AccessKeyID)
	}
}

// NATS unreachable at start: within seconds the log names the URL and why,
// and says it keeps retrying (each attempt, with a growing wait); stopped,
// the error names them too.
func TestUnreachableNATSSaysWhereAndWhy(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close() // nothing listens there now
	c, err := config.Parse([]string{"--data-dir", t.TempDir(), "--nats-url", url, "--admin-listen", freeAddr(t),
		"--sandbox-listen", freeAddr(t)}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedWriter{b: &strings.Builder{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, c, slog.New(slog.NewTextHandler(logs, nil))) }()
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", logText(logs))
		}
	}()
	waitForLong(t, "two retry lines", 10*time.Second, func() bool {
		return strings.Count(logText(logs), "cannot reach NATS; retrying") >= 2
	})
	cancel()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10s of cancel")
	}
	for _, want := range []string{"url=" + url, "connection refused", "attempt=2", "retry_in=1s", "--nats-url"} {
		if !strings.Contains(logText(logs), want) {
			t.Errorf("log lacks %q:\n%s", want, logText(logs))
		}
	}
	if err == nil || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "--nats-url") {
		t.Fatalf("error does not name the URL, the cause and the flag: %v", err)
	}
}

func logText(w *lockedWriter) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
