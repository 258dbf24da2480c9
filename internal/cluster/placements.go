package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
)

// Placements keeps the Cloudflare pools' shared placement records
// (reconcile.PlacementLedger) in the KV bucket tunnelward-placements: one
// key per group of pools that share a limit, its value every org placed
// there, written with a compare-and-swap on the key's revision. Two
// replicas placing at once therefore never both take a pool's last place.
type Placements struct {
	kv jetstream.KeyValue
	nc *nats.Conn // for the server's payload limit; nil: not checked
}

// NewPlacements returns the records kept in kv (broker.EnsurePlacementBucket).
func NewPlacements(kv jetstream.KeyValue, nc *nats.Conn) *Placements {
	return &Placements{kv: kv, nc: nc}
}

// placementRecord is one key's value.
type placementRecord struct {
	Orgs map[string]string `json:"orgs"` // org id -> pool
}

var kvKeyOK = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

// kvKey is key as the bucket can hold it: as is when its characters are
// allowed in a KV key, else hex-encoded.
func kvKey(key string) string {
	if kvKeyOK.MatchString(key) {
		return key
	}
	return "x." + hex.EncodeToString([]byte(key))
}

// Read returns the orgs recorded under key and its revision (0: none yet).
func (p *Placements) Read(ctx context.Context, key string) (map[string]string, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, broker.AttemptTimeout)
	defer cancel()
	e, err := p.kv.Get(ctx, kvKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s/%s: %w", p.kv.Bucket(), kvKey(key), err)
	}
	var rec placementRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("read %s/%s: not a placement record: %w", p.kv.Bucket(), kvKey(key), err)
	}
	return rec.Orgs, e.Revision(), nil
}

// Write replaces key's record if its revision is still rev (0: if there is
// none); ok is false when another write came first.
func (p *Placements) Write(ctx context.Context, key string, placed map[string]string, rev uint64) (uint64, bool, error) {
	b, err := json.Marshal(placementRecord{Orgs: placed})
	if err != nil {
		return 0, false, err
	}
	if p.nc != nil {
		if max := p.nc.MaxPayload(); max > 0 && int64(len(b)) > max-1024 {
			return 0, false, fmt.Errorf("write %s/%s: the record of %d orgs is %d bytes, more than the NATS server's max_payload (%d) allows; "+
				"lower the pools' limits to Cloudflare's (1,000 tunnels an account, 3,500 records a zone) or raise max_payload",
				p.kv.Bucket(), kvKey(key), len(placed), len(b), max)
		}
	}
	// A request sent while NATS reconnects can wait for an answer that
	// never comes: bounded, so a placement (which holds the process's
	// placement lock) fails and is retried instead of holding every other
	// one behind it for the reconcile's whole timeout.
	ctx, cancel := context.WithTimeout(ctx, broker.AttemptTimeout)
	defer cancel()
	var newRev uint64
	if rev == 0 {
		newRev, err = p.kv.Create(ctx, kvKey(key), b)
	} else {
		newRev, err = p.kv.Update(ctx, kvKey(key), b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("write %s/%s: %w", p.kv.Bucket(), kvKey(key), err)
	}
	return newRev, true, nil
}
