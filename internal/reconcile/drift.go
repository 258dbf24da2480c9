package reconcile

import (
	"github.com/tunnelward/tunnelward/internal/plan"
)

// Reasons a listing gives when it turns a Ready org not Ready. They name
// what was seen, so an operator reads the cause from the status alone.
const (
	ReasonTunnelGone       = "TunnelGone"
	ReasonInstanceGone     = "InstanceGone"
	ReasonDNSRecordMissing = "DNSRecordMissing"
	ReasonDNSRecordChanged = "DNSRecordChanged"
	ReasonParameterMissing = "ParameterMissing"
	ReasonTunnelDown       = "TunnelDown"
	ReasonTunnelDegraded   = "TunnelDegraded"
	ReasonDrifted          = "Drifted"
)

// driftReason is the one place a listing's finding becomes a Ready=false
// reason: from the plan over the inventory view and the listed tunnel
// status. The most telling change wins (a gone tunnel explains a missing
// token and a record that points nowhere). replacing says the instance is
// being replaced (or is not running yet): a tunnel down for that is the
// repair in progress, not a second finding. reason is "" when nothing is
// wrong.
func driftReason(p plan.Result, tunnelStatus string, replacing bool) (reason, msg string) {
	first := func(res plan.Resource, op plan.Op) (plan.Change, bool) {
		for _, c := range p.Changes {
			if c.Resource == res && c.Op == op {
				return c, true
			}
		}
		return plan.Change{}, false
	}
	for _, k := range []struct {
		res    plan.Resource
		op     plan.Op
		reason string
	}{
		{plan.ResTunnel, plan.OpCreate, ReasonTunnelGone},
		{plan.ResInstance, plan.OpCreate, ReasonInstanceGone},
		{plan.ResDNS, plan.OpCreate, ReasonDNSRecordMissing},
		{plan.ResDNS, plan.OpUpdate, ReasonDNSRecordChanged},
		{plan.ResToken, plan.OpCreate, ReasonParameterMissing},
	} {
		if c, ok := first(k.res, k.op); ok {
			return k.reason, "listing saw: " + c.String()
		}
	}
	if len(p.Changes) > 0 {
		return ReasonDrifted, "listing saw: " + p.Changes[0].String()
	}
	switch {
	case tunnelStatus == "healthy" || tunnelStatus == "" || replacing:
		return "", ""
	case tunnelStatus == "degraded":
		return ReasonTunnelDegraded, "listing saw tunnel status degraded"
	}
	return ReasonTunnelDown, "listing saw tunnel status " + tunnelStatus
}

// replacing reports whether the org's instance is being replaced: a pending
// replacement in its history, or no listed instance running yet.
func replacing(pendingReplace bool, ob plan.Observed) bool {
	if pendingReplace {
		return true
	}
	if !ob.InstanceKnown {
		return false
	}
	for _, in := range ob.Instances {
		if in.State == "running" {
			return false
		}
	}
	return len(ob.Instances) > 0
}
