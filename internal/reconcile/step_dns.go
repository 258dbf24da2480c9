package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The DNS step: the org's proxied CNAME, created (adopting an owned record
// of the name), updated or deleted; conflicts with records tunnelward does
// not own are reported, never overwritten.

// applyDNS deletes owned records that are not the org's hostname first
// (so a crash never strands one under an old slug), then creates or fixes
// the org's CNAME. It returns conflicts found on the way.
func (e *Engine) applyDNS(ctx context.Context, log *slog.Logger, org state.Org, d plan.Desired, tunnelID string, changes []plan.Change) ([]plan.Conflict, error) {
	target := plan.TunnelTarget(tunnelID)
	comment := owner.DNSComment(org.ID)
	for _, c := range changes {
		if c.Op == plan.OpDelete {
			if err := e.deleteRecord(ctx, log, org.ID, c.Target); err != nil {
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
				rec, err = e.clouds.DNS.UpdateCNAME(ctx, c.Target, d.Hostname, target, comment)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("update dns record %s: %w", c.Target, err)
			}
		case plan.OpCreate:
			err = mutate(ctx, log, "cf.dns.create", d.Hostname, func(ctx context.Context) error {
				rec, err = e.batchedCreate(ctx, d.Hostname, target, comment)
				return err
			})
			if errors.Is(err, ErrExists) {
				found, ferr := e.clouds.DNS.FindRecords(ctx, d.Hostname)
				if ferr != nil {
					return nil, fmt.Errorf("find dns records named %s after conflict: %w", d.Hostname, ferr)
				}
				var mine *plan.Record
				var conflicts []plan.Conflict
				for i, f := range found {
					if owner, ok := owner.OrgFromDNSComment(f.Comment); ok && owner == org.ID {
						if mine == nil {
							mine = &found[i]
						}
						continue
					}
					conflicts = append(conflicts, plan.Conflict{Resource: plan.ResDNS, Target: f.Name,
						Reason: fmt.Sprintf("%s record %s (%s) exists and is not owned by org %s", f.Type, f.Name, f.ID, org.ID)})
				}
				if len(conflicts) > 0 || mine == nil {
					if len(conflicts) == 0 {
						return nil, fmt.Errorf("dns create of %s says it exists but no record has the name", d.Hostname)
					}
					log.Warn("dns record not owned by tunnelward; left untouched", "name", d.Hostname, "detail", conflicts[0].Reason)
					return conflicts, nil
				}
				rec, err = *mine, nil
				log.Info("adopted owned dns record", "record_id", rec.ID, "name", rec.Name)
				if rec.Type != "CNAME" || !strings.EqualFold(rec.Content, target) || !rec.Proxied {
					err = mutate(ctx, log, "cf.dns.update", rec.ID, func(ctx context.Context) error {
						rec, err = e.clouds.DNS.UpdateCNAME(ctx, rec.ID, d.Hostname, target, comment)
						return err
					})
				}
			}
			if err != nil {
				return nil, fmt.Errorf("create dns record %s: %w", d.Hostname, err)
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
func (e *Engine) deleteRecord(ctx context.Context, log *slog.Logger, orgID, id string) error {
	return e.deleteStep(ctx, log, "cf.dns.delete", id, "delete dns record "+id,
		func(ctx context.Context) error { return e.batchedDelete(ctx, id) },
		orgID, func(ob *state.Observed) {
			if ob.DNSRecordID == id {
				ob.DNSRecordID, ob.DNSName = "", ""
			}
		})
}
