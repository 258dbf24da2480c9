package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/testbin"
)

func server(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	e, err := broker.StartEmbedded("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := broker.Connect(e.ClientURL(), "", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return e.ClientURL(), js
}

func runCLI(stdin string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), events.Stream)
	if err != nil {
		return 0
	}
	info, _ := s.Info(context.Background())
	return info.State.Msgs
}

func TestPublishAndDuplicate(t *testing.T) {
	url, js := server(t)
	code, out, errs := runCLI("", "created", "--org", "acme", "--slug", "acme", "--region", "eu-west-1", "--id", "evt-1", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "published org.created org=acme id=evt-1 stream=ORG_EVENTS seq=1") {
		t.Fatalf("%d %q %q", code, out, errs)
	}
	code, out, _ = runCLI("", "created", "--org", "acme", "--slug", "acme", "--region", "eu-west-1", "--id", "evt-1", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "duplicate") || !strings.Contains(out, "seq 1") {
		t.Fatalf("%d %q", code, out)
	}
	code, out, _ = runCLI("", "health-failed", "--org", "acme", "--reason", "530", "--observer", "probe", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "seq=2") {
		t.Fatalf("%d %q", code, out)
	}
	code, _, _ = runCLI("", "deleted", "--org", "acme", "--nats-url", url)
	if code != 0 || streamMsgs(t, js) != 3 {
		t.Fatalf("code %d, %d messages", code, streamMsgs(t, js))
	}
	// The message carries the event id as Nats-Msg-Id and validates.
	s, _ := js.Stream(context.Background(), events.Stream)
	m, err := s.GetMsg(context.Background(), 1)
	if err != nil || m.Header.Get(jetstream.MsgIDHeader) != "evt-1" || m.Subject != "orgs.acme.created" {
		t.Fatalf("%v %+v", err, m)
	}
	v, _ := events.NewValidator()
	if _, err := v.Decode(m.Subject, m.Data); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidInputPublishesNothing(t *testing.T) {
	url, js := server(t)
	cases := [][]string{
		{"created", "--org", "acme", "--slug", "www"},
		{"created", "--org", "acme", "--slug", "a.b"},
		{"created", "--org", "Acme", "--slug", "acme"},
		{"created", "--org", "acme"},
		{"health-failed", "--org", "acme", "--reason", "x"},
		{"renamed", "--org", "acme"},
	}
	wantField := []string{"--slug", "--slug", "--org", "--slug", "--observer", "unknown command"}
	for i, args := range cases {
		code, out, errs := runCLI("", append(args, "--nats-url", url)...)
		if code != exitInvalid || out != "" || !strings.Contains(errs, wantField[i]) {
			t.Fatalf("%v: code %d out %q err %q", args, code, out, errs)
		}
	}
	batch := `{"type":"org.created","data":{"org_id":"a","slug":"a"}}
{"type":"org.created","data":{"org_id":"b","slug":"admin"}}

{"type":"org.deleted","data":{"org_id":"c"}}
{"type":"org.created","data":{"org_id":"d"}}
not json
`
	code, out, errs := runCLI(batch, "batch", "--nats-url", url)
	if code != exitInvalid || out != "" {
		t.Fatalf("batch: %d %q", code, out)
	}
	for _, want := range []string{"line 2:", "/data/slug", "line 5:", "line 6:", "nothing published"} {
		if !strings.Contains(errs, want) {
			t.Fatalf("batch errors %q lack %q", errs, want)
		}
	}
	if n := streamMsgs(t, js); n != 0 {
		t.Fatalf("%d messages published from invalid input", n)
	}
}

func TestBatchPublishesInOrder(t *testing.T) {
	url, js := server(t)
	batch := `{"id":"b-1","type":"org.created","data":{"org_id":"a","slug":"a"}}
{"id":"b-2","type":"org.deleted","data":{"org_id":"a"}}
{"id":"b-3","type":"org.created","data":{"org_id":"a","slug":"a2"}}
`
	code, out, errs := runCLI(batch, "batch", "--nats-url", url)
	if code != 0 || strings.Count(out, "published") != 3 || streamMsgs(t, js) != 3 {
		t.Fatalf("%d %q %q", code, out, errs)
	}
	code, out, _ = runCLI(batch, "batch", "--nats-url", url) // re-run: all duplicates
	if code != 0 || strings.Count(out, "duplicate") != 3 || streamMsgs(t, js) != 3 {
		t.Fatalf("rerun: %d %q", code, out)
	}
}

// Nothing listens at the URL: each retry says where and why, and so does
// the final error, with the flag to check; a password in the URL never
// shows.
func TestUnreachableServerTimesOut(t *testing.T) {
	for _, url := range []string{"nats://127.0.0.1:1", "nats://app:hunter2Secret@127.0.0.1:1"} {
		code, _, errs := runCLI("", "deleted", "--org", "acme", "--nats-url", url, "--timeout", "1200ms")
		if code != exitFailed {
			t.Fatalf("%s: exit %d %q", url, code, errs)
		}
		shown := strings.Replace(url, "hunter2Secret", "[redacted]", 1)
		for _, want := range []string{"cannot reach NATS at " + shown, "connection refused", "retrying in 500ms", "gave up after", "--nats-url", "nothing published"} {
			if !strings.Contains(errs, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", url, want, errs)
			}
		}
		if strings.Contains(errs, "hunter2Secret") {
			t.Errorf("stderr leaks the password:\n%s", errs)
		}
	}
}

// The broker is briefly down when the publisher starts: it retries until
// the server is up, then publishes.
func TestRetriesUntilServerUp(t *testing.T) {
	addr := testbin.FreeAddr(t)
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	errb := &testbin.Output{}
	go func() {
		var out bytes.Buffer
		code := run([]string{"created", "--org", "late", "--slug", "late", "--nats-url", "nats://" + addr, "--timeout", "20s"},
			strings.NewReader(""), &out, errb)
		done <- result{code, out.String()}
	}()
	waitFor(t, "the publisher retrying", 15*time.Second, func() bool { return strings.Contains(errb.String(), "retrying in") })
	e, err := broker.StartEmbedded(addr, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	select {
	case r := <-done:
		if r.code != 0 || !strings.Contains(r.out, "published org.created org=late") {
			t.Fatalf("%d %q %q", r.code, r.out, errb.String())
		}
	case <-time.After(25 * time.Second):
		t.Fatal("publisher did not finish")
	}
}

// waitFor polls cond every 10 ms until it holds, failing the test after
// limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --help of the publisher and of each command is generated from its flags,
// exits 0 and names every flag the command takes.
func TestHelp(t *testing.T) {
	code, out, _ := runCLI("", "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, c := range commands {
		if !strings.Contains(out, c.name) {
			t.Errorf("--help lacks %s:\n%s", c.name, out)
		}
	}
	want := map[string][]string{
		"created": {"--org", "--slug", "--instance-type", "--region", "--pool", "--takeover-type", "--takeover-content",
			"--takeover-record-id", "--id", "--nats-url", "--creds", "--timeout", "--source"},
		"deleted":       {"--org", "--reason", "--id", "--nats-url"},
		"health-failed": {"--org", "--reason", "--observer", "--id"},
		"rotate-token":  {"--org", "--reason", "--id", "--nats-url", "--creds", "--timeout", "--source"},
		"batch":         {"--file", "--nats-url", "--creds", "--timeout", "--source"},
	}
	for cmd, flags := range want {
		code, out, _ := runCLI("", cmd, "--help")
		if code != 0 || !strings.HasPrefix(out, "Usage: publisher "+cmd) {
			t.Fatalf("%s --help: exit %d\n%s", cmd, code, out)
		}
		for _, f := range flags {
			if !strings.Contains(out, "  "+f+" ") {
				t.Errorf("%s --help lacks %s:\n%s", cmd, f, out)
			}
		}
		if cmd == "batch" && strings.Contains(out, "--id") {
			t.Errorf("batch --help offers --id, which batch does not take")
		}
	}
}

// A batch into a pipe shows no progress: stderr stays empty.
func TestBatchQuietInPipe(t *testing.T) {
	url, _ := server(t)
	lines := `{"type":"org.created","data":{"org_id":"a1","slug":"a1"}}
{"type":"org.created","data":{"org_id":"a2","slug":"a2"}}
`
	code, out, errs := runCLI(lines, "batch", "--nats-url", url)
	if code != 0 || strings.Count(out, "published") != 2 || errs != "" {
		t.Fatalf("%d %q %q", code, out, errs)
	}
}

// A flag the publisher does not know is named as typed, with the closest
// known flag and the command's --help.
func TestUnknownFlagNamedAsTyped(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"created", "--org", "a", "--bogus"}, "publisher created: unknown flag --bogus; see publisher created --help\n"},
		{[]string{"created", "--org", "a", "--slg", "a"}, "publisher created: unknown flag --slg (did you mean --slug?); see publisher created --help\n"},
		{[]string{"batch", "--nats_url", "x"}, "publisher batch: unknown flag --nats_url (did you mean --nats-url?); see publisher batch --help\n"},
	} {
		code, out, errs := runCLI("", tc.args...)
		if code != exitInvalid || out != "" || errs != tc.want {
			t.Errorf("%q: exit %d, stderr %q; want %q", tc.args, code, errs, tc.want)
		}
	}
}

// Connection flags go before the command as well as after it, as with the
// nats CLI; given in both places, the one after the command wins. A
// command's own flag before the command is refused, saying where it goes.
func TestConnectionFlagsBeforeCommand(t *testing.T) {
	url, js := server(t)
	code, out, errs := runCLI("", "--nats-url", url, "--timeout=10s", "created", "--org", "acme", "--slug", "acme", "--id", "c-1")
	if code != 0 || !strings.Contains(out, "published org.created org=acme id=c-1") {
		t.Fatalf("flags before the command: exit %d %q %q", code, out, errs)
	}
	batch := `{"id":"d-1","type":"org.deleted","data":{"org_id":"acme"}}` + "\n"
	code, out, errs = runCLI(batch, "--nats-url", "nats://127.0.0.1:1", "batch", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "published org.deleted org=acme id=d-1") || streamMsgs(t, js) != 2 {
		t.Fatalf("flag after the command should win: exit %d %q %q", code, out, errs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--org", "acme", "deleted"}, "publisher: --org is a flag of the command: put it after the command (publisher COMMAND --org ...)"},
		{[]string{"--nats-ulr", url, "deleted"}, "publisher: unknown flag --nats-ulr (did you mean --nats-url?); see publisher --help"},
		{[]string{"--nats-url", url}, "publisher: no command after the connection flags"},
	} {
		code, out, errs := runCLI("", tc.args...)
		if code != exitInvalid || out != "" || !strings.HasPrefix(errs, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want it to start %q", tc.args, code, errs, tc.want)
		}
	}
	if code, out, _ := runCLI("", "--nats-url", url, "--help"); code != 0 || !strings.Contains(out, "Connection flags (before or after the command") || !strings.Contains(out, "  --nats-url URL") {
		t.Fatalf("--help after a connection flag: exit %d\n%s", code, out)
	}
}

// storedEvent reads the event at seq from ORG_EVENTS and decodes it as
// ingest would, on the subject it was stored under.
func storedEvent(t *testing.T, js jetstream.JetStream, seq uint64) (string, events.Event) {
	t.Helper()
	s, err := js.Stream(context.Background(), events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := events.NewValidator()
	ev, err := v.Decode(m.Subject, m.Data)
	if err != nil {
		t.Fatalf("stored event %s does not validate: %v", m.Data, err)
	}
	if m.Header.Get(jetstream.MsgIDHeader) != ev.ID {
		t.Fatalf("Nats-Msg-Id %q, event id %q", m.Header.Get(jetstream.MsgIDHeader), ev.ID)
	}
	return m.Subject, ev
}

// created --pool and --takeover-*, and rotate-token, publish what they say
// on the subjects of their event types.
func TestPoolTakeoverAndRotateToken(t *testing.T) {
	url, js := server(t)
	code, out, errs := runCLI("", "created", "--org", "acme", "--slug", "acme", "--pool", "eu-2", "--takeover-type", "A",
		"--takeover-content", "203.0.113.10", "--takeover-record-id", "372e67954025e0ba6aaa6d586b9e0b59", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "published org.created org=acme") {
		t.Fatalf("created: %d %q %q", code, out, errs)
	}
	subj, ev := storedEvent(t, js, 1)
	want := events.Takeover{Type: "A", Content: "203.0.113.10", RecordID: "372e67954025e0ba6aaa6d586b9e0b59"}
	if subj != "orgs.acme.created" || ev.Created.Pool != "eu-2" || ev.Created.Takeover == nil || *ev.Created.Takeover != want {
		t.Fatalf("created: %s %+v", subj, ev.Created)
	}
	// A takeover by content alone, by record id alone; and none at all
	// leaves both members out of the event.
	for i, args := range [][]string{
		{"--takeover-type", "CNAME", "--takeover-content", "old-lb.example.com"},
		{"--takeover-type", "AAAA", "--takeover-record-id", "0123456789abcdef0123456789abcdef"},
		{},
	} {
		org := fmt.Sprintf("org-%d", i)
		code, out, errs := runCLI("", append([]string{"created", "--org", org, "--slug", org, "--nats-url", url}, args...)...)
		if code != 0 {
			t.Fatalf("%v: %d %q %q", args, code, out, errs)
		}
		_, ev := storedEvent(t, js, uint64(i+2))
		switch i {
		case 0:
			if *ev.Created.Takeover != (events.Takeover{Type: "CNAME", Content: "old-lb.example.com"}) {
				t.Fatalf("%v: %+v", args, ev.Created.Takeover)
			}
		case 1:
			if *ev.Created.Takeover != (events.Takeover{Type: "AAAA", RecordID: "0123456789abcdef0123456789abcdef"}) {
				t.Fatalf("%v: %+v", args, ev.Created.Takeover)
			}
		case 2:
			if ev.Created.Takeover != nil || ev.Created.Pool != "" {
				t.Fatalf("no flags: %+v", ev.Created)
			}
		}
	}

	code, out, errs = runCLI("", "rotate-token", "--org", "acme", "--reason", "token leaked", "--id", "rot-1", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "published org.token_rotation_requested org=acme id=rot-1 stream=ORG_EVENTS seq=5") {
		t.Fatalf("rotate-token: %d %q %q", code, out, errs)
	}
	subj, ev = storedEvent(t, js, 5)
	if subj != "orgs.acme.token_rotation_requested" || ev.Type != events.TypeTokenRotationRequested || ev.ID != "rot-1" ||
		ev.TokenRotationRequested == nil || ev.TokenRotationRequested.Reason != "token leaked" {
		t.Fatalf("rotate-token: %s %+v %+v", subj, ev, ev.TokenRotationRequested)
	}
	code, out, _ = runCLI("", "rotate-token", "--org", "acme", "--id", "rot-1", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "duplicate org.token_rotation_requested") {
		t.Fatalf("same id again: %d %q", code, out)
	}
	code, out, errs = runCLI("", "rotate-token", "--org", "acme", "--nats-url", url) // --reason is optional
	if code != 0 || !strings.Contains(out, "seq=6") {
		t.Fatalf("rotate-token without reason: %d %q %q", code, out, errs)
	}
	if _, ev := storedEvent(t, js, 6); ev.TokenRotationRequested.Reason != "" {
		t.Fatalf("reason %q", ev.TokenRotationRequested.Reason)
	}
	// Batch lines of the new type go to their subject too.
	code, out, errs = runCLI(`{"id":"rot-b","type":"org.token_rotation_requested","data":{"org_id":"org-0"}}`+"\n", "batch", "--nats-url", url)
	if code != 0 || !strings.Contains(out, "published org.token_rotation_requested org=org-0 id=rot-b") {
		t.Fatalf("batch: %d %q %q", code, out, errs)
	}
	if subj, _ := storedEvent(t, js, 7); subj != "orgs.org-0.token_rotation_requested" {
		t.Fatalf("batch subject %s", subj)
	}
}

// Invalid pool, takeover and rotate-token input exits 2, names the flag and
// publishes nothing.
func TestPoolTakeoverRotateTokenInvalid(t *testing.T) {
	url, js := server(t)
	created := []string{"created", "--org", "acme", "--slug", "acme"}
	cases := []struct {
		args []string
		want []string
	}{
		{append(created, "--pool", "EU"), []string{"/data/pool", "(flag --pool)"}},
		{append(created, "--takeover-type", "A"), []string{"--takeover-type needs", "--takeover-content", "--takeover-record-id"}},
		{append(created, "--takeover-content", "203.0.113.10"), []string{"--takeover-type"}},
		{append(created, "--takeover-record-id", "0123456789abcdef0123456789abcdef"), []string{"--takeover-type"}},
		{append(created, "--takeover-type", "MX", "--takeover-content", "mail.example.com"), []string{"/data/takeover/type", "(flag --takeover-type)"}},
		{append(created, "--takeover-type", "A", "--takeover-content", "old-lb.example.com"), []string{"/data/takeover/content", "ipv4", "(flag --takeover-content)"}},
		{append(created, "--takeover-type", "AAAA", "--takeover-content", "203.0.113.10"), []string{"/data/takeover/content", "ipv6", "(flag --takeover-content)"}},
		{append(created, "--takeover-type", "CNAME", "--takeover-record-id", "XYZ"), []string{"/data/takeover/record_id", "(flag --takeover-record-id)"}},
		{[]string{"rotate-token", "--org", "Acme"}, []string{"(flag --org)"}},
		{[]string{"rotate-token", "--org", "acme", "--reason", strings.Repeat("r", 1025)}, []string{"/data/reason", "(flag --reason)"}},
		{[]string{"rotate-token", "--org", "acme", "--observer", "x"}, []string{"unknown flag --observer"}},
		{[]string{"rotate-token", "--org", "acme", "extra"}, []string{"unexpected arguments"}},
		{[]string{"deleted", "--org", "acme", "--pool", "eu"}, []string{"unknown flag --pool"}},
	}
	for _, c := range cases {
		code, out, errs := runCLI("", append(c.args, "--nats-url", url)...)
		if code != exitInvalid || out != "" {
			t.Errorf("%q: exit %d out %q err %q", c.args, code, out, errs)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(errs, w) {
				t.Errorf("%q: stderr %q lacks %q", c.args, errs, w)
			}
		}
	}
	if n := streamMsgs(t, js); n != 0 {
		t.Fatalf("%d messages published from invalid input", n)
	}
}
