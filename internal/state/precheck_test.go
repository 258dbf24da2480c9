package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A file cut short anywhere is refused as corrupt, naming the file and the
// fix; before checkFileSize, bbolt's freelist scan (NoFreelistSync) faulted
// with SIGBUS in its own goroutine and killed the process.
func TestOpenTruncatedNeverFaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var facts []Fact
	for i := 0; i < 500; i++ {
		facts = append(facts, Fact{Seq: uint64(i + 1), EventID: fmt.Sprint(i), Type: FactCreated, OrgID: fmt.Sprintf("org-%04d", i), Slug: "s", Time: time.Now()})
	}
	if _, err := s.Apply(facts); err != nil {
		t.Fatal(err)
	}
	s.Close()
	good, _ := os.ReadFile(path)
	for _, n := range []int{len(good) / 2, 3 * 4096, 8192 + 100} {
		if err := os.WriteFile(path, good[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path, Options{})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "reconciler replay") {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(good), err)
		}
	}
}

// Scribbled pages (bad page pointers, garbage page types) are refused as
// corrupt; before scanFile, bbolt's own page walk faulted in its goroutine.
func TestOpenScribbledNeverFaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var facts []Fact
	for i := 0; i < 500; i++ {
		facts = append(facts, Fact{Seq: uint64(i + 1), EventID: fmt.Sprint(i), Type: FactCreated, OrgID: fmt.Sprintf("org-%04d", i), Slug: "s", Time: time.Now()})
	}
	if _, err := s.Apply(facts); err != nil {
		t.Fatal(err)
	}
	s.Close()
	good, _ := os.ReadFile(path)
	for _, stride := range []int{61, 509, 4093} {
		b := append([]byte(nil), good...)
		for i := 16384; i < len(b); i += stride {
			b[i] ^= 0x5a
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := Open(path, Options{})
		if err == nil && stride > 1000 {
			st.Close() // sparse scribbles may miss every page in use: fine, as long as nothing faulted
			continue
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "reconciler replay") {
			t.Fatalf("stride %d: %v", stride, err)
		}
	}
}
