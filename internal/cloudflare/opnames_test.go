package cloudflare_test

import (
	"testing"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/metrics"
)

// One operation, one name: the operation label the metrics give each call
// is the name the emulator counts it under (and the engine's audit log
// uses), for every Cloudflare call the client makes.
func TestOperationLabelsAreTheEmulatorsNames(t *testing.T) {
	w, c := newWorld(t, cloudsim.RateLimits{}, nil)
	tun, err := c.CreateTunnel(ctx, "tw-acme")
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.GetTunnel(ctx, tun.ID)
	must(err)
	_, _, err = c.FindTunnel(ctx, "tw-acme")
	must(err)
	must(c.PutConfig(ctx, tun.ID, []cloudflare.IngressRule{{Hostname: "acme." + cloudsim.DefaultZoneName, Service: "http://localhost:8080"}, {Service: "http_status:404"}}))
	_, _, err = c.GetConfig(ctx, tun.ID)
	must(err)
	_, err = c.Token(ctx, tun.ID)
	must(err)
	rec, err := c.CreateRecord(ctx, cloudflare.RecordSpec{Name: "acme", Content: tun.ID + ".cfargotunnel.com", Comment: "tunnelward:org=acme"})
	must(err)
	_, err = c.GetRecord(ctx, rec.ID)
	must(err)
	_, err = c.FindRecords(ctx, rec.Name)
	must(err)
	_, err = c.UpdateRecord(ctx, rec.ID, cloudflare.RecordSpec{Name: "acme", Content: tun.ID + ".cfargotunnel.com", Comment: "tunnelward:org=acme"})
	must(err)
	_, err = c.DeleteRecord(ctx, rec.ID)
	must(err)
	must(c.CleanConnections(ctx, tun.ID))
	_, err = c.DeleteTunnel(ctx, tun.ID)
	must(err)

	counted := w.sim.Calls()
	seen := map[string]bool{}
	for _, a := range w.rec.attempts() {
		name := metrics.Operation("cloudflare", a.op)
		seen[name] = true
		if _, ok := counted[name]; !ok {
			t.Errorf("client operation %q is labelled %q, which the emulator does not count (it counts %v)", a.op, name, keys(counted))
		}
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct operations exercised: %v", len(seen), seen)
	}
}

func keys(m map[string]map[int]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
