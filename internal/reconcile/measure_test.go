package reconcile

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The fewest calls the design needs for one org on the happy path
// (PERFORMANCE.md explains each).
var minimumCalls = map[string]map[string]int{
	"create": {"cloudflare": 5, "ec2": 2, "ssm": 2}, // ssm: PutParameter + AddTagsToResource (InstanceArn)
	"delete": {"cloudflare": 2, "ec2": 2, "ssm": 1},
}

func provider(op string) string {
	switch {
	case strings.HasPrefix(op, "cf."):
		return "cloudflare"
	case strings.HasPrefix(op, "ec2."):
		return "ec2"
	case strings.HasPrefix(op, "ssm."):
		return "ssm"
	}
	return "other"
}

func byProvider(calls map[string]map[int]int) (map[string]int, []string) {
	tot := map[string]int{}
	var lines []string
	for op, st := range calls {
		n := 0
		for _, c := range st {
			n += c
		}
		tot[provider(op)] += n
		lines = append(lines, fmt.Sprintf("%s=%d", op, n))
	}
	sort.Strings(lines)
	return tot, lines
}

// BenchmarkHappyPath creates one org, waits for Ready, deletes it, and
// prints the calls per provider beside the design's minimum and the
// create-to-Ready time beside the emulated delays on the critical path.
// With per-request latency L the critical path is: DescribeInstances (L,
// concurrent with the other reads) → tunnel create (L) → RunInstances (L,
// concurrent with ingress, token and DNS) → boot → connect → the tunnel GET
// that sees it healthy (L).
//
//	go test -run '^$' -bench HappyPath -benchtime 3x ./internal/reconcile
func BenchmarkHappyPath(b *testing.B) {
	const boot, connect = 600 * time.Millisecond, 300 * time.Millisecond
	for _, lat := range []time.Duration{0, 50 * time.Millisecond} {
		b.Run(fmt.Sprintf("latency=%v", lat), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				h := newHarness(b, harnessOpts{
					sim: func(c *cloudsim.Config) { c.BootDelay, c.ConnectDelay = boot, connect },
					engine: func(c *Config) {
						c.BootConnect = boot + connect
						c.PollInterval = 25 * time.Millisecond
					},
				})
				if lat > 0 {
					if err := h.sim.SetFaultSettings(cloudsim.FaultSettings{Rules: []cloudsim.FaultRule{
						{Op: "*", LatencyMin: cloudsim.Duration(lat), LatencyMax: cloudsim.Duration(lat)}}}); err != nil {
						b.Fatal(err)
					}
				}
				h.start()
				org := fmt.Sprintf("bench-%d", i)
				start := time.Now()
				h.apply(created(org, org))
				h.waitReady(org)
				ready, _ := Condition(h.org(org), state.CondReady)
				took := ready.LastTransitionTime.Sub(start)
				createCalls := h.sim.Calls()
				h.sim.ResetCalls()
				h.apply(deleted(org))
				h.waitDeleted(org)
				deleteCalls := h.sim.Calls()
				h.stop()

				for _, phase := range []string{"create", "delete"} {
					src := createCalls
					if phase == "delete" {
						src = deleteCalls
					}
					tot, lines := byProvider(src)
					min := minimumCalls[phase]
					b.Logf("%s: cloudflare %d (min %d), ec2 %d (min %d), ssm %d (min %d); %s", phase,
						tot["cloudflare"], min["cloudflare"], tot["ec2"], min["ec2"], tot["ssm"], min["ssm"], strings.Join(lines, " "))
				}
				critical := boot + connect + 4*lat
				b.Logf("create-to-Ready %v; emulated delays on the critical path (3 calls + boot %v + connect %v + 1 poll, latency %v each) = %v; overhead %v",
					took.Round(time.Millisecond), boot, connect, lat, critical, (took - critical).Round(time.Millisecond))
				b.ReportMetric(float64(took.Milliseconds()), "ms-to-ready")
			}
		})
	}
}
