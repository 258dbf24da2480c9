package reliability

import "time"

// Crash scenarios for issue 17's steps: the token built locally from the
// tunnel secret (held in memory only until the SSM write), and DNS changes
// of several orgs sent as one batch.
var batchOrgs = []string{"batcha", "batchb", "batchc", "batchd"}

func init() {
	crashScenarios = append(crashScenarios,
		// Killed after the tunnel create, before the token reached SSM: the
		// secret is gone with the process; the next one adopts the tunnel
		// (409 by name) and reads its token from Cloudflare once. Converged
		// means Ready, and the emulator's connector accepts only a token
		// carrying the tunnel's current secret.
		crashScenario{name: "create-token-lost", act: func(w *world) { w.create(crashOrg) }, timeout: 45 * time.Second},
		// Orgs created together: their record creates go out as one DNS
		// batch; killed with it in flight (sent, or answered and not yet
		// recorded), every org still ends with exactly one record.
		crashScenario{name: "create-batch-in-flight", act: func(w *world) {
			for _, o := range batchOrgs {
				w.create(o)
			}
		}, timeout: 60 * time.Second},
		// The same orgs deleted together: their record deletes go out as one
		// batch (and the tombstones share their listings); killed with it in
		// flight, no record outlives its org.
		crashScenario{name: "delete-batch-in-flight", setup: func(w *world) {
			for _, o := range batchOrgs {
				w.create(o)
			}
		}, act: func(w *world) {
			for _, o := range batchOrgs {
				w.delete(o)
			}
		}, timeout: 60 * time.Second},
	)
	crashPointsQuick["create-token-lost"] = []string{"cloud.after.cf.tunnel.create:1", "cloud.before.ssm.PutParameter:1"}
	crashPointsQuick["create-batch-in-flight"] = []string{"cloud.before.cf.dns.batch:1", "cloud.after.cf.dns.batch:1"}
	crashPointsQuick["delete-batch-in-flight"] = []string{"cloud.after.cf.dns.batch:1"}
}
