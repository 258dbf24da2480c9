package state

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyAppliedThrough holds, in the meta bucket, the highest stream sequence
// ingest has finished with into this file (applied, stale, ignored or
// dead-lettered), as 8 bytes big-endian. Ingest compares it with the
// durable consumer's ack floor at start: a file restored from an older
// backup is behind the consumer, and the events in between are read again.
//
// No schema version bump and no migration: files written before the key
// existed simply lack it, which AppliedThrough reports as unknown (and
// ingest then falls back to its empty-file rule). The first commit by
// this build writes it.
var keyAppliedThrough = []byte("applied_through")

// advanceApplied raises the mark to seq inside a write transaction; it
// never lowers it (a redelivered old event must not move it back).
func advanceApplied(tx *bolt.Tx, seq uint64) error {
	if seq == 0 {
		return nil
	}
	m, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("meta bucket: %w", err)
	}
	if v := m.Get(keyAppliedThrough); len(v) == 8 && binary.BigEndian.Uint64(v) >= seq {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	if err := m.Put(keyAppliedThrough, b[:]); err != nil {
		return fmt.Errorf("write applied-through seq %d: %w", seq, err)
	}
	return nil
}

// AppliedThrough returns the highest stream sequence ingest finished with
// into this file. known is false for a file that never recorded one
// (written by an older build, or never committed a batch).
//
// It is a high-water mark, not a floor: an event below it that was still
// outstanding (redelivered after a crash, a deferred health report) may
// have been committed after it, or not yet.
func (s *Store) AppliedThrough() (seq uint64, known bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m == nil {
			return nil
		}
		v := m.Get(keyAppliedThrough)
		if v == nil {
			return nil
		}
		if len(v) != 8 {
			return fmt.Errorf("state file %s: applied-through mark is %d bytes, want 8", s.path, len(v))
		}
		seq, known = binary.BigEndian.Uint64(v), true
		return nil
	})
	return seq, known, err
}
