package reliability

import (
	"testing"
	"time"
)

// TestProcessLifecycle is the baseline the fault tests perturb: the real
// reconciler against cloudsim and nats-server processes converges creates,
// a delete and a health failure with nothing leaked.
func TestProcessLifecycle(t *testing.T) {
	if !Heavy() {
		t.Skip("heavy: the fault tests cover this path; set TUNNELWARD_RELIABILITY=1")
	}
	w := newWorld(t, worldOpts{simArgs: fastWorld})
	w.startReconciler()
	w.waitReady()
	start := time.Now()
	w.create("alpha")
	w.create("beta")
	if p := w.waitConverged(60 * time.Second); p != "" {
		t.Fatalf("create: %s", p)
	}
	t.Logf("created 2 orgs in %s", time.Since(start).Round(time.Millisecond))
	w.delete("beta")
	if p := w.waitConverged(60 * time.Second); p != "" {
		t.Fatalf("delete: %s", p)
	}
	t.Logf("deleted in %s", time.Since(start).Round(time.Millisecond))
	if err := w.simWorld(map[string]string{"action": "kill_connector", "org": "alpha"}); err != nil {
		t.Fatal(err)
	}
	w.healthFailed("alpha")
	if p := w.waitConverged(60 * time.Second); p != "" {
		t.Fatalf("health: %s", p)
	}
	if testing.Verbose() {
		t.Log(tail(w.rec.log(), 60))
	}
	t.Logf("lifecycle in %s", time.Since(start).Round(time.Millisecond))
}
