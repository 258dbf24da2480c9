package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The DNS step: the org's proxied CNAME, created (adopting an owned record
// of the name), updated or deleted; conflicts with records tunnelward does
// not own are reported, never overwritten. The one exception is a
// takeover (a cutover of an existing tenant): the record org.created names
// in data.takeover is replaced by the org's CNAME in one DNS batch, once
// the plan says the tunnel is healthy, after what it replaces is recorded.

// applyDNS deletes owned records that are not the org's hostname first
// (so a crash never strands one under an old slug), then creates, fixes or
// takes over (from the observed records) the org's CNAME. It returns
// conflicts found on the way.
func (e *Engine) applyDNS(ctx context.Context, log *slog.Logger, org state.Org, d plan.Desired, tunnelID string, changes []plan.Change, observed []plan.Record, cf PoolClouds) ([]plan.Conflict, error) {
	target := plan.TunnelTarget(tunnelID)
	comment := owner.DNSComment(org.ID)
	for _, c := range changes {
		if c.Op == plan.OpDelete {
			if err := e.deleteRecord(ctx, log, org.ID, c.Target, cf); err != nil {
				return nil, err
			}
		}
	}
	for _, c := range changes {
		var rec plan.Record
		var err error
		switch c.Op {
		case plan.OpUpdate:
			err = mutate(ctx, log, "cf.dns.update", c.Target, func(ctx context.Context) error {
				rec, err = cf.DNS.UpdateCNAME(ctx, c.Target, d.Hostname, target, comment)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("update dns record %s: %w", c.Target, err)
			}
		case plan.OpCreate:
			var mine *plan.Record
			var others []plan.Record
			mine, others, err = e.createOwnRecord(ctx, log, org.ID, d.Hostname, target, cf)
			if err != nil {
				return nil, err
			}
			if mine == nil {
				conflicts := recordConflicts(d, others)
				if len(conflicts) == 0 {
					// The record the takeover names came back under the
					// name: the next pass reads it and takes it over.
					log.Info("hostname held by the record the takeover names; it is replaced once the tunnel is healthy", "name", d.Hostname)
					continue
				}
				log.Warn("dns record not owned by tunnelward; left untouched", "name", d.Hostname, "detail", conflicts[0].Reason)
				return conflicts, nil
			}
			rec = *mine
		case plan.OpTakeover:
			i := slices.IndexFunc(observed, func(r plan.Record) bool { return r.ID == c.Target })
			if i < 0 {
				return nil, fmt.Errorf("take over dns record %s: not among the observed records", c.Target)
			}
			rec, err = e.takeOver(ctx, log, org.ID, d, target, observed[i], cf)
			if err != nil {
				return nil, err
			}
		default:
			continue
		}
		if err := e.store.Update(org.ID, func(o *state.Org) error {
			o.Observed.DNSRecordID, o.Observed.DNSName = rec.ID, d.Hostname
			return nil
		}); err != nil {
			return nil, fmt.Errorf("record dns record %s: %w", rec.ID, err)
		}
	}
	return nil, nil
}

// createOwnRecord creates the org's proxied CNAME (in a DNS batch when
// other orgs' changes are in flight). The create is the claim on the
// hostname: when it answers "already exists", the records of that name are
// read once, an owned one is adopted (and fixed), and records another party
// holds come back in others, untouched (mine nil).
func (e *Engine) createOwnRecord(ctx context.Context, log *slog.Logger, orgID, hostname, target string, cf PoolClouds) (mine *plan.Record, others []plan.Record, err error) {
	comment := owner.DNSComment(orgID)
	var rec plan.Record
	err = mutate(ctx, log, "cf.dns.create", hostname, func(ctx context.Context) error {
		rec, err = e.batchedCreate(ctx, cf, hostname, target, comment)
		return err
	})
	if errors.Is(err, ErrExists) {
		found, ferr := cf.DNS.FindRecords(ctx, hostname)
		if ferr != nil {
			return nil, nil, fmt.Errorf("find dns records named %s after conflict: %w", hostname, ferr)
		}
		for i, f := range found {
			if o, ok := owner.OrgFromDNSComment(f.Comment); ok && o == orgID {
				if mine == nil {
					mine = &found[i]
				}
				continue
			}
			others = append(others, f)
		}
		if len(others) > 0 {
			return nil, others, nil
		}
		if mine == nil {
			return nil, nil, fmt.Errorf("dns create of %s says it exists but no record has the name", hostname)
		}
		rec, err = *mine, nil
		log.Info("adopted owned dns record", "record_id", rec.ID, "name", rec.Name)
		if rec.Type != "CNAME" || !strings.EqualFold(rec.Content, target) || !rec.Proxied {
			err = mutate(ctx, log, "cf.dns.update", rec.ID, func(ctx context.Context) error {
				rec, err = cf.DNS.UpdateCNAME(ctx, rec.ID, hostname, target, comment)
				return err
			})
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("create dns record %s: %w", hostname, err)
	}
	return &rec, nil, nil
}

// recordConflicts are the conflicts of records another party holds at the
// org's hostname, worded as the plan words them; the record the org's
// takeover names is none (plan.RecordConflict).
func recordConflicts(d plan.Desired, others []plan.Record) []plan.Conflict {
	out := make([]plan.Conflict, 0, len(others))
	for _, f := range others {
		if c, held := plan.RecordConflict(d, f); held {
			out = append(out, c)
		}
	}
	return out
}

// pendingTakeover is the takeover an org may still make: the record
// org.created named in data.takeover, while the org has no record of its
// own recorded. Once its CNAME is recorded the takeover is spent, so an
// operator who rolls back (puts the replaced record back) gets a Conflict,
// not a second takeover.
func pendingTakeover(org state.Org) *plan.Takeover {
	t := org.Desired.Takeover
	if t == nil || org.Observed.DNSRecordID != "" {
		return nil
	}
	return &plan.Takeover{Type: t.Type, Content: t.Content, RecordID: t.RecordID}
}

// ReasonTakeoverWaits is the Ready=false / Provisioning reason of an org
// whose takeover waits for its tunnel to be healthy.
const ReasonTakeoverWaits = "TakeoverWaitsForHealth"

func takeoverWaits(p plan.Result) bool {
	_, ok := plan.TakeoverWaiting(p)
	return ok
}

func takeoverWaitsDetail(p plan.Result) string {
	c, _ := plan.TakeoverWaiting(p)
	return "takeover of dns record " + c.Target + " " + c.Reason
}

// takeOver replaces old, the record the org's takeover names (as observed),
// with the org's proxied CNAME in one DNS batch: Cloudflare applies the
// delete, then the post, atomically (a CNAME cannot stand beside an A of
// its name), so the name always has a record. What is replaced is
// committed first, for an operator to roll back with. A crash before the
// batch leaves the old record (the next pass takes it over again); a crash
// after it, or a lost answer, leaves the org's CNAME unrecorded (the next
// pass reads the name and adopts it). The caller records the new record.
func (e *Engine) takeOver(ctx context.Context, log *slog.Logger, orgID string, d plan.Desired, target string, old plan.Record, cf PoolClouds) (plan.Record, error) {
	now := e.cfg.Now()
	if err := e.store.Update(orgID, func(o *state.Org) error {
		o.Observed.Replaced = state.ReplacedRecord{ID: old.ID, Name: old.Name, Type: old.Type, Content: old.Content,
			TTL: old.TTL, Proxied: old.Proxied, Comment: old.Comment, At: now}
		return nil
	}); err != nil {
		return plan.Record{}, fmt.Errorf("record dns record %s before its takeover: %w", old.ID, err)
	}
	var recs []plan.Record
	err := mutate(ctx, log, "cf.dns.batch", old.ID, func(ctx context.Context) error {
		var err error
		recs, err = cf.DNS.Batch(ctx, []string{old.ID}, []CNAME{{Name: d.Hostname, Target: target, Comment: owner.DNSComment(orgID)}})
		return err
	})
	if err == nil && len(recs) != 1 {
		err = fmt.Errorf("the batch created %d records, want 1", len(recs))
	}
	if err != nil {
		return plan.Record{}, fmt.Errorf("take over dns record %s (%s %s) at %s: %w", old.ID, old.Type, old.Content, d.Hostname, err)
	}
	log.Info("took over dns record", "name", d.Hostname, "replaced_id", old.ID, "replaced_type", old.Type,
		"replaced_content", old.Content, "record_id", recs[0].ID, "target", target)
	return recs[0], nil
}

// claimsHostname reports whether a pass claims the org's hostname by
// creating its record instead of reading the name first: while no record
// is recorded (a new org, or a crash before the id reached bbolt) and no
// conflict stands (a standing conflict is read by name, so it does not
// cost a failing create on every pass). An org with a takeover pending
// reads the name too: it expects a record there, and a read is one call
// where a failing create and the read after it are two.
func claimsHostname(org state.Org, d plan.Desired) bool {
	return d.Hostname != "" && org.Observed.DNSRecordID == "" && !IsTrue(org, state.CondConflict) && d.Takeover == nil
}

// claimHostname claims a new org's hostname before its plan is made and
// anything billable is built: the record create (batched) either makes the
// org's record, adopts an owned one of the name, or finds the records
// another party holds (held true). What it finds joins the observation, so
// the plan keeps the org's record or, on a conflict, withholds the
// creations, exactly as a read by name would have made it do. The org's
// record is recorded in bbolt at once.
func (e *Engine) claimHostname(ctx context.Context, log *slog.Logger, org *state.Org, d plan.Desired, tunnelID string, cf PoolClouds) (found []plan.Record, held bool, err error) {
	mine, others, err := e.createOwnRecord(ctx, log, org.ID, d.Hostname, plan.TunnelTarget(tunnelID), cf)
	if err != nil {
		return nil, false, fmt.Errorf("org %s: claim hostname: %w", org.ID, err)
	}
	if mine == nil {
		if len(recordConflicts(d, others)) == 0 {
			// Only the record the org's takeover names: it is to be
			// taken over, not held; the plan decides when.
			return others, false, nil
		}
		log.Warn("hostname held by a record tunnelward does not own; nothing is built", "name", d.Hostname)
		return others, true, nil
	}
	if err := e.store.Update(org.ID, func(o *state.Org) error {
		o.Observed.DNSRecordID, o.Observed.DNSName = mine.ID, d.Hostname
		org.Observed = o.Observed
		return nil
	}); err != nil {
		return nil, false, fmt.Errorf("org %s: record dns record %s: %w", org.ID, mine.ID, err)
	}
	return []plan.Record{*mine}, false, nil
}

// adoptRecord records the org's own record at its hostname when bbolt does
// not name it (found by name after a crash before its id was recorded), so
// later passes read it by id instead of searching by name.
func (e *Engine) adoptRecord(log *slog.Logger, org *state.Org, p plan.Result, hostname string) error {
	id := p.KeepRecord
	if id == "" || org.Observed.DNSRecordID == id {
		return nil
	}
	err := e.store.Update(org.ID, func(o *state.Org) error {
		o.Observed.DNSRecordID, o.Observed.DNSName = id, hostname
		org.Observed = o.Observed
		return nil
	})
	if err != nil {
		return fmt.Errorf("org %s: record adopted dns record %s: %w", org.ID, id, err)
	}
	log.Info("adopted unrecorded dns record", "record_id", id, "name", hostname)
	return nil
}

// deleteRecord deletes one owned record ("not found" is success) and
// forgets it in the org's record when it was the recorded one (orgID ""
// for an orphan's).
func (e *Engine) deleteRecord(ctx context.Context, log *slog.Logger, orgID, id string, cf PoolClouds) error {
	return e.deleteStep(ctx, log, "cf.dns.delete", id, "delete dns record "+id,
		func(ctx context.Context) error { return e.batchedDelete(ctx, cf, id) },
		orgID, func(ob *state.Observed) {
			if ob.DNSRecordID == id {
				ob.DNSRecordID, ob.DNSName = "", ""
			}
		})
}
