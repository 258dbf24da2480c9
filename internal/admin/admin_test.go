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

// Each org names its Cloudflare pool at the top level: the engine's
// answer once it is wired (a record from before pools is in the default
// pool), the observed pool before, "" while the org is not placed.
func TestOrgsNameTheirPool(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "s.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.Apply([]state.Fact{{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "acme", Slug: "acme"},
		{Seq: 2, EventID: "e2", Type: state.FactCreated, OrgID: "beta", Slug: "beta"},
		{Seq: 3, EventID: "e3", Type: state.FactCreated, OrgID: "old", Slug: "old"}})
	st.Update("acme", func(o *state.Org) error { o.Observed.Pool, o.Observed.TunnelID = "eu", "t-1"; return nil })
	st.Update("old", func(o *state.Org) error { o.Observed.TunnelID = "t-2"; return nil }) // placed before pools
	s := New(st, nil)

	pools := func() map[string]any {
		var list struct{ Orgs []map[string]any }
		if code := get(t, s.Handler(), "/v1/orgs", &list); code != 200 || len(list.Orgs) != 3 {
			t.Fatalf("%d %+v", code, list)
		}
		out := map[string]any{}
		for _, o := range list.Orgs {
			out[o["id"].(string)] = o["pool"]
		}
		return out
	}
	if got := pools(); got["acme"] != "eu" || got["beta"] != "" || got["old"] != "" {
		t.Fatalf("without the engine: pools %v", got)
	}
	s.SetPoolOf(func(o state.Org) string { // as reconcile.Engine.PoolOf
		switch {
		case o.Observed.Pool != "":
			return o.Observed.Pool
		case o.Observed.TunnelID != "":
			return "default"
		}
		return ""
	})
	if got := pools(); got["acme"] != "eu" || got["beta"] != "" || got["old"] != "default" {
		t.Fatalf("with the engine: pools %v", got)
	}
	var one map[string]any
	if code := get(t, s.Handler(), "/v1/orgs/old", &one); code != 200 || one["pool"] != "default" || one["id"] != "old" {
		t.Fatalf("/v1/orgs/old: %d %v", code, one)
	}
	// The record itself is unchanged beside it.
	if obs, _ := one["observed"].(map[string]any); obs["tunnel_id"] != "t-2" {
		t.Fatalf("/v1/orgs/old observed %v", one["observed"])
	}
	var typed struct {
		state.Org
		Pool string `json:"pool"`
	}
	if code := get(t, s.Handler(), "/v1/orgs/acme", &typed); code != 200 || typed.Pool != "eu" || typed.Desired.Slug != "acme" {
		t.Fatalf("/v1/orgs/acme: %d %+v", code, typed)
	}
}

// /v1/orgs shows the pools' use once the engine gives it.
func TestOrgListShowsPoolUsage(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "s.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(st, nil)
	var list map[string]any
	if code := get(t, s.Handler(), "/v1/orgs", &list); code != 200 || list["pools"] != nil {
		t.Fatalf("before: %d %v", code, list)
	}
	s.SetPoolUsage(func() any { return []map[string]any{{"pool": "sandbox", "tunnels": 3}} })
	if code := get(t, s.Handler(), "/v1/orgs", &list); code != 200 {
		t.Fatalf("after: %d", code)
	}
	if p, _ := list["pools"].([]any); len(p) != 1 || p[0].(map[string]any)["pool"] != "sandbox" {
		t.Fatalf("pools %v", list["pools"])
	}
}

// /v1/orgs/{id} shows token_rotated_at at the top, in RFC 3339, once a
// rotation completed, and not before.
func TestOrgShowsTokenRotatedAt(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "s.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	at := time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC)
	if _, err := st.Apply([]state.Fact{{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "rotated", Slug: "rotated"},
		{Seq: 2, EventID: "e2", Type: state.FactCreated, OrgID: "never", Slug: "never"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Update("rotated", func(o *state.Org) error { o.Observed.TokenRotatedAt = at; return nil }); err != nil {
		t.Fatal(err)
	}
	s := New(st, nil)
	var one map[string]any
	if code := get(t, s.Handler(), "/v1/orgs/rotated", &one); code != 200 || one["token_rotated_at"] != at.Format(time.RFC3339) {
		t.Fatalf("code %d, token_rotated_at %v; want %s", code, one["token_rotated_at"], at.Format(time.RFC3339))
	}
	one = nil
	if code := get(t, s.Handler(), "/v1/orgs/never", &one); code != 200 {
		t.Fatalf("code %d", code)
	}
	if _, ok := one["token_rotated_at"]; ok {
		t.Fatalf("token_rotated_at shown before any rotation: %v", one["token_rotated_at"])
	}
}
