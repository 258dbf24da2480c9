package cloudsim

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/zero_trust"
)

// BenchmarkEmulatorCapacity measures how many requests per second the
// emulator answers through the real SDK clients on loopback (rate limits
// off, no faults), so later benchmarks can show it is not their bottleneck.
//
//	go test -run '^$' -bench EmulatorCapacity -benchtime 3s ./internal/cloudsim/
func BenchmarkEmulatorCapacity(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.Now = time.Now; c.DNSQuota = 1000 })
	ctx := context.Background()
	tid := e.createTunnel("tw-bench")
	for i := 0; i < 50; i++ {
		if _, err := e.createCNAME(fmt.Sprintf("org%02d", i), tid+".cfargotunnel.com", fmt.Sprintf("tunnelward:org=org%02d", i)); err != nil {
			b.Fatal(err)
		}
	}
	ec, sc := AWSTestClients(b, e.srv.URL)
	if _, err := sc.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(acmeParam), Type: ssmtypes.ParameterTypeSecureString, Value: aws.String("x")}); err != nil {
		b.Fatal(err)
	}

	run := func(name string, call func() error) {
		b.Run(name, func(b *testing.B) {
			e.sim.ResetCalls()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
	var gp zero_trust.TunnelCloudflaredGetParams
	set(&gp.AccountID, e.acct)
	run("cf_tunnel_get", func() error { _, err := e.tun.Get(ctx, tid, gp); return err })

	var lp dns.RecordListParams
	set(&lp.ZoneID, e.zone)
	set(&lp.PerPage, 100.0)
	run("cf_dns_list_50", func() error { _, err := e.rec.List(ctx, lp); return err })

	var nf dns.RecordListParamsName
	set(&nf.Exact, "org07."+DefaultZoneName)
	var lp1 dns.RecordListParams
	set(&lp1.ZoneID, e.zone)
	set(&lp1.Name, nf)
	run("cf_dns_list_name_exact", func() error { _, err := e.rec.List(ctx, lp1); return err })

	run("ssm_get_parameter", func() error {
		_, err := sc.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(acmeParam), WithDecryption: aws.Bool(true)})
		return err
	})
	run("ec2_describe_instances", func() error { _, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); return err })

	// The same requests as bare HTTP, body read and dropped: the emulator's
	// own cost, without the SDK's response decoding.
	raw := func(path string) func() error {
		return func() error {
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
			req.Header.Set("Authorization", "Bearer "+DefaultCFToken)
			res, err := e.srv.Client().Do(req)
			if err != nil {
				return err
			}
			defer res.Body.Close()
			if _, err := io.Copy(io.Discard, res.Body); err != nil {
				return err
			}
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %d", path, res.StatusCode)
			}
			return nil
		}
	}
	run("http_cf_tunnel_get", raw("/client/v4/accounts/"+e.acct+"/cfd_tunnel/"+tid))
	run("http_cf_dns_list_50", raw("/client/v4/zones/"+e.zone+"/dns_records?per_page=100"))
}
