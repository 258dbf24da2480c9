package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/reconcile"
)

// Emulated latencies of the happy-path calls (100–300 ms, a plausible spread
// for the real APIs from one region), fixed per operation so that the
// critical path is known exactly. Time in the world is compressed by
// timeScale: an instance boots in 30 s and cloudflared connects in 5 s on a
// real cloud; here in 3 s and 0.5 s. API latencies are NOT compressed,
// which weighs the engine's sequential calls ten times heavier than on the
// real cloud: a harsher test, not a kinder one.
var happyLatency = map[string]time.Duration{
	"cf.tunnel.create":        250 * time.Millisecond,
	"cf.tunnel.get":           150 * time.Millisecond,
	"cf.tunnel.list":          200 * time.Millisecond,
	"cf.tunnel_config.get":    120 * time.Millisecond,
	"cf.tunnel_config.put":    200 * time.Millisecond,
	"cf.tunnel_token.get":     120 * time.Millisecond,
	"cf.dns.create":           220 * time.Millisecond,
	"cf.dns.get":              120 * time.Millisecond,
	"cf.dns.list":             200 * time.Millisecond,
	"ec2.DescribeInstances":   180 * time.Millisecond,
	"ec2.RunInstances":        300 * time.Millisecond,
	"ssm.PutParameter":        100 * time.Millisecond,
	"ssm.AddTagsToResource":   100 * time.Millisecond,
	"ssm.DescribeParameters":  150 * time.Millisecond,
	"ssm.GetParameter":        100 * time.Millisecond,
	"ssm.DeleteParameter":     100 * time.Millisecond,
	"ec2.TerminateInstances":  250 * time.Millisecond,
	"cf.dns.delete":           200 * time.Millisecond,
	"cf.tunnel.delete":        200 * time.Millisecond,
	"cf.tunnel_connections.*": 200 * time.Millisecond,
}

const (
	realBoot    = 30 * time.Second
	realConnect = 5 * time.Second
	timeScale   = 10
)

func latencyRules() []cloudsim.FaultRule {
	var rules []cloudsim.FaultRule
	for op, d := range happyLatency {
		rules = append(rules, cloudsim.FaultRule{Op: op, LatencyMin: cloudsim.Duration(d), LatencyMax: cloudsim.Duration(d)})
	}
	return rules
}

// criticalPath is what must happen in sequence for one org to be known
// Ready: the tunnel exists before the instance that is tagged with it and
// whose cloudflared needs its token, the hostname is claimed (a new org's
// DNS record is created before anything billable is built: an org whose
// name another party holds gets no instance), the instance boots,
// cloudflared connects, and a tunnel listing (shared by every org waiting
// then) sees it healthy.
// Everything else (ingress, token into SSM) runs beside them.
func criticalPath(boot, connect time.Duration) (time.Duration, string) {
	steps := []struct {
		name string
		d    time.Duration
	}{
		{"tunnel create", happyLatency["cf.tunnel.create"]},
		{"DNS create", happyLatency["cf.dns.create"]},
		{"RunInstances", happyLatency["ec2.RunInstances"]},
		{"boot", boot},
		{"connect", connect},
		{"tunnel listing", happyLatency["cf.tunnel.list"]},
	}
	var total time.Duration
	var parts []string
	for _, s := range steps {
		total += s.d
		parts = append(parts, fmt.Sprintf("%s %s", s.name, secs(s.d)))
	}
	return total, strings.Join(parts, " + ")
}

func benchConvergence(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	scale := time.Duration(pick(o, 100, timeScale, timeScale))
	boot, connect := realBoot/scale, realConnect/scale
	rounds := pick(o, 1, 1, 3)
	const perRound = 4 // = the engine's default workers: each org has a worker, none waits in the queue
	w, err := newWorld(worldOpts{
		sim: func(c *cloudsim.Config) { c.BootDelay, c.ConnectDelay = boot, connect },
		engine: func(c *reconcile.Config) {
			c.Workers = perRound
			c.BootConnect = boot + connect            // the operator's expectation, scaled like the world
			c.PollInterval = 10 * time.Second / scale // the default 10 s, scaled
		},
	})
	if err != nil {
		return nil, err
	}
	defer w.close()
	if err := w.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: latencyRules()}); err != nil {
		return nil, err
	}
	w.start()
	var took []time.Duration
	for r := 0; r < rounds; r++ {
		var orgs []string
		for i := 0; i < perRound; i++ {
			orgs = append(orgs, fmt.Sprintf("conv-%d-%d", r, i))
		}
		start := time.Now()
		for _, org := range orgs {
			if err := w.apply(created(org)); err != nil {
				return nil, err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		at, err := w.waitOrgs(wctx, orgs, 5*time.Millisecond, ready)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, org := range orgs {
			took = append(took, at[org].Sub(start))
		}
	}
	slices.Sort(took)
	median, worst := took[len(took)/2], took[len(took)-1]
	cp, cpText := criticalPath(boot, connect)
	ratio := float64(worst) / float64(cp)
	return []Row{{
		Figure:   "4 convergence: create to Ready (worst of " + fmt.Sprint(len(took)) + ")",
		Measured: fmt.Sprintf("%s (%.2fx; median %s)", secs(worst), ratio, secs(median)),
		Bound:    "critical path " + secs(cp),
		Goal:     "<= 1.1x",
		Met:      met(ratio <= 1.1),
		Note: fmt.Sprintf("critical path = %s; world time /%d (boot %s, connect %s), API latencies 100-300 ms fixed per operation and not scaled; %d orgs created at once per round, %d round(s); engine BootConnect=%s PollInterval=%s",
			cpText, scale, secs(realBoot), secs(realConnect), perRound, rounds, secs(boot+connect), secs(10*time.Second/scale)),
	}}, nil
}
