package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// printDetail follows the one-line table for `reconciler status ORG`:
// conditions with reasons, the observed resources, the remediation history,
// the last event (with its publisher-given time), when the record last
// changed, and the last error.
func printDetail(w io.Writer, v admin.Org) {
	o := v.Org
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCONDITION\tSTATUS\tREASON\tSINCE\tMESSAGE")
	for _, c := range o.Conditions {
		fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\n", c.Type, c.Status, dash(c.Reason), ts(c.LastTransitionTime), dash(c.Message))
	}
	ob := o.Observed
	fmt.Fprintln(tw, "\nOBSERVED\tVALUE")
	for _, kv := range [][2]string{
		{"tunnel", ob.TunnelName + " " + ob.TunnelID}, {"tunnel status", ob.TunnelStatus},
		{"ingress host", ob.IngressHost}, {"dns record", ob.DNSName + " " + ob.DNSRecordID},
		{"token parameter", ob.ParameterName}, {"instance", ob.InstanceID},
		{"pool", poolDetail(v)},
		{"token rotated at", ts(ob.TokenRotatedAt)}, {"token rotation", rotationDetail(ob.Rotation)},
		{"launch", fmt.Sprintf("generation %d attempt %d", ob.LaunchGeneration, ob.LaunchAttempt)},
		{"observed at", ts(ob.ObservedAt)}, {"delete done", fmt.Sprint(ob.DeleteDone)},
		{"reconciled by", ob.Replica}, // the replica whose state file this is, when it last reconciled the org
		{"replaced record", replacedRecord(ob.Replaced)},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], dash(strings.TrimSpace(kv[1])))
	}
	fmt.Fprintln(tw, "\nREMEDIATION AT\tACTION\tOUTCOME\tDETAIL")
	if len(o.Remediations) == 0 {
		fmt.Fprintln(tw, "-\t-\t-\t-")
	}
	for _, r := range o.Remediations {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ts(r.At), r.Action, r.Outcome, dash(r.Detail))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nlast event: seq %d, id %s, event time %s\n", o.LastSeq, dash(o.LastEventID), ts(o.UpdatedAt))
	fmt.Fprintf(w, "record changed: %s\n", ts(o.ChangedAt))
	fmt.Fprintf(w, "last error: %s (at %s)\n", dash(o.LastError), ts(o.LastErrorAt))
}

// rotationDetail is a token rotation in flight, "" when none is.
func rotationDetail(r *state.Rotation) string {
	if r == nil {
		return ""
	}
	s := fmt.Sprintf("in flight since %s, next step %s (%s)", r.StartedAt.UTC().Format(time.RFC3339), r.Phase, r.Reason)
	if r.Replaced > 0 {
		s += fmt.Sprintf("; %d instance replacement(s) brought no connector on the new token (at most %d)", r.Replaced, plan.MaxRotationReplacements)
	}
	return s
}

// replacedRecord is the record a takeover replaced, as it was (what an
// operator puts back to roll the cutover back); "" when none.
func replacedRecord(r state.ReplacedRecord) string {
	if r.ID == "" {
		return ""
	}
	return fmt.Sprintf("%s %s %s ttl %d proxied %t id %s (replaced %s)", r.Name, r.Type, r.Content, r.TTL, r.Proxied, r.ID, r.At.UTC().Format(time.RFC3339))
}

// poolDetail is the org's Cloudflare pool, with the one its org.created
// asked for when that differs (or it is not placed yet).
func poolDetail(v admin.Org) string {
	if asked := v.Desired.Pool; asked != "" && asked != v.Pool {
		return fmt.Sprintf("%s (asked for %s)", dash(v.Pool), asked)
	}
	return v.Pool
}
