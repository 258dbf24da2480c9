package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A stream created R1 (the embedded default) is not silently moved by a
// reconciler configured for R3: the error names both counts and the fix.
func TestEnsureStreamsReplicasMismatchIsReported(t *testing.T) {
	t.Parallel()
	js := startJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := EnsureStreamsReplicated(ctx, js, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreamsReplicated(ctx, js, 1, nil); err != nil {
		t.Fatalf("same count again: %v", err)
	}
	err := EnsureStreamsReplicated(ctx, js, 3, nil)
	var re *ReplicasError
	if !errors.As(err, &re) || re.Have != 1 || re.Want != 3 {
		t.Fatalf("want ReplicasError 1 vs 3, got %v", err)
	}
	for _, w := range []string{"ORG_EVENTS", "1 replica", "--stream-replicas is 3", "nats stream edit"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	s, _ := js.Stream(ctx, "ORG_EVENTS")
	if r := s.CachedInfo().Config.Replicas; r != 1 {
		t.Fatalf("stream changed to %d replicas", r)
	}
}

func TestEnsureLeaseBucketChecksReplicasAndTTL(t *testing.T) {
	t.Parallel()
	js := startJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := EnsureLeaseBucket(ctx, js, 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureLeaseBucket(ctx, js, 1, 10*time.Second); err != nil {
		t.Fatalf("again: %v", err)
	}
	_, err := EnsureLeaseBucket(ctx, js, 1, 5*time.Second)
	var te *LeaseTTLError
	if !errors.As(err, &te) || te.Have != 10*time.Second || te.Want != 5*time.Second || !strings.Contains(err.Error(), "--lease-ttl") {
		t.Fatalf("want LeaseTTLError 10s vs 5s, got %v", err)
	}
	_, err = EnsureLeaseBucket(ctx, js, 3, 10*time.Second)
	var re *ReplicasError
	if !errors.As(err, &re) || re.Have != 1 || re.Want != 3 {
		t.Fatalf("want ReplicasError, got %v", err)
	}
}
