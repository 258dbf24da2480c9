package crashpoint

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fake replaces the kill with a panic the test recovers, so arming logic is
// tested in-process; TestKillsProcess checks the real SIGKILL.
type killed struct{}

func fake(t *testing.T) {
	t.Helper()
	old := kill
	kill = func() { panic(killed{}) }
	t.Cleanup(func() { kill = old; armed.Store(nil) })
}

func fires(name string) (died bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(killed); !ok {
				panic(r)
			}
			mu.Unlock()
			died = true
		}
	}()
	Hit(name)
	return false
}

func TestArmAndFire(t *testing.T) {
	fake(t)
	for _, tc := range []struct {
		spec  string
		hits  []string
		dieAt int // index into hits, -1 never
	}{
		{"ingest.ack.before", []string{"ingest.ack.after", "ingest.ack.before"}, 1},
		{"state.update.after:3", []string{"state.update.after", "state.update.before", "state.update.after", "state.update.after"}, 3},
		{"cloud.before.*:2", []string{"cloud.before.ec2.RunInstances", "cloud.after.ec2.RunInstances", "cloud.before.cf.tunnel.create"}, 2},
		{"nothing.matches", []string{"a", "b"}, -1},
	} {
		if err := Arm(tc.spec, ""); err != nil {
			t.Fatal(err)
		}
		got := -1
		for i, h := range tc.hits {
			if fires(h) {
				got = i
				break
			}
		}
		if got != tc.dieAt {
			t.Errorf("%s: died at hit %d, want %d", tc.spec, got, tc.dieAt)
		}
	}
	if err := Arm("", ""); err != nil || fires("ingest.ack.before") {
		t.Fatal("disarmed point fired")
	}
}

func TestTrace(t *testing.T) {
	fake(t)
	file := filepath.Join(t.TempDir(), "trace")
	if err := Trace(file); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "a"} {
		if fires(n) {
			t.Fatal("trace mode killed")
		}
	}
	b, _ := os.ReadFile(file)
	if string(b) != "a\nb\na\n" {
		t.Fatalf("trace = %q", b)
	}
}

func TestArmRejectsBadSpecs(t *testing.T) {
	for _, spec := range []string{"x:0", "x:-1", "x:two", ":3", "[a:1"} {
		if err := Arm(spec, ""); err == nil {
			t.Errorf("Arm(%q) accepted", spec)
		}
	}
	armed.Store(nil)
}

// TestKillsProcess re-runs this test binary armed at a point and checks it
// died of SIGKILL at that point, with the point logged and nothing after it
// run.
func TestKillsProcess(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") == "1" {
		Hit("child.start")
		Hit("child.step")
		Hit("child.step")
		os.Stdout.WriteString("survived\n")
		os.Exit(0)
	}
	logFile := filepath.Join(t.TempDir(), "crash.log")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillsProcess$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=1", Env+"=child.step:2", LogEnv+"="+logFile)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child did not die: err=%v out=%q", err, out)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child exit %v, want killed by SIGKILL", ee)
	}
	if strings.Contains(string(out), "survived") {
		t.Fatal("child ran past the crash point")
	}
	b, err := os.ReadFile(logFile)
	if err != nil || strings.TrimSpace(string(b)) != "child.step" {
		t.Fatalf("crash log = %q, %v; want child.step", b, err)
	}
}

func TestBadEnvRefusesToStart(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") == "2" {
		os.Exit(0) // init already ran; reaching here means it accepted the spec
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBadEnvRefusesToStart$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=2", Env+"=x:zero")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), Env) {
		t.Fatalf("bad spec accepted: err=%v out=%q", err, out)
	}
}

// BenchmarkHitDisarmed is the production cost of a crash point.
func BenchmarkHitDisarmed(b *testing.B) {
	armed.Store(nil)
	for b.Loop() {
		Hit("state.update.before")
	}
}

// BenchmarkHitArmedOther is the cost when another point is armed (tests only).
func BenchmarkHitArmedOther(b *testing.B) {
	if err := Arm("ingest.ack.before:1000000000", ""); err != nil {
		b.Fatal(err)
	}
	defer armed.Store(nil)
	for b.Loop() {
		Hit("state.update.before")
	}
}
