package docs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/testbin"
)

// The README's examples, run top to bottom on one sandbox: every block
// marked `walkthrough` in its source, in order, against the built
// reconciler (the embedded default: embedded NATS, the in-process
// emulator) and publisher, with the nats CLI for the raw publish.
//
// The sandbox listens on free loopback ports instead of the defaults the
// README names. The commands are run as written, with the defaults put
// back through the settings' own environment: NATS_URL (the publisher's and
// the nats CLI's server), TUNNELWARD_ADMIN_LISTEN (where status and plan
// find the daemon); the curl URLs have their address replaced. They run in
// a temporary directory holding bin/ and the daemon's ./data, as they
// would in the repository.

// readmeDoc is one command of a walkthrough block as the README shows it.
type readmeDoc struct {
	cmd    string
	output []string // console blocks: the output shown under the command
}

var (
	trailingComment = regexp.MustCompile(`\s{2,}#.*$`)
	heredocStart    = regexp.MustCompile(`<<-?\s*'?([A-Za-z_]+)'?`)
)

// readmeCommands extracts the commands of the ```sh walkthrough and
// ```console walkthrough blocks of a markdown file, in order: sh lines
// without comments, backslash continuations joined, a heredoc kept whole
// with its body; console lines starting with "$ " with the output below.
func readmeCommands(t *testing.T, path string) []readmeDoc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		docs    []readmeDoc
		block   string // "", "sh" or "console"
		cont    strings.Builder
		heredoc string // the terminator while inside a heredoc
	)
	for _, line := range strings.Split(string(b), "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case block == "" && (trim == "```sh walkthrough" || trim == "```console walkthrough"):
			block = strings.Fields(strings.TrimPrefix(trim, "```"))[0]
		case block != "" && heredoc == "" && trim == "```":
			block = ""
		case block == "":
		case heredoc != "":
			cont.WriteString("\n" + line)
			if trim == heredoc {
				docs = append(docs, readmeDoc{cmd: cont.String()})
				cont.Reset()
				heredoc = ""
			}
		case block == "console":
			if c, ok := strings.CutPrefix(line, "$ "); ok {
				docs = append(docs, readmeDoc{cmd: c})
			} else if len(docs) > 0 {
				docs[len(docs)-1].output = append(docs[len(docs)-1].output, line)
			}
		case trim == "" || strings.HasPrefix(trim, "#"):
		default:
			if m := heredocStart.FindStringSubmatch(trim); m != nil {
				cont.WriteString(trim)
				heredoc = m[1]
				continue
			}
			if s, ok := strings.CutSuffix(trim, "\\"); ok {
				cont.WriteString(s)
				continue
			}
			cont.WriteString(trailingComment.ReplaceAllString(trim, ""))
			docs = append(docs, readmeDoc{cmd: cont.String()})
			cont.Reset()
		}
	}
	if block != "" || heredoc != "" {
		t.Fatalf("%s: unterminated walkthrough block or heredoc", path)
	}
	return docs
}

// sandbox is the README's first terminal: the reconciler's embedded
// default, on free loopback ports, in dir.
type sandbox struct {
	dir, bin                    string
	natsURL, admin, sandboxAddr string
	natsBin                     string
	daemon                      *exec.Cmd
	done                        chan struct{}
	log                         *testbin.Output
}

func freeLoopback(t *testing.T) string { t.Helper(); return testbin.FreeAddr(t) }

// start runs the built reconciler with a temporary --data-dir and free
// ports, as `go run ./cmd/reconciler` runs the default, and waits for
// /readyz. A port taken between picking and binding (another test on the
// machine) is picked again.
func (s *sandbox) start(t *testing.T) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		natsAddr := freeLoopback(t)
		s.natsURL, s.admin, s.sandboxAddr = "nats://"+natsAddr, freeLoopback(t), freeLoopback(t)
		s.log = &testbin.Output{}
		s.daemon = exec.Command(filepath.Join(s.bin, "reconciler"),
			"--data-dir", filepath.Join(s.dir, "data"), "--nats-listen", natsAddr,
			"--admin-listen", s.admin, "--sandbox-listen", s.sandboxAddr, "--log-format", "text")
		s.daemon.Dir = s.dir
		s.daemon.Env = append(os.Environ(), "HOME="+s.dir)
		s.daemon.Stdout, s.daemon.Stderr = s.log, s.log
		if err := s.daemon.Start(); err != nil {
			t.Fatal(err)
		}
		s.done = make(chan struct{})
		go func() { _ = s.daemon.Wait(); close(s.done) }()
		err := s.waitReady()
		if err == nil {
			return
		}
		s.stop(t)
		if attempt < 3 && strings.Contains(s.log.String(), "already in use") {
			continue
		}
		t.Fatalf("reconciler did not become ready: %v\n%s", err, s.log.String())
	}
}

func (s *sandbox) waitReady() error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("it exited")
		default:
		}
		if resp, err := http.Get("http://" + s.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("/readyz not 200 within 30s")
}

// stop is Ctrl-C: SIGINT, then the 30 s the README promises.
func (s *sandbox) stop(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.daemon.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.daemon.Process.Kill()
		<-s.done
		t.Errorf("reconciler did not stop within 30s of SIGINT")
	}
}

// run runs one documented command through bash in the sandbox's
// directory and returns its combined output and exit status.
func (s *sandbox) run(t *testing.T, line string) (string, int) {
	t.Helper()
	line = strings.NewReplacer("127.0.0.1:8081", s.admin, "127.0.0.1:8787", s.sandboxAddr).Replace(line)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir = s.dir
	cmd.Env = []string{
		"PATH=" + filepath.Dir(s.natsBin) + ":/usr/local/bin:/usr/bin:/bin",
		"HOME=" + s.dir,
		"XDG_CONFIG_HOME=" + filepath.Join(s.dir, ".config"), // no operator's nats contexts
		"NATS_URL=" + s.natsURL,
		"TUNNELWARD_ADMIN_LISTEN=" + s.admin,
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("$ %s: %v\n%s", line, err, out.String())
	return "", 0
}

// statusRows parses the status table: org id -> its columns by header.
func statusRows(out string) map[string]map[string]string {
	rows := map[string]map[string]string{}
	var header []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "ORG":
			header = f
		case header != nil && len(f) >= 9: // through CONDITIONS; later columns may hold spaces
			row := map[string]string{}
			for i, h := range header[:9] {
				row[h] = f[i]
			}
			rows[f[0]] = row
		}
	}
	return rows
}

// wantOrgs checks the status table for each org's presence, region and
// conditions; nothing may be in conflict.
func wantOrgs(want map[string][3]string) func(*sandbox, string) error {
	return func(_ *sandbox, out string) error {
		if strings.Contains(out, "Conflict") {
			return errors.New("an org is in conflict")
		}
		rows := statusRows(out)
		if len(rows) != len(want) {
			return fmt.Errorf("%d orgs, want %d", len(rows), len(want))
		}
		for id, w := range want {
			r := rows[id]
			if r == nil || r["PRESENCE"] != w[0] || r["REGION"] != w[1] || r["CONDITIONS"] != w[2] {
				return fmt.Errorf("%s: %v, want presence %s region %s conditions %s", id, r, w[0], w[1], w[2])
			}
		}
		return nil
	}
}

func has(want ...string) func(*sandbox, string) error {
	return func(_ *sandbox, out string) error {
		for _, s := range want {
			if !strings.Contains(out, s) {
				return fmt.Errorf("output lacks %q", s)
			}
		}
		return nil
	}
}

func jsonOf(check func(map[string]any) error) func(*sandbox, string) error {
	return func(_ *sandbox, out string) error {
		// status notes on stderr where the file is held come first.
		var v map[string]any
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &v); err != nil {
			return fmt.Errorf("not JSON: %v", err)
		}
		return check(v)
	}
}

// walkStep is one README command and what it must do. until: the README
// asks to wait for the state checked, so the command is run again (as an
// operator would) until the check passes or 60 s pass.
type walkStep struct {
	cmd   string
	code  int
	check func(*sandbox, string) error
	until bool
}

const batchHeredoc = `cat > events.jsonl <<'EOF'
{"id":"hooli-c1","type":"org.created","data":{"org_id":"hooli","slug":"hooli","region":"eu-central-1"}}
{"id":"umbrella-c1","type":"org.created","data":{"org_id":"umbrella","slug":"umbrella"}}
EOF`

const rawPublish = `nats pub orgs.soylent.created --jetstream --header 'Nats-Msg-Id:01JDX7Q2T3V4W5X6Y7Z8A9B0C1' '{"specversion":"1.0","id":"01JDX7Q2T3V4W5X6Y7Z8A9B0C1","type":"org.created","source":"platform","time":"2026-11-26T10:00:00Z","subject":"soylent","data":{"org_id":"soylent","slug":"soylent"}}'`

const buildLine = "go build -o bin/ ./cmd/reconciler ./cmd/publisher"

// walkthrough is every walkthrough command of README.md, in order, with
// the exit status the README promises and what it must show. Console
// blocks must print exactly what the README shows under them.
var walkthrough = []walkStep{
	{cmd: buildLine},
	{cmd: "bin/publisher created --org acme --slug acme", check: has("published org.created org=acme", "stream=ORG_EVENTS seq=1")},
	{cmd: "bin/publisher created --org globex --slug globex --region eu-west-1", check: has("published org.created org=globex", "seq=2")},
	{cmd: `bin/publisher health-failed --org acme --reason "530 from the edge" --observer probe-eu-1`, check: has("published org.health_failed org=acme", "seq=3")},
	{cmd: "bin/reconciler status", until: true, check: func(s *sandbox, out string) error {
		// acme's health report diagnosed too, so no pass is pending when
		// its DNS record goes and plan is asked.
		if !strings.Contains(out, "1 (0 open)") {
			return errors.New("acme's health report is not handled yet")
		}
		return wantOrgs(map[string][3]string{
			"acme": {"present", "us-east-1", "Ready"}, "globex": {"present", "eu-west-1", "Ready"}})(s, out)
	}},
	{cmd: "bin/reconciler status acme -o json", check: jsonOf(func(o map[string]any) error {
		if o["id"] != "acme" || o["changed_at"] == nil || len(o["health_reports"].([]any)) != 1 {
			return fmt.Errorf("acme: %v", o)
		}
		return nil
	})},
	{cmd: "curl -s 127.0.0.1:8081/v1/orgs/acme", check: jsonOf(func(o map[string]any) error {
		if ob, _ := o["observed"].(map[string]any); o["id"] != "acme" || ob["tunnel_id"] == nil || ob["dns_record_id"] == nil {
			return fmt.Errorf("acme: %v", o)
		}
		return nil
	})},
	{cmd: "curl -s 127.0.0.1:8081/readyz", check: jsonOf(func(o map[string]any) error {
		if o["status"] != "ok" {
			return fmt.Errorf("readyz: %v", o)
		}
		return nil
	})},
	{cmd: "curl -s 127.0.0.1:8081/metrics | grep ^tunnelward_", check: has("tunnelward_build_info", `tunnelward_events_ingested_total{result="applied",type="org.created"} 2`)},
	{cmd: `curl -s -XPOST 127.0.0.1:8787/_sim/world -d '{"action":"delete","kind":"dns_record","org":"acme"}'`, check: has(`"dns_record:`)},
	{cmd: "bin/reconciler plan", code: 2, check: func(_ *sandbox, out string) error {
		if !regexp.MustCompile(`(?m)^acme\s+dns\s+create\s+acme\.sandbox\.tunnelward\.test\s`).MatchString(out) || !strings.Contains(out, "Plan: 1 to create") {
			return errors.New("plan does not show acme's dns create")
		}
		return nil
	}},
	{cmd: "bin/publisher deleted --org acme", check: has("published org.deleted org=acme", "seq=4")},
	{cmd: "bin/publisher created --org acme --slug www", code: 2},
	{cmd: batchHeredoc},
	{cmd: "bin/publisher batch --file events.jsonl", check: has("org=hooli id=hooli-c1", "org=umbrella id=umbrella-c1 stream=ORG_EVENTS seq=6")},
	{cmd: rawPublish, check: has("Stored in Stream: ORG_EVENTS Sequence: 7")},
	{cmd: "bin/reconciler status", until: true, check: wantOrgs(map[string][3]string{
		"acme": {"deleted", "-", "Deleted"}, "globex": {"present", "eu-west-1", "Ready"},
		"hooli": {"present", "eu-central-1", "Ready"}, "umbrella": {"present", "us-east-1", "Ready"},
		"soylent": {"present", "us-east-1", "Ready"}})},
	{cmd: "bin/reconciler status --data_dir /var/lib/tunnelward", code: 2},
}

// walkthroughDocs returns the README's walkthrough commands, failing when
// they are not the ones this test checks.
func walkthroughDocs(t *testing.T) []readmeDoc {
	t.Helper()
	docs := readmeCommands(t, "../README.md")
	var got, want []string
	for _, d := range docs {
		got = append(got, d.cmd)
	}
	for _, s := range walkthrough {
		want = append(want, s.cmd)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("README.md and this test disagree on the walkthrough; the README has:\n%s\nthe test checks:\n%s",
			strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	return docs
}

// Runs everywhere, without the nats CLI: the README and the list above
// agree, and no command whose exit status the README promises goes
// through `go run`, which reports any failure as its own exit status 1.
func TestREADMEWalkthroughCommands(t *testing.T) {
	walkthroughDocs(t)
	for _, s := range walkthrough {
		if s.code != 0 && strings.HasPrefix(s.cmd, "go run") {
			t.Errorf("%q promises exit %d but go run would exit 1", s.cmd, s.code)
		}
	}
	for _, c := range []string{"plan", "publisher created --org acme --slug www"} {
		if !slices.ContainsFunc(walkthrough, func(s walkStep) bool { return strings.Contains(s.cmd, c) && s.code == 2 }) {
			t.Errorf("the walkthrough no longer checks the exit status 2 of %q", c)
		}
	}
}

func TestREADMEWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the commands and runs the walkthrough on a sandbox")
	}
	t.Parallel()
	natsBin := findNATS(t)
	docs := walkthroughDocs(t)

	began := time.Now()
	s := &sandbox{dir: t.TempDir(), natsBin: natsBin}
	s.bin = filepath.Join(s.dir, "bin")
	defer func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("reconciler log:\n%s", s.log.String())
		}
	}()
	for i, step := range walkthrough {
		if step.cmd == buildLine {
			// The README's build, from the repository into the sandbox's bin/.
			// bin/ starts with the binaries the other test packages share
			// (internal/testbin): go build keeps a binary whose build ID says
			// it is what it would link, and links again otherwise.
			seedBin(t, s.bin, "reconciler", "publisher")
			args := strings.Fields(strings.Replace(buildLine, "-o bin/", "-o "+s.bin+"/", 1))
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir = ".."
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("$ %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			t.Logf("built in %s", time.Since(began).Round(time.Millisecond))
			s.start(t)
			t.Logf("sandbox ready at %s", time.Since(began).Round(time.Millisecond))
			continue
		}
		out, code := s.run(t, step.cmd)
		var err error
		if step.check != nil {
			err = step.check(s, out)
		}
		for deadline := time.Now().Add(60 * time.Second); step.until && (err != nil || code != step.code) && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			out, code = s.run(t, step.cmd)
			err = step.check(s, out)
		}
		if code != step.code {
			t.Fatalf("step %d: $ %s\nexit %d, the README promises %d\n%s", i+1, step.cmd, code, step.code, out)
		}
		if d := docs[i]; d.output != nil {
			if shown := strings.TrimSpace(strings.Join(d.output, "\n")); strings.TrimSpace(out) != shown {
				t.Fatalf("step %d: $ %s\nprinted:\n%s\nthe README shows:\n%s", i+1, step.cmd, out, shown)
			}
		}
		if err != nil {
			t.Fatalf("step %d: $ %s\n%v\n%s", i+1, step.cmd, err, out)
		}
	}

	// It ends clean: no org in conflict, nothing left for a reconcile to
	// do, and the UPDATED column is when soylent's record changed, not the
	// 2026-11-26 its event says.
	out, code := s.run(t, "bin/reconciler status -o json")
	if code != 0 {
		t.Fatalf("status -o json: exit %d\n%s", code, out)
	}
	var st struct{ Orgs []state.Org }
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &st); err != nil {
		t.Fatal(err)
	}
	for _, o := range st.Orgs {
		for _, c := range o.Conditions {
			if c.Type == state.CondConflict && c.Status {
				t.Errorf("org %s ends in Conflict=true %s: %s", o.ID, c.Reason, c.Message)
			}
		}
		if o.ID == "soylent" && (o.ChangedAt.Before(began) || !o.UpdatedAt.Equal(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))) {
			t.Errorf("soylent: changed_at %s updated_at %s, want a change after %s and the event's 2026-11-26T10:00:00Z", o.ChangedAt, o.UpdatedAt, began)
		}
	}
	// The daemon reuses a plan answer for 10 s, and the walkthrough's own
	// plan may be that recent: ask until a fresh one comes.
	out, code = s.run(t, "bin/reconciler plan")
	for deadline := time.Now().Add(30 * time.Second); code != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		out, code = s.run(t, "bin/reconciler plan")
	}
	if code != 0 {
		t.Errorf("plan after the walkthrough: exit %d, want 0 (nothing to do)\n%s", code, out)
	}
	t.Logf("walkthrough done in %s", time.Since(began).Round(time.Millisecond))
}

// seedBin copies the shared builds of the named commands into dir; a
// command that does not build is left to the README's own build to report.
func seedBin(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := testbin.CopyTo(dir, name, "./cmd/"+name); err != nil {
			t.Logf("no shared build of %s: %v", name, err)
		}
	}
}
