package docs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/ingest"
	"github.com/tunnelward/tunnelward/internal/state"
)

// natsCLIVersion is the pinned nats CLI the guide is checked against; .ci/run
// installs it with:
//
//	go install github.com/nats-io/natscli/nats@v0.5.0
const natsCLIVersion = "v0.5.0"

// findNATS finds the nats CLI on PATH or in $(go env GOPATH)/bin. Without it
// the test skips locally and fails in CI.
func findNATS(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "nats")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	msg := "nats CLI not found on PATH or in $(go env GOPATH)/bin; install it with: go install github.com/nats-io/natscli/nats@" + natsCLIVersion
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// world is a running sandbox of the event pipeline: a real embedded
// nats-server with the project's streams, the real ingester consuming into a
// bbolt file, and a few events of which one is invalid (in the DLQ).
type world struct {
	url   string
	js    jetstream.JetStream
	store *state.Store
	// home holds the nats CLI's contexts for the whole guide, as one
	// operator's would: the Connecting step saves and selects one, and
	// every later command finds the server through it.
	home string
}

func startWorld(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := broker.StartEmbedded("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := broker.Connect(srv.ClientURL(), "", "docs-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.EnsureStreams(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ctx, ingest.Config{Consumer: ingest.ConsumerFor("r1"), JS: js, Store: store, Validator: v, MaxWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("ingester did not stop")
		}
		store.Close()
		nc.Close()
		srv.Shutdown()
	})

	publish := func(data any) {
		t.Helper()
		ev, err := events.New(data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := broker.PublishEvent(ctx, js, v, ev); err != nil {
			t.Fatal(err)
		}
	}
	publish(events.Created{OrgID: "acme", Slug: "acme"})
	publish(events.Created{OrgID: "globex", Slug: "globex"})
	// initech asks for a reserved slug: the reconciler dead-letters it.
	bad := `{"specversion":"1.0","id":"initech-created-1","type":"org.created","source":"platform","time":"2026-11-26T10:00:00Z","subject":"initech","data":{"org_id":"initech","slug":"www"}}`
	if _, err := broker.PublishPayload(ctx, js, "orgs.initech.created", "initech-created-1", []byte(bad)); err != nil {
		t.Fatal(err)
	}
	publish(events.HealthFailed{OrgID: "acme", Reason: "tunnel down", Observer: "uptime-probe"})

	w := &world{url: srv.ClientURL(), js: js, store: store, home: t.TempDir()}
	w.waitFor(t, "the ingester to settle every event and dead-letter one", func() (bool, error) {
		ci, err := js.Consumer(ctx, events.Stream, ingest.ConsumerFor("r1"))
		if err != nil {
			return false, err
		}
		info, err := ci.Info(ctx)
		if err != nil {
			return false, err
		}
		dlq, err := js.Stream(ctx, events.DLQStream)
		if err != nil {
			return false, err
		}
		dinfo, err := dlq.Info(ctx)
		if err != nil {
			return false, err
		}
		return info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream == 4 && dinfo.State.Msgs == 1, nil
	})
	return w
}

// waitFor polls cond until it holds or 20 s pass.
func (w *world) waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last error: %v)", what, last)
}

// defaultURL is the embedded server's address the guide names; the test's
// server listens on a free port instead, put in its place.
const defaultURL = "nats://127.0.0.1:4222"

// run runs one documented command line through bash, as an operator would
// paste it, with only the nats CLI in its environment: no NATS_URL, so the
// server comes from the context the guide's Connecting step selects, and
// the world's own HOME, so no operator's contexts leak in (the CLI falls
// back to the passwd entry's home when XDG_CONFIG_HOME is unset).
func (w *world) run(t *testing.T, natsBin, line string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", strings.ReplaceAll(line, defaultURL, w.url))
	cmd.Env = []string{
		"PATH=" + filepath.Dir(natsBin) + ":/usr/bin:/bin",
		"HOME=" + w.home,
		"XDG_CONFIG_HOME=" + filepath.Join(w.home, ".config"),
	}
	cmd.Stdin = nil // no terminal, as in CI
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// guideCommands extracts the command lines of the ```sh nats-cli blocks of
// a markdown file, in order, joining backslash continuations.
func guideCommands(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	in := false
	var cont strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case !in && trim == "```sh nats-cli":
			in = true
		case in && trim == "```":
			in = false
		case in && (trim == "" || strings.HasPrefix(trim, "#")):
		case in:
			if s, ok := strings.CutSuffix(trim, "\\"); ok {
				cont.WriteString(s + " ")
				continue
			}
			cont.WriteString(trim)
			cmds = append(cmds, cont.String())
			cont.Reset()
		}
	}
	if in {
		t.Fatalf("%s: unterminated nats-cli block", path)
	}
	return cmds
}

// step is one documented command and what its output must show.
type step struct {
	cmd   string
	check func(t *testing.T, w *world, out string)
}

func contains(want ...string) func(*testing.T, *world, string) {
	return func(t *testing.T, _ *world, out string) {
		t.Helper()
		for _, s := range want {
			if !strings.Contains(out, s) {
				t.Errorf("output lacks %q", s)
			}
		}
	}
}

func lacks(notWant ...string) func(*testing.T, *world, string) {
	return func(t *testing.T, _ *world, out string) {
		t.Helper()
		for _, s := range notWant {
			if strings.Contains(out, s) {
				t.Errorf("output shows %q", s)
			}
		}
	}
}

func all(fs ...func(*testing.T, *world, string)) func(*testing.T, *world, string) {
	return func(t *testing.T, w *world, out string) {
		t.Helper()
		for _, f := range fs {
			f(t, w, out)
		}
	}
}

// consumerJSON checks `nats consumer info --json`.
func consumerJSON(pending, ackPending, redelivered uint64) func(*testing.T, *world, string) {
	return func(t *testing.T, _ *world, out string) {
		t.Helper()
		var ci struct {
			Name   string `json:"name"`
			Config struct {
				Durable   string `json:"durable_name"`
				AckPolicy string `json:"ack_policy"`
			} `json:"config"`
			NumPending     uint64 `json:"num_pending"`
			NumAckPending  uint64 `json:"num_ack_pending"`
			NumRedelivered uint64 `json:"num_redelivered"`
		}
		if err := json.Unmarshal([]byte(out), &ci); err != nil {
			t.Fatalf("not consumer JSON: %v", err)
		}
		if ci.Config.Durable != ingest.ConsumerFor("r1") || ci.Config.AckPolicy != "explicit" {
			t.Errorf("consumer %q ack %q, want durable %q with explicit acks", ci.Config.Durable, ci.Config.AckPolicy, ingest.ConsumerFor("r1"))
		}
		if ci.NumPending != pending || ci.NumAckPending != ackPending || ci.NumRedelivered != redelivered {
			t.Errorf("pending %d ack-pending %d redelivered %d, want %d %d %d",
				ci.NumPending, ci.NumAckPending, ci.NumRedelivered, pending, ackPending, redelivered)
		}
	}
}

const republish = `nats pub orgs.initech.created --jetstream --header 'Nats-Msg-Id:initech-created-2' '{"specversion":"1.0","id":"initech-created-2","type":"org.created","source":"platform","time":"2026-11-26T10:05:00Z","subject":"initech","data":{"org_id":"initech","slug":"initech"}}'`

// guide is every command of docs/nats-cli.md, in order, with what it must
// show on the world startWorld builds.
var guide = []step{
	{`nats context add tunnelward-local --server nats://127.0.0.1:4222 --description "tunnelward, embedded NATS (no credentials)" --select`,
		func(t *testing.T, w *world, out string) {
			t.Helper()
			contains(`NATS Configuration Context "tunnelward-local"`, "Server URLs: "+w.url)(t, w, out)
			lacks("Credentials", "ERROR")(t, w, out)
		}},
	{"nats stream ls", contains(events.Stream, events.DLQStream)},
	{"nats stream info ORG_EVENTS", contains("Description: "+broker.EventsStreamConfig().Description,
		"Subjects: orgs.>", "Retention: Limits", "Storage: File", "Messages: 4", "First Sequence: 1", "Allows Msg Delete: false")},
	{"nats stream subjects ORG_EVENTS", contains("orgs.acme.created", "orgs.acme.health_failed", "orgs.globex.created", "orgs.initech.created")},
	{"nats stream subjects ORG_EVENTS 'orgs.acme.>'", all(contains("orgs.acme.created", "orgs.acme.health_failed"), lacks("globex", "initech"))},
	{"nats sub 'orgs.acme.>' --stream ORG_EVENTS --all -T", all(
		contains("subject: orgs.acme.created", "subject: orgs.acme.health_failed", `"slug":"acme"`, `"observer":"uptime-probe"`),
		lacks("globex", "initech"))},
	{"nats stream get ORG_EVENTS --last-for orgs.acme.created", contains("ORG_EVENTS#1", "orgs.acme.created", `"slug":"acme"`)},
	{"nats stream get ORG_EVENTS 1", contains("ORG_EVENTS#1", "Nats-Msg-Id:", `"type":"org.created"`)},
	{"nats consumer info ORG_EVENTS reconciler-r1", contains("Name: reconciler-r1", "Ack Policy: Explicit", "Unprocessed Messages: 0", "Outstanding Acks: 0", "Redelivered Messages: 0", "Stream sequence: 4")},
	{"nats consumer info ORG_EVENTS reconciler-r1 --json", consumerJSON(0, 0, 0)},
	{"nats stream info ORG_EVENTS_DLQ", contains("Subjects: dlq.orgs.>", "Messages: 1")},
	{"nats stream subjects ORG_EVENTS_DLQ", all(contains("dlq.orgs.initech.created"), lacks("acme", "globex"))},
	{"nats stream get ORG_EVENTS_DLQ 1", contains(
		"Tw-Dlq-Code: reserved_slug", "Tw-Dlq-Field: /data/slug", `Tw-Dlq-Reason: invalid event (reserved_slug): /data/slug: slug "www" is reserved`,
		"Tw-Dlq-Original-Subject: orgs.initech.created", "Tw-Dlq-Original-Seq: 3", "Tw-Dlq-Original-Stream: ORG_EVENTS",
		"Tw-Dlq-Original-Msg-Id: initech-created-1", `"slug":"www"`)},
	{republish, func(t *testing.T, w *world, out string) {
		t.Helper()
		contains("Stored in Stream: ORG_EVENTS Sequence: 5")(t, w, out)
		// The reconciler applied the corrected event to its desired state.
		w.waitFor(t, "initech in bbolt", func() (bool, error) {
			o, ok, err := w.store.Get("initech")
			return ok && o.Desired.Slug == "initech", err
		})
	}},
	{"nats consumer info ORG_EVENTS reconciler-r1 --json", consumerJSON(0, 0, 0)},
	{"nats stream rmm ORG_EVENTS_DLQ 1 -f", func(*testing.T, *world, string) {}},
	{"nats stream info ORG_EVENTS_DLQ", contains("Messages: 0")},
	{"nats stream info ORG_EVENTS --json", func(t *testing.T, _ *world, out string) {
		t.Helper()
		var si struct {
			Config struct {
				Retention string `json:"retention"`
				Storage   string `json:"storage"`
			} `json:"config"`
			State struct {
				Messages uint64 `json:"messages"`
				FirstSeq uint64 `json:"first_seq"`
			} `json:"state"`
		}
		if err := json.Unmarshal([]byte(out), &si); err != nil {
			t.Fatalf("not stream JSON: %v", err)
		}
		if si.State.FirstSeq != 1 || si.State.Messages != 5 || si.Config.Retention != "limits" || si.Config.Storage != "file" {
			t.Errorf("stream state %+v config %+v, want first_seq 1, 5 messages, limits retention, file storage", si.State, si.Config)
		}
	}},
}

func TestNATSCLIGuide(t *testing.T) {
	t.Parallel()
	bin := findNATS(t)
	cmds := guideCommands(t, "nats-cli.md")
	var want []string
	for _, s := range guide {
		want = append(want, s.cmd)
	}
	if strings.Join(cmds, "\n") != strings.Join(want, "\n") {
		t.Fatalf("docs/nats-cli.md and this test disagree on the commands; the guide has:\n%s\nthe test checks:\n%s",
			strings.Join(cmds, "\n"), strings.Join(want, "\n"))
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != natsCLIVersion {
		t.Logf("nats CLI %s is %q, not the pinned %s (err %v); results may differ", bin, strings.TrimSpace(string(out)), natsCLIVersion, err)
	}
	w := startWorld(t)
	for i, s := range guide {
		out, err := w.run(t, bin, s.cmd)
		if err != nil {
			t.Fatalf("step %d: $ %s\nfailed: %v\n%s", i+1, s.cmd, err, out)
		}
		ok := t.Run(fmt.Sprintf("%02d", i+1), func(t *testing.T) { s.check(t, w, out) })
		if !ok {
			t.Logf("$ %s\n%s", s.cmd, out)
		}
	}
}

func TestGuideUsesNoTerminalCommands(t *testing.T) {
	b, err := os.ReadFile("nats-cli.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range guideCommands(t, "nats-cli.md") {
		if !strings.HasPrefix(c, "nats ") {
			t.Errorf("nats-cli block runs %q; only nats commands belong there", c)
		}
		if strings.Contains(c, "stream view") || (strings.Contains(c, " rm") && !strings.Contains(c, " -f")) {
			t.Errorf("%q needs a terminal", c)
		}
	}
	if !strings.Contains(string(b), "go install github.com/nats-io/natscli/nats@"+natsCLIVersion) {
		t.Errorf("the guide does not name the pinned CLI version %s", natsCLIVersion)
	}
}
