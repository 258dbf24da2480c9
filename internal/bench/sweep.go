package bench

import (
	"context"
	"encoding/base64"
	"fmt"
	"syscall"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/userdata"
)

// Page sizes the reconciler's clients ask for (their defaults): Cloudflare
// 1000 per page for tunnels (the API's maximum) and 5000 for DNS records,
// EC2 DescribeInstances 1000, SSM DescribeParameters 50 (the API's maximum).
const (
	cfTunnelPageSize = cloudflare.DefaultTunnelPageSize
	cfDNSPageSize    = cloudflare.DefaultDNSPageSize
	ec2PageSize      = 1000
	ssmPageSize      = 50
	sweepListCalls   = 4 // tunnels, DNS records, instances, parameters
)

func pages(n, per int) int { return (n + per - 1) / per }

// sweepPages is how many list pages n converged orgs occupy.
func sweepPages(n int) int {
	return pages(n, cfTunnelPageSize) + pages(n, cfDNSPageSize) + pages(n, ec2PageSize) + pages(n, ssmPageSize)
}

// fleet is n converged orgs: everything loaded straight into the emulator
// and bbolt through their Go APIs (no reconcile, no counted calls), exactly
// as the engine leaves an org that is Ready.
func preloadFleet(w *world, n int, observed bool) error {
	zone := w.sim.Config().ZoneName
	prefix := w.eng.Config().ParamPrefix
	type ids struct{ tunnel, record, instance, param string }
	all := make([]ids, n)
	facts := make([]state.Fact, 0, 1000)
	flush := func() error {
		if len(facts) == 0 {
			return nil
		}
		now := time.Now()
		for i := range facts {
			facts[i].Seq = w.seq.Add(1)
			facts[i].EventID = fmt.Sprintf("preload-%d", facts[i].Seq)
			facts[i].Time = now
		}
		_, err := w.store.Apply(facts)
		facts = facts[:0]
		return err
	}
	for i := 0; i < n; i++ {
		org := fmt.Sprintf("org-%06d", i)
		t := w.sim.LoadTunnel(owner.TunnelName(org))
		host := org + "." + zone
		if err := w.sim.LoadTunnelConfig(t.ID, []cloudsim.IngressRule{{Hostname: host, Service: "http://localhost:8080"}, {Service: "http_status:404"}}); err != nil {
			return err
		}
		rec := w.sim.LoadDNSRecord(cloudsim.DNSRecord{Name: host, Type: "CNAME", Content: plan.TunnelTarget(t.ID),
			Proxied: true, Comment: owner.DNSComment(org)})
		param := owner.ParamName(prefix, org)
		ud, err := userdata.Render(userdata.Params{OrgID: org, ParameterName: param})
		if err != nil {
			return err
		}
		itags := map[string]string{owner.TagManagedBy: owner.ManagedBy, owner.TagOrgID: org, owner.TagTunnelID: t.ID,
			owner.TagGeneration: "1", owner.TagName: owner.InstanceName(org)}
		inst := w.sim.LoadInstance(cloudsim.Instance{ImageID: "ami-0123456789abcdef0", InstanceType: "t3.micro",
			UserData: base64.StdEncoding.EncodeToString([]byte(ud)), Tags: itags, IamInstanceProfile: "tunnelward-instance",
			SubnetID: "subnet-0123456789abcdef0", SecurityGroupIDs: []string{"sg-0123456789abcdef0"},
			ClientToken: owner.ClientToken(org, 1, 1)})
		// The parameter after the instance, tagged with its ARN as the
		// engine tags it: the instance role may read only that parameter
		// (cloudsim's InstanceRoleTagPolicy), and the loaded cloudflared
		// first reads on the Tick below.
		tags := map[string]string{owner.TagManagedBy: owner.ManagedBy, owner.TagOrgID: org, owner.TagTunnelID: t.ID,
			owner.TagInstanceArn: w.sim.InstanceARN(inst)}
		w.sim.LoadParameter(cloudsim.Parameter{Name: param, Type: "SecureString", Value: cloudsim.TunnelToken(t), Tags: tags, KeyID: "alias/aws/ssm"})
		all[i] = ids{t.ID, rec, inst, param}
		facts = append(facts, state.Fact{Type: state.FactCreated, OrgID: org, Slug: org})
		if len(facts) == cap(facts) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	w.sim.Tick() // connectors read their tokens and connect
	if !observed {
		return nil
	}
	now := time.Now()
	for i := 0; i < n; i++ {
		org := fmt.Sprintf("org-%06d", i)
		id := all[i]
		err := w.store.Update(org, func(o *state.Org) error {
			o.Observed = state.Observed{TunnelID: id.tunnel, TunnelName: owner.TunnelName(org), DNSRecordID: id.record,
				DNSName: org + "." + zone, ParameterName: id.param, InstanceID: id.instance, InstanceGeneration: 1,
				IngressHost: org + "." + zone, TunnelStatus: "healthy", ObservedAt: now, LaunchGeneration: 1,
				LaunchAttempt: 1, ParamTunnelID: id.tunnel, ReconciledSeq: o.LastSeq}
			o.Conditions = []state.Condition{
				{Type: state.CondReady, Status: true, Reason: "TunnelHealthy", LastTransitionTime: now},
				{Type: state.CondProvisioning, Status: false, Reason: "Ready", LastTransitionTime: now},
				{Type: state.CondConflict, Status: false, Reason: "NoConflict", LastTransitionTime: now},
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func benchSweep(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	sizes := pick(o, []int{50, 200}, []int{1000, 10000}, []int{1000, 10000})
	var rows []Row
	for _, n := range sizes {
		row, err := sweepOnce(ctx, n, rep)
		if err != nil {
			return rows, fmt.Errorf("sweep with %d orgs: %w", n, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func sweepOnce(ctx context.Context, n int, rep *Report) (Row, error) {
	w, err := newWorld(worldOpts{sim: func(c *cloudsim.Config) { c.ConnectDelay = 0 }})
	if err != nil {
		return Row{}, err
	}
	defer w.close()
	t0 := time.Now()
	if err := preloadFleet(w, n, true); err != nil {
		return Row{}, fmt.Errorf("preload: %w", err)
	}
	loadTook := time.Since(t0)
	w.sim.ResetCalls()
	before := w.requests.Load()
	start, cpu0 := time.Now(), processCPU()
	sr, err := w.eng.Sweep(ctx)
	if err != nil {
		return Row{}, err
	}
	took, cpu := time.Since(start), processCPU()-cpu0
	pc := sumCalls(w.sim.Calls())
	calls := pc.cf + pc.ec2 + pc.ssm
	rep.sawRate(float64(w.requests.Load()-before)/took.Seconds(), fmt.Sprintf("sweep %d", n))
	if sr.Tunnels != n || sr.Records != n || sr.Instances != n || sr.Params != n {
		return Row{}, fmt.Errorf("sweep listed %d tunnels, %d records, %d instances, %d parameters; want %d each",
			sr.Tunnels, sr.Records, sr.Instances, sr.Params, n)
	}
	p := sweepPages(n)
	return Row{
		Figure:   fmt.Sprintf("3 sweep cost: %s orgs", thousands(float64(n))),
		Measured: fmt.Sprintf("%d calls (CF %d, EC2 %d, SSM %d)", calls, pc.cf, pc.ec2, pc.ssm),
		Bound:    fmt.Sprintf("%d list pages", p),
		Goal:     fmt.Sprintf("<= pages + %d", sweepListCalls),
		Met:      met(calls <= p+sweepListCalls),
		Note: fmt.Sprintf("sweep of %d converged orgs (preloaded through cloudsim's and bbolt's Go APIs in %s): %s wall, %s of process CPU (the clients' decoding and the engine's comparison, plus the in-process emulator's answers), requeued %d, drift %d; pages at the clients' default sizes (CF tunnels %d, DNS records %d, EC2 %d, SSM %d per page); calls: %s",
			n, secs(loadTook), secs(took), secs(cpu), len(sr.Requeued), len(sr.Drift), cfTunnelPageSize, cfDNSPageSize, ec2PageSize, ssmPageSize, pc.detail()),
	}, nil
}

// processCPU is the user + system CPU time the process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
