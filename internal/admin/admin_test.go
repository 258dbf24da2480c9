package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/state"
)

func get(t *testing.T, h http.Handler, path string, into any) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	if into != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
			t.Fatalf("%s: %v: %s", path, err, rec.Body)
		}
	}
	return rec.Code
}

func TestProbesNameFailingCheck(t *testing.T) {
	s := New(nil, nil)
	s.AddCheck("nats", func(context.Context) error { return nil })
	s.AddCheck("sweep", func(context.Context) error { return errors.New("last sweep 10m ago") })
	s.AddCheck("hangs", func(ctx context.Context) error { <-ctx.Done(); time.Sleep(10 * time.Millisecond); return nil })
	s.checkTimeout = 100 * time.Millisecond
	var r ProbeResponse
	if code := get(t, s.Handler(), "/readyz", &r); code != 503 || r.Status != "failing" || len(r.Failed) != 2 || r.Failed[0] != "sweep" || r.Failed[1] != "hangs" {
		t.Fatalf("%d %+v", code, r)
	}
	if r.Checks[1].Error != "last sweep 10m ago" || !r.Checks[0].OK {
		t.Fatalf("%+v", r.Checks)
	}
	s.AddLivenessCheck("loop", func(context.Context) error { return nil })
	if code := get(t, s.Handler(), "/healthz", &r); code != 200 || r.Status != "ok" || len(r.Checks) != 1 {
		t.Fatalf("%d %+v", code, r)
	}
}

func TestOrgEndpoints(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "s.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Apply([]state.Fact{{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "acme", Slug: "acme"}, {Seq: 2, EventID: "e2", Type: state.FactCreated, OrgID: "beta", Slug: "b"}})
	h := New(st, nil).Handler()

	var list struct{ Orgs []state.Org }
	if code := get(t, h, "/v1/orgs", &list); code != 200 || len(list.Orgs) != 2 || list.Orgs[0].ID != "acme" {
		t.Fatalf("%d %+v", code, list)
	}
	var o state.Org
	if code := get(t, h, "/v1/orgs/acme", &o); code != 200 || o.Desired.Slug != "acme" || o.LastSeq != 1 {
		t.Fatalf("%d %+v", code, o)
	}
	var e map[string]string
	if code := get(t, h, "/v1/orgs/nope", &e); code != 404 || e["error"] == "" {
		t.Fatalf("%d %v", code, e)
	}
	if code := get(t, h, "/v1/orgs/BAD_ID", &e); code != 400 {
		t.Fatalf("%d %v", code, e)
	}
}

// /v1/orgs names the watch intervals once the engine gives them; the orgs
// field is unchanged.
func TestOrgListNamesWatchIntervals(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "s.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Apply([]state.Fact{{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "acme", Slug: "acme"}})
	s := New(st, nil)
	var list struct {
		Orgs           []state.Org
		WatchIntervals map[string]string `json:"watch_intervals"`
	}
	if code := get(t, s.Handler(), "/v1/orgs", &list); code != 200 || len(list.Orgs) != 1 || list.WatchIntervals != nil {
		t.Fatalf("before: %d %+v", code, list)
	}
	s.SetWatchSchedule(func() map[string]time.Duration { return map[string]time.Duration{"tunnels": 15 * time.Second} })
	if code := get(t, s.Handler(), "/v1/orgs", &list); code != 200 || len(list.Orgs) != 1 || list.WatchIntervals["tunnels"] != "15s" {
		t.Fatalf("after: %d %+v", code, list)
	}
}
