package ingest

import (
	"context"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
)

// A lost state file (deleted, emptied) under a consumer that already acked
// events: ingest rebuilds desired state from the whole stream instead of
// starting empty (which would let the sweep collect every org as an orphan).
func TestEmptyStoreRebuildsFromStream(t *testing.T) {
	e := newEnv(t)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	e.publish(t, events.Created{OrgID: "beta", Slug: "beta"})
	e.publish(t, events.Deleted{OrgID: "beta"})
	first := e.ingester(t, nil)
	stop := run(t, first)
	waitFor(t, "applied", func() bool { return first.Stats().Applied == 3 })
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	stop()

	e.store.Close()
	if err := os.Remove(e.dbPath); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.store, err = state.Open(e.dbPath, state.Options{}); err != nil {
		t.Fatal(err)
	}
	again := e.ingester(t, nil)
	run(t, again)
	waitFor(t, "rebuilt", func() bool { b, _ := e.org(t, "beta"); return b.LastSeq == 3 })
	if a, ok := e.org(t, "acme"); !ok || a.Desired.Presence != state.Present || a.LastSeq != 1 {
		t.Fatalf("acme after rebuild: %+v", a)
	}
	if b, _ := e.org(t, "beta"); b.Desired.Presence != state.Deleted {
		t.Fatalf("beta after rebuild: %+v", b)
	}
}

// copyFile copies a closed state file, as a backup would.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (e *env) reopen(t *testing.T) {
	t.Helper()
	var err error
	if e.store, err = state.Open(e.dbPath, state.Options{}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := e.js.Consumer(context.Background(), events.Stream, ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// A state file restored from an older backup (not empty, but behind what
// the consumer acked): ingest delivers the events acked since the backup
// again, and ends with exactly the state it had before the file was
// swapped: every org, generation, presence and health report.
func TestRewindRestoredOlderStateFile(t *testing.T) {
	e := newEnv(t)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	e.publish(t, events.Created{OrgID: "beta", Slug: "beta"})
	_, backupAck := e.publish(t, events.HealthFailed{OrgID: "acme", Reason: "down", Observer: "p"})
	first := e.ingester(t, nil)
	stop := run(t, first)
	waitFor(t, "first events applied", func() bool { return first.Stats().Applied == 3 })
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	stop()
	e.store.Close()
	backup := e.dbPath + ".backup"
	copyFile(t, e.dbPath, backup)
	e.reopen(t)

	// After the backup: a new org, a delete, a re-create (new generation),
	// a health report, and an invalid event last (dead-lettered, no fact).
	e.publish(t, events.Created{OrgID: "gamma", Slug: "gamma", Region: "eu-west-1"})
	e.publish(t, events.Deleted{OrgID: "beta"})
	e.publish(t, events.Deleted{OrgID: "acme"})
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme2"})
	e.publish(t, events.HealthFailed{OrgID: "gamma", Reason: "530", Observer: "p"})
	lastSeq := e.publishRaw(t, "orgs.gamma.created", []byte(`{"broken":`))
	second := e.ingester(t, nil)
	stop = run(t, second)
	waitFor(t, "later events applied", func() bool { st := second.Stats(); return st.Applied == 5 && st.DeadLettered == 1 })
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	stop()
	want, err := e.store.List()
	if err != nil {
		t.Fatal(err)
	}
	if seq, known, err := e.store.AppliedThrough(); err != nil || !known || seq != lastSeq {
		t.Fatalf("applied-through before the swap = %d known=%v err=%v, want %d (the dead-lettered tail counts)", seq, known, err, lastSeq)
	}
	if a := want[0]; a.ID != "acme" || a.Desired.Generation != 2 || a.Desired.Slug != "acme2" {
		t.Fatalf("acme before the swap: %+v", a)
	}

	// Put the old copy back and start again.
	e.store.Close()
	copyFile(t, backup, e.dbPath)
	e.reopen(t)
	if seq, _, _ := e.store.AppliedThrough(); seq != backupAck.Sequence {
		t.Fatalf("restored file applied through %d, want %d", seq, backupAck.Sequence)
	}
	if _, ok := e.org(t, "gamma"); ok {
		t.Fatal("the restored file already holds gamma: the test restores nothing")
	}
	third := e.ingester(t, nil)
	stop = run(t, third)
	// The records match but for changed_at: the events were applied again,
	// now.
	unstamped := func(orgs []state.Org) []state.Org {
		for i := range orgs {
			orgs[i].ChangedAt = time.Time{}
		}
		return orgs
	}
	want = unstamped(want)
	waitFor(t, "restored file caught up", func() bool {
		got, err := e.store.List()
		return err == nil && reflect.DeepEqual(unstamped(got), want)
	})
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	// Counted after the commit: wait for the counters, then check them exactly.
	waitFor(t, "the restored run's events counted", counted(third, 5))
	stop()
	got, _ := e.store.List()
	if got = unstamped(got); !reflect.DeepEqual(got, want) {
		t.Fatalf("state after the restore differs:\ngot  %+v\nwant %+v", got, want)
	}
	if st := third.Stats(); st.Applied != 5 || st.Stale != 0 {
		t.Fatalf("the restored run applied %d, stale %d: want exactly the 5 events after the backup, none before", st.Applied, st.Stale)
	}
	ci := e.consumerInfo(t)
	if ci.Config.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || ci.Config.OptStartSeq != backupAck.Sequence+1 {
		t.Fatalf("consumer after the rewind: deliver %v from %d, want by start sequence from %d", ci.Config.DeliverPolicy, ci.Config.OptStartSeq, backupAck.Sequence+1)
	}

	// The next start keeps the rewound consumer (its deliver policy cannot
	// be updated) and goes on from where it is.
	_, ack := e.publish(t, events.Created{OrgID: "delta", Slug: "delta"})
	fourth := e.ingester(t, nil)
	run(t, fourth)
	waitFor(t, "delta applied", func() bool { o, _ := e.org(t, "delta"); return o.LastSeq == ack.Sequence })
	waitFor(t, "delta counted", counted(fourth, 1))
	if st := fourth.Stats(); st.Applied != 1 || st.Stale != 0 {
		t.Fatalf("the start after the rewind: %+v", st)
	}
}

// A non-empty file written before the applied-through mark existed gives
// no evidence of being behind: ingest does not rewind (a needless full
// replay), it goes on from the consumer's position and writes the mark.
func TestNoRewindForFileWithoutMark(t *testing.T) {
	e := newEnv(t)
	e.publish(t, events.Created{OrgID: "acme", Slug: "acme"})
	e.publish(t, events.Created{OrgID: "beta", Slug: "beta"})
	first := e.ingester(t, nil)
	stop := run(t, first)
	waitFor(t, "applied", func() bool { return first.Stats().Applied == 2 })
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	stop()
	e.store.Close()
	// Simulate an older build's file: the same records, no mark.
	db, err := bolt.Open(e.dbPath, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("applied_through")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e.reopen(t)
	if _, known, err := e.store.AppliedThrough(); known || err != nil {
		t.Fatalf("mark still there after removing it: known=%v err=%v", known, err)
	}
	created := e.consumerInfo(t).Created

	again := e.ingester(t, nil)
	run(t, again)
	_, ack := e.publish(t, events.Created{OrgID: "gamma", Slug: "gamma"})
	waitFor(t, "gamma applied", func() bool { o, _ := e.org(t, "gamma"); return o.LastSeq == ack.Sequence })
	// The counters move after the commit: wait for gamma's. A rewind's
	// seqs 1 and 2 come before 3, so they are counted by then.
	waitFor(t, "gamma counted", counted(again, 1))
	// A rewind would have delivered seqs 1 and 2 before 3, as stale.
	if st := again.Stats(); st.Applied != 1 || st.Stale != 0 {
		t.Fatalf("stats after start on a file without mark: %+v", st)
	}
	if ci := e.consumerInfo(t); !ci.Created.Equal(created) {
		t.Fatalf("consumer recreated (%v, was %v)", ci.Created, created)
	}
	if seq, known, _ := e.store.AppliedThrough(); !known || seq != ack.Sequence {
		t.Fatalf("mark after the first commit: %d known=%v, want %d", seq, known, ack.Sequence)
	}
}

// A history of only invalid events leaves the file without orgs, but the
// dead letters advance its mark: the next start does not rewind (and
// dead-letter everything again) just because the file holds no org.
func TestNoRewindAfterOnlyDeadLetters(t *testing.T) {
	e := newEnv(t)
	e.publishRaw(t, "orgs.acme.created", []byte(`{"broken":`))
	last := e.publishRaw(t, "orgs.beta.created", []byte(`{}`))
	first := e.ingester(t, nil)
	stop := run(t, first)
	waitFor(t, "dead-lettered", func() bool { return first.Stats().DeadLettered == 2 })
	waitFor(t, "settled", func() bool { return e.consumerSettled(t) })
	stop()
	if seq, known, _ := e.store.AppliedThrough(); !known || seq != last {
		t.Fatalf("mark after dead letters only: %d known=%v, want %d", seq, known, last)
	}
	again := e.ingester(t, nil)
	run(t, again)
	_, ack := e.publish(t, events.Created{OrgID: "gamma", Slug: "gamma"})
	waitFor(t, "gamma applied", func() bool { o, _ := e.org(t, "gamma"); return o.LastSeq == ack.Sequence })
	waitFor(t, "gamma counted", counted(again, 1))
	if st := again.Stats(); st.DeadLettered != 0 || st.Applied != 1 {
		t.Fatalf("the second start went over the dead letters again: %+v", st)
	}
}

// counted reports when in has counted at least n committed events (the
// counters move after the commit a test sees in the store).
func counted(in *Ingester, n uint64) func() bool {
	return func() bool { st := in.Stats(); return st.Applied+st.Stale+st.Ignored >= n }
}
