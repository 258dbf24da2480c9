package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

func TestObservedAge(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{time.Time{}, "-"},
		{now.Add(-12*time.Second - 300*time.Millisecond), "12s ago"},
		{now.Add(-3*time.Minute - 10*time.Second), "3m0s ago"},
		{now.Add(-5*time.Hour - 10*time.Minute), "5h0m0s ago"},
		{now.Add(time.Second), "0s ago"}, // a clock a little ahead
	} {
		if got := observedAge(tc.at, now); got != tc.want {
			t.Errorf("observedAge(%v) = %q, want %q", now.Sub(tc.at), got, tc.want)
		}
	}
}

// The table has an OBSERVED column and the list a WATCH header line: the
// daemon's intervals when it answers, else the schedule for the org count.
func TestStatusShowsObservedAndWatch(t *testing.T) {
	t.Parallel()
	now := time.Now()
	orgs := []admin.Org{{Org: state.Org{ID: "acme", Observed: state.Observed{ObservedAt: now.Add(-20 * time.Second)}}}, {Org: state.Org{ID: "beta"}}}
	var b bytes.Buffer
	printTable(&b, orgs, now)
	lines := strings.Split(b.String(), "\n")
	if !strings.Contains(lines[0], "OBSERVED") || !strings.Contains(lines[1], "20s ago") {
		t.Fatalf("table:\n%s", b.String())
	}
	c := config.Config{SweepInterval: 5 * time.Minute, WatchBudgetShare: 0.05}
	h := watchHeader(c, orgs, map[string]string{"tunnels": "15s", "dns_records": "30s", "instances": "30s", "parameters": "1m0s"})
	if h != "WATCH  tunnels=15s  dns_records=30s  instances=30s  parameters=1m0s  sweep=5m0s" {
		t.Fatalf("header from the daemon: %q", h)
	}
	h = watchHeader(c, orgs, nil)
	if !strings.Contains(h, "daemon not running; schedule for 2 orgs") || !strings.Contains(h, "tunnels=14s") || !strings.Contains(h, "parameters=20s") {
		t.Fatalf("header offline: %q", h)
	}
	c.WatchBudgetShare = 0
	if h := watchHeader(c, orgs, nil); !strings.HasPrefix(h, "WATCH off") {
		t.Fatalf("header with watches off: %q", h)
	}
}

func TestPoolsHeader(t *testing.T) {
	t.Parallel()
	if h := poolsHeader(nil); h != "" {
		t.Fatalf("no pools: %q", h)
	}
	h := poolsHeader([]reconcile.PoolUsage{
		{Pool: "default", Zone: "example.com", Tunnels: 180, MaxTunnels: 1000, Records: 180, MaxRecords: 200, Waiting: 3},
		{Pool: "eu", Zone: "eu.example.com", Tunnels: 2, Records: 2},
	})
	if want := "POOLS  default (example.com): 180/1000 tunnels, 180/200 dns records  eu (eu.example.com): 2 tunnels (no limit), 2 dns records (no limit); 3 org(s) wait for room (PoolFull)"; h != want {
		t.Fatalf("header\n%q\nwant\n%q", h, want)
	}
}
