package config

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Valid ids (8 hex digits), distinct from the sandbox ones.
const (
	euAMI    = "ami-0e0e0e0e"
	euAMI2   = "ami-0e0e0e0f"
	apAMI    = "ami-0a0a0a0a"
	euSubnet = "subnet-0e0e0e0e"
	euSG1    = "sg-0e0e0e01"
	euSG2    = "sg-0e0e0e02"
)

// parseOK parses args and env, with an optional config file, and fails the
// test on any problem.
func parseOK(t *testing.T, args []string, env map[string]string, file string) Config {
	t.Helper()
	if file != "" {
		args = append(args, "--config", writeFile(t, "c.yaml", file))
	}
	c, err := Parse(args, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRegionSettingsPrecedence(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string
		setting string
		want    string
		source  string
	}{
		{name: "regions default (sandbox: every emulated region)", setting: "aws-regions",
			want: strings.TrimPrefix(SandboxRegions, SandboxAWSRegion+","), source: "default"},
		{name: "regions default in URL mode", args: []string{"--cloud", "http://127.0.0.1:8787"}, setting: "aws-regions", want: "", source: "default"},
		{name: "regions from file list", file: "aws-regions: [eu-west-1, ap-south-1]\n", setting: "aws-regions", want: "eu-west-1,ap-south-1", source: "file"},
		{name: "regions env over file", env: map[string]string{"TUNNELWARD_AWS_REGIONS": "eu-west-1"}, file: "aws-regions: ap-south-1\n",
			setting: "aws-regions", want: "eu-west-1", source: "env"},
		{name: "regions flag over env", args: []string{"--aws-regions", "ap-south-1, eu-west-1"}, env: map[string]string{"TUNNELWARD_AWS_REGIONS": "eu-west-1"},
			setting: "aws-regions", want: "ap-south-1,eu-west-1", source: "flag"},
		{name: "ami from file mapping", args: []string{"--aws-regions", "eu-west-1,ap-south-1"},
			file:    "instance-ami-by-region:\n  eu-west-1: " + euAMI + "\n  ap-south-1: " + apAMI + "\n",
			setting: amiByRegion, want: "ap-south-1=" + apAMI + ",eu-west-1=" + euAMI, source: "file"},
		{name: "ami from file list of pairs", args: []string{"--aws-regions", "eu-west-1"},
			file:    "instance-ami-by-region: [eu-west-1=" + euAMI + "]\n",
			setting: amiByRegion, want: "eu-west-1=" + euAMI, source: "file"},
		{name: "ami env over file", args: []string{"--aws-regions", "eu-west-1"},
			env:  map[string]string{"TUNNELWARD_INSTANCE_AMI_BY_REGION": "eu-west-1=" + euAMI2},
			file: "instance-ami-by-region: {eu-west-1: " + euAMI + "}\n", setting: amiByRegion, want: "eu-west-1=" + euAMI2, source: "env"},
		{name: "ami flag over env", args: []string{"--aws-regions", "eu-west-1", "--instance-ami-by-region", " eu-west-1 = " + euAMI + " "},
			env:     map[string]string{"TUNNELWARD_INSTANCE_AMI_BY_REGION": "eu-west-1=" + euAMI2},
			setting: amiByRegion, want: "eu-west-1=" + euAMI, source: "flag"},
		{name: "subnet from env", args: []string{"--aws-regions", "eu-west-1"},
			env:     map[string]string{"TUNNELWARD_INSTANCE_SUBNET_BY_REGION": "eu-west-1=" + euSubnet},
			setting: subnetByRgn, want: "eu-west-1=" + euSubnet, source: "env"},
		{name: "security groups from file mapping of lists", args: []string{"--aws-regions", "eu-west-1"},
			file:    "instance-security-groups-by-region:\n  eu-west-1: [" + euSG1 + ", " + euSG2 + "]\n",
			setting: sgsByRegion, want: "eu-west-1=" + euSG1 + "+" + euSG2, source: "file"},
		{name: "security groups from JSON file", args: []string{"--aws-regions", "eu-west-1"},
			file:    `{"instance-security-groups-by-region": {"eu-west-1": "` + euSG1 + `"}}`,
			setting: sgsByRegion, want: "eu-west-1=" + euSG1, source: "file"},
		{name: "security groups flag over file", args: []string{"--aws-regions", "eu-west-1", "--instance-security-groups-by-region", "eu-west-1=" + euSG2 + "+" + euSG1},
			file:    "instance-security-groups-by-region: {eu-west-1: [" + euSG1 + "]}\n",
			setting: sgsByRegion, want: "eu-west-1=" + euSG2 + "+" + euSG1, source: "flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := parseOK(t, tc.args, tc.env, tc.file)
			if got := lookup(tc.setting).get(&c); got != tc.want {
				t.Errorf("%s = %q, want %q", tc.setting, got, tc.want)
			}
			if got := c.Source(tc.setting); got != tc.source {
				t.Errorf("source of %s = %q, want %q", tc.setting, got, tc.source)
			}
		})
	}
}

// Each layer fills its own field of a region: the AMI from the file, the
// subnet from the environment and the security groups from a flag all land
// in the one entry.
func TestRegionSettingsFromThreeSources(t *testing.T) {
	env := liveEnv()
	env["TUNNELWARD_INSTANCE_SUBNET_BY_REGION"] = "eu-central-1=" + euSubnet
	env["TUNNELWARD_AWS_REGIONS"] = "eu-central-1"
	c := parseOK(t, []string{"--instance-security-groups-by-region", "eu-central-1=" + euSG1 + "+" + euSG2}, env,
		"instance-ami-by-region: {eu-central-1: "+euAMI+"}\n")
	want := RegionalInstance{AMI: euAMI, Subnet: euSubnet, SecurityGroups: []string{euSG1, euSG2}}
	if got := c.InstanceByRegion["eu-central-1"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("eu-central-1 = %+v, want %+v", got, want)
	}
	if len(c.InstanceByRegion) != 1 {
		t.Fatalf("InstanceByRegion = %+v, want only eu-central-1", c.InstanceByRegion)
	}
}

// problemList returns every problem as "setting: detail".
func problemList(t *testing.T, err error) []Problem {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *config.Error, got %T: %v", err, err)
	}
	return e.Problems
}

func TestRegionValidation(t *testing.T) {
	type want struct{ setting, fragment string }
	cases := []struct {
		name string
		args []string
		env  map[string]string // on top of liveEnv when live
		live bool
		file string
		want []want // exactly these problems, in any order
	}{
		{name: "bad region name", args: []string{"--aws-regions", "eu-west-1,Europe,eu_west_2"},
			want: []want{{"--aws-regions", `"Europe" is not an AWS region name`}, {"--aws-regions", `"eu_west_2" is not an AWS region name`}}},
		{name: "region longer than the event schema allows", args: []string{"--aws-regions", "eu-" + strings.Repeat("a", 30) + "-1"},
			want: []want{{"--aws-regions", "is not an AWS region name"}}},
		{name: "duplicate region", args: []string{"--aws-regions", "eu-west-1,ap-south-1,eu-west-1"},
			want: []want{{"--aws-regions", "eu-west-1 is listed twice"}}},
		{name: "default region too long", args: []string{"--aws-region", "us-" + strings.Repeat("b", 30) + "-1"},
			want: []want{{"--aws-region", "is not an AWS region name"}}},
		{name: "malformed entries", args: []string{"--aws-regions", "eu-west-1",
			"--instance-ami-by-region", "eu-west-1:" + euAMI + ",=" + euAMI,
			"--instance-subnet-by-region", "eu-west-1=",
			"--instance-security-groups-by-region", "eu-west-1=+"},
			want: []want{
				{"--instance-ami-by-region", `entry "eu-west-1:` + euAMI + `" is not REGION=AMI`},
				{"--instance-ami-by-region", `entry "=` + euAMI + `" is not REGION=AMI`},
				{"--instance-subnet-by-region", `entry "eu-west-1=" is not REGION=SUBNET`},
				{"--instance-security-groups-by-region", `entry "eu-west-1=+" is not REGION=SECURITY_GROUPS`},
			}},
		{name: "region given twice", args: []string{"--aws-regions", "eu-west-1", "--instance-ami-by-region", "eu-west-1=" + euAMI + ",eu-west-1=" + euAMI2},
			want: []want{{"--instance-ami-by-region", "region eu-west-1 is given twice"}}},
		{name: "entry for an unserved region", args: []string{"--aws-regions", "eu-west-1",
			"--instance-subnet-by-region", "ap-south-1=" + euSubnet, "--instance-security-groups-by-region", "us-west-2=" + euSG1},
			want: []want{
				{"--instance-subnet-by-region", "region ap-south-1 is not served (served: us-east-1, eu-west-1)"},
				{"--instance-security-groups-by-region", "region us-west-2 is not served"},
			}},
		{name: "entry without any extra region", args: []string{"--cloud", "http://127.0.0.1:8787", "--instance-ami-by-region", "eu-west-1=" + euAMI},
			want: []want{{"--instance-ami-by-region", "region eu-west-1 is not served (served: us-east-1); add it to --aws-regions"}}},
		{name: "entry for the default region", args: []string{"--aws-regions", "us-east-1,eu-west-1", "--instance-ami-by-region", "us-east-1=" + euAMI},
			want: []want{{"--instance-ami-by-region", "us-east-1 is the default region (--aws-region); set its AMI with --instance-ami"}}},
		{name: "entry with a bad region name", args: []string{"--instance-subnet-by-region", "EU=" + euSubnet},
			want: []want{{"--instance-subnet-by-region", `"EU" is not an AWS region name`}}},
		{name: "ids checked like the plain settings", args: []string{"--aws-regions", "eu-west-1,ap-south-1",
			"--instance-ami-by-region", "eu-west-1=ami-123,ap-south-1=" + apAMI,
			"--instance-subnet-by-region", "eu-west-1=vpc-0123456789abcdef0",
			"--instance-security-groups-by-region", "eu-west-1=" + euSG1 + "+default+sg-xyz"},
			want: []want{
				{"--instance-ami-by-region", `eu-west-1: "ami-123" is not an AMI id`},
				{"--instance-subnet-by-region", `eu-west-1: "vpc-0123456789abcdef0" is not a subnet id`},
				{"--instance-security-groups-by-region", `eu-west-1: "default" is not a security group id`},
				{"--instance-security-groups-by-region", `eu-west-1: "sg-xyz" is not a security group id`},
			}},
		{name: "live extra regions need an AMI", live: true, env: map[string]string{"TUNNELWARD_AWS_REGIONS": "us-west-2,ap-south-1,eu-central-1"},
			args: []string{"--instance-ami-by-region", "ap-south-1=" + apAMI},
			want: []want{
				{"--instance-ami-by-region", "required with --cloud live for every region in --aws-regions: us-west-2 has no AMI (add us-west-2=ami-...)"},
				{"--instance-ami-by-region", "eu-central-1 has no AMI"},
			}},
		{name: "live AMI check survives a malformed entry", live: true, env: map[string]string{"TUNNELWARD_AWS_REGIONS": "us-west-2"},
			args: []string{"--instance-ami-by-region", "us-west-2 " + euAMI},
			want: []want{
				{"--instance-ami-by-region", `entry "us-west-2 ` + euAMI + `" is not REGION=AMI`},
				{"--instance-ami-by-region", "us-west-2 has no AMI"},
			}},
		{name: "file mapping with a list for a single value", args: []string{"--aws-regions", "eu-west-1"},
			file: "instance-ami-by-region: {eu-west-1: [" + euAMI + ", " + euAMI2 + "]}\n",
			want: []want{{"--config", "instance-ami-by-region: region eu-west-1: want one value, not a list"}}},
		{name: "file mapping for a plain setting", file: "instance-ami: {us-east-1: " + euAMI + "}\n",
			want: []want{{"--config", "must be a single value or a list"}}},
		{name: "every problem at once", live: true,
			env:  map[string]string{"TUNNELWARD_AWS_REGIONS": "us-west-2,us-west-2,Mars,ap-south-1", "TUNNELWARD_INSTANCE_SUBNET_BY_REGION": "ca-central-1=" + euSubnet},
			args: []string{"--instance-ami-by-region", "us-west-2=ami-1,oops", "--workers", "0"},
			want: []want{
				{"--aws-regions", "us-west-2 is listed twice"},
				{"--aws-regions", `"Mars" is not an AWS region name`},
				{"--instance-ami-by-region", `entry "oops" is not REGION=AMI`},
				{"--instance-ami-by-region", `us-west-2: "ami-1" is not an AMI id`},
				{"--instance-ami-by-region", "ap-south-1 has no AMI"},
				{"--instance-subnet-by-region", "region ca-central-1 is not served (served: eu-west-1, us-west-2, ap-south-1)"},
				{"--workers", "out of range"},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			if tc.live {
				env = liveEnv()
			}
			for k, v := range tc.env {
				env[k] = v
			}
			args := tc.args
			if tc.file != "" {
				args = append(slices.Clone(args), "--config", writeFile(t, "c.yaml", tc.file))
			}
			_, err := Parse(args, envMap(env))
			if err == nil {
				t.Fatal("Parse accepted wrong region settings")
			}
			probs := problemList(t, err)
			if len(probs) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%v", len(probs), len(tc.want), err)
			}
			used := make([]bool, len(probs))
		next:
			for _, w := range tc.want {
				for i, p := range probs {
					if !used[i] && p.Setting == w.setting && strings.Contains(p.Detail, w.fragment) {
						used[i] = true
						continue next
					}
				}
				t.Errorf("no problem %s: ...%s...; got:\n%v", w.setting, w.fragment, err)
			}
		})
	}
}

func TestRegionSandboxDefaults(t *testing.T) {
	for _, mode := range []string{"sandbox", "http://127.0.0.1:9999"} {
		t.Run(mode, func(t *testing.T) {
			c := parseOK(t, []string{"--cloud", mode, "--aws-regions", "eu-west-1,ap-south-1,us-east-1",
				"--instance-subnet-by-region", "ap-south-1=" + euSubnet,
				"--instance-security-groups-by-region", "eu-west-1=" + euSG1}, nil, "")
			want := map[string]RegionalInstance{
				"eu-west-1":  {AMI: SandboxAMI, Subnet: SandboxSubnet, SecurityGroups: []string{euSG1}},
				"ap-south-1": {AMI: SandboxAMI, Subnet: euSubnet},
			}
			if !reflect.DeepEqual(c.InstanceByRegion, want) {
				t.Fatalf("InstanceByRegion = %+v, want %+v", c.InstanceByRegion, want)
			}
			if c.Source(amiByRegion) != "default" || c.Source(subnetByRgn) != "flag" {
				t.Errorf("sources: ami %s, subnet %s", c.Source(amiByRegion), c.Source(subnetByRgn))
			}
		})
	}
	// Live mode fills nothing: the AMI is required, the subnet is left to
	// the region's default VPC.
	env := liveEnv()
	env["TUNNELWARD_AWS_REGIONS"] = "eu-central-1"
	c := parseOK(t, []string{"--instance-ami-by-region", "eu-central-1=" + euAMI}, env, "")
	if got := c.InstanceByRegion["eu-central-1"]; !reflect.DeepEqual(got, RegionalInstance{AMI: euAMI}) {
		t.Fatalf("live eu-central-1 = %+v, want only the AMI", got)
	}
}

func TestServedRegionsAndInstanceFor(t *testing.T) {
	env := liveEnv() // default region eu-west-1
	env["TUNNELWARD_INSTANCE_SECURITY_GROUPS"] = euSG1
	env["TUNNELWARD_INSTANCE_TYPE"] = "t4g.small"
	args := []string{
		"--aws-regions", "us-west-2,eu-west-1,ap-south-1",
		"--instance-ami-by-region", "us-west-2=" + euAMI2 + ",ap-south-1=" + apAMI,
		"--instance-subnet-by-region", "ap-south-1=" + euSubnet,
		"--instance-security-groups-by-region", "ap-south-1=" + euSG2 + "+" + euSG1,
	}
	c := parseOK(t, args, env, "")
	if got, want := c.ServedRegions(), []string{"eu-west-1", "us-west-2", "ap-south-1"}; !slices.Equal(got, want) {
		t.Fatalf("ServedRegions = %v, want %v", got, want)
	}
	common := func(in Instance) Instance {
		in.Type, in.Profile, in.SSMPathPrefix, in.IngressService = "t4g.small", "tunnelward-instance", DefaultSSMPathPrefix, DefaultIngressService
		return in
	}
	def := common(Instance{AMI: "ami-0abcdef1234567890", Subnet: "subnet-0abcdef1234567890", SecurityGroups: []string{euSG1}})
	cases := []struct {
		region string
		want   Instance
		ok     bool
	}{
		{"eu-west-1", def, true},
		{"", def, true}, // an org that names no region
		{"us-west-2", common(Instance{AMI: euAMI2}), true},
		{"ap-south-1", common(Instance{AMI: apAMI, Subnet: euSubnet, SecurityGroups: []string{euSG2, euSG1}}), true},
		{"eu-central-1", Instance{}, false},
		{"EU-WEST-1", Instance{}, false},
	}
	for _, tc := range cases {
		got, ok := c.InstanceFor(tc.region)
		if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("InstanceFor(%q) = %+v, %v; want %+v, %v", tc.region, got, ok, tc.want, tc.ok)
		}
	}
	// The result is the caller's: changing it changes nothing in c.
	in, _ := c.InstanceFor("ap-south-1")
	in.SecurityGroups[0] = "sg-changed"
	d, _ := c.InstanceFor("eu-west-1")
	d.SecurityGroups[0] = "sg-changed"
	if again, _ := c.InstanceFor("ap-south-1"); again.SecurityGroups[0] != euSG2 || c.Instance.SecurityGroups[0] != euSG1 {
		t.Fatalf("InstanceFor shares slices with the Config")
	}

	// Sandbox mode serves every region of the in-process emulator.
	sb := parseOK(t, nil, nil, "")
	if got := sb.ServedRegions(); !slices.Equal(got, strings.Split(SandboxRegions, ",")) {
		t.Fatalf("sandbox ServedRegions = %v", got)
	}
	if in, ok := sb.InstanceFor("eu-west-1"); !ok || in.AMI != SandboxAMI {
		t.Fatalf("sandbox InstanceFor(eu-west-1) = %+v, %v", in, ok)
	}
	// Otherwise, without extra regions only the default region is served.
	one := parseOK(t, []string{"--cloud", "http://127.0.0.1:8787"}, nil, "")
	if got := one.ServedRegions(); !slices.Equal(got, []string{SandboxAWSRegion}) {
		t.Fatalf("ServedRegions = %v", got)
	}
	if _, ok := one.InstanceFor("eu-west-1"); ok {
		t.Fatalf("an unserved region has instance settings")
	}
	if in, ok := one.InstanceFor(SandboxAWSRegion); !ok || in.AMI != SandboxAMI || in.Subnet != SandboxSubnet {
		t.Fatalf("InstanceFor(default) = %+v, %v", in, ok)
	}
}

func TestRegionSettingsPrinted(t *testing.T) {
	env := liveEnv()
	env["TUNNELWARD_AWS_REGIONS"] = "us-west-2,ap-south-1"
	c := parseOK(t, []string{
		"--instance-ami-by-region", "us-west-2=" + euAMI2 + ",ap-south-1=" + apAMI,
		"--instance-security-groups-by-region", "ap-south-1=" + euSG2 + "+" + euSG1,
	}, env, "")
	want := map[string]Value{
		"aws-regions":              {Name: "aws-regions", Value: "us-west-2,ap-south-1", Source: "env"},
		amiByRegion:                {Name: amiByRegion, Value: "ap-south-1=" + apAMI + ",us-west-2=" + euAMI2, Source: "flag"},
		subnetByRgn:                {Name: subnetByRgn, Value: "", Source: "default"},
		sgsByRegion:                {Name: sgsByRegion, Value: "ap-south-1=" + euSG2 + "+" + euSG1, Source: "flag"},
		"instance-security-groups": {Name: "instance-security-groups", Value: "", Source: "default"},
	}
	got := map[string]Value{}
	for _, v := range c.Values() {
		got[v.Name] = v
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("Values()[%s] = %+v, want %+v", name, got[name], w)
		}
	}
	s := c.String()
	for _, frag := range []string{
		`aws-regions="us-west-2,ap-south-1"`,
		amiByRegion + `="ap-south-1=` + apAMI + `,us-west-2=` + euAMI2 + `"`,
		sgsByRegion + `="ap-south-1=` + euSG2 + `+` + euSG1 + `"`,
	} {
		if !strings.Contains(s, frag) {
			t.Errorf("String() lacks %s:\n%s", frag, s)
		}
	}
	// What Values prints reads back as the same settings.
	var args []string
	for _, v := range c.Values() {
		if v.Source != "default" && strings.HasPrefix(v.Name, "instance-") && strings.HasSuffix(v.Name, "-by-region") {
			args = append(args, "--"+v.Name, v.Value)
		}
	}
	again := parseOK(t, args, env, "")
	if !reflect.DeepEqual(again.InstanceByRegion, c.InstanceByRegion) {
		t.Fatalf("round trip: %+v, want %+v", again.InstanceByRegion, c.InstanceByRegion)
	}
	// The help names the new settings with their environment variables.
	u := strings.Join(strings.Fields(Usage("reconciler")), " ")
	for _, frag := range []string{"--aws-regions REGION,...", "--instance-ami-by-region REGION=AMI,...",
		"--instance-subnet-by-region REGION=SUBNET,...", "--instance-security-groups-by-region REGION=SG+SG,...",
		"TUNNELWARD_AWS_REGIONS", "TUNNELWARD_INSTANCE_SECURITY_GROUPS_BY_REGION"} {
		if !strings.Contains(u, frag) {
			t.Errorf("usage lacks %q", frag)
		}
	}
	if js, err := json.Marshal(c); err != nil || !strings.Contains(string(js), `"InstanceByRegion"`) {
		t.Errorf("JSON of the config lacks InstanceByRegion: %v %s", err, js)
	}
}
