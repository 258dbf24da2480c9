package workqueue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestDedupBeforeProcessing(t *testing.T) {
	q := New(Config{})
	q.Add("a")
	q.Add("a")
	q.Add("b")
	if q.Len() != 2 {
		t.Fatalf("Len = %d, want 2", q.Len())
	}
	k, _ := q.Get()
	if k != "a" {
		t.Fatalf("first key %q", k)
	}
	k2, _ := q.Get()
	if k2 != "b" || q.Len() != 0 {
		t.Fatalf("second key %q, Len %d", k2, q.Len())
	}
	q.Done("a")
	q.Done("b")
	if q.Len() != 0 {
		t.Fatalf("a was queued twice")
	}
}

func TestReAddWhileProcessingRunsOnceMore(t *testing.T) {
	q := New(Config{})
	q.Add("a")
	k, _ := q.Get()
	q.Add("a")
	q.Add("a")
	if q.Len() != 0 {
		t.Fatalf("key handed out again while processing: Len %d", q.Len())
	}
	q.Done(k)
	if q.Len() != 1 {
		t.Fatalf("after Done Len = %d, want 1", q.Len())
	}
	k, _ = q.Get()
	q.Done(k)
	if q.Len() != 0 {
		t.Fatalf("ran more than once more")
	}
}

func TestShutDownDrainsThenStops(t *testing.T) {
	q := New(Config{})
	q.Add("a")
	q.Add("b")
	q.AddAfter("late", time.Hour)
	q.ShutDown()
	q.Add("c") // ignored
	var got []string
	for {
		k, down := q.Get()
		if down {
			break
		}
		got = append(got, k)
		q.Done(k)
	}
	if fmt.Sprint(got) != "[a b]" {
		t.Fatalf("drained %v, want [a b]", got)
	}
	if q.Waiting() != 0 {
		t.Fatalf("delayed key kept after shutdown")
	}
}

func TestShutDownWithDrainWaitsForWorkers(t *testing.T) {
	q := New(Config{})
	q.Add("a")
	k, _ := q.Get()
	var finished atomic.Bool
	go func() {
		time.Sleep(20 * time.Millisecond)
		finished.Store(true)
		q.Done(k)
	}()
	if err := q.ShutDownWithDrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("drain returned before the worker was done")
	}

	q2 := New(Config{})
	q2.Add("x")
	q2.Get() // never Done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := q2.ShutDownWithDrain(ctx); err == nil {
		t.Fatal("drain with a stuck worker returned nil")
	}
}

func waitLen(t *testing.T, q *Queue, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Len = %d, want %d", q.Len(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAddAfterEarlierWins(t *testing.T) {
	q := New(Config{})
	q.AddAfter("a", time.Hour)
	q.AddAfter("a", 5*time.Millisecond)
	q.AddAfter("a", 2*time.Hour) // later: ignored
	if q.Waiting() != 1 {
		t.Fatalf("Waiting = %d", q.Waiting())
	}
	waitLen(t, q, 1)
	if q.Waiting() != 0 {
		t.Fatalf("still waiting after firing")
	}
	k, _ := q.Get()
	if k != "a" {
		t.Fatalf("got %q", k)
	}
}

func TestBackoffGrowsCapsAndForgets(t *testing.T) {
	q := New(Config{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second})
	wantCap := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, c := range wantCap {
		c *= time.Millisecond
		d := q.nextBackoff("k")
		if d < c/2 || d > c {
			t.Fatalf("failure %d: delay %v outside [%v, %v]", i, d, c/2, c)
		}
	}
	if q.NumRequeues("k") != len(wantCap) {
		t.Fatalf("NumRequeues = %d", q.NumRequeues("k"))
	}
	if q.NumRequeues("other") != 0 {
		t.Fatal("failures leak across keys")
	}
	q.Forget("k")
	if q.NumRequeues("k") != 0 {
		t.Fatal("Forget did not reset")
	}
	if d := q.nextBackoff("k"); d > 100*time.Millisecond {
		t.Fatalf("after Forget delay %v, want <= base", d)
	}
}

func TestAddRateLimitedRequeues(t *testing.T) {
	q := New(Config{BaseDelay: time.Millisecond, MaxDelay: 4 * time.Millisecond})
	q.AddRateLimited("a")
	waitLen(t, q, 1)
	k, _ := q.Get()
	q.Done(k)
	if q.NumRequeues("a") != 1 {
		t.Fatalf("NumRequeues = %d", q.NumRequeues("a"))
	}
}

// TestConcurrentWorkers hammers the queue from many goroutines and checks the
// two guarantees: no key is processed by two workers at once, and every Add is
// followed by a processing of that key that saw it.
func TestConcurrentWorkers(t *testing.T) {
	const keys, adders, addsEach, workers = 50, 16, 400, 8
	q := New(Config{BaseDelay: time.Microsecond, MaxDelay: 50 * time.Microsecond})

	var inFlight [keys]atomic.Int32
	var addSeq [keys]atomic.Int64 // bumped before each Add
	var seen [keys]atomic.Int64   // highest addSeq observed at a processing start
	var violations, processed atomic.Int64

	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k, down := q.Get()
				if down {
					return
				}
				var i int
				fmt.Sscanf(k, "org-%d", &i)
				if inFlight[i].Add(1) != 1 {
					violations.Add(1)
				}
				s := addSeq[i].Load()
				for {
					old := seen[i].Load()
					if s <= old || seen[i].CompareAndSwap(old, s) {
						break
					}
				}
				processed.Add(1)
				if rand.IntN(20) == 0 {
					time.Sleep(50 * time.Microsecond)
				}
				inFlight[i].Add(-1)
				q.Done(k)
			}
		}()
	}

	var aw sync.WaitGroup
	for a := 0; a < adders; a++ {
		aw.Add(1)
		go func() {
			defer aw.Done()
			for n := 0; n < addsEach; n++ {
				i := rand.IntN(keys)
				addSeq[i].Add(1)
				switch rand.IntN(10) {
				case 0:
					q.AddAfter(fmt.Sprintf("org-%d", i), time.Duration(rand.IntN(200))*time.Microsecond)
				case 1:
					q.AddRateLimited(fmt.Sprintf("org-%d", i))
				default:
					q.Add(fmt.Sprintf("org-%d", i))
				}
			}
		}()
	}
	aw.Wait()
	// Let delayed adds fire before draining (ShutDown drops waiting keys).
	deadline := time.Now().Add(10 * time.Second)
	for q.Waiting() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("delayed keys never fired")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.ShutDownWithDrain(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	if v := violations.Load(); v != 0 {
		t.Fatalf("%d times a key was processed by two workers at once", v)
	}
	for i := 0; i < keys; i++ {
		if addSeq[i].Load() > 0 && seen[i].Load() != addSeq[i].Load() {
			t.Errorf("org-%d: last add %d never processed (last seen %d)", i, addSeq[i].Load(), seen[i].Load())
		}
	}
	if p := processed.Load(); p == 0 || p > adders*addsEach {
		t.Fatalf("processed %d times for %d adds", p, adders*addsEach)
	}
	t.Logf("%d adds -> %d processings (dedup)", adders*addsEach, processed.Load())
}
