package cloudflare_test

import (
	"testing"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
)

// A DNS batch through the SDK: deletes run before posts (a name freed and
// taken again in one batch), and a batch with one failing action changes
// nothing; one request each, counted once by the emulator.
func TestDNSBatchOrderAndAllOrNothing(t *testing.T) {
	w, c := newWorld(t, cloudsim.RateLimits{}, nil)
	spec := func(name string) cloudflare.RecordSpec {
		return cloudflare.RecordSpec{Name: name + "." + cloudsim.DefaultZoneName, Content: "t-" + name + ".cfargotunnel.com", Comment: "tunnelward:org=" + name}
	}
	old, err := c.CreateRecord(ctx, spec("acme"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Batch(ctx, []string{old.ID}, []cloudflare.RecordSpec{spec("acme"), spec("beta")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Created) != 2 || res.Created[0].Name != "acme."+cloudsim.DefaultZoneName || res.Created[0].ID == old.ID || !res.Created[1].Proxied {
		t.Fatalf("created %+v", res.Created)
	}
	if n := w.sim.CallCount("cf.dns.batch"); n != 1 {
		t.Fatalf("batch counted %d times, want 1", n)
	}
	// gamma is new, beta exists: the whole batch fails and gamma is not made.
	if _, err := c.Batch(ctx, []string{res.Created[0].ID}, []cloudflare.RecordSpec{spec("gamma"), spec("beta")}); err == nil {
		t.Fatal("a batch with a duplicate succeeded")
	}
	all, _, err := c.ListRecords(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range all {
		names[r.Name] = true
	}
	if len(all) != 2 || !names["acme."+cloudsim.DefaultZoneName] || !names["beta."+cloudsim.DefaultZoneName] {
		t.Fatalf("after a failed batch the zone holds %v, want acme and beta untouched", names)
	}
	// Over the plan's batch size: refused whole.
	var many []cloudflare.RecordSpec
	for i := 0; i < 201; i++ {
		many = append(many, spec("x"+string(rune('a'+i%26))+string(rune('a'+i/26))))
	}
	if _, err := c.Batch(ctx, nil, many); err == nil {
		t.Fatal("a batch of 201 changes succeeded on a Free zone")
	}
}
