package reliability

import (
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRandomKills kills the reconciler with SIGKILL at random instants while
// it works through creates, a delete, a re-create and health remediations,
// several times per run, restarting it each time; after the last restart
// everything converges with nothing leaked, duplicated or lost. Heavy only
// (TUNNELWARD_RELIABILITY=1), TUNNELWARD_RELIABILITY_RUNS runs (default 20),
// seeded by the run number so a failing run can be repeated.
func TestRandomKills(t *testing.T) {
	if !Heavy() {
		t.Skip("heavy: set TUNNELWARD_RELIABILITY=1")
	}
	runs := EnvInt("TUNNELWARD_RELIABILITY_RUNS", 20)
	first := 0
	if one := EnvInt("TUNNELWARD_RELIABILITY_RUN", -1); one >= 0 { // repeat one run
		first, runs = one, 1
	}
	kills, survived := 0, 0
	for run := first; run < first+runs; run++ {
		rng := rand.New(rand.NewPCG(uint64(run), 42))
		w := newWorld(t, worldOpts{simArgs: fastWorld})
		w.startReconciler()
		w.waitReady()
		orgs := []string{"ra", "rb", "rc", "rd"}
		steps := []func(){
			func() { w.create(orgs[0]); w.create(orgs[1]) },
			func() { w.create(orgs[2]); w.create(orgs[3]) },
			func() { w.delete(orgs[1]) },
			func() {
				_ = w.simWorld(map[string]string{"action": "stop_instance", "org": orgs[0]})
				w.healthFailed(orgs[0])
			},
			func() { w.create(orgs[1]) }, // re-created: a new generation
			func() {
				_ = w.simWorld(map[string]string{"action": "kill_connector", "org": orgs[2]})
				w.healthFailed(orgs[2])
			},
			func() { w.delete(orgs[3]) },
		}
		for _, step := range steps {
			step()
			if rng.IntN(2) == 0 {
				continue
			}
			// Kill at a random instant within the next 2.5 s of work.
			time.Sleep(time.Duration(rng.IntN(2500)) * time.Millisecond)
			w.rec.kill()
			kills++
			w.startReconciler()
		}
		w.waitReady()
		if p := w.waitConverged(90 * time.Second); p != "" {
			t.Errorf("run %d: not converged after random kills: %s", run, p)
			for i, f := range w.recLogs {
				b, _ := os.ReadFile(f)
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "event") || strings.Contains(l, "ERROR") || strings.Contains(l, "WARN") {
						t.Logf("reconciler run %d: %.300s", i+1, l)
					}
				}
			}
		} else {
			survived++
		}
		w.rec.term()
		t.Logf("run %d: done (%d kills so far)", run, kills)
	}
	t.Logf("FIGURE random kills: %d runs, %d SIGKILLs at random instants; %d of %d runs converged (no leak, no duplicate, no event lost)", runs, kills, survived, runs)
}
