package reconcile

import (
	"testing"

	"github.com/tunnelward/tunnelward/internal/plan"
)

func TestDriftReason(t *testing.T) {
	ch := func(res plan.Resource, op plan.Op) plan.Change {
		return plan.Change{Resource: res, Op: op, Target: "x", Reason: "r"}
	}
	for _, tc := range []struct {
		name      string
		changes   []plan.Change
		status    string
		replacing bool
		want      string
	}{
		{name: "nothing wrong", status: "healthy"},
		{name: "tunnel deleted: everything follows, the tunnel explains it", status: "",
			changes: []plan.Change{ch(plan.ResTunnel, plan.OpCreate), ch(plan.ResIngress, plan.OpUpdate), ch(plan.ResToken, plan.OpCreate), ch(plan.ResDNS, plan.OpUpdate)},
			want:    ReasonTunnelGone},
		{name: "instance terminated, tunnel down with it", status: "down",
			changes: []plan.Change{ch(plan.ResInstance, plan.OpCreate)}, want: ReasonInstanceGone},
		{name: "record deleted", status: "healthy", changes: []plan.Change{ch(plan.ResDNS, plan.OpCreate)}, want: ReasonDNSRecordMissing},
		{name: "record altered", status: "healthy", changes: []plan.Change{ch(plan.ResDNS, plan.OpUpdate)}, want: ReasonDNSRecordChanged},
		{name: "parameter deleted", status: "healthy", changes: []plan.Change{ch(plan.ResToken, plan.OpCreate)}, want: ReasonParameterMissing},
		{name: "instance and record both gone: the instance first", status: "down",
			changes: []plan.Change{ch(plan.ResDNS, plan.OpCreate), ch(plan.ResInstance, plan.OpCreate)}, want: ReasonInstanceGone},
		{name: "other drift", status: "healthy", changes: []plan.Change{ch(plan.ResInstance, plan.OpDelete)}, want: ReasonDrifted},
		{name: "cloudflared killed", status: "down", want: ReasonTunnelDown},
		{name: "never connected", status: "inactive", want: ReasonTunnelDown},
		{name: "degraded", status: "degraded", want: ReasonTunnelDegraded},
		{name: "down while replacing: not diagnosed twice", status: "down", replacing: true},
		{name: "replacing does not hide drift", status: "down", replacing: true,
			changes: []plan.Change{ch(plan.ResDNS, plan.OpCreate)}, want: ReasonDNSRecordMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, msg := driftReason(plan.Result{Changes: tc.changes}, tc.status, tc.replacing)
			if got != tc.want {
				t.Fatalf("reason %q (%s), want %q", got, msg, tc.want)
			}
			if (got == "") != (msg == "") {
				t.Fatalf("reason %q with message %q", got, msg)
			}
		})
	}
}

func TestReplacing(t *testing.T) {
	in := func(s string) plan.Instance { return plan.Instance{ID: "i-" + s, State: s} }
	for _, tc := range []struct {
		name    string
		pending bool
		ob      plan.Observed
		want    bool
	}{
		{name: "pending replace remediation", pending: true, want: true},
		{name: "running instance", ob: plan.Observed{InstanceKnown: true, Instances: []plan.Instance{in("running")}}},
		{name: "only a booting instance", ob: plan.Observed{InstanceKnown: true, Instances: []plan.Instance{in("pending")}}, want: true},
		{name: "old running, new booting", ob: plan.Observed{InstanceKnown: true, Instances: []plan.Instance{in("pending"), in("running")}}},
		{name: "no instance: gone, not replacing", ob: plan.Observed{InstanceKnown: true}},
		{name: "instances not listed", ob: plan.Observed{Instances: []plan.Instance{in("pending")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := replacing(tc.pending, tc.ob); got != tc.want {
				t.Fatalf("replacing = %v, want %v", got, tc.want)
			}
		})
	}
}
