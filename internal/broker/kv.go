package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket is the KV bucket of the partition leases and the replicas'
// announcements (internal/cluster). Its stream is KV_tunnelward-leases.
const LeaseBucket = "tunnelward-leases"

// LeaseTTLError reports an existing lease bucket whose TTL is not the
// configured lease TTL. Fencing rests on every replica knowing the TTL the
// server expires leases after, so it is never changed behind the others'
// backs.
type LeaseTTLError struct {
	Bucket     string
	Have, Want time.Duration
}

func (e *LeaseTTLError) Error() string {
	return fmt.Sprintf("KV bucket %s expires leases after %s but --lease-ttl is %s: start every reconciler with --lease-ttl %s, "+
		"or stop them all and remove the bucket (nats kv rm %s; it holds only leases) — tunnelward does not change it",
		e.Bucket, e.Have, e.Want, e.Have, e.Bucket)
}

// LeaseBucketConfig is the lease bucket's contract: one value per key, the
// bucket's TTL expires the lease of a replica that stopped renewing, file
// storage so a restarted NATS server still knows who holds what (a lease
// that vanished with the server's memory could be taken while its holder
// still writes).
func LeaseBucketConfig(replicas int, ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "tunnelward partition leases and replica announcements (bucket TTL = lease TTL)",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsureLeaseBucket creates the lease bucket or checks an existing one: a
// replica count other than replicas is a *ReplicasError, a TTL other than
// ttl a *LeaseTTLError; neither is changed. Transient errors are retried
// until ctx ends.
func EnsureLeaseBucket(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration) (jetstream.KeyValue, error) {
	return ensureBucket(ctx, js, LeaseBucketConfig(replicas, ttl))
}

// PlacementBucket is the KV bucket of the Cloudflare pools' shared
// placement records (reconcile's PlacementLedger, internal/cluster's
// Placements): one key per group of pools sharing a limit, every org placed
// there. Its stream is KV_tunnelward-placements.
const PlacementBucket = "tunnelward-placements"

// PlacementBucketConfig is the placement bucket's contract: one value per
// key, written with compare-and-swap, never expired, on file storage (the
// records are the pools' counts; losing them would let replicas overfill a
// pool until each has recorded its own orgs again).
func PlacementBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      PlacementBucket,
		Description: "tunnelward: the orgs placed in each group of Cloudflare pools (shared counts against their limits)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsurePlacementBucket creates the placement bucket or checks an existing
// one (a replica count other than replicas is a *ReplicasError). Transient
// errors are retried until ctx ends.
func EnsurePlacementBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return ensureBucket(ctx, js, PlacementBucketConfig(replicas))
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout) // as EnsureStream
		kv, err := js.KeyValue(actx, want.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(actx, want)
			if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				cancel()
				continue // another replica created it; check its config
			}
			if err == nil {
				cancel()
				return kv, nil
			}
		}
		if err == nil {
			if err = checkBucket(actx, kv, want); err == nil || !transient(err) || ctx.Err() != nil {
				cancel()
				return kv, err
			}
		}
		cancel()
		if !transient(err) {
			return nil, fmt.Errorf("ensure KV bucket %s: %w", want.Bucket, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ensure KV bucket %s: %w (last error: %v)", want.Bucket, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func checkBucket(ctx context.Context, kv jetstream.KeyValue, want jetstream.KeyValueConfig) error {
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("read KV bucket %s status: %w", want.Bucket, err)
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		if err := CheckReplicas("KV_"+want.Bucket+" (KV bucket "+want.Bucket+")", bs.StreamInfo().Config.Replicas, want.Replicas); err != nil {
			return err
		}
	}
	if st.TTL() != want.TTL {
		if want.Bucket != LeaseBucket {
			return fmt.Errorf("KV bucket %s expires its values after %s; it must keep them (no TTL): stop every reconciler and remove it (nats kv rm %s), the reconcilers rebuild it from their state files",
				want.Bucket, st.TTL(), want.Bucket)
		}
		return &LeaseTTLError{Bucket: want.Bucket, Have: st.TTL(), Want: want.TTL}
	}
	return nil
}
