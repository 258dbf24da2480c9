package state

import (
	"fmt"
	"slices"
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
	// FactTokenRotationRequested asks for a new tunnel token.
	FactTokenRotationRequested FactType = "token_rotation_requested"
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
	Pool         string
	Takeover     *Takeover
	// health_failed (Reason also token_rotation_requested's)
	Reason   string
	Observer string
}

// Result says what applying a fact did.
type Result string

const (
	ResultApplied        Result = "applied"
	ResultStale          Result = "stale"           // already applied or overtaken: a redelivery, a replay, an older event arriving late
	ResultIgnoredUnknown Result = "ignored_unknown" // health_failed or token_rotation_requested for an org never created
	ResultIgnoredDeleted Result = "ignored_deleted" // health_failed or token_rotation_requested for a deleted org
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
// committed or none. Applying is idempotent and tolerates the reordering
// JetStream redelivery causes: a created or deleted whose Seq is not newer
// than the org's last created/deleted (DesiredSeq) changes nothing; a
// health report is kept once per Seq, ordered by Seq, and only for the
// current generation; a token rotation request moves
// Desired.TokenRotationSeq only forward, and only within the current
// generation. So a redelivered or replayed event never changes anything
// twice, and a late one never undoes a newer one.
//
// Apply also advances the file's applied-through mark (AppliedThrough) to
// the highest fact seq, stale or not.
func (s *Store) Apply(facts []Fact) ([]Outcome, error) {
	return s.ApplyThrough(facts, 0)
}

// ApplyThrough is Apply that also advances the applied-through mark to
// through, for events ingest finished without a fact (dead-lettered): one
// transaction, one fsync, for the facts and the mark. facts may be empty.
func (s *Store) ApplyThrough(facts []Fact, through uint64) ([]Outcome, error) {
	for _, f := range facts {
		through = max(through, f.Seq)
	}
	out := make([]Outcome, 0, len(facts))
	var t *txOrgs
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		out = out[:0]
		t = s.txOrgs(tx)
		now := s.now() // one batch, one transaction: one change time
		for _, f := range facts {
			oc, err := s.applyOne(t, f, now)
			if err != nil {
				return err
			}
			out = append(out, oc)
		}
		if err := advanceApplied(tx, through); err != nil {
			return err
		}
		return t.flush()
	})
	if err != nil {
		return nil, fmt.Errorf("apply %d facts to %s: %w", len(facts), s.path, err)
	}
	t.committed()
	return out, nil
}

func (s *Store) applyOne(t *txOrgs, f Fact, now time.Time) (Outcome, error) {
	oc := Outcome{Seq: f.Seq, OrgID: f.OrgID}
	if f.OrgID == "" {
		return oc, fmt.Errorf("fact seq %d: empty org id", f.Seq)
	}
	o, exists, err := t.get(f.OrgID)
	if err != nil {
		return oc, err
	}
	stale := func(format string, args ...any) (Outcome, error) {
		oc.Result, oc.Detail = ResultStale, fmt.Sprintf(format, args...)
		return oc, nil
	}
	// notFor says why an event about a live org (a health report, a
	// rotation request) does not apply: the org never existed, is a
	// tombstone, or the event is older than its current generation.
	notFor := func(event string) (Outcome, bool) {
		switch {
		case !exists:
			oc.Result, oc.Detail = ResultIgnoredUnknown, event+" for an org that was never created"
		case o.Desired.Presence == Deleted:
			oc.Result, oc.Detail = ResultIgnoredDeleted, event+" for a deleted org"
		case f.Seq < o.GenerationSeq:
			oc, _ = stale("seq %d is older than the current generation (began at seq %d)", f.Seq, o.GenerationSeq)
		default:
			return oc, false
		}
		return oc, true
	}
	switch f.Type {
	case FactCreated, FactDeleted:
		// Last writer (by stream sequence) wins among created and deleted;
		// health reports do not take part, so a late created is not lost
		// behind a newer report.
		if exists && f.Seq <= o.DesiredSeq {
			return stale("seq %d is not newer than the last created/deleted (seq %d)", f.Seq, o.DesiredSeq)
		}
	}
	switch f.Type {
	case FactCreated:
		switch {
		case !exists:
			o = Org{ID: f.OrgID, Desired: Desired{Generation: 1}}
			o.GenerationSeq = f.Seq
			oc.Detail = "created, generation 1"
		case o.Desired.Presence == Deleted:
			// Re-created: a new generation. Observed is kept on purpose: the
			// old generation's resources are found through it (and by name
			// and tags) and reconciled into the new generation or cleaned.
			o.Desired.Generation++
			o.GenerationSeq = f.Seq
			o.Observed.DeleteDone = false
			o.HealthReports = nil
			// A rotation request belongs to the generation it followed; one
			// newer than this created was applied before a late deleted and
			// this created arrived, and stays (as in stream order).
			if o.Desired.TokenRotationSeq < f.Seq {
				o.Desired.TokenRotationSeq = 0
			}
			oc.Detail = fmt.Sprintf("re-created, generation %d", o.Desired.Generation)
		default:
			oc.Detail = "updated slug/options"
		}
		o.Desired.Presence = Present
		o.Desired.Slug, o.Desired.InstanceType, o.Desired.Region, o.Desired.Pool = f.Slug, f.InstanceType, f.Region, f.Pool
		o.Desired.Takeover = nil
		if f.Takeover != nil {
			t := *f.Takeover
			o.Desired.Takeover = &t
		}
		o.DesiredSeq = f.Seq
	case FactDeleted:
		if !exists {
			// A tombstone, so an older created arriving later stays ignored.
			o = Org{ID: f.OrgID}
			oc.Detail = "tombstone for an org never created"
		} else {
			oc.Detail = "deleted"
		}
		if o.Desired.Presence != Deleted {
			o.GenerationSeq = f.Seq
		}
		// Slug and options stay: the engine needs them to find what to
		// clean. Health reports go: nothing is remediated on a deleted org.
		// TokenRotationSeq stays: nothing rotates on a tombstone, and a
		// request newer than a late deleted must survive the re-create.
		o.Desired.Presence = Deleted
		o.HealthReports = nil
		o.DesiredSeq = f.Seq
	case FactHealthFailed:
		if out, skip := notFor("health_failed"); skip {
			return out, nil
		}
		pos := len(o.HealthReports) // keep reports ordered by seq, whatever the arrival order
		for i, r := range o.HealthReports {
			if r.Seq == f.Seq {
				return stale("health report seq %d is already recorded", f.Seq)
			}
			if r.Seq > f.Seq && pos == len(o.HealthReports) {
				pos = i
			}
		}
		if len(o.HealthReports) >= s.opts.MaxHealthReports && pos == 0 {
			return stale("health report seq %d is older than the %d kept", f.Seq, s.opts.MaxHealthReports)
		}
		o.HealthReports = slices.Insert(o.HealthReports, pos, HealthReport{
			EventID: f.EventID, Seq: f.Seq, Reason: f.Reason, Observer: f.Observer, At: f.Time,
		})
		if n := len(o.HealthReports) - s.opts.MaxHealthReports; n > 0 {
			o.HealthReports = o.HealthReports[n:]
		}
		oc.Detail = "health report recorded"
	case FactTokenRotationRequested:
		// Like a health report: nothing to rotate on an org that does not
		// exist, and no placeholder record for it.
		if out, skip := notFor("token_rotation_requested"); skip {
			return out, nil
		}
		if f.Seq <= o.Desired.TokenRotationSeq {
			return stale("rotation request seq %d is not newer than the last applied (seq %d)", f.Seq, o.Desired.TokenRotationSeq)
		}
		o.Desired.TokenRotationSeq = f.Seq
		oc.Detail = "token rotation requested"
	default:
		return oc, fmt.Errorf("fact seq %d for org %s: unknown type %q", f.Seq, f.OrgID, f.Type)
	}
	if f.Seq > o.LastSeq {
		o.LastSeq, o.LastEventID, o.UpdatedAt = f.Seq, f.EventID, f.Time
	}
	o.ChangedAt = now
	oc.Result = ResultApplied
	return oc, t.put(o)
}
