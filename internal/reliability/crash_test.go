package reliability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/crashpoint"
	"github.com/tunnelward/tunnelward/internal/events"
)

// crashScenario is one piece of work the reconciler is killed in the middle
// of. setup runs first under an unarmed reconciler (which converges and is
// stopped); act then starts the work the armed reconciler must survive.
type crashScenario struct {
	name  string
	setup func(w *world)
	act   func(w *world)
	// then, when set, runs once act's work is over: after the kill, while
	// the reconciler is down (or after convergence when not killed), and
	// convergence is awaited again after it.
	then    func(w *world)
	timeout time.Duration         // convergence after the restart
	check   func(w *world) string // extra check after convergence ("" fine)
}

const crashOrg = "crashorg"

var crashScenarios = []crashScenario{
	{name: "dead-letter", act: func(w *world) {
		if _, err := w.js.Publish(context.Background(), "orgs."+crashOrg+".created", []byte(`{"type":"org.created"}`)); err != nil {
			w.t.Fatal(err)
		}
		w.create(crashOrg)
	}, timeout: 45 * time.Second, check: func(w *world) string {
		// The invalid event is dead-lettered exactly once, never lost, never twice.
		var (
			n       uint64
			problem string
		)
		// An event in flight to the killed process comes back after the
		// consumer's 30 s ack wait.
		poll(50*time.Second, 100*time.Millisecond, func() bool {
			s, err := w.js.Stream(context.Background(), events.DLQStream)
			if err != nil {
				problem = err.Error()
				return true
			}
			info, err := s.Info(context.Background())
			if err != nil {
				problem = err.Error()
				return true
			}
			n = info.State.Msgs
			return n > 0
		})
		if problem != "" {
			return problem
		}
		if n != 1 {
			return fmt.Sprintf("DLQ holds %d messages, want 1", n)
		}
		return ""
	}},
	{name: "create", act: func(w *world) { w.create(crashOrg) }, timeout: 45 * time.Second},
	{name: "delete", setup: func(w *world) { w.create(crashOrg) }, act: func(w *world) { w.delete(crashOrg) }, timeout: 45 * time.Second},
	{name: "replace-stopped-instance", setup: func(w *world) { w.create(crashOrg) }, act: func(w *world) {
		if err := w.simWorld(map[string]string{"action": "stop_instance", "org": crashOrg}); err != nil {
			w.t.Fatal(err)
		}
		w.healthFailed(crashOrg)
	}, timeout: 45 * time.Second},
	{name: "restart-cloudflared", setup: func(w *world) { w.create(crashOrg) }, act: func(w *world) {
		if err := w.simWorld(map[string]string{"action": "kill_connector", "org": crashOrg}); err != nil {
			w.t.Fatal(err)
		}
		w.healthFailed(crashOrg)
	}, timeout: 45 * time.Second},
	{name: "recreate", setup: func(w *world) {
		w.create(crashOrg)
		if p := w.waitConverged(45 * time.Second); p != "" {
			w.t.Fatalf("setup: %s", p)
		}
		w.delete(crashOrg)
	}, act: func(w *world) { w.create(crashOrg) }, timeout: 45 * time.Second},
	// An org in a region other than the default: its region is committed
	// before the first AWS write, so a crash anywhere leaves nothing behind
	// in either region (the emulator's invariants span regions).
	{name: "create-in-region", act: func(w *world) { w.createIn(crashOrg, crashRegion) }, timeout: 45 * time.Second,
		check: func(w *world) string { return w.regionOf(crashOrg, crashRegion) }},
	{name: "delete-in-region", setup: func(w *world) { w.createIn(crashOrg, crashRegion) },
		act: func(w *world) { w.delete(crashOrg) }, timeout: 45 * time.Second},
	// The org's tunnel is deleted out of band; the reconciler re-creates it
	// (a crash before the new id is recorded), and the org is deleted while
	// the reconciler is down: the cascade must find the unrecorded tunnel by
	// name before it says Deleted.
	{name: "delete-after-tunnel-recreated", setup: func(w *world) { w.create(crashOrg) }, act: func(w *world) {
		if err := w.simWorld(map[string]string{"action": "delete", "kind": "tunnel", "org": crashOrg}); err != nil {
			w.t.Fatal(err)
		}
		w.healthFailed(crashOrg)
	}, then: func(w *world) { w.delete(crashOrg) }, timeout: 45 * time.Second},
	// A 63-character org id: its ClientToken is a hash, so only the
	// Generation tag ties a launched instance to the org's generation.
	{name: "create-long-id", act: func(w *world) { w.create(longCrashOrg) }, timeout: 45 * time.Second},
}

// longCrashOrg is as long as the schema allows (63 characters).
var longCrashOrg = strings.Repeat("l", 50) + "-0123456789ab"

// crashRegion is the second region every crash run's reconciler serves.
const crashRegion = "eu-west-1"

type crashResult struct {
	scenario, point string
	reached         bool
	problem         string // "" converged after the restart
	took            time.Duration
}

// crashRun runs one scenario with the reconciler armed at point
// (name:nth); "" traces instead and returns the points hit during act.
func crashRun(t *testing.T, sc crashScenario, point string) (crashResult, []string) {
	t.Helper()
	res := crashResult{scenario: sc.name, point: point}
	start := time.Now()
	w := newWorld(t, worldOpts{simArgs: fastWorld})
	w.recArgs = append(w.recArgs, "--aws-regions", crashRegion)
	if sc.setup != nil {
		w.startReconciler()
		w.waitReady()
		sc.setup(w)
		if p := w.waitConverged(60 * time.Second); p != "" {
			t.Fatalf("%s setup: %s", sc.name, p)
		}
		if code := w.rec.term(); code != 0 {
			t.Fatalf("%s setup: reconciler exit %d", sc.name, code)
		}
	}
	file := filepath.Join(w.dir, "crash.log")
	env := []string{crashpoint.Env + "=" + point, crashpoint.LogEnv + "=" + file}
	if point == "" {
		env = []string{crashpoint.TraceEnv + "=" + file}
	}
	rec := w.startReconciler(env...)
	sc.act(w)
	if point == "" {
		if p := w.waitConverged(sc.timeout); p != "" {
			t.Fatalf("%s traced run did not converge: %s", sc.name, p)
		}
		if sc.then != nil {
			sc.then(w)
			if p := w.waitConverged(sc.timeout); p != "" {
				t.Fatalf("%s traced run did not converge after its second step: %s", sc.name, p)
			}
		}
		rec.term()
		b, _ := os.ReadFile(file)
		return res, strings.Fields(string(b))
	}
	// Wait for the kill, or for convergence without reaching the point.
	killedOrConverged := func() {
		poll(sc.timeout, 100*time.Millisecond, func() bool { return !rec.running() || w.convergence() == "" })
	}
	killedOrConverged()
	thenDone := false
	if rec.running() && sc.then != nil && w.convergence() == "" {
		// The point may lie in the second step: run it under the armed
		// reconciler too.
		sc.then(w)
		thenDone = true
		killedOrConverged()
	}
	if rec.running() {
		// Not reached: the run converged (or timed out) without the point.
		res.problem = w.convergence()
		if res.problem == "" && sc.check != nil {
			res.problem = sc.check(w)
		}
		if res.problem != "" {
			// Unless the point came just after convergence (a later state
			// write) and the look above met the dying process: give it a
			// moment to die by its point, then judge it as reached.
			select {
			case <-rec.done:
			case <-time.After(2 * time.Second):
			}
		}
		if rec.running() {
			rec.term()
			res.took = time.Since(start)
			return res, nil
		}
		res.problem = ""
	}
	b, _ := os.ReadFile(file)
	if name, _, _ := strings.Cut(point, ":"); !rec.killedBySignal() || strings.TrimSpace(string(b)) != name {
		t.Fatalf("%s at %s: reconciler died without its crash point (err %v, crash log %q):\n%s", sc.name, point, rec.err, b, tail(rec.log(), 30))
	}
	res.reached = true
	if sc.then != nil && !thenDone {
		sc.then(w) // published while the reconciler is down
	}
	w.startReconciler()
	res.problem = w.waitConverged(sc.timeout)
	if res.problem == "" && sc.check != nil {
		res.problem = sc.check(w)
	}
	res.took = time.Since(start)
	return res, nil
}

// points turns a trace into name:nth specs, one per hit.
func points(trace []string) []string {
	seen := map[string]int{}
	var out []string
	for _, name := range trace {
		seen[name]++
		out = append(out, fmt.Sprintf("%s:%d", name, seen[name]))
	}
	return out
}

// crashPointsQuick are the default run's points: the windows where a
// crash most plausibly leaks or duplicates (created, not yet recorded;
// committed, not yet acked). Every scenario has at least one.
var crashPointsQuick = map[string][]string{
	"create": {"ingest.commit.after:1", "cloud.after.ec2.RunInstances:1"},
	"delete": {"cloud.after.cf.tunnel.delete:1"},
	// dead-lettered, not yet terminated: redelivered, dead-lettered again (deduplicated)
	"dead-letter": {"ingest.term.before:1"},
	// the restart sent, its outcome not yet recorded
	"restart-cloudflared": {"cloud.after.ssm.SendCommand:1"},
	// the token written in the org's region, the launch there, not yet recorded
	"create-in-region": {"cloud.after.ssm.PutParameter:1", "cloud.after.ec2.RunInstances:1"},
	"delete-in-region": {"cloud.after.ec2.TerminateInstances:1"},
	// the tunnel re-created after an out-of-band delete, its id not yet recorded
	"delete-after-tunnel-recreated": {"cloud.after.cf.tunnel.create:1"},
	// a 63-character org's instance launched, not yet recorded
	"create-long-id": {"cloud.after.ec2.RunInstances:1"},
	// the replacement of the stopped instance launched, not yet recorded
	"replace-stopped-instance": {"cloud.after.ec2.RunInstances:1"},
	// the new generation's instance launched, not yet recorded
	"recreate": {"cloud.after.ec2.RunInstances:1"},
}

// TestCrashPoints kills the reconciler binary with SIGKILL at crash points
// while it creates, deletes and remediates an org, restarts it, and checks
// convergence, the invariant checker and that no event was lost. The
// default run kills each scenario at its quick points; TUNNELWARD_RELIABILITY=1
// traces each scenario and kills at every point it passes. Each kill is a
// world of its own, run in parallel with the others.
// TUNNELWARD_RELIABILITY_SCENARIOS=a,b runs only the named scenarios.
func TestCrashPoints(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		results []crashResult
	)
	only := map[string]bool{}
	for _, n := range strings.Split(os.Getenv("TUNNELWARD_RELIABILITY_SCENARIOS"), ",") {
		if n != "" {
			only[n] = true
		}
	}
	// Every kill is a world of its own (processes, ports, directories), so
	// the kills run in parallel; the figures below wait for all of them.
	t.Run("kills", func(t *testing.T) {
		for _, sc := range crashScenarios {
			if len(only) > 0 && !only[sc.name] {
				continue
			}
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				var pts []string
				if Heavy() {
					_, trace := crashRun(t, sc, "")
					pts = points(trace)
					t.Logf("%s: %d crash points traced", sc.name, len(pts))
				} else if pts = crashPointsQuick[sc.name]; len(pts) == 0 {
					t.Errorf("scenario %s has no quick crash point: the default run would not kill it", sc.name)
				}
				for _, pt := range pts {
					t.Run(pt, func(t *testing.T) {
						t.Parallel()
						res, _ := crashRun(t, sc, pt)
						mu.Lock()
						results = append(results, res)
						mu.Unlock()
						switch {
						case res.reached && res.problem != "":
							t.Errorf("%s killed at %s: not converged after restart: %s", sc.name, pt, res.problem)
						case !res.reached && res.problem != "":
							t.Errorf("%s at %s (not reached): not converged: %s", sc.name, pt, res.problem)
						}
						t.Logf("%-26s %-45s reached=%-5v converged=%-5v %s", sc.name, pt, res.reached, res.problem == "", res.took.Round(100*time.Millisecond))
					})
				}
			})
		}
	})
	sort.Slice(results, func(i, j int) bool {
		return results[i].scenario+" "+results[i].point < results[j].scenario+" "+results[j].point
	})
	reached, survived, notReached := 0, 0, 0
	byScenario := map[string][2]int{}
	for _, r := range results {
		if !r.reached {
			notReached++
			continue
		}
		reached++
		c := byScenario[r.scenario]
		c[1]++
		if r.problem == "" {
			survived++
			c[0]++
		}
		byScenario[r.scenario] = c
	}
	var names []string
	for n := range byScenario {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t.Logf("FIGURE crash %s: %d of %d kills survived", n, byScenario[n][0], byScenario[n][1])
	}
	t.Logf("FIGURE crash points: %d of %d kills survived (converged, no leak, no duplicate, no event lost); %d planned points not reached in their run", survived, reached, notReached)
	if !Heavy() && notReached > 0 {
		t.Errorf("%d quick crash points were not reached: the points moved or were renamed", notReached)
	}
}
