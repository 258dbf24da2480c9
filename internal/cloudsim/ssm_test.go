package cloudsim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

func putParam(t *testing.T, w *awsTestWorld, name, value string, typ ssmtypes.ParameterType, tags ...string) int64 {
	t.Helper()
	in := &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(value), Type: typ}
	for i := 0; i+1 < len(tags); i += 2 {
		in.Tags = append(in.Tags, ssmtypes.Tag{Key: aws.String(tags[i]), Value: aws.String(tags[i+1])})
	}
	out, err := w.ssm.PutParameter(context.Background(), in)
	if err != nil {
		t.Fatalf("PutParameter %s: %v", name, err)
	}
	return out.Version
}

func TestSSMParameterLifecycle(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	const name = "/tunnelward/acme/tunnel-token"
	const secret = "eyJhIjoiYWNjdCIsInQiOiJ0dW4iLCJzIjoic2VjcmV0In0="
	if v := putParam(t, w, name, secret, ssmtypes.ParameterTypeSecureString, "ManagedBy", "tunnelward", "OrgID", "acme"); v != 1 {
		t.Fatalf("first version %d, want 1", v)
	}

	// Without decryption a SecureString shows an opaque blob, never the value.
	enc, err := w.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
	if err != nil {
		t.Fatalf("GetParameter: %v", err)
	}
	ev := aws.ToString(enc.Parameter.Value)
	if ev == "" || ev == secret || strings.Contains(ev, secret) || strings.Contains(secret, ev) {
		t.Fatalf("undecrypted SecureString value %q reveals the secret", ev)
	}
	dec, err := w.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name), WithDecryption: aws.Bool(true)})
	if err != nil {
		t.Fatalf("GetParameter WithDecryption: %v", err)
	}
	p := dec.Parameter
	if aws.ToString(p.Value) != secret || p.Type != ssmtypes.ParameterTypeSecureString || p.Version != 1 ||
		aws.ToString(p.Name) != name || aws.ToString(p.ARN) != "arn:aws:ssm:us-east-1:123456789012:parameter"+name ||
		p.LastModifiedDate == nil || !p.LastModifiedDate.Equal(w.clock.Now()) || aws.ToString(p.DataType) != "text" {
		t.Fatalf("decrypted parameter: %+v (value ok: %v)", p, aws.ToString(p.Value) == secret)
	}

	// Duplicate create, Tags with Overwrite, then a real overwrite.
	_, err = w.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String("x"), Type: ssmtypes.ParameterTypeSecureString})
	var exists *ssmtypes.ParameterAlreadyExists
	if !errors.As(err, &exists) {
		t.Fatalf("create over an existing parameter: want ParameterAlreadyExists, got %v", err)
	}
	requireAPIError(t, err, "ParameterAlreadyExists", http.StatusBadRequest)
	_, err = w.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String("x"), Type: ssmtypes.ParameterTypeSecureString,
		Overwrite: aws.Bool(true), Tags: []ssmtypes.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
	requireAPIError(t, err, "ValidationException", http.StatusBadRequest)
	w.clock.Advance(time.Minute)
	ov, err := w.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String("rotated"), Type: ssmtypes.ParameterTypeSecureString, Overwrite: aws.Bool(true)})
	if err != nil || ov.Version != 2 || ov.Tier != ssmtypes.ParameterTierStandard {
		t.Fatalf("overwrite: %v %+v", err, ov)
	}
	dec, err = w.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name), WithDecryption: aws.Bool(true)})
	if err != nil || aws.ToString(dec.Parameter.Value) != "rotated" || dec.Parameter.Version != 2 || !dec.Parameter.LastModifiedDate.Equal(w.clock.Now()) {
		t.Fatalf("after overwrite: %v %+v", err, dec)
	}
	// Overwrite keeps the tags given at creation.
	tags, err := w.ssm.ListTagsForResource(ctx, &ssm.ListTagsForResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String(name)})
	if err != nil || len(tags.TagList) != 2 || aws.ToString(tags.TagList[0].Key) != "ManagedBy" || aws.ToString(tags.TagList[1].Value) != "acme" {
		t.Fatalf("ListTagsForResource: %v %+v", err, tags)
	}
	if _, err := w.ssm.AddTagsToResource(ctx, &ssm.AddTagsToResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String(name),
		Tags: []ssmtypes.Tag{{Key: aws.String("TunnelID"), Value: aws.String("c0ffee")}}}); err != nil {
		t.Fatalf("AddTagsToResource: %v", err)
	}
	tags, err = w.ssm.ListTagsForResource(ctx, &ssm.ListTagsForResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String(name)})
	if err != nil || len(tags.TagList) != 3 {
		t.Fatalf("tags after AddTagsToResource: %v %+v", err, tags)
	}
	_, err = w.ssm.ListTagsForResource(ctx, &ssm.ListTagsForResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String("/nope")})
	requireAPIError(t, err, "InvalidResourceId", http.StatusBadRequest)

	// A plain String is returned as is, decryption or not.
	putParam(t, w, "plain", "hello", ssmtypes.ParameterTypeString)
	pl, err := w.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("plain")})
	if err != nil || aws.ToString(pl.Parameter.Value) != "hello" || aws.ToString(pl.Parameter.ARN) != "arn:aws:ssm:us-east-1:123456789012:parameter/plain" {
		t.Fatalf("String parameter: %v %+v", err, pl)
	}

	// Delete, then it is gone.
	if _, err := w.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)}); err != nil {
		t.Fatalf("DeleteParameter: %v", err)
	}
	_, err = w.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name)})
	var nf *ssmtypes.ParameterNotFound
	if !errors.As(err, &nf) {
		t.Fatalf("GetParameter after delete: want ParameterNotFound, got %v", err)
	}
	_, err = w.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)})
	requireAPIError(t, err, "ParameterNotFound", http.StatusBadRequest)
	if got := awsCallCount(w.sim, "ssm.GetParameter", 400); got != 1 {
		t.Fatalf("ssm.GetParameter/400 counted %d, want 1", got)
	}
}

func TestSSMPutParameterValidation(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	cases := []struct {
		name, param, value string
		typ                ssmtypes.ParameterType
		code               string
	}{
		{"aws prefix", "aws-config", "v", ssmtypes.ParameterTypeString, "ValidationException"},
		{"ssm prefix path", "/SSM/x", "v", ssmtypes.ParameterTypeString, "ValidationException"},
		{"not fully qualified", "a/b", "v", ssmtypes.ParameterTypeString, "ValidationException"},
		{"bad characters", "/a/b c", "v", ssmtypes.ParameterTypeString, "ValidationException"},
		{"empty segment", "/a//b", "v", ssmtypes.ParameterTypeString, "ValidationException"},
		{"too long", "/" + strings.Repeat("n", 2048), "v", ssmtypes.ParameterTypeString, "ValidationException"},
		{"too deep", strings.Repeat("/l", 16), "v", ssmtypes.ParameterTypeString, "HierarchyLevelLimitExceededException"},
		{"value too large", "/big", strings.Repeat("v", 4097), ssmtypes.ParameterTypeSecureString, "ValidationException"},
		{"no type", "/untyped", "v", "", "ValidationException"},
		{"bad type", "/badtype", "v", "Number", "ValidationException"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := w.ssm.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(c.param), Value: aws.String(c.value), Type: c.typ})
			requireAPIError(t, err, c.code, http.StatusBadRequest)
		})
	}
	w.sim.mu.Lock()
	n := len(w.sim.params)
	w.sim.mu.Unlock()
	if n != 0 {
		t.Fatalf("refused puts created %d parameters", n)
	}
	// The limits themselves are allowed.
	putParam(t, w, "/max", strings.Repeat("v", 4096), ssmtypes.ParameterTypeSecureString)
	putParam(t, w, strings.Repeat("/l", 15), "v", ssmtypes.ParameterTypeString)
	putParam(t, w, "/tw/a-b_c.d/e", "v", ssmtypes.ParameterTypeString)
}

func TestSSMGetParametersByPathPagination(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	direct := map[string]bool{}
	nested := map[string]bool{}
	for i := 0; i < 23; i++ {
		n := fmt.Sprintf("/tw/org-%02d", i)
		putParam(t, w, n, "v"+n, ssmtypes.ParameterTypeSecureString)
		direct[n] = true
	}
	for i := 0; i < 4; i++ {
		n := fmt.Sprintf("/tw/deep/org-%d/tunnel-token", i)
		putParam(t, w, n, "v"+n, ssmtypes.ParameterTypeString)
		nested[n] = true
	}
	putParam(t, w, "/other/x", "v", ssmtypes.ParameterTypeString)
	putParam(t, w, "/twx", "v", ssmtypes.ParameterTypeString)

	collect := func(recursive bool) (map[string]int, int) {
		seen := map[string]int{}
		pages := 0
		p := ssm.NewGetParametersByPathPaginator(w.ssm, &ssm.GetParametersByPathInput{
			Path: aws.String("/tw"), Recursive: aws.Bool(recursive), WithDecryption: aws.Bool(true), MaxResults: aws.Int32(10)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("GetParametersByPath page %d: %v", pages, err)
			}
			if pages++; pages > 20 {
				t.Fatal("paginator does not terminate")
			}
			if len(page.Parameters) > 10 {
				t.Fatalf("page of %d, MaxResults 10", len(page.Parameters))
			}
			for _, prm := range page.Parameters {
				if aws.ToString(prm.Value) != "v"+aws.ToString(prm.Name) {
					t.Fatalf("%s: value %q not decrypted", aws.ToString(prm.Name), aws.ToString(prm.Value))
				}
				seen[aws.ToString(prm.Name)]++
			}
		}
		return seen, pages
	}
	seen, pages := collect(false)
	if pages != 3 || len(seen) != len(direct) {
		t.Fatalf("one level: %d pages, %d names; want 3 pages, %d names", pages, len(seen), len(direct))
	}
	for n, c := range seen {
		if !direct[n] || c != 1 {
			t.Fatalf("one level: %s seen %d times (direct child: %v)", n, c, direct[n])
		}
	}
	seen, _ = collect(true)
	if len(seen) != len(direct)+len(nested) {
		t.Fatalf("recursive: %d names, want %d", len(seen), len(direct)+len(nested))
	}
	for n, c := range seen {
		if (!direct[n] && !nested[n]) || c != 1 {
			t.Fatalf("recursive: %s seen %d times", n, c)
		}
	}
	// Filters inside the path, and the limits on MaxResults.
	out, err := w.ssm.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/tw/"), Recursive: aws.Bool(true),
		ParameterFilters: []ssmtypes.ParameterStringFilter{{Key: aws.String("Type"), Option: aws.String("Equals"), Values: []string{"String"}}}})
	if err != nil || len(out.Parameters) != 4 || out.NextToken != nil {
		t.Fatalf("Type filter: %v, %d parameters", err, len(out.Parameters))
	}
	_, err = w.ssm.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/tw"), MaxResults: aws.Int32(11)})
	requireAPIError(t, err, "ValidationException", http.StatusBadRequest)
	_, err = w.ssm.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("tw")})
	requireAPIError(t, err, "ValidationException", http.StatusBadRequest)
	_, err = w.ssm.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String("/tw"), NextToken: aws.String("bogus!")})
	requireAPIError(t, err, "InvalidNextToken", http.StatusBadRequest)
}

func TestSSMDescribeParameters(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	for i := 0; i < 12; i++ {
		org := fmt.Sprintf("org-%02d", i)
		putParam(t, w, "/tunnelward/"+org+"/tunnel-token", "secret-"+org, ssmtypes.ParameterTypeSecureString, "ManagedBy", "tunnelward", "OrgID", org)
	}
	putParam(t, w, "/tunnelward/settings", "s", ssmtypes.ParameterTypeString)
	putParam(t, w, "/legacy/acme/token", "t", ssmtypes.ParameterTypeSecureString, "OrgID", "acme")

	describe := func(max int32, filters ...ssmtypes.ParameterStringFilter) ([]string, int) {
		t.Helper()
		var names []string
		pages := 0
		p := ssm.NewDescribeParametersPaginator(w.ssm, &ssm.DescribeParametersInput{ParameterFilters: filters, MaxResults: aws.Int32(max)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("DescribeParameters %+v: %v", filters, err)
			}
			if pages++; pages > 50 {
				t.Fatal("paginator does not terminate")
			}
			for _, m := range page.Parameters {
				names = append(names, aws.ToString(m.Name))
				if m.Type == ssmtypes.ParameterTypeSecureString && aws.ToString(m.KeyId) != "alias/aws/ssm" {
					t.Fatalf("%s: KeyId %q", aws.ToString(m.Name), aws.ToString(m.KeyId))
				}
			}
		}
		return names, pages
	}
	pf := func(key, opt string, values ...string) ssmtypes.ParameterStringFilter {
		f := ssmtypes.ParameterStringFilter{Key: aws.String(key), Values: values}
		if opt != "" {
			f.Option = aws.String(opt)
		}
		return f
	}
	names, pages := describe(5, pf("tag:ManagedBy", "Equals", "tunnelward"))
	if len(names) != 12 || pages != 3 || !sort.StringsAreSorted(names) {
		t.Fatalf("tag:ManagedBy: %d names in %d pages: %v", len(names), pages, names)
	}
	uniq := map[string]bool{}
	for _, n := range names {
		if uniq[n] {
			t.Fatalf("%s listed twice", n)
		}
		uniq[n] = true
	}
	if names, _ := describe(50, pf("tag:OrgID", "", "acme")); len(names) != 1 || names[0] != "/legacy/acme/token" {
		t.Fatalf("tag:OrgID=acme: %v", names)
	}
	if names, _ := describe(50, pf("tag:OrgID", "")); len(names) != 13 {
		t.Fatalf("tag:OrgID present: %d names", len(names))
	}
	if names, _ := describe(50, pf("Name", "BeginsWith", "/tunnelward/org-1")); len(names) != 2 {
		t.Fatalf("Name BeginsWith: %v", names)
	}
	if names, _ := describe(50, pf("Name", "Equals", "/tunnelward/settings")); len(names) != 1 {
		t.Fatalf("Name Equals: %v", names)
	}
	if names, _ := describe(50, pf("Path", "OneLevel", "/tunnelward")); len(names) != 1 || names[0] != "/tunnelward/settings" {
		t.Fatalf("Path OneLevel: %v", names)
	}
	if names, _ := describe(50, pf("Path", "Recursive", "/tunnelward")); len(names) != 13 {
		t.Fatalf("Path Recursive: %d names", len(names))
	}
	if names, _ := describe(50, pf("Type", "Equals", "String")); len(names) != 1 {
		t.Fatalf("Type=String: %v", names)
	}
	if names, _ := describe(50, pf("Path", "Recursive", "/tunnelward"), pf("tag:OrgID", "BeginsWith", "org-0")); len(names) != 10 {
		t.Fatalf("Path + tag BeginsWith: %d names", len(names))
	}
	_, err := w.ssm.DescribeParameters(ctx, &ssm.DescribeParametersInput{ParameterFilters: []ssmtypes.ParameterStringFilter{pf("Colour", "Equals", "red")}})
	requireAPIError(t, err, "InvalidFilterKey", http.StatusBadRequest)
	_, err = w.ssm.DescribeParameters(ctx, &ssm.DescribeParametersInput{ParameterFilters: []ssmtypes.ParameterStringFilter{pf("Path", "BeginsWith", "/x")}})
	requireAPIError(t, err, "InvalidFilterOption", http.StatusBadRequest)
	_, err = w.ssm.DescribeParameters(ctx, &ssm.DescribeParametersInput{MaxResults: aws.Int32(51)})
	requireAPIError(t, err, "ValidationException", http.StatusBadRequest)
}

// runningInstance launches one instance and lets it boot.
func runningInstance(t *testing.T, w *awsTestWorld) string {
	t.Helper()
	out, err := w.ec2.RunInstances(context.Background(), runInput("", map[string]string{"OrgID": "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(w.sim.cfg.BootDelay)
	return aws.ToString(out.Instances[0].InstanceId)
}

func TestSSMSendCommand(t *testing.T) {
	w := newAWSTestWorld(t, Config{BootDelay: time.Second, ShutdownDelay: time.Second, TerminatedRetention: time.Hour})
	ctx := context.Background()
	pending, err := w.ec2.RunInstances(ctx, runInput("", nil))
	if err != nil {
		t.Fatal(err)
	}
	id := runningInstance(t, w) // also boots the first one
	pendingID := aws.ToString(pending.Instances[0].InstanceId)

	sent, err := w.ssm.SendCommand(ctx, &ssm.SendCommandInput{
		DocumentName: aws.String("AWS-RunShellScript"),
		InstanceIds:  []string{id},
		Parameters:   map[string][]string{"commands": {"systemctl restart cloudflared"}},
		Comment:      aws.String("tunnelward: restart cloudflared for acme"),
	})
	if err != nil {
		t.Fatalf("SendCommand: %v", err)
	}
	c := sent.Command
	cmdID := aws.ToString(c.CommandId)
	if cmdID == "" || c.Status != ssmtypes.CommandStatusPending || len(c.InstanceIds) != 1 || c.Parameters["commands"][0] != "systemctl restart cloudflared" ||
		c.RequestedDateTime == nil || !c.RequestedDateTime.Equal(w.clock.Now()) || c.TargetCount != 1 {
		t.Fatalf("SendCommand result: %+v", c)
	}
	// Right after SendCommand the invocation does not exist yet, as on AWS.
	_, err = w.ssm.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: aws.String(cmdID), InstanceId: aws.String(id)})
	requireAPIError(t, err, "InvocationDoesNotExist", http.StatusBadRequest)
	w.clock.Advance(ssmInvocationVisibleDelay)
	inv, err := w.ssm.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: aws.String(cmdID), InstanceId: aws.String(id)})
	if err != nil {
		t.Fatalf("GetCommandInvocation: %v", err)
	}
	if inv.Status != ssmtypes.CommandInvocationStatusInProgress || inv.ResponseCode != -1 {
		t.Fatalf("invocation right after send: %v code %d", inv.Status, inv.ResponseCode)
	}
	w.clock.Advance(time.Second)
	inv, err = w.ssm.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: aws.String(cmdID), InstanceId: aws.String(id)})
	if err != nil {
		t.Fatalf("GetCommandInvocation: %v", err)
	}
	// The world's shell decides stdout and the exit code; the status follows
	// the exit code.
	w.sim.mu.Lock()
	wantOut, wantCode := w.sim.commands[cmdID].Invocations[id].StdOut, w.sim.commands[cmdID].Invocations[id].ExitCode
	w.sim.mu.Unlock()
	wantStatus := ssmtypes.CommandInvocationStatusSuccess
	if wantCode != 0 {
		wantStatus = ssmtypes.CommandInvocationStatusFailed
	}
	if inv.Status != wantStatus || inv.ResponseCode != wantCode || aws.ToString(inv.StandardOutputContent) != wantOut ||
		aws.ToString(inv.StatusDetails) != string(wantStatus) || aws.ToString(inv.ExecutionEndDateTime) == "" ||
		aws.ToString(inv.DocumentName) != "AWS-RunShellScript" || aws.ToString(inv.PluginName) != "aws:runShellScript" {
		t.Fatalf("finished invocation: %+v (want %v, code %d)", inv, wantStatus, wantCode)
	}

	// Error paths.
	_, err = w.ssm.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{"i-0123456789abcdef0"},
		Parameters: map[string][]string{"commands": {"true"}}})
	requireAPIError(t, err, "InvalidInstanceId", http.StatusBadRequest)
	if _, err := w.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{pendingID}}); err != nil {
		t.Fatal(err)
	}
	_, err = w.ssm.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{pendingID},
		Parameters: map[string][]string{"commands": {"true"}}})
	requireAPIError(t, err, "InvalidInstanceId", http.StatusBadRequest)
	_, err = w.ssm.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunPowerShellScript"), InstanceIds: []string{id},
		Parameters: map[string][]string{"commands": {"true"}}})
	requireAPIError(t, err, "InvalidDocument", http.StatusBadRequest)
	_, err = w.ssm.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{id}})
	requireAPIError(t, err, "InvalidParameters", http.StatusBadRequest)
	_, err = w.ssm.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{id},
		Parameters: map[string][]string{"commands": {"true"}}, TimeoutSeconds: aws.Int32(5)})
	requireAPIError(t, err, "ValidationException", http.StatusBadRequest)
	_, err = w.ssm.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: aws.String("00000000-0000-4000-a000-000000000000"), InstanceId: aws.String(id)})
	var dne *ssmtypes.InvocationDoesNotExist
	if !errors.As(err, &dne) {
		t.Fatalf("unknown command: want InvocationDoesNotExist, got %v", err)
	}
	_, err = w.ssm.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: aws.String(cmdID), InstanceId: aws.String(pendingID)})
	requireAPIError(t, err, "InvocationDoesNotExist", http.StatusBadRequest)

	// An instance that stops before the script runs fails the invocation.
	sent, err = w.ssm.SendCommand(ctx, &ssm.SendCommandInput{DocumentName: aws.String("AWS-RunShellScript"), InstanceIds: []string{id},
		Parameters: map[string][]string{"commands": {"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(time.Second)
	inv, err = w.ssm.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{CommandId: sent.Command.CommandId, InstanceId: aws.String(id)})
	if err != nil || inv.Status != ssmtypes.CommandInvocationStatusFailed {
		t.Fatalf("invocation on a stopped instance: %v %+v", err, inv)
	}
}

func TestSSMAuth(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	_, badKey := AWSTestClients(t, w.srv.URL, func(o *AWSTestOptions) { o.AccessKey = "AKIAWRONGWRONGWRONG" })
	_, err := badKey.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/x")})
	requireAPIError(t, err, "UnrecognizedClientException", http.StatusBadRequest)
	_, badSecret := AWSTestClients(t, w.srv.URL, func(o *AWSTestOptions) { o.Secret = "wrong" })
	_, err = badSecret.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/x"), Value: aws.String("v"), Type: ssmtypes.ParameterTypeString})
	requireAPIError(t, err, "InvalidSignatureException", http.StatusBadRequest)
	w.sim.mu.Lock()
	n := len(w.sim.params)
	w.sim.mu.Unlock()
	if n != 0 {
		t.Fatal("a badly signed PutParameter was applied")
	}
}

// The listing order is cached between pages; a parameter added or deleted
// between two listings (or mid-listing) is seen, and nothing is listed twice.
func TestSSMListingFollowsChanges(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	names := func() []string {
		t.Helper()
		var out []string
		p := ssm.NewDescribeParametersPaginator(w.ssm, &ssm.DescribeParametersInput{MaxResults: aws.Int32(2)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range page.Parameters {
				out = append(out, aws.ToString(m.Name))
			}
		}
		return out
	}
	for _, n := range []string{"/p/b", "/p/d", "/p/f"} {
		putParam(t, w, n, "v", ssmtypes.ParameterTypeString)
	}
	if got := strings.Join(names(), ","); got != "/p/b,/p/d,/p/f" {
		t.Fatalf("first listing: %s", got)
	}
	if _, err := w.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String("/p/d")}); err != nil {
		t.Fatal(err)
	}
	putParam(t, w, "/p/a", "v", ssmtypes.ParameterTypeString)
	putParam(t, w, "/p/e", "v", ssmtypes.ParameterTypeString)
	if got := strings.Join(names(), ","); got != "/p/a,/p/b,/p/e,/p/f" {
		t.Fatalf("after delete and puts: %s", got)
	}
}
