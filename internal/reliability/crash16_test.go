package reliability

import (
	"fmt"
	"strings"
	"time"

	"github.com/tunnelward/tunnelward/internal/events"
)

// Crash scenarios for pools (issue 15) and token rotation (issue 16).
const poolOrg = "poolorg"

func init() {
	crashScenarios = append(crashScenarios,
		// An org placed in the second pool (data.pool): killed anywhere, it
		// is built there and nowhere else (the invariants refuse a CNAME in
		// one account's zone naming another account's tunnel).
		crashScenario{name: "create-in-second-pool", act: func(w *world) {
			w.publish(events.Created{OrgID: poolOrg, Slug: poolOrg, Pool: "sandbox2"})
		}, timeout: 45 * time.Second, check: func(w *world) string {
			orgs, err := w.orgs()
			if err != nil {
				return err.Error()
			}
			o := orgs[poolOrg]
			if o.Observed.Pool != "sandbox2" || !strings.HasSuffix(o.Observed.DNSName, ".sandbox2.tunnelward.test") {
				return fmt.Sprintf("org %s in pool %q with record %q, want sandbox2", poolOrg, o.Observed.Pool, o.Observed.DNSName)
			}
			return ""
		}},
		// A token rotation killed at any of its steps finishes exactly once
		// after the restart (convergence waits for it: rotationDone).
		crashScenario{name: "rotate-token", setup: func(w *world) { w.create(crashOrg) }, act: func(w *world) {
			w.publish(events.TokenRotationRequested{OrgID: crashOrg, Reason: "crash campaign"})
		}, timeout: 45 * time.Second},
	)
	// One point each in the default run (the suite's time); the heavy run
	// kills at every point (RELIABILITY.md).
	// The placement's shared record written, the state file not yet: the
	// restart finds it there and builds in the same pool.
	crashPointsQuick["create-in-second-pool"] = []string{"cloud.after.cf.tunnel.create:1", "placements.write.after:1"}
	crashPointsQuick["rotate-token"] = []string{"cloud.after.cf.tunnel.edit:1"}
}
