package main

import (
	"bytes"
	"context"
	"net"
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
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
		"created":       {"--org", "--slug", "--instance-type", "--region", "--id", "--nats-url", "--creds", "--timeout", "--source"},
		"deleted":       {"--org", "--reason", "--id", "--nats-url"},
		"health-failed": {"--org", "--reason", "--observer", "--id"},
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
