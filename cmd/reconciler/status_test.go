package main

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The UPDATED column is when the record last changed (changed_at), not the
// time the publisher wrote into the event (updated_at); both stay in the
// JSON, and the detail view names both.
func TestStatusUpdatedIsWhenTheRecordChanged(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	eventTime := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC) // an event published days earlier
	changed := time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)
	clock := changed.Add(-time.Hour)
	s, err := state.Open(filepath.Join(dataDir, "state.db"), state.Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply([]state.Fact{{Seq: 1, EventID: "acme-c1", Type: state.FactCreated, OrgID: "acme", Slug: "acme", Time: eventTime}}); err != nil {
		t.Fatal(err)
	}
	clock = changed // the engine writes later
	if err := s.Update("acme", func(o *state.Org) error { o.Observed.TunnelID = "t-1"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) string { t.Helper(); return runOn(t, dataDir, args...) }
	table := run("status")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) > 0 && strings.HasPrefix(lines[0], "WATCH ") {
		lines = lines[1:] // the watch schedule's header line
	}
	if len(lines) != 2 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "UPDATED") {
		t.Fatalf("status table:\n%s", table)
	}
	if f := strings.Fields(lines[1]); f[len(f)-1] != "2026-12-01T09:30:00Z" {
		t.Errorf("UPDATED is %s, want the change time 2026-12-01T09:30:00Z (the event time is 2026-11-26T10:00:00Z)\n%s", f[len(f)-1], table)
	}

	detail := run("status", "acme")
	for _, want := range []string{"last event: seq 1, id acme-c1, event time 2026-11-26T10:00:00Z", "record changed: 2026-12-01T09:30:00Z"} {
		if !strings.Contains(detail, want) {
			t.Errorf("status acme lacks %q:\n%s", want, detail)
		}
	}

	var o map[string]any
	if err := json.Unmarshal([]byte(run("status", "acme", "-o", "json")), &o); err != nil {
		t.Fatal(err)
	}
	if o["updated_at"] != "2026-11-26T10:00:00Z" || o["changed_at"] != "2026-12-01T09:30:00Z" {
		t.Errorf("status -o json: updated_at %v changed_at %v", o["updated_at"], o["changed_at"])
	}
}

// status names each org's Cloudflare pool: the one it is placed in, the
// default pool for an org placed before pools, "-" before placement; the
// JSON has it as a top-level "pool", as the admin API does.
func TestStatusShowsThePool(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	s, err := state.Open(filepath.Join(dataDir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply([]state.Fact{
		{Seq: 1, EventID: "e1", Type: state.FactCreated, OrgID: "acme", Slug: "acme"},
		{Seq: 2, EventID: "e2", Type: state.FactCreated, OrgID: "old", Slug: "old"},
		{Seq: 3, EventID: "e3", Type: state.FactCreated, OrgID: "new", Slug: "new"},
	}); err != nil {
		t.Fatal(err)
	}
	for org, f := range map[string]func(o *state.Org){
		"acme": func(o *state.Org) { o.Observed.Pool, o.Observed.TunnelID = "sandbox2", "t-1" },
		"old":  func(o *state.Org) { o.Observed.TunnelID = "t-2" }, // from before pools
	} {
		if err := s.Update(org, func(o *state.Org) error { f(o); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string { t.Helper(); return runOn(t, dataDir, args...) }
	table := run("status")
	var header []string
	pools := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "ORG":
			header = f
		case header != nil && len(f) > 9:
			pools[f[0]] = f[slices.Index(header, "POOL")]
		}
	}
	if want := map[string]string{"acme": "sandbox2", "old": "sandbox", "new": "-"}; !maps.Equal(pools, want) {
		t.Errorf("POOL column %v, want %v:\n%s", pools, want, table)
	}
	if d := run("status", "acme"); !regexp.MustCompile(`\npool +sandbox2\n`).MatchString(d) {
		t.Errorf("status acme does not name its pool:\n%s", d)
	}
	var o map[string]any
	if err := json.Unmarshal([]byte(run("status", "old", "-o", "json")), &o); err != nil {
		t.Fatal(err)
	}
	if o["pool"] != "sandbox" || o["id"] != "old" {
		t.Errorf("status old -o json: pool %v id %v", o["pool"], o["id"])
	}
}

// The detail view names the pool org.created asked for while the org is
// not placed there.
func TestPoolDetail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		asked, placed, want string
	}{
		{"", "", ""},
		{"", "sandbox", "sandbox"},
		{"eu", "eu", "eu"},
		{"eu", "", "- (asked for eu)"},
	} {
		v := admin.Org{Org: state.Org{Desired: state.Desired{Pool: tc.asked}}, Pool: tc.placed}
		if got := poolDetail(v); got != tc.want {
			t.Errorf("asked %q placed %q: %q, want %q", tc.asked, tc.placed, got, tc.want)
		}
	}
}

// runOn runs a reconciler command on dataDir's state file and returns its
// output; a non-zero exit fails the test.
func runOn(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	var out, errb strings.Builder
	if code := realMain(append(args, "--data-dir", dataDir), &out, &errb); code != 0 {
		t.Fatalf("reconciler %v: exit %d\n%s", args, code, errb.String())
	}
	return out.String()
}

// The status of a rotation in flight says its next step, and how many
// instances it replaced for want of a connector on the new token.
func TestRotationDetail(t *testing.T) {
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	r := &state.Rotation{Reason: "token past its max age", Phase: "connect", StartedAt: at}
	if got, want := rotationDetail(r), "in flight since 2026-12-04T10:00:00Z, next step connect (token past its max age)"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	r.Replaced = 2
	if got := rotationDetail(r); !strings.HasSuffix(got, "; 2 instance replacement(s) brought no connector on the new token (at most 2)") {
		t.Fatalf("with replacements: %q", got)
	}
	if got := rotationDetail(nil); got != "" {
		t.Fatalf("no rotation: %q", got)
	}
}
