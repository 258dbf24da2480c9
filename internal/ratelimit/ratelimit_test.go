package ratelimit

import (
	"testing"
	"time"
)

// TestWindowLimiterNeverExceedsBudget drives the limiter with a greedy client
// on a synthetic clock (AllowN with explicit times, no sleeping) and checks
// every sliding window of length Window: none may hold more than the budget.
func TestWindowLimiterNeverExceedsBudget(t *testing.T) {
	if DefaultCloudflare.Requests > CloudflareLimit {
		t.Fatalf("default budget %d over Cloudflare's %d", DefaultCloudflare.Requests, CloudflareLimit)
	}
	for _, b := range []WindowBudget{
		DefaultCloudflare,
		{Requests: CloudflareLimit, Window: 5 * time.Minute, Burst: 10},
		{Requests: 100, Window: 10 * time.Second, Burst: 1},
		{Requests: 100, Window: 10 * time.Second, Burst: 50},
		{Requests: 1200, Window: 5 * time.Minute, Burst: 200},
	} {
		lim, err := NewWindowLimiter(b)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Unix(1_800_000_000, 0)
		step := b.Window / 20000
		var admitted []time.Time
		for now := start; now.Before(start.Add(6 * b.Window)); now = now.Add(step) {
			for lim.AllowN(now, 1) { // take everything offered at this instant
				admitted = append(admitted, now)
			}
		}
		maxIn, j := 0, 0
		for i := range admitted {
			for admitted[i].Sub(admitted[j]) >= b.Window {
				j++
			}
			maxIn = max(maxIn, i-j+1)
		}
		if maxIn > b.Requests {
			t.Errorf("%+v: %d requests in one window, budget %d", b, maxIn, b.Requests)
		}
		// The limiter must also not be needlessly tight: a greedy client gets
		// close to the whole budget in a window.
		if maxIn < b.Requests-2 {
			t.Errorf("%+v: only %d of %d requests per window used", b, maxIn, b.Requests)
		}
		t.Logf("%+v: max %d requests in any %v window (%d over 6 windows)", b, maxIn, b.Window, len(admitted))
	}
}

func TestWindowLimiterRejectsBadBudget(t *testing.T) {
	for _, b := range []WindowBudget{{Requests: 10, Burst: 10}, {Requests: 1, Burst: 1}, {Requests: 10, Window: -time.Second}} {
		if _, err := NewWindowLimiter(b); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
}

func TestEC2Buckets(t *testing.T) {
	e := NewEC2(DefaultEC2())
	now := time.Unix(1_800_000_000, 0)
	count := func(action string) int {
		n := 0
		for e.For(action).(interface{ AllowN(time.Time, int) bool }).AllowN(now, 1) {
			n++
		}
		return n
	}
	if n := count("RunInstances"); n != 5 {
		t.Errorf("RunInstances burst %d, want 5", n)
	}
	if n := count("TerminateInstances"); n != 100 {
		t.Errorf("TerminateInstances burst %d, want 100", n)
	}
	if n := count("DescribeInstances"); n != 100 {
		t.Errorf("DescribeInstances burst %d, want 100", n)
	}
	// Non-mutating actions share one bucket, now empty.
	if n := count("DescribeTags"); n != 0 {
		t.Errorf("DescribeTags got %d after the shared bucket was drained", n)
	}
	if n := count("RebootInstances"); n != 50 {
		t.Errorf("RebootInstances (other mutating) burst %d, want 50", n)
	}
	if IsNonMutating("RunInstances") || !IsNonMutating("GetConsoleOutput") {
		t.Error("verb classification wrong")
	}
}

// Replicas splitting one window budget by shares that add up to 1 admit
// together no more than the budget in a window.
func TestSetWindowShareSplitsTheBudget(t *testing.T) {
	b := WindowBudget{Requests: 1200, Window: 5 * time.Minute, Burst: 10}
	var total float64
	for _, share := range []float64{22.0 / 64, 21.0 / 64, 21.0 / 64} {
		l, err := NewWindowLimiter(b)
		if err != nil {
			t.Fatal(err)
		}
		SetWindowShare(l, b, share)
		total += float64(l.Burst()) + float64(l.Limit())*b.Window.Seconds()
	}
	if total > float64(b.Requests)+0.001 {
		t.Fatalf("three shares admit %.1f requests per window, budget %d", total, b.Requests)
	}
	if total < float64(b.Requests)*0.97 {
		t.Fatalf("three shares admit only %.1f of %d", total, b.Requests)
	}
}

func TestEC2SetShare(t *testing.T) {
	b := DefaultEC2()
	e := NewEC2(b)
	e.SetShare(b, 0.5)
	ri := e.For("RunInstances").(*Resizable)
	if ri.Burst() != 2 || float64(ri.Limit()) != b.PerAction["RunInstances"].Rate/2 {
		t.Errorf("RunInstances at half: burst %d rate %v", ri.Burst(), ri.Limit())
	}
	d := e.For("DescribeInstances").(*Resizable)
	if d.Burst() != 50 || float64(d.Limit()) != b.NonMutating.Rate/2 {
		t.Errorf("DescribeInstances at half: burst %d rate %v", d.Burst(), d.Limit())
	}
	e.SetShare(b, 1)
	if ri.Burst() != 5 || float64(ri.Limit()) != b.PerAction["RunInstances"].Rate {
		t.Errorf("RunInstances back to whole: burst %d rate %v", ri.Burst(), ri.Limit())
	}
}
