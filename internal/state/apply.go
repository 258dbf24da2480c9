package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FactType is the kind of change a fact asks for. State knows nothing of the
// event encoding; ingest converts events into facts.
type FactType string

const (
	FactCreated      FactType = "created"
	FactDeleted      FactType = "deleted"
	FactHealthFailed FactType = "health_failed"
)

// Fact is one event, reduced to what desired state needs.
type Fact struct {
	Seq     uint64 // stream sequence: the order of facts
	EventID string
	Type    FactType
	OrgID   string
	Time    time.Time

	// created
	Slug         string
	InstanceType string
	Region       string
	// health_failed
	Reason   string
	Observer string
}

// Result says what applying a fact did.
type Result string

const (
	ResultApplied        Result = "applied"
	ResultStale          Result = "stale"           // seq not newer than the org's LastSeq: a redelivery, a replay or an overtaken event
	ResultIgnoredUnknown Result = "ignored_unknown" // health_failed for an org never created
	ResultIgnoredDeleted Result = "ignored_deleted" // health_failed for a deleted org
)

// Outcome is the result of one fact.
type Outcome struct {
	Seq    uint64
	OrgID  string
	Result Result
	Detail string // why, for logs
}

// Changed reports whether the fact changed the org's record.
func (o Outcome) Changed() bool { return o.Result == ResultApplied }

// Apply applies facts in order, in ONE transaction: all of them are
// committed or none. A fact whose Seq is not newer than its org's LastSeq
// changes nothing.
func (s *Store) Apply(facts []Fact) ([]Outcome, error) {
	out := make([]Outcome, 0, len(facts))
	var t *txOrgs
	err := s.db.Update(func(tx *bolt.Tx) error {
		out = out[:0]
		t = s.txOrgs(tx)
		for _, f := range facts {
			oc, err := s.applyOne(t, f)
			if err != nil {
				return err
			}
			out = append(out, oc)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apply %d facts to %s: %w", len(facts), s.path, err)
	}
	t.committed()
	return out, nil
}

func (s *Store) applyOne(t *txOrgs, f Fact) (Outcome, error) {
	oc := Outcome{Seq: f.Seq, OrgID: f.OrgID}
	if f.OrgID == "" {
		return oc, fmt.Errorf("fact seq %d: empty org id", f.Seq)
	}
	o, exists, err := t.get(f.OrgID)
	if err != nil {
		return oc, err
	}
	if exists && f.Seq <= o.LastSeq {
		oc.Result, oc.Detail = ResultStale, fmt.Sprintf("seq %d is not newer than last applied seq %d", f.Seq, o.LastSeq)
		return oc, nil
	}
	switch f.Type {
	case FactCreated:
		switch {
		case !exists:
			o = Org{ID: f.OrgID, Desired: Desired{Generation: 1}}
			oc.Detail = "created, generation 1"
		case o.Desired.Presence == Deleted:
			// Re-created: a new generation. Observed is kept on purpose: the
			// old generation's resources are found through it (and by name
			// and tags) and reconciled into the new generation or cleaned.
			o.Desired.Generation++
			o.Observed.DeleteDone = false
			o.HealthReports = nil
			oc.Detail = fmt.Sprintf("re-created, generation %d", o.Desired.Generation)
		default:
			oc.Detail = "updated slug/options"
		}
		o.Desired.Presence = Present
		o.Desired.Slug, o.Desired.InstanceType, o.Desired.Region = f.Slug, f.InstanceType, f.Region
	case FactDeleted:
		if !exists {
			// A tombstone, so an older created arriving later stays ignored.
			o = Org{ID: f.OrgID}
			oc.Detail = "tombstone for an org never created"
		} else {
			oc.Detail = "deleted"
		}
		// Slug and options stay: the engine needs them to find what to clean.
		o.Desired.Presence = Deleted
	case FactHealthFailed:
		if !exists {
			oc.Result, oc.Detail = ResultIgnoredUnknown, "health_failed for an org that was never created"
			return oc, nil
		}
		if o.Desired.Presence == Deleted {
			oc.Result, oc.Detail = ResultIgnoredDeleted, "health_failed for a deleted org"
			return oc, nil
		}
		o.HealthReports = append(o.HealthReports, HealthReport{
			EventID: f.EventID, Seq: f.Seq, Reason: f.Reason, Observer: f.Observer, At: f.Time,
		})
		if n := len(o.HealthReports) - s.opts.MaxHealthReports; n > 0 {
			o.HealthReports = o.HealthReports[n:]
		}
		oc.Detail = "health report recorded"
	default:
		return oc, fmt.Errorf("fact seq %d for org %s: unknown type %q", f.Seq, f.OrgID, f.Type)
	}
	o.LastSeq, o.LastEventID, o.UpdatedAt = f.Seq, f.EventID, f.Time
	oc.Result = ResultApplied
	return oc, t.put(o)
}
