package main

import (
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/cloudsim"
)

func TestRunRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--faults", `[{"op":"","error_rate":0.1}]`}, "op"},
		{[]string{"--faults", `[{"op":"cf.*","error_rate":3}]`}, "error_rate"},
		{[]string{"--faults", `{"op":"cf.*"}`}, "JSON list"},
		{[]string{"--faults", "@/nonexistent/faults.json"}, "no such file"},
		{[]string{"--cf-budget", "0"}, "cf_budget"},
		{[]string{"--instance-role-tag-policy=maybe"}, "instance-role-tag-policy"},
		{[]string{"stray"}, "unexpected arguments"},
		{[]string{"--listen", "256.0.0.1:1"}, "listen"},
		{[]string{"--regions", "us-east-1,mars-1"}, "mars-1"},
		{[]string{"--regions", "eu-west-1,eu-west-1"}, "twice"},
		{[]string{"--regions", " , "}, "--regions: empty"},
		{[]string{"--region", "ap-southeast-2", "--regions", "eu-west-1"}, "not one of regions"},
		{[]string{"--region", "nowhere"}, "not an AWS region"},
	} {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

func TestParseFlagsRegions(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		home, want string
	}{
		{nil, "us-east-1", "us-east-1,us-east-2,us-west-2,eu-west-1,eu-central-1,ap-southeast-2"},
		// --region alone: the default set grows by it.
		{[]string{"--region", "sa-east-1"}, "sa-east-1", "sa-east-1,us-east-1,us-east-2,us-west-2,eu-west-1,eu-central-1,ap-southeast-2"},
		{[]string{"--region", "eu-west-1", "--regions", "us-east-1, eu-west-1"}, "eu-west-1", "eu-west-1,us-east-1"},
	} {
		o, err := parseFlags(tc.args)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.args, err)
		}
		got := cloudsim.New(o.cfg)
		if got.Config().Region != tc.home || strings.Join(got.Regions(), ",") != tc.want {
			t.Errorf("parse %q: home %s regions %v, want %s and %s", tc.args, got.Config().Region, got.Regions(), tc.home, tc.want)
		}
	}
}
