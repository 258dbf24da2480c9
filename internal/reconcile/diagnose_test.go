package reconcile

import (
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
)

// diagnose is pure: the org's record, what was observed and the desired
// state go in, a verdict comes out (which the plan then takes as its Remedy). The end-to-end tests drive the common paths through
// the emulator; this table covers the corners the emulator cannot stage.
func TestDiagnose(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	e := &Engine{cfg: Config{BootConnect: 90 * time.Second, HealthGrace: time.Minute, PollInterval: 10 * time.Second,
		RemediationLimit: 2, RemediationWindow: 30 * time.Minute}}
	running := func(launched time.Duration) Instance {
		return Instance{ID: "i-1", State: "running", TunnelID: "t1", Generation: 1, LaunchTime: now.Add(-launched)}
	}
	obs := func(status string, in Instance) observation {
		ob := observation{tunnel: &Tunnel{ID: "t1", Status: status}, instances: []Instance{in}}
		ob.plan.Tunnel = &plan.Tunnel{ID: "t1", Status: status}
		ob.plan.Instances = []plan.Instance{{ID: in.ID, State: in.State, TunnelID: "t1", Generation: 1}}
		ob.plan.InstanceKnown = true
		return ob
	}
	d := plan.Desired{OrgID: "acme", Present: true, Hostname: "acme.example.test", Generation: 1}
	report := []state.HealthReport{{EventID: "e1", Seq: 2}}
	pending := func(action string, ago time.Duration) []state.Remediation {
		return []state.Remediation{{At: now.Add(-ago), Action: action, Outcome: OutcomePending}}
	}
	done := func(n int) []state.Remediation {
		var rs []state.Remediation
		for i := 0; i < n; i++ {
			rs = append(rs, state.Remediation{At: now.Add(-time.Minute), Action: ActRestart, Outcome: OutcomeOK})
		}
		return rs
	}
	for _, tc := range []struct {
		name    string
		org     state.Org
		ob      observation
		restart bool
		replace bool
		false_  bool
		resolve string
		reason  string
		waitMin time.Duration
		waitMax time.Duration // 0: no upper bound
	}{
		{name: "healthy, no report: nothing", ob: obs("healthy", running(time.Hour))},
		{name: "healthy with a report: false alarm", org: state.Org{HealthReports: report}, ob: obs("healthy", running(time.Hour)), false_: true},
		{name: "healthy after a restart: pending resolved ok", org: state.Org{Remediations: pending(ActRestart, 10*time.Second)},
			ob: obs("healthy", running(time.Hour)), resolve: OutcomeOK},
		{name: "down with a running instance: restart", org: state.Org{HealthReports: report}, ob: obs("down", running(time.Hour)),
			restart: true, reason: "TunnelNotHealthy", waitMin: 10 * time.Second, waitMax: 10 * time.Second},
		{name: "down, no report (sweep found it): restart", ob: obs("down", running(time.Hour)), restart: true, reason: "TunnelNotHealthy"},
		{name: "still booting: wait", org: state.Org{HealthReports: report}, ob: obs("inactive", Instance{ID: "i-1", State: "pending"}), waitMin: 10 * time.Second},
		{name: "inactive just after launch: wait for the connect", org: state.Org{HealthReports: report}, ob: obs("inactive", running(30*time.Second)), waitMin: 10 * time.Second},
		{name: "never connected long after launch: restart", ob: obs("inactive", running(time.Hour)), restart: true, reason: "TunnelNotHealthy"},
		{name: "degraded without a report: watch, no action", ob: obs("degraded", running(time.Hour)), reason: "TunnelDegraded", waitMin: time.Minute},
		{name: "degraded with a report: restart", org: state.Org{HealthReports: report}, ob: obs("degraded", running(time.Hour)), restart: true, reason: "TunnelNotHealthy"},
		{name: "restart within grace: look again at the poll interval, not only at the grace's end", org: state.Org{Remediations: pending(ActRestart, 20*time.Second)},
			ob: obs("down", running(time.Hour)), reason: "TunnelNotHealthy", waitMin: 10 * time.Second, waitMax: 10 * time.Second},
		{name: "restart near the grace's end: wait only the rest", org: state.Org{Remediations: pending(ActRestart, 55*time.Second)},
			ob: obs("down", running(time.Hour)), reason: "TunnelNotHealthy", waitMin: 5 * time.Second, waitMax: 5 * time.Second},
		{name: "still down after the grace: replace", org: state.Org{Remediations: pending(ActRestart, 2*time.Minute)},
			ob: obs("down", running(time.Hour)), replace: true, resolve: OutcomeFailed, reason: "TunnelNotHealthy"},
		{name: "replacement recorded but never launched (crash): resume", org: state.Org{Remediations: pending(ActReplace, time.Minute)},
			ob: obs("down", running(time.Hour)), replace: true, reason: "TunnelNotHealthy"},
		{name: "replacement booting: wait", org: state.Org{Remediations: pending(ActReplace, time.Minute)},
			ob: obs("inactive", running(50*time.Second)), reason: "TunnelNotHealthy", waitMin: time.Minute},
		{name: "limit reached: Degraded, no action", org: state.Org{HealthReports: report, Remediations: done(2)},
			ob: obs("down", running(time.Hour)), reason: "RemediationRateLimited", waitMin: 28 * time.Minute},
		{name: "stopped instance replaced by the plan is recorded", ob: obs("down", Instance{ID: "i-1", State: "stopped"})},
		{name: "stopped instance, limit reached: left alone", org: state.Org{Remediations: done(2)}, ob: obs("down", Instance{ID: "i-1", State: "stopped"}),
			reason: "RemediationRateLimited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := e.diagnose(tc.org, tc.ob, d, now)
			if (v.restart != nil) != tc.restart || (v.replace != nil) != tc.replace || v.falseAlarm != tc.false_ ||
				v.resolvePending != tc.resolve || v.degraded != tc.reason || v.wait < tc.waitMin ||
				(tc.waitMax > 0 && v.wait > tc.waitMax) {
				t.Fatalf("verdict %+v", v)
			}
			if tc.name == "stopped instance replaced by the plan is recorded" && v.replaceStopped == "" {
				t.Fatalf("replacement not recorded: %+v", v)
			}
			if tc.name == "stopped instance, limit reached: left alone" && !v.suppressInstance {
				t.Fatalf("limit reached but the replacement is not suppressed: %+v", v)
			}
		})
	}
}
