package reliability

import (
	enc "encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tunnelward/tunnelward/internal/state"
)

// storeFault damages a good state file in one way.
type storeFault struct {
	name   string
	damage func(t *testing.T, path string)
	want   string // words the error must contain besides the file and the fix; "" = the daemon rebuilds by itself
}

func rewrite(t *testing.T, path string, f func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// usedBytes is what a bbolt file's first meta page says its pages take
// (high-water mark times page size); the whole file when it cannot tell.
func usedBytes(b []byte) int {
	const meta = 16 // page header
	if len(b) < meta+56 || enc.LittleEndian.Uint32(b[meta:]) != 0xED0CDAED {
		return len(b)
	}
	pageSize := enc.LittleEndian.Uint32(b[meta+8:])
	hwm := enc.LittleEndian.Uint64(b[meta+40:])
	if n := int(hwm) * int(pageSize); n > 0 && n <= len(b) {
		return n
	}
	return len(b)
}

func withBolt(t *testing.T, path string, f func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(f); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

var storeFaults = []storeFault{
	{"garbage", func(t *testing.T, p string) {
		rewrite(t, p, func(b []byte) []byte {
			for i := range b {
				b[i] = byte(i*7 + 13)
			}
			return b
		})
	}, "corrupt"},
	{"zeroed-meta-pages", func(t *testing.T, p string) {
		rewrite(t, p, func(b []byte) []byte { clear(b[:8192]); return b })
	}, "corrupt"},
	{"truncated-half", func(t *testing.T, p string) {
		// Half of the pages in use: half of the file can hold them all
		// when bbolt grew the file ahead of its high-water mark.
		rewrite(t, p, func(b []byte) []byte { return b[:min(len(b), usedBytes(b))/2] })
	}, "corrupt"},
	{"truncated-tiny", func(t *testing.T, p string) {
		rewrite(t, p, func(b []byte) []byte { return b[:100] })
	}, "corrupt"},
	// A file that is empty or gone cannot be told from a new one: the daemon
	// sees its consumer has acked events and rebuilds from the stream.
	{"empty-file", func(t *testing.T, p string) {
		rewrite(t, p, func(b []byte) []byte { return nil })
	}, ""},
	{"missing-file", func(t *testing.T, p string) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}, ""},
	{"scribbled-data-pages", func(t *testing.T, p string) {
		// Every branch and leaf page (page header flags 0x01, 0x02), so pages
		// in use are hit whatever the layout.
		rewrite(t, p, func(b []byte) []byte {
			size := int(enc.LittleEndian.Uint32(b[16+8:])) // meta: magic, version, page size
			hit := 0
			for off := 2 * size; off+size <= len(b); off += size {
				if flags := enc.LittleEndian.Uint16(b[off+8:]); flags == 0x01 || flags == 0x02 {
					hit++
					for i := off; i < off+size; i += 61 {
						b[i] ^= 0x5a
					}
				}
			}
			if hit == 0 {
				t.Fatal("no data pages to scribble")
			}
			return b
		})
	}, "corrupt"},
	{"org-record-not-json", func(t *testing.T, p string) {
		withBolt(t, p, func(tx *bolt.Tx) error { return tx.Bucket([]byte("orgs")).Put([]byte("alpha"), []byte("{not json")) })
	}, "corrupt"},
	{"future-schema-version", func(t *testing.T, p string) {
		withBolt(t, p, func(tx *bolt.Tx) error {
			var v [8]byte
			enc.BigEndian.PutUint64(v[:], state.SchemaVersion+41)
			return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), v[:])
		})
	}, "newer"},
}

// TestStoreFaults damages the state file in each way and runs the real
// reconciler binary (daemon and status) on it: a clear error naming the file
// and the fix, never a panic; then `reconciler replay`, as the message says,
// rebuilds it from the stream and the daemon starts with every org back.
// A file locked by another process is refused the same way.
func TestStoreFaults(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{simArgs: fastWorld})
	w.startReconciler()
	w.waitReady()
	orgsWanted := []string{"alpha", "beta", "gamma"}
	for _, o := range orgsWanted {
		w.create(o)
	}
	w.delete("gamma")
	waitFor(t, 30*time.Second, "events applied", func() bool {
		m, err := w.orgs()
		return err == nil && m["gamma"].Desired.Presence == state.Deleted && m["beta"].LastSeq > 0
	})
	if code := w.rec.term(); code != 0 {
		t.Fatalf("reconciler exit %d", code)
	}
	dbPath := filepath.Join(w.dataDir, "state.db")
	good, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	runRec := func(args ...string) (int, string) {
		cmd := exec.Command(w.recBin, append(args, "--data-dir", w.dataDir, "--nats-url", w.natsURL(), "--admin-listen", freeAddr(t),
			"--sandbox-listen", freeAddr(t), "--cloud", w.simURL())...)
		out, err := runWithTimeout(cmd, 60*time.Second)
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("reconciler %v: %v\n%s", args, err, tail(out, 20))
		}
		return code, out
	}
	clean := func(t *testing.T, what, out string) {
		t.Helper()
		for _, bad := range []string{"panic", "goroutine ", "SIGBUS", "SIGSEGV", "fatal error"} {
			if strings.Contains(out, bad) {
				i := max(0, strings.Index(out, bad)-2000)
				t.Fatalf("%s: output shows %q:\n%s", what, bad, out[i:min(len(out), i+5000)])
			}
		}
	}

	t.Run("locked", func(t *testing.T) {
		// Another process (this test) holds the file.
		s, err := state.Open(dbPath, state.Options{})
		if err != nil {
			t.Fatal(err)
		}
		code, out := runRec()
		s.Close()
		clean(t, "locked", out)
		if code == 0 || !strings.Contains(out, dbPath) || !strings.Contains(out, "locked") || !strings.Contains(out, "already running") {
			t.Fatalf("locked file: exit %d, want an error naming %s, the lock and what to do:\n%s", code, dbPath, tail(out, 20))
		}
	})

	handled := 0
	quick := map[string]bool{"truncated-half": true, "scribbled-data-pages": true, "empty-file": true}
	tried := 0
	for _, f := range storeFaults {
		if !Heavy() && !quick[f.name] {
			continue
		}
		tried++
		t.Run(f.name, func(t *testing.T) {
			if err := os.WriteFile(dbPath, good, 0o600); err != nil {
				t.Fatal(err)
			}
			f.damage(t, dbPath)
			for _, args := range [][]string{nil, {"status"}, {"status", "-o", "json"}} {
				if f.want == "" {
					break
				}
				code, out := runRec(args...)
				what := "reconciler " + strings.Join(args, " ")
				clean(t, what, out)
				if code == 0 || !strings.Contains(out, dbPath) || !strings.Contains(out, "reconciler replay") || !strings.Contains(out, f.want) {
					t.Fatalf("%s on a %s file: exit %d; want an error naming %s, %q and `reconciler replay`:\n%s", what, f.name, code, dbPath, f.want, tail(out, 20))
				}
			}
			// The fix the message names.
			if f.want != "" {
				code, out := runRec("replay")
				clean(t, "replay", out)
				if code != 0 {
					t.Fatalf("replay over a %s file: exit %d\n%s", f.name, code, tail(out, 20))
				}
			}
			// The daemon starts and serves every org again.
			w.startReconciler()
			w.waitReady()
			var m map[string]state.Org
			waitFor(t, 20*time.Second, "orgs back", func() bool {
				var err error
				m, err = w.orgs()
				return err == nil && m["gamma"].LastSeq == w.lastSeq["gamma"]
			})
			w.rec.term()
			for _, o := range orgsWanted {
				if m[o].LastSeq != w.lastSeq[o] {
					t.Fatalf("after replay org %s has seq %d, want %d", o, m[o].LastSeq, w.lastSeq[o])
				}
			}
			if m["gamma"].Desired.Presence != state.Deleted || m["alpha"].Desired.Presence != state.Present {
				t.Fatalf("after replay: %+v", m)
			}
			handled++
		})
	}
	t.Logf("FIGURE store faults: %d of %d damaged or lost state files handled (refused naming the file and `reconciler replay`, never a panic, rebuilt by replay; empty or missing rebuilt by the daemon itself); locked file refused", handled, tried)
}
