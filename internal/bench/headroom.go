package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchHeadroom drives the emulator as hard as two cores allow with the
// calls the other figures make most, through tunnelward's own clients (the
// real SDKs), and compares its rate with the fastest any figure above
// needed: the emulator is not their bottleneck when it is well ahead.
func benchHeadroom(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	dur := pick(o, 300*time.Millisecond, 2*time.Second, 5*time.Second)
	w, err := newWorld(worldOpts{})
	if err != nil {
		return nil, err
	}
	defer w.close()
	// One converged org to read.
	if err := preloadFleet(w, 1, false); err != nil {
		return nil, err
	}
	tunnels, _, err := w.cf.ListTunnels(ctx, "")
	if err != nil || len(tunnels) != 1 {
		return nil, fmt.Errorf("headroom: list tunnels: %v (%d)", err, len(tunnels))
	}
	tid := tunnels[0].ID

	type load struct {
		name string
		call func(context.Context) error
	}
	loads := []load{
		{"tunnel GET (cloudflare-go)", func(ctx context.Context) error { _, err := w.cf.GetTunnel(ctx, tid); return err }},
		{"DescribeInstances by tag (aws-sdk-go-v2)", func(ctx context.Context) error {
			_, err := w.aw.DescribeOrgInstances(ctx, "org-000000")
			return err
		}},
		{"tunnel GET (bare HTTP)", func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
				w.srv.URL+"/client/v4/accounts/"+w.sim.Config().AccountID+"/cfd_tunnel/"+tid, nil)
			req.Header.Set("Authorization", "Bearer "+w.sim.Config().CFToken)
			res, err := w.srv.Client().Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", res.StatusCode)
			}
			return nil
		}},
	}
	var rates []float64
	var parts []string
	for _, l := range loads {
		var n atomic.Int64
		var firstErr error
		var once sync.Once
		lctx, cancel := context.WithTimeout(ctx, dur)
		var wg sync.WaitGroup
		start := time.Now()
		for g := 0; g < 4; g++ {
			wg.Go(func() {
				for lctx.Err() == nil {
					if err := l.call(lctx); err != nil {
						// A call cut short by the end of the run is not a failure.
						if lctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && time.Until(start.Add(dur)) > 100*time.Millisecond {
							once.Do(func() { firstErr = err })
						}
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		cancel()
		if firstErr != nil {
			return nil, fmt.Errorf("headroom %s: %w", l.name, firstErr)
		}
		r := float64(n.Load()) / time.Since(start).Seconds()
		rates = append(rates, r)
		parts = append(parts, fmt.Sprintf("%s %s req/s", l.name, thousands(r)))
	}
	sdk := min(rates[0], rates[1]) // the SDK paths are what the figures use
	need := rep.peakRate
	row := Row{
		Figure:   "7 emulator headroom",
		Measured: fmt.Sprintf("%s req/s through the SDKs", thousands(sdk)),
		Note: fmt.Sprintf("4 client goroutines, %s each, faults and limits off: %s; the fastest figure above drove it at %.0f req/s (%s)",
			secs(dur), strings.Join(parts, "; "), need, dash(rep.peakRateFrom)),
	}
	if need > 0 {
		row.Bound = fmt.Sprintf("fastest figure above: %s req/s (%s)", thousands(need), rep.peakRateFrom)
		row.Goal = ">= 10x"
		row.Met = met(sdk >= 10*need)
	}
	return []Row{row}, nil
}
