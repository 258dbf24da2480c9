package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// minFlowCalls is the fewest calls per provider (Cloudflare, EC2, SSM) each
// flow of issue 16 needs:
//
//	rotation: CF PATCH the tunnel's secret (the token is built from it, no
//	          read) and one connections read that sees the new connector;
//	          SSM PutParameter and SendCommand (restart cloudflared). The
//	          old connector's connections need no delete when its restart
//	          closed them. The engine also reads the connectors once before
//	          the new secret (the old ones, by client id), and its token put
//	          tries a create first (tags go only with a create), so SSM
//	          answers "exists" and the overwrite follows.
//	cutover:  the create's (tunnel create, ingress put; EC2 describe and
//	          run; SSM put and tag) with the record's create replaced by a
//	          read of the name (the record to take over is there) and the
//	          one DNS batch that deletes it and posts the CNAME; Ready needs
//	          the tunnel seen healthy, once before the switch.
var minFlowCalls = map[string][3]int{
	"rotation": {2, 0, 2},
	"cutover":  {5, 2, 2},
}

// benchFlows measures the API calls of one token rotation and one cutover
// of a lone org, beside minFlowCalls.
func benchFlows(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	// The poll interval twice the emulator's connect delay, as the
	// daemon's 10 s are to a real cloudflared's few seconds.
	w, err := newWorld(worldOpts{engine: func(c *reconcile.Config) { c.PollInterval = 200 * time.Millisecond }})
	if err != nil {
		return nil, err
	}
	defer w.close()
	w.start()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	// Rotation of a Ready org.
	org := "flow-rotate"
	if err := w.apply(created(org)); err != nil {
		return nil, err
	}
	if _, err := w.waitOrgs(ctx, []string{org}, 5*time.Millisecond, ready); err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	w.sim.ResetCalls()
	start := time.Now()
	if err := w.apply(state.Fact{Type: state.FactTokenRotationRequested, OrgID: org}); err != nil {
		return nil, err
	}
	if _, err := w.waitOrgs(ctx, []string{org}, 5*time.Millisecond, func(o state.Org) bool {
		return o.Observed.TokenRotatedSeq > 0 && o.Observed.Rotation == nil && ready(o)
	}); err != nil {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	rotTook := time.Since(start)
	rot := sumCalls(w.sim.Calls())

	// Cutover of an org whose hostname is a legacy A record.
	org = "flow-cutover"
	legacy := "192.0.2.10"
	w.sim.LoadDNSRecord(cloudsim.DNSRecord{Name: org + "." + cloudsim.DefaultZoneName, Type: "A", Content: legacy, Proxied: true, TTL: 1})
	w.sim.ResetCalls()
	start = time.Now()
	f := created(org)
	f.Takeover = &state.Takeover{Type: "A", Content: legacy}
	if err := w.apply(f); err != nil {
		return nil, err
	}
	if _, err := w.waitOrgs(ctx, []string{org}, 5*time.Millisecond, func(o state.Org) bool {
		return ready(o) && o.Observed.Replaced.ID != ""
	}); err != nil {
		return nil, fmt.Errorf("cutover: %w", err)
	}
	cutTook := time.Since(start)
	cut := sumCalls(w.sim.Calls())
	if v := w.sim.CheckInvariants([]string{"flow-rotate", org}); len(v) > 0 {
		return nil, fmt.Errorf("the emulator reports %d invariant violations, first: %+v", len(v), v[0])
	}
	row := func(name string, pc providerCalls, took time.Duration) Row {
		m := minFlowCalls[name]
		return Row{
			Figure:   "12 flows: API calls of one " + name + " (CF / EC2 / SSM)",
			Measured: fmt.Sprintf("%d / %d / %d in %s", pc.cf, pc.ec2, pc.ssm, secs(took)),
			Bound:    fmt.Sprintf("the flow's minimum: %d / %d / %d", m[0], m[1], m[2]),
			Goal:     "reported beside the minimum",
			Met:      met(pc.cf429 == 0),
			Note:     "calls counted by the emulator: " + pc.detail(),
		}
	}
	return []Row{row("rotation", rot, rotTook), row("cutover", cut, cutTook)}, nil
}
