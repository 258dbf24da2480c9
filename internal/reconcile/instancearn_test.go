package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/state"
)

// sandboxAccount is the emulator's AWS account (the reservations' ownerId).
const sandboxAccount = "123456789012"

// The token parameter is tagged InstanceArn=<the org's instance ARN> (what
// the instance role's policy matches ${ec2:SourceInstanceARN} against):
// once on create, again when the instance is replaced or the parameter is
// re-created, and repaired after a crash between launch and tag.
func TestTokenTaggedWithInstanceArn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.start()
	h.apply(created("acme", "acme"))
	h.waitReady("acme")
	ctx := context.Background()
	param := owner.ParamName(h.eng.Config().ParamPrefix, "acme")
	arnOf := func(id string) string { return "arn:aws:ec2:us-east-1:" + sandboxAccount + ":instance/" + id }
	tagged := func() string {
		tags, err := h.aw.ParameterTags(ctx, param)
		if err != nil {
			t.Fatal(err)
		}
		return tags[owner.TagInstanceArn]
	}

	// API economy: one tagging call on create, and no tag reads on the
	// happy path.
	if n := h.sim.CallCount("ssm.AddTagsToResource"); n != 1 {
		t.Fatalf("AddTagsToResource called %d times on create, want 1", n)
	}
	if n := h.sim.CallCount("ssm.ListTagsForResource"); n != 0 {
		t.Fatalf("ListTagsForResource called %d times on the happy path, want 0", n)
	}
	first := h.org("acme").Observed.InstanceID
	if got := tagged(); first == "" || got != arnOf(first) {
		t.Fatalf("after create: %s=%q, want %q\n%s", owner.TagInstanceArn, got, arnOf(first), h.describe())
	}

	// Replacement: the new instance's ARN.
	h.worldAction(cloudsim.WorldAction{Action: "terminate_instance", Org: "acme"})
	if _, err := h.eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	// The new id is recorded at launch and tagged right after; Ready may
	// still show the old instance's status in between, so wait for the tag.
	var second string
	h.waitFor("replacement tagged and ready", 30*time.Second, func() bool {
		o := h.org("acme")
		second = o.Observed.InstanceID
		return second != first && IsTrue(o, state.CondReady) && tagged() == arnOf(second)
	})

	// A crash between launch and tag: the tag names another instance and
	// the org is not Ready yet. The next reconcile reads the tag and fixes it.
	h.stop()
	if err := h.aw.TagParameter(ctx, param, map[string]string{owner.TagInstanceArn: arnOf("i-0000000000000dead")}); err != nil {
		t.Fatal(err)
	}
	if err := h.store.Update("acme", func(o *state.Org) error {
		setCondition(o, state.CondReady, false, "Booting", "", time.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A restarted process: a new engine on the same state, remembering
	// nothing it tagged or polled.
	eng, err := New(h.eng.cfg, h.eng.clouds, h.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	h.start()
	h.waitFor("tag repaired", 30*time.Second, func() bool { return tagged() == arnOf(second) })
	if got := h.org("acme").Observed.InstanceID; got != second {
		t.Fatalf("the repair replaced the instance: %s, want %s", got, second)
	}
}
