package admin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/state"
)

type orgSlice []state.Org

func (s orgSlice) ForEach(fn func(state.Org) error) error {
	for _, o := range s {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

type failingWalker struct{}

func (failingWalker) ForEach(func(state.Org) error) error {
	return errors.New("bbolt: database not open")
}

type fakeSource struct {
	dl     DeadLetters
	dlErr  error
	budget []APIBudget
}

func (f fakeSource) DeadLetters(_ context.Context, n int) (DeadLetters, error) {
	dl := f.dl
	dl.Recent = dl.Recent[:min(n, len(dl.Recent))]
	return dl, f.dlErr
}
func (f fakeSource) APIBudgets() []APIBudget { return f.budget }

var pageNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func cond(typ string, status bool, reason, msg string, ago time.Duration) state.Condition {
	return state.Condition{Type: typ, Status: status, Reason: reason, Message: msg, LastTransitionTime: pageNow.Add(-ago)}
}

func present(id string, conds ...state.Condition) state.Org {
	return state.Org{ID: id, Desired: state.Desired{Presence: state.Present, Slug: id, Generation: 1},
		UpdatedAt: pageNow.Add(-time.Hour), Conditions: conds}
}

// One org in each state, and data that must not reach the page as markup.
func fleet() orgSlice {
	ready := present("acme", cond(state.CondReady, true, "TunnelHealthy", "", 2*time.Hour))
	ready.Observed.TunnelStatus = "healthy"
	moved := present("moved", cond(state.CondReady, true, "TunnelHealthy", "", 2*time.Hour),
		cond(state.CondConflict, true, "RegionChangeRefused", "stays in us-east-1; eu-west-1 was asked", 5*time.Minute))
	prov := present("initech", cond(state.CondReady, false, "Provisioning", "resources created; waiting for the instance to boot and connect", 90*time.Second),
		cond(state.CondProvisioning, true, "Provisioning", "", 90*time.Second))
	fresh := present("fresh") // no pass yet
	fresh.UpdatedAt = pageNow.Add(-10 * time.Second)
	fresh.LastError = `ec2 RunInstances: 503 <b>Service Unavailable</b>`
	deg := present("globex", cond(state.CondReady, false, "TunnelNotHealthy", "tunnel down; cloudflared restarted", 40*time.Minute),
		cond(state.CondDegraded, true, "TunnelNotHealthy", "", 40*time.Minute))
	deg.Observed.TunnelStatus = "down"
	conflict := present("hooli", cond(state.CondReady, false, "Conflict", `record hooli.example.com is not ours <script>alert(1)</script>`, 3*time.Hour),
		cond(state.CondConflict, true, "DNSRecordNotOwned", `record hooli.example.com is not ours <script>alert(1)</script>`, 3*time.Hour))
	failed := present("nowhere", cond(state.CondReady, false, "Failed", "", 26*time.Hour),
		cond(state.CondFailed, true, "RegionNotServed", "region sa-east-1 is not served (served: us-east-1)", 26*time.Hour))
	deleting := present("wayne", cond(state.CondReady, false, "Deleting", "", time.Minute),
		cond(state.CondDeleting, true, "CascadeRunning", "removing the instance, record, parameter and tunnel", time.Minute))
	deleting.LastError = "cloudflare tunnel delete: 500"
	deleting.Desired.Presence = state.Deleted
	deleted := present("umbrella", cond(state.CondReady, false, "Deleted", "", time.Minute), cond(state.CondDeleted, true, "CascadeDone", "", time.Minute))
	deleted.Desired.Presence, deleted.Observed.DeleteDone = state.Deleted, true
	return orgSlice{ready, moved, prov, fresh, deg, conflict, failed, deleting, deleted}
}

func source() fakeSource {
	return fakeSource{
		dl: DeadLetters{Total: 3, Recent: []DeadLetter{
			{Seq: 3, At: pageNow.Add(-time.Minute), Subject: "orgs.bad.created", Code: "reserved_slug", Field: "/data/slug",
				Reason: `slug "<img src=x onerror=alert(2)>" is not a DNS label`},
			{Seq: 2, At: pageNow.Add(-2 * time.Minute), Subject: "orgs.rogue.created", Code: "missing_msg_id", Field: "Nats-Msg-Id", Reason: "no Nats-Msg-Id header"},
		}},
		budget: []APIBudget{
			{Provider: "cloudflare", Window: 5 * time.Minute, Requests: 1020, Limit: 1200, Throttled: 0, Note: "per user"},
			{Provider: "ec2", Window: 5 * time.Minute, Requests: 40, Throttled: 2, Failed: 1},
		},
	}
}

func render(t *testing.T, p *StatusPage) (*httptest.ResponseRecorder, string) {
	t.Helper()
	p.now = func() time.Time { return pageNow }
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	return rec, rec.Body.String()
}

// section returns the HTML of the table with id, or "" when there is none.
func section(body, id string) string {
	i := strings.Index(body, `<table id="`+id+`">`)
	if i < 0 {
		return ""
	}
	return body[i : i+strings.Index(body[i:], "</table>")]
}

func TestStatusPageShowsEachState(t *testing.T) {
	rec, body := render(t, NewStatusPage(fleet(), source(), nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("%d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if !strings.Contains(body, `<meta http-equiv="refresh" content="30">`) {
		t.Error("the page does not reload itself")
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for st, n := range map[string]int{StateReady: 2, StateProvisioning: 2, StateDegraded: 1, StateConflict: 1, StateFailed: 1, StateDeleting: 1, StateDeleted: 1} {
		re := regexp.MustCompile(`id="state-` + st + `"><div class="n">(\d+)</div>`)
		m := re.FindStringSubmatch(body)
		if m == nil || m[1] != strconv.Itoa(n) {
			t.Errorf("state %s: %v, want %d", st, m, n)
		}
	}
	nr := section(body, "not-ready")
	// Oldest first; Ready orgs and tombstones are not listed.
	order := []string{"nowhere", "hooli", "globex", "initech", "wayne", "fresh"}
	last := -1
	for _, id := range order {
		i := strings.Index(nr, `>`+id+`</a>`)
		if i < 0 || i < last {
			t.Fatalf("not-ready table: %s missing or out of order (want %v):\n%s", id, order, nr)
		}
		last = i
	}
	for _, id := range []string{"acme", "moved", "umbrella"} {
		if strings.Contains(nr, `>`+id+`</a>`) {
			t.Errorf("%s is listed as not Ready", id)
		}
	}
	for _, want := range []string{"RegionNotServed", "region sa-east-1 is not served", "26h00m", "NotReconciledYet",
		`<span class="badge Degraded">Degraded</span>`, "40m00s", "1m30s", "CascadeRunning", "cloudflare tunnel delete: 500"} {
		if !strings.Contains(nr, want) {
			t.Errorf("not-ready table lacks %q", want)
		}
	}
	cf := section(body, "conflicts")
	if !strings.Contains(cf, "DNSRecordNotOwned") || !strings.Contains(cf, "RegionChangeRefused") || !strings.Contains(cf, `>moved</a>`) {
		t.Errorf("conflicts table:\n%s", cf)
	}
	dl := section(body, "dead-letters")
	if !strings.Contains(body, "ORG_EVENTS_DLQ holds 3") || !strings.Contains(dl, "reserved_slug") || !strings.Contains(dl, "orgs.rogue.created") {
		t.Errorf("dead letters:\n%s", dl)
	}
	bt := section(body, "budgets")
	if !strings.Contains(bt, `style="width: 85%" class="warn"`) || !strings.Contains(bt, "85%") || !strings.Contains(bt, "last 5m") {
		t.Errorf("budget table:\n%s", bt)
	}
	if !strings.Contains(body, "tunnelward: 2 Ready, 6 not Ready</title>") {
		t.Errorf("title: %s", body[strings.Index(body, "<title>"):strings.Index(body, "</title>")])
	}
}

// Org and dead-letter data is text, never markup.
func TestStatusPageEscapes(t *testing.T) {
	_, body := render(t, NewStatusPage(fleet(), source(), nil))
	for _, raw := range []string{"<script>", "<img", "<b>"} {
		if strings.Contains(body, raw) {
			t.Errorf("the page carries raw %q", raw)
		}
	}
	for _, esc := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(2)&gt;", "503 &lt;b&gt;Service Unavailable&lt;/b&gt;"} {
		if !strings.Contains(body, esc) {
			t.Errorf("the page lacks the escaped %q", esc)
		}
	}
}

func TestStatusPageDegrades(t *testing.T) {
	// Without a source: no dead letters or budgets, still a page.
	rec, body := render(t, NewStatusPage(fleet(), nil, nil))
	if rec.Code != 200 || strings.Count(body, "Not available.") != 2 {
		t.Fatalf("%d:\n%s", rec.Code, body)
	}
	// The DLQ cannot be read: said so, the rest still shown.
	src := source()
	src.dlErr = errors.New("nats: timeout")
	_, body = render(t, NewStatusPage(fleet(), src, nil))
	if !strings.Contains(body, "Reading ORG_EVENTS_DLQ failed: nats: timeout") || section(body, "not-ready") == "" {
		t.Fatalf("DLQ error:\n%s", body)
	}
	// No orgs at all.
	_, body = render(t, NewStatusPage(orgSlice{}, source(), nil))
	if !strings.Contains(body, "Every present org is Ready.") || !strings.Contains(body, "No conflicts.") {
		t.Fatalf("empty fleet:\n%s", body)
	}
	// bbolt fails: 500, and the page says why.
	rec, body = render(t, NewStatusPage(failingWalker{}, source(), nil))
	if rec.Code != 500 || !strings.Contains(body, "database not open") {
		t.Fatalf("%d:\n%s", rec.Code, body)
	}
}

// The page is an ordinary handler on the admin mux: / serves it, other
// unknown paths stay 404.
func TestStatusPageOnAdminMux(t *testing.T) {
	s := New(nil, nil)
	s.Handle("GET /{$}", NewStatusPage(fleet(), source(), nil))
	for path, want := range map[string]int{"/": 200, "/nope": 404} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, want)
		}
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", rec.Code)
	}
}

func TestWindowAndOverBudget(t *testing.T) {
	for d, want := range map[time.Duration]string{5 * time.Minute: "5m", time.Hour: "1h", 30 * time.Second: "30s", 90 * time.Second: "1m30s"} {
		if got := window(d); got != want {
			t.Errorf("window(%v) = %s, want %s", d, got, want)
		}
	}
	// Over the limit: the figure says so, the bar stops at full.
	src := source()
	src.budget = []APIBudget{{Provider: "cloudflare", Window: 5 * time.Minute, Requests: 1500, Limit: 1200, Throttled: 7}}
	_, body := render(t, NewStatusPage(fleet(), src, nil))
	if bt := section(body, "budgets"); !strings.Contains(bt, `style="width: 100%" class="crit"`) || !strings.Contains(bt, "125%") {
		t.Errorf("over budget:\n%s", bt)
	}
}

func TestHumanAge(t *testing.T) {
	for d, want := range map[time.Duration]string{-time.Second: "0s", 45 * time.Second: "45s", 90 * time.Second: "1m30s",
		3*time.Hour + 20*time.Minute: "3h20m", 50 * time.Hour: "2d02h"} {
		if got := humanAge(d); got != want {
			t.Errorf("humanAge(%v) = %s, want %s", d, got, want)
		}
	}
}
