package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

var statusScreenshot = flag.String("status-page-screenshot", "",
	"write TestStatusPage's browser screenshot to this PNG file (docs/status-page.png: go test ./cmd/reconciler -run TestStatusPage -args -status-page-screenshot $PWD/docs/status-page.png)")

// TestStatusPage runs the daemon in sandbox mode with an org in each state
// and a dead letter, and reads GET / as HTML and then in a real headless
// browser (Debian's chromium), which must render the same orgs.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, testConfig(t, t.TempDir(), "--health-grace", "10m"))
	sim := "http://" + d.cfg.SandboxListen

	// hooli's hostname is taken by a record tunnelward does not own.
	cf := d.cfg.Cloudflare
	foreign, _ := json.Marshal(map[string]any{"type": "CNAME", "name": "hooli." + cf.ZoneName,
		"content": "elsewhere.example.net", "proxied": true, "comment": "made by hand"})
	req, _ := http.NewRequest("POST", sim+"/client/v4/zones/"+cf.ZoneID+"/dns_records", bytes.NewReader(foreign))
	req.Header.Set("Authorization", "Bearer "+cf.APIToken.Reveal())
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("foreign record: %v %v", err, resp)
	}

	d.publish(events.Created{OrgID: "acme", Slug: "acme"}, events.Created{OrgID: "globex", Slug: "globex"},
		events.Created{OrgID: "umbrella", Slug: "umbrella"}, events.Created{OrgID: "wayne", Slug: "wayne"},
		events.Created{OrgID: "hooli", Slug: "hooli"}, events.Created{OrgID: "nowhere", Slug: "nowhere", Region: "sa-east-1"},
		events.Deleted{OrgID: "wayne"})
	// Publishers that skip validation: a reserved slug, and an id that is
	// markup (shown as text on the page). Both are dead-lettered.
	nc, err := nats.Connect(d.natsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bad := `{"specversion":"1.0","id":"evil-1","type":"org.created","source":"test","time":"2026-11-26T10:00:00Z","subject":"evil","data":{"org_id":"evil","slug":"www"}}`
	if _, err := broker.PublishPayload(context.Background(), js, "orgs.evil.created", "evil-1", []byte(bad)); err != nil {
		t.Fatal(err)
	}
	script := `{"specversion":"1.0","id":"<script>x</script>","type":"org.created","source":"test","time":"2026-11-26T10:00:00Z","subject":"evil2","data":{"org_id":"evil2","slug":"ok"}}`
	if _, err := broker.PublishPayload(context.Background(), js, "orgs.evil2.created", "other-id", []byte(script)); err != nil {
		t.Fatal(err)
	}

	d.waitReady("acme", "globex", "umbrella")
	waitState := func(id, want string) {
		t.Helper()
		waitForLong(t, id+" "+want, 60*time.Second, func() bool {
			o, ok := d.org(id)
			return ok && admin.OrgState(o) == want
		})
	}
	waitState("wayne", admin.StateDeleted)
	waitState("hooli", admin.StateConflict)
	waitState("nowhere", admin.StateFailed)

	// globex: cloudflared broken; a restart cannot fix it and the
	// replacement waits out --health-grace.
	simPost(t, sim+"/_sim/world", map[string]string{"action": "break_connector", "org": "globex"})
	d.publish(events.HealthFailed{OrgID: "globex", Reason: "530 from the edge", Observer: "probe-eu-1"})
	waitState("globex", admin.StateDegraded)

	// From here EC2 refuses launches and Cloudflare tunnel deletes: initech
	// stays Provisioning, umbrella Deleting.
	var fs map[string]any
	getJSON(t, sim+"/_sim/faults", &fs)
	fs["rules"] = []map[string]any{
		{"op": "ec2.RunInstances", "error_rate": 1, "error_status": 503},
		{"op": "cf.tunnel.delete", "error_rate": 1, "error_status": 500},
	}
	b, _ := json.Marshal(fs)
	req, _ = http.NewRequest("PUT", sim+"/_sim/faults", bytes.NewReader(b))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("faults: %v %v", err, resp)
	}
	d.publish(events.Created{OrgID: "initech", Slug: "initech"}, events.Deleted{OrgID: "umbrella"})
	waitForLong(t, "initech failing to launch", 60*time.Second, func() bool {
		o, ok := d.org("initech")
		return ok && strings.Contains(o.LastError, "RunInstances") && !reconcile.IsTrue(o, state.CondReady)
	})
	waitForLong(t, "umbrella stuck deleting", 60*time.Second, func() bool {
		o, ok := d.org("umbrella")
		return ok && admin.OrgState(o) == admin.StateDeleting && strings.Contains(o.LastError, "tunnel")
	})

	want := map[string]string{"acme": admin.StateReady, "initech": admin.StateProvisioning, "globex": admin.StateDegraded,
		"hooli": admin.StateConflict, "nowhere": admin.StateFailed, "umbrella": admin.StateDeleting, "wayne": admin.StateDeleted}
	for id, st := range want {
		if o, _ := d.org(id); admin.OrgState(o) != st {
			t.Fatalf("%s is %s, want %s: %+v", id, admin.OrgState(o), st, o.Conditions)
		}
	}

	resp, err := http.Get(d.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: %s\n%s", resp.Status, page)
	}
	checkStatusPage(t, "GET /", string(page))
	// Server-rendered data is escaped: the dead letter's id is text.
	if strings.Contains(string(page), "<script>") || !strings.Contains(string(page), "&lt;script&gt;") {
		t.Errorf("the dead letter's markup is not escaped:\n%s", page)
	}

	browser(t, d.url("/"))
}

// checkStatusPage checks what TestStatusPage set up is on the page: every
// state counted, each not-Ready org with its reason, the conflict, both
// dead letters and the budget table.
func checkStatusPage(t *testing.T, where, page string) {
	t.Helper()
	for st, n := range map[string]int{admin.StateReady: 1, admin.StateProvisioning: 1, admin.StateDegraded: 1,
		admin.StateConflict: 1, admin.StateFailed: 1, admin.StateDeleting: 1, admin.StateDeleted: 1} {
		tile := fmt.Sprintf(`id="state-%s"><div class="n">%d</div>`, st, n)
		if !strings.Contains(page, tile) {
			t.Errorf("%s: no %s", where, tile)
		}
	}
	for _, want := range []string{
		">initech</a>", "ec2 RunInstances", ">globex</a>", "TunnelNotHealthy", ">hooli</a>", "DNSRecordNotOwned",
		">nowhere</a>", "RegionNotServed", `<table id="dead-letters">`, "reserved_slug", "orgs.evil.created",
		"orgs.evil2.created", ">umbrella</a>", "CascadeRunning", `<table id="budgets">`, ">cloudflare<", "Every present org is Ready.",
	} {
		if want == "Every present org is Ready." {
			if strings.Contains(page, want) {
				t.Errorf("%s claims every org is Ready", where)
			}
			continue
		}
		if !strings.Contains(page, want) {
			t.Errorf("%s lacks %q", where, want)
		}
	}
}

// browser loads url in headless chromium: the DOM it builds must hold the
// same page, and its screenshot must be a real picture. Skipped where
// Debian's chromium is not installed (.ci/run installs it).
func browser(t *testing.T, url string) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (Debian: apt-get install chromium); the status page was checked as HTML only")
	}
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}
		cmd := exec.CommandContext(ctx, bin, append(append(base, args...), url)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	// One load of the page gives both the DOM and the screenshot.
	shot := filepath.Join(t.TempDir(), "status.png")
	dom := string(run("--dump-dom", "--screenshot="+shot, "--window-size=1280,1500", "--hide-scrollbars"))
	checkStatusPage(t, "chromium's DOM", dom)

	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	// A blank or failed render is one or two colours; the page has many.
	colours := map[uint32]bool{}
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y; y += 3 {
		for x := bnd.Min.X; x < bnd.Max.X; x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|b>>8] = true
		}
	}
	if bnd.Dx() != 1280 || len(colours) < 20 {
		t.Fatalf("screenshot %v with %d colours: not the page", bnd, len(colours))
	}
	if *statusScreenshot != "" {
		b, _ := os.ReadFile(shot)
		if err := os.WriteFile(*statusScreenshot, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", *statusScreenshot)
	}
}
