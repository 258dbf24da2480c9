package workqueue

import (
	"testing"
	"time"
)

func drain(t *testing.T, q *Queue, n int) []string {
	t.Helper()
	var got []string
	for range n {
		k, shut := q.Get()
		if shut {
			t.Fatal("queue shut down")
		}
		got = append(got, k)
		q.Done(k)
	}
	return got
}

func same(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Keys added with AddAfterFirst are handed out before the others, in the
// order they came due; a key already queued moves ahead; once handed out,
// a key is an ordinary key again.
func TestAddAfterFirstGoesAhead(t *testing.T) {
	q := New(Config{})
	defer q.ShutDown()
	for _, k := range []string{"new-1", "new-2", "new-3", "new-4"} {
		q.Add(k)
	}
	q.AddAfterFirst("poll-1", 0)
	q.AddAfterFirst("new-3", 0) // already queued: moves ahead
	q.AddAfterFirst("poll-2", time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() < 6 {
		if time.Now().After(deadline) {
			t.Fatal("poll-2 never came due")
		}
		time.Sleep(time.Millisecond)
	}
	want := []string{"poll-1", "new-3", "poll-2", "new-1", "new-2", "new-4"}
	if got := drain(t, q, 6); !same(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	q.Add("new-5")
	q.Add("poll-1") // handed out already: ordinary now
	if got := drain(t, q, 2); !same(got, []string{"new-5", "poll-1"}) {
		t.Fatalf("order %v, want [new-5 poll-1]", got)
	}
}

// A first key added again while a worker holds it is queued ahead when
// Done runs, and is still processed once.
func TestAddAfterFirstWhileProcessing(t *testing.T) {
	q := New(Config{})
	defer q.ShutDown()
	q.Add("poll")
	k, _ := q.Get()
	q.Add("new-1")
	q.AddAfterFirst("poll", 0) // the worker asks to look again
	q.Done(k)
	if got := drain(t, q, 2); !same(got, []string{"poll", "new-1"}) {
		t.Fatalf("order %v, want [poll new-1]", got)
	}
	if q.Len() != 0 {
		t.Fatalf("%d keys left", q.Len())
	}
}
