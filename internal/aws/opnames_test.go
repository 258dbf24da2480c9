package aws_test

import (
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/metrics"
	"github.com/tunnelward/tunnelward/internal/secret"
)

// One operation, one name: the operation label of every EC2 and SSM call
// the client makes is the name the emulator counts it under.
func TestOperationLabelsAreTheEmulatorsNames(t *testing.T) {
	w := newWorld(t, nil)
	c := w.client(t, nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	in, err := c.RunInstance(ctx, spec("acme", 1))
	must(err)
	_, err = c.DescribeOrgInstances(ctx, "acme")
	must(err)
	_, _, err = c.ListManagedInstances(ctx)
	must(err)
	name := "/tunnelward/tunnels/acme/tunnel-token"
	_, err = c.PutToken(ctx, name, secret.NewToken("tok"), map[string]string{"ManagedBy": "tunnelward", "OrgID": "acme"})
	must(err)
	_, err = c.GetParameterMeta(ctx, name)
	must(err)
	_, _, err = c.ListParameters(ctx, "/tunnelward/tunnels")
	must(err)
	must(c.TagParameter(ctx, name, map[string]string{"InstanceArn": in.ARN}))
	_, err = c.ParameterTags(ctx, name)
	must(err)
	_, err = c.DeleteParameter(ctx, name)
	must(err)
	_, err = c.TerminateInstances(ctx, in.ID)
	must(err)

	counted := w.sim.Calls()
	w.rec.mu.Lock()
	log := append([]string(nil), w.rec.log...)
	w.rec.mu.Unlock()
	seen := map[string]bool{}
	for _, l := range log {
		f := strings.Fields(l) // "provider op status throttled"
		op := metrics.Operation(f[0], f[1])
		seen[op] = true
		if _, ok := counted[op]; !ok {
			t.Errorf("%s call %q is labelled %q, which the emulator does not count", f[0], f[1], op)
		}
	}
	if len(seen) < 8 {
		t.Fatalf("only %d distinct operations exercised: %v", len(seen), seen)
	}
}
