package main

import (
	"strings"
	"testing"
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
	} {
		err := run(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}
