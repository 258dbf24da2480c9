package progress

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestRateETAAndThrottle(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Unix(1000, 0)}
	r := New(&buf, "replay", Options{Unit: "events", Total: 1000, Interval: time.Second, Now: clk.now})

	clk.t = clk.t.Add(2 * time.Second)
	r.Add(200) // first draw: 100/s, 800 left -> ETA 8s
	if got, want := r.Line(), "replay: 200/1000 events (20%), 100/s, ETA 8s"; got != want {
		t.Fatalf("line %q, want %q", got, want)
	}
	draws := strings.Count(buf.String(), "\r")
	clk.t = clk.t.Add(100 * time.Millisecond)
	r.Add(10) // inside the interval: not redrawn
	if n := strings.Count(buf.String(), "\r"); n != draws {
		t.Fatalf("redrawn inside the interval: %q", buf.String())
	}
	clk.t = clk.t.Add(time.Second)
	r.Set(1000)
	r.Finish()
	out := buf.String()
	if !strings.HasSuffix(out, "\n") || !strings.Contains(out, "1000/1000 events (100%)") || strings.Contains(out[strings.LastIndex(out, "\r"):], "ETA") {
		t.Fatalf("final line: %q", out)
	}
}

func TestUnknownTotal(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	r := New(&buf, "plan", Options{Unit: "orgs", Now: clk.now})
	clk.t = clk.t.Add(4 * time.Second)
	r.Add(40000)
	if got, want := r.Line(), "plan: 40000 orgs, 10k/s, 4s elapsed"; got != want {
		t.Fatalf("line %q, want %q", got, want)
	}
}

func TestElapsedOnly(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	r := New(&buf, "plan: listing", Options{ElapsedOnly: true, Now: clk.now})
	clk.t = clk.t.Add(3 * time.Second)
	r.Add(1)
	if got := r.Line(); got != "plan: listing, 3s elapsed" {
		t.Fatalf("line %q", got)
	}
}

// Not a terminal (a pipe, a file, a buffer): nothing is ever written, and a
// nil Reporter is safe to use.
func TestQuietOffTerminal(t *testing.T) {
	var buf bytes.Buffer
	if r := ForTerminal(&buf, "x", Options{}); r != nil {
		t.Fatal("a buffer is not a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := ForTerminal(f, "x", Options{Total: 3})
	if r != nil {
		t.Fatal("a regular file is not a terminal")
	}
	r.Add(1)
	r.SetTotal(5)
	r.Set(2)
	r.Finish()
	r.Clear()
	if st, _ := f.Stat(); st.Size() != 0 {
		t.Fatalf("wrote %d bytes to a file", st.Size())
	}
}

// Lines printed through Above land on a clean line, and the progress line
// is drawn again after them.
func TestAbove(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	r := New(&buf, "publish", Options{Unit: "events", Total: 2, Now: clk.now})
	clk.t = clk.t.Add(time.Second)
	r.Add(1)
	r.Above(func() { buf.WriteString("published one\n") })
	want := "\rpublish: 1/2 events (50%), 1.0/s, ETA 1s\x1b[K\r\x1b[Kpublished one\n\rpublish: 1/2 events (50%), 1.0/s, ETA 1s\x1b[K"
	if buf.String() != want {
		t.Fatalf("got %q\nwant %q", buf.String(), want)
	}
	var nilR *Reporter
	called := false
	nilR.Above(func() { called = true })
	if !called {
		t.Fatal("a nil Reporter must still run fn")
	}
}
