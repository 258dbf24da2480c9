package cloudsim

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The aws CLI against the emulator, as docs/cloudsim.md tells a new user to
// point it: only the sandbox credentials, --endpoint-url and --region. These
// tests run where an aws CLI is on PATH and skip elsewhere (CI installs
// none); the SDK tests cover the same operations everywhere.

type awsCLI struct {
	t   *testing.T
	url string
	env []string
}

func newAWSCLI(t *testing.T, url string) *awsCLI {
	t.Helper()
	if _, err := exec.LookPath("aws"); err != nil {
		t.Skip("no aws CLI on PATH")
	}
	// No config or credentials file and no IMDS: nothing but what the test
	// gives may reach the CLI, whatever the machine's ~/.aws holds. HOME
	// stays, as version managers' shims find their install through it.
	dir := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"AWS_ACCESS_KEY_ID="+DefaultAWSAccessKey, "AWS_SECRET_ACCESS_KEY="+DefaultAWSSecret,
		"AWS_CONFIG_FILE="+filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=", "AWS_MAX_ATTEMPTS=1",
	)
	c := &awsCLI{t: t, url: url, env: env}
	if out, err := c.cmd("--version").CombinedOutput(); err != nil {
		t.Skipf("aws CLI on PATH does not run: %v: %s", err, out)
	}
	return c
}

func (c *awsCLI) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command("aws", args...)
	cmd.Env = c.env
	return cmd
}

// run runs one command against the emulator and decodes its JSON output.
func (c *awsCLI) run(args ...string) map[string]any {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := c.cmd(append(args, "--endpoint-url", c.url, "--region", DefaultRegion, "--output", "json")...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	out := map[string]any{}
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			c.t.Fatalf("aws %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, stdout.String())
		}
	}
	return out
}

// fail runs a command that must fail and returns what it printed.
func (c *awsCLI) fail(args ...string) string {
	c.t.Helper()
	out, err := c.cmd(append(args, "--endpoint-url", c.url, "--region", DefaultRegion, "--output", "json")...).CombinedOutput()
	if err == nil {
		c.t.Fatalf("aws %s succeeded, want a failure:\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

// jpath walks decoded JSON: map keys and list indexes.
func jpath(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// TestAWSCLIFirstHour is what a new user tries in their first hour: who am
// I, launch an instance with IMDSv2 required, find it by a tag's value, list
// its tags, write and read back its token parameter.
func TestAWSCLIFirstHour(t *testing.T) {
	t.Parallel()
	w := newAWSTestWorld(t, Config{BootDelay: time.Second})
	cli := newAWSCLI(t, w.srv.URL)

	id := cli.run("sts", "get-caller-identity")
	if id["Account"] != awsAccountID || id["Arn"] != "arn:aws:iam::"+awsAccountID+":user/sandbox" {
		t.Fatalf("get-caller-identity: %v", id)
	}

	run := cli.run("ec2", "run-instances", "--image-id", testAMI, "--instance-type", "t3.micro", "--count", "1",
		"--metadata-options", "HttpTokens=required",
		"--tag-specifications", "ResourceType=instance,Tags=[{Key=OrgID,Value=acme},{Key=ManagedBy,Value=tunnelward},{Key=Name,Value=tw-acme},{Key=TunnelID,Value=t1},{Key=Team,Value=platform},{Key=Env,Value=sandbox}]")
	iid, _ := jpath(run, "Instances", 0, "InstanceId").(string)
	if iid == "" || jpath(run, "Instances", 0, "MetadataOptions", "HttpTokens") != "required" {
		t.Fatalf("run-instances: %v", run)
	}
	w.clock.Advance(time.Second)

	desc := cli.run("ec2", "describe-instances", "--filters", "Name=tag-value,Values=acme")
	if jpath(desc, "Reservations", 0, "Instances", 0, "InstanceId") != iid ||
		jpath(desc, "Reservations", 0, "Instances", 0, "MetadataOptions", "HttpTokens") != "required" ||
		jpath(desc, "Reservations", 0, "Instances", 0, "MetadataOptions", "State") != "applied" {
		t.Fatalf("describe-instances --filters Name=tag-value,Values=acme: %v", desc)
	}

	// Six tags at five a page: the CLI follows NextToken.
	tags := cli.run("ec2", "describe-tags", "--filters", "Name=resource-id,Values="+iid, "--page-size", "5")
	list, _ := tags["Tags"].([]any)
	if len(list) != 6 || jpath(list, 0, "ResourceId") != iid || jpath(list, 0, "ResourceType") != "instance" {
		t.Fatalf("describe-tags: %v", tags)
	}
	byKey := cli.run("ec2", "describe-tags", "--filters", "Name=key,Values=OrgID", "Name=value,Values=acme")
	if l, _ := byKey["Tags"].([]any); len(l) != 1 || jpath(l, 0, "Value") != "acme" {
		t.Fatalf("describe-tags key/value: %v", byKey)
	}
	if out := cli.fail("ec2", "describe-tags", "--filters", "Name=colour,Values=red"); !strings.Contains(out, "InvalidParameterValue") {
		t.Fatalf("describe-tags with an unknown filter: %s", out)
	}

	cli.run("ssm", "put-parameter", "--name", "/tunnelward/acme/tunnel-token", "--type", "SecureString", "--value", "s3cret")
	got := cli.run("ssm", "get-parameters", "--names", "/tunnelward/acme/tunnel-token", "/tunnelward/nobody/tunnel-token", "--with-decryption")
	if jpath(got, "Parameters", 0, "Value") != "s3cret" || jpath(got, "InvalidParameters", 0) != "/tunnelward/nobody/tunnel-token" {
		t.Fatalf("get-parameters: %v", got)
	}
}
