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

// A mistyped flag is named as typed, with the closest flag and --help.
func TestUnknownFlagNamedAsTyped(t *testing.T) {
	for args, want := range map[string]string{
		"--bogus":   "unknown flag --bogus; see cloudsim --help",
		"--seeed":   "unknown flag --seeed (did you mean --seed?); see cloudsim --help",
		"-cf_token": "unknown flag -cf_token (did you mean --cf-token?); see cloudsim --help",
	} {
		err := run([]string{args, "x"})
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", args, err, want)
		}
	}
}

// --help has the layout of the other commands' generated help (two dashes,
// metavars, wrapped), on stdout, exit 0.
func TestHelpMatchesTheOtherCommands(t *testing.T) {
	var out, errb strings.Builder
	if code := realMain([]string{"--help"}, &out, &errb); code != 0 || errb.Len() != 0 {
		t.Fatalf("--help: exit %d, stderr %q", code, errb.String())
	}
	h := out.String()
	for _, want := range []string{"Usage: cloudsim [flags]\n", "\nFlags:\n", "  --listen HOST:PORT\n      HTTP address", "(default 127.0.0.1:8787)",
		"  --boot-delay DURATION\n", "  --no-rate-limits\n", "  --faults RULES\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("--help lacks %q:\n%s", want, h)
		}
	}
	for _, line := range strings.Split(h, "\n") {
		if len(line) > 80 && !strings.Contains(line, `[{"op"`) {
			t.Errorf("line longer than 80 columns: %q", line)
		}
		if strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
			t.Errorf("Go flag style line: %q", line)
		}
	}
	out.Reset()
	if code := realMain([]string{"--bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "cloudsim: unknown flag --bogus; see cloudsim --help") {
		t.Fatalf("--bogus: exit %d, stderr %q", code, errb.String())
	}
}
