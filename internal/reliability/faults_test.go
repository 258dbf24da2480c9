package reliability

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestFaultStorm creates many orgs, deletes some and health-fails others
// while the emulator answers a large share of calls with 5xx, throttling,
// latency, responses lost after the operation ran (and, in the heavy run,
// hangs until the client gives up): every org converges, nothing leaks,
// nothing is duplicated, no event is lost.
// Default: 4 orgs; TUNNELWARD_RELIABILITY=1: TUNNELWARD_RELIABILITY_ORGS
// (default 200) with 1% hangs.
func TestFaultStorm(t *testing.T) {
	t.Parallel()
	n, timeout := 4, 90*time.Second
	rule := map[string]any{"op": "*", "error_rate": 0.2, "error_status": 503, "throttle_rate": 0.05, "retry_after": "1s",
		"latency_min": "0s", "latency_max": "20ms", "lost_rate": 0.1}
	if Heavy() {
		n, timeout = EnvInt("TUNNELWARD_RELIABILITY_ORGS", 200), 45*time.Minute
		rule["hang_rate"] = 0.01
	}
	rules, _ := json.Marshal([]any{rule})
	w := newWorld(t, worldOpts{simArgs: append([]string{"--faults", string(rules), "--dns-quota", fmt.Sprint(2 * n), "--seed", "7"}, fastWorld...)})
	w.startReconciler()
	w.waitReady()
	start := time.Now()
	orgs := make([]string, n)
	for i := range orgs {
		orgs[i] = fmt.Sprintf("storm-%03d", i)
		w.create(orgs[i])
	}
	if p := w.waitConverged(timeout); p != "" {
		t.Fatalf("creates under faults did not converge in %s: %s", timeout, p)
	}
	created := time.Since(start)
	deleted, failed := 0, 0
	for i, org := range orgs {
		switch {
		case i%5 == 1:
			w.delete(org)
			deleted++
		case i%5 == 3:
			action := map[string]string{"action": "kill_connector", "org": org}
			if i%10 == 8 {
				action["action"] = "stop_instance" // replaced, not restarted
			}
			if err := w.simWorld(action); err != nil {
				t.Fatal(err)
			}
			w.healthFailed(org)
			failed++
		}
	}
	if p := w.waitConverged(timeout); p != "" {
		t.Fatalf("deletes and remediations under faults did not converge in %s: %s", timeout, p)
	}
	total, byStatus, lost, err := w.simCallsLost()
	if err != nil {
		t.Fatal(err)
	}
	if lost == 0 {
		t.Fatal("no response was lost: the storm did not exercise applied-but-unacknowledged calls")
	}
	injected := 0
	var codes []string
	for code, c := range byStatus {
		if !strings.HasPrefix(code, "2") {
			injected += c
			codes = append(codes, fmt.Sprintf("%s:%d", code, c))
		}
	}
	sort.Strings(codes)
	vs, _ := w.invariants(w.expectedPresent())
	t.Logf("FIGURE fault storm: %d orgs created, %d deleted, %d health-failed; %d cloud calls, %d answered with a fault or refusal (%s), %d more applied with the response lost; converged in %s + %s; %d invariant violations (leaks, duplicates); 0 events lost (%d events, every org at its last published seq)",
		n, deleted, failed, total, injected, strings.Join(codes, " "), lost, created.Round(time.Second), (time.Since(start) - created).Round(time.Second), len(vs), w.events)
}
