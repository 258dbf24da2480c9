// Package progress draws a one-line progress report (count, rate, ETA) for
// long work, redrawn in place on a terminal, and nothing at all when the
// output is a pipe or a file, so logs and scripts stay clean.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultInterval is how often the line is redrawn at most.
const DefaultInterval = 250 * time.Millisecond

// Reporter is one progress line. A nil *Reporter does nothing, so callers
// need no "is it a terminal" branches.
type Reporter struct {
	w        io.Writer
	label    string
	unit     string
	elapsed  bool
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	start    time.Time
	lastDraw time.Time
	done     int64
	total    int64 // 0: unknown
	drawn    bool
}

// Options shape a Reporter; zero values take the defaults.
type Options struct {
	Unit     string        // what is counted, e.g. "events" (default "items")
	Total    int64         // 0 when unknown: no percentage and no ETA
	Interval time.Duration // default DefaultInterval
	Now      func() time.Time
	// ElapsedOnly shows only the time spent: for waits that cannot be
	// counted (one paginated listing), redrawn on each Add.
	ElapsedOnly bool
}

// IsTerminal reports whether w is a terminal (a character device).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// ForTerminal returns a Reporter drawing on w when w is a terminal and nil
// (quiet) otherwise.
func ForTerminal(w io.Writer, label string, o Options) *Reporter {
	if !IsTerminal(w) {
		return nil
	}
	return New(w, label, o)
}

// New returns a Reporter that always draws on w.
func New(w io.Writer, label string, o Options) *Reporter {
	if o.Unit == "" {
		o.Unit = "items"
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Reporter{w: w, label: label, unit: o.Unit, elapsed: o.ElapsedOnly, interval: o.Interval, now: o.Now, start: o.Now(), total: o.Total}
}

// SetTotal sets (or corrects) the total once it is known.
func (r *Reporter) SetTotal(n int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.total = n
	r.mu.Unlock()
}

// Add counts n more done and redraws if the interval has passed.
func (r *Reporter) Add(n int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done += n
	r.maybeDraw()
}

// Set sets the count done and redraws if the interval has passed.
func (r *Reporter) Set(done int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = done
	r.maybeDraw()
}

func (r *Reporter) maybeDraw() {
	now := r.now()
	if r.drawn && now.Sub(r.lastDraw) < r.interval {
		return
	}
	r.lastDraw, r.drawn = now, true
	// \r returns to the line start; \x1b[K clears what a longer line left.
	fmt.Fprintf(r.w, "\r%s\x1b[K", r.line(now))
}

// Finish draws the final figures and ends the line.
func (r *Reporter) Finish() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.w, "\r%s\x1b[K\n", r.line(r.now()))
}

// Clear removes the line (when the caller prints its own summary).
func (r *Reporter) Clear() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.drawn {
		fmt.Fprint(r.w, "\r\x1b[K")
	}
}

// Above runs fn (which prints a line of its own, e.g. on stdout to the
// same terminal) with the progress line cleared, then draws it again below.
func (r *Reporter) Above(fn func()) {
	if r == nil {
		fn()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.drawn {
		fmt.Fprint(r.w, "\r\x1b[K")
	}
	fn()
	if r.drawn {
		fmt.Fprintf(r.w, "\r%s\x1b[K", r.line(r.now()))
	}
}

// Line is the current progress text, without terminal control codes.
func (r *Reporter) Line() string {
	if r == nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.line(r.now())
}

func (r *Reporter) line(now time.Time) string {
	elapsed := now.Sub(r.start)
	if r.elapsed {
		return fmt.Sprintf("%s, %s elapsed", r.label, elapsed.Round(time.Second))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d", r.label, r.done)
	if r.total > 0 {
		fmt.Fprintf(&b, "/%d %s (%d%%)", r.total, r.unit, min(100, r.done*100/r.total))
	} else {
		fmt.Fprintf(&b, " %s", r.unit)
	}
	if elapsed < 100*time.Millisecond || r.done == 0 {
		fmt.Fprintf(&b, ", %s elapsed", elapsed.Round(time.Second))
		return b.String()
	}
	rate := float64(r.done) / elapsed.Seconds()
	fmt.Fprintf(&b, ", %s/s", formatRate(rate))
	if r.total > 0 && r.done < r.total {
		eta := time.Duration(float64(r.total-r.done) / rate * float64(time.Second))
		fmt.Fprintf(&b, ", ETA %s", eta.Round(time.Second))
	} else {
		fmt.Fprintf(&b, ", %s elapsed", elapsed.Round(time.Second))
	}
	return b.String()
}

func formatRate(r float64) string {
	switch {
	case r >= 10000:
		return fmt.Sprintf("%.0fk", r/1000)
	case r >= 100:
		return fmt.Sprintf("%.0f", r)
	default:
		return fmt.Sprintf("%.1f", r)
	}
}
