package cloudsim

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

const testAMI = "ami-0123456789abcdef0"

func runInput(token string, tags map[string]string) *ec2.RunInstancesInput {
	in := &ec2.RunInstancesInput{
		ImageId:            aws.String(testAMI),
		InstanceType:       types.InstanceTypeT3Micro,
		MinCount:           aws.Int32(1),
		MaxCount:           aws.Int32(1),
		UserData:           aws.String(base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\nTUNNEL_TOKEN_PARAMETER='/tunnelward/acme/tunnel-token'\n"))),
		IamInstanceProfile: &types.IamInstanceProfileSpecification{Name: aws.String("tunnelward-instance")},
		SubnetId:           aws.String("subnet-0a1b2c3d"),
		SecurityGroupIds:   []string{"sg-0a1b2c3d", "sg-1a2b3c4d"},
	}
	if token != "" {
		in.ClientToken = aws.String(token)
	}
	if len(tags) > 0 {
		ts := types.TagSpecification{ResourceType: types.ResourceTypeInstance}
		for k, v := range tags {
			ts.Tags = append(ts.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in.TagSpecifications = []types.TagSpecification{ts}
	}
	return in
}

func describeOne(t *testing.T, w *awsTestWorld, id string) types.Instance {
	t.Helper()
	out, err := w.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatalf("DescribeInstances %s: %v", id, err)
	}
	if len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
		t.Fatalf("DescribeInstances %s: want one reservation with one instance, got %+v", id, out.Reservations)
	}
	return out.Reservations[0].Instances[0]
}

func tagMap(tags []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func TestEC2RunInstancesLifecycle(t *testing.T) {
	w := newAWSTestWorld(t, Config{BootDelay: 10 * time.Second, ShutdownDelay: 5 * time.Second, TerminatedRetention: time.Hour})
	ctx := context.Background()
	run, err := w.ec2.RunInstances(ctx, runInput("tok-1", map[string]string{"ManagedBy": "tunnelward", "OrgID": "acme"}))
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	if !strings.HasPrefix(aws.ToString(run.ReservationId), "r-") || aws.ToString(run.OwnerId) == "" || len(run.Instances) != 1 {
		t.Fatalf("RunInstances reservation: %+v", run)
	}
	inst := run.Instances[0]
	id := aws.ToString(inst.InstanceId)
	if !reInstanceID.MatchString(id) {
		t.Fatalf("instance id %q is not shaped like i-<17 hex>", id)
	}
	if inst.State.Name != types.InstanceStateNamePending || aws.ToInt32(inst.State.Code) != 0 {
		t.Fatalf("new instance state %v/%d, want pending/0", inst.State.Name, aws.ToInt32(inst.State.Code))
	}
	if inst.InstanceType != types.InstanceTypeT3Micro || aws.ToString(inst.ImageId) != testAMI ||
		aws.ToString(inst.SubnetId) != "subnet-0a1b2c3d" || aws.ToString(inst.ClientToken) != "tok-1" ||
		aws.ToString(inst.PrivateIpAddress) == "" || inst.LaunchTime == nil || !inst.LaunchTime.Equal(w.clock.Now()) {
		t.Fatalf("instance fields not echoed: %+v", inst)
	}
	if len(inst.SecurityGroups) != 2 || aws.ToString(inst.SecurityGroups[1].GroupId) != "sg-1a2b3c4d" {
		t.Fatalf("security groups: %+v", inst.SecurityGroups)
	}
	if inst.IamInstanceProfile == nil || !strings.HasSuffix(aws.ToString(inst.IamInstanceProfile.Arn), ":instance-profile/tunnelward-instance") {
		t.Fatalf("iam instance profile: %+v", inst.IamInstanceProfile)
	}
	if got := tagMap(inst.Tags); got["OrgID"] != "acme" || got["ManagedBy"] != "tunnelward" || len(got) != 2 {
		t.Fatalf("tags: %v", got)
	}
	// The emulator keeps user-data exactly as sent (base64).
	w.sim.mu.Lock()
	ud := w.sim.instances[id].UserData
	w.sim.mu.Unlock()
	if raw, _ := base64.StdEncoding.DecodeString(ud); !strings.Contains(string(raw), "TUNNEL_TOKEN_PARAMETER=") {
		t.Fatalf("user data not kept: %q", ud)
	}

	w.clock.Advance(9 * time.Second)
	if got := describeOne(t, w, id); got.State.Name != types.InstanceStateNamePending {
		t.Fatalf("before boot delay: %v", got.State.Name)
	}
	w.clock.Advance(time.Second)
	if got := describeOne(t, w, id); got.State.Name != types.InstanceStateNameRunning || aws.ToInt32(got.State.Code) != 16 {
		t.Fatalf("after boot delay: %v/%d", got.State.Name, aws.ToInt32(got.State.Code))
	}

	term, err := w.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatalf("TerminateInstances: %v", err)
	}
	if len(term.TerminatingInstances) != 1 {
		t.Fatalf("TerminatingInstances: %+v", term.TerminatingInstances)
	}
	ch := term.TerminatingInstances[0]
	if aws.ToString(ch.InstanceId) != id || ch.PreviousState.Name != types.InstanceStateNameRunning || aws.ToInt32(ch.PreviousState.Code) != 16 ||
		ch.CurrentState.Name != types.InstanceStateNameShuttingDown || aws.ToInt32(ch.CurrentState.Code) != 32 {
		t.Fatalf("state change: prev %v/%d cur %v/%d", ch.PreviousState.Name, aws.ToInt32(ch.PreviousState.Code), ch.CurrentState.Name, aws.ToInt32(ch.CurrentState.Code))
	}
	// Terminating twice is harmless and reports the current state.
	term2, err := w.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	if err != nil || term2.TerminatingInstances[0].CurrentState.Name != types.InstanceStateNameShuttingDown {
		t.Fatalf("second terminate: %v %+v", err, term2)
	}
	w.clock.Advance(5 * time.Second)
	got := describeOne(t, w, id)
	if got.State.Name != types.InstanceStateNameTerminated || aws.ToInt32(got.State.Code) != 48 || got.StateReason == nil {
		t.Fatalf("after shutdown delay: %v/%d reason %+v", got.State.Name, aws.ToInt32(got.State.Code), got.StateReason)
	}
	// Terminated stays visible for the retention, then is gone.
	w.clock.Advance(59 * time.Minute)
	describeOne(t, w, id)
	w.clock.Advance(time.Minute)
	_, err = w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)
	all, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil || len(all.Reservations) != 0 {
		t.Fatalf("after retention DescribeInstances: %v %+v", err, all.Reservations)
	}
	if n := awsCallCount(w.sim, "ec2.DescribeInstances", 400); n != 1 {
		t.Fatalf("call counter ec2.DescribeInstances/400 = %d, want 1", n)
	}
	if n := awsCallCount(w.sim, "ec2.RunInstances", 200); n != 1 {
		t.Fatalf("call counter ec2.RunInstances/200 = %d, want 1", n)
	}
}

func TestEC2StopAndTerminateHelpers(t *testing.T) {
	w := newAWSTestWorld(t, Config{BootDelay: time.Second, ShutdownDelay: 2 * time.Second, TerminatedRetention: time.Hour})
	ctx := context.Background()
	run, err := w.ec2.RunInstances(ctx, runInput("", nil))
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	w.clock.Advance(time.Second)
	w.sim.Tick()

	w.sim.mu.Lock()
	w.sim.stopInstanceLocked(w.sim.instances[id])
	w.sim.mu.Unlock()
	if got := describeOne(t, w, id); got.State.Name != types.InstanceStateNameStopping || aws.ToInt32(got.State.Code) != 64 {
		t.Fatalf("after stop: %v/%d", got.State.Name, aws.ToInt32(got.State.Code))
	}
	w.clock.Advance(2 * time.Second)
	if got := describeOne(t, w, id); got.State.Name != types.InstanceStateNameStopped || aws.ToInt32(got.State.Code) != 80 {
		t.Fatalf("after stop delay: %v/%d", got.State.Name, aws.ToInt32(got.State.Code))
	}
	// A stopped instance cannot be rebooted, but can be terminated.
	_, err = w.ec2.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: []string{id}})
	requireAPIError(t, err, "IncorrectInstanceState", http.StatusBadRequest)
	w.sim.mu.Lock()
	w.sim.terminateInstanceLocked(w.sim.instances[id])
	w.sim.mu.Unlock()
	if got := describeOne(t, w, id); got.State.Name != types.InstanceStateNameShuttingDown {
		t.Fatalf("after terminate: %v", got.State.Name)
	}
	w.clock.Advance(2 * time.Second)
	if got := describeOne(t, w, id); got.State.Name != types.InstanceStateNameTerminated {
		t.Fatalf("after terminate delay: %v", got.State.Name)
	}

	// StopInstances through the API as well.
	run2, err := w.ec2.RunInstances(ctx, runInput("", nil))
	if err != nil {
		t.Fatal(err)
	}
	id2 := aws.ToString(run2.Instances[0].InstanceId)
	w.clock.Advance(time.Second)
	st, err := w.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id2}})
	if err != nil || st.StoppingInstances[0].CurrentState.Name != types.InstanceStateNameStopping ||
		st.StoppingInstances[0].PreviousState.Name != types.InstanceStateNameRunning {
		t.Fatalf("StopInstances: %v %+v", err, st)
	}
	_, err = w.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
	requireAPIError(t, err, "IncorrectInstanceState", http.StatusBadRequest)
}

func TestEC2ClientTokenIdempotency(t *testing.T) {
	w := newAWSTestWorld(t, Config{BootDelay: time.Second, ShutdownDelay: time.Second, TerminatedRetention: time.Hour})
	ctx := context.Background()
	tags := map[string]string{"OrgID": "acme"}
	first, err := w.ec2.RunInstances(ctx, runInput("acme-gen-1", tags))
	if err != nil {
		t.Fatal(err)
	}
	again, err := w.ec2.RunInstances(ctx, runInput("acme-gen-1", tags))
	if err != nil {
		t.Fatalf("repeat with same token: %v", err)
	}
	if aws.ToString(again.ReservationId) != aws.ToString(first.ReservationId) ||
		aws.ToString(again.Instances[0].InstanceId) != aws.ToString(first.Instances[0].InstanceId) {
		t.Fatalf("same token gave a new reservation: %s/%s vs %s/%s", aws.ToString(again.ReservationId),
			aws.ToString(again.Instances[0].InstanceId), aws.ToString(first.ReservationId), aws.ToString(first.Instances[0].InstanceId))
	}
	w.sim.mu.Lock()
	n := len(w.sim.instances)
	w.sim.mu.Unlock()
	if n != 1 {
		t.Fatalf("same token launched %d instances, want 1", n)
	}

	// Same token, changed parameters.
	changed := runInput("acme-gen-1", tags)
	changed.InstanceType = types.InstanceTypeT3Small
	_, err = w.ec2.RunInstances(ctx, changed)
	requireAPIError(t, err, "IdempotentParameterMismatch", http.StatusBadRequest)
	_, err = w.ec2.RunInstances(ctx, runInput("acme-gen-1", map[string]string{"OrgID": "other"}))
	requireAPIError(t, err, "IdempotentParameterMismatch", http.StatusBadRequest)

	// Tokens are case-sensitive.
	other, err := w.ec2.RunInstances(ctx, runInput("ACME-gen-1", tags))
	if err != nil || aws.ToString(other.ReservationId) == aws.ToString(first.ReservationId) {
		t.Fatalf("different-case token: %v, reservation %s", err, aws.ToString(other.ReservationId))
	}

	// The token still answers with the original reservation after the
	// instance terminated and even after it dropped out of DescribeInstances.
	id := aws.ToString(first.Instances[0].InstanceId)
	if _, err := w.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(2 * time.Hour)
	if _, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}); err == nil {
		t.Fatal("terminated instance still visible after retention")
	}
	w.clock.Advance(22 * time.Hour)
	late, err := w.ec2.RunInstances(ctx, runInput("acme-gen-1", tags))
	if err != nil {
		t.Fatalf("token after 24h: %v", err)
	}
	if aws.ToString(late.ReservationId) != aws.ToString(first.ReservationId) || len(late.Instances) != 1 ||
		late.Instances[0].State.Name != types.InstanceStateNameTerminated {
		t.Fatalf("token after termination: reservation %s instances %+v", aws.ToString(late.ReservationId), late.Instances)
	}
	// Once the token has been terminated for 24 h, it launches anew.
	w.clock.Advance(time.Second)
	fresh, err := w.ec2.RunInstances(ctx, runInput("acme-gen-1", tags))
	if err != nil {
		t.Fatalf("token after expiry: %v", err)
	}
	if aws.ToString(fresh.ReservationId) == aws.ToString(first.ReservationId) || fresh.Instances[0].State.Name != types.InstanceStateNamePending {
		t.Fatalf("expired token reused reservation %s", aws.ToString(fresh.ReservationId))
	}

	// Token shape.
	_, err = w.ec2.RunInstances(ctx, runInput(strings.Repeat("x", 65), tags))
	requireAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	if _, err := w.ec2.RunInstances(ctx, runInput(strings.Repeat("x", 64), tags)); err != nil {
		t.Fatalf("64-char token: %v", err)
	}
}

func TestEC2RunInstancesValidation(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	cases := []struct {
		name string
		mod  func(*ec2.RunInstancesInput)
		code string
	}{
		{"user data not base64", func(in *ec2.RunInstancesInput) { in.UserData = aws.String("#!/bin/sh\necho hi") }, "InvalidParameterValue"},
		{"user data too large", func(in *ec2.RunInstancesInput) {
			in.UserData = aws.String(base64.StdEncoding.EncodeToString(make([]byte, 16*1024+1)))
		}, "InvalidParameterValue"},
		{"malformed ami", func(in *ec2.RunInstancesInput) { in.ImageId = aws.String("ubuntu") }, "InvalidAMIID.Malformed"},
		{"missing ami", func(in *ec2.RunInstancesInput) { in.ImageId = nil }, "MissingParameter"},
		{"min > max", func(in *ec2.RunInstancesInput) { in.MinCount = aws.Int32(3) }, "InvalidParameterValue"},
		{"bad instance type", func(in *ec2.RunInstancesInput) { in.InstanceType = "huge" }, "InvalidParameterValue"},
		{"reserved tag", func(in *ec2.RunInstancesInput) {
			in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("aws:x"), Value: aws.String("y")}}}}
		}, "InvalidParameterValue"},
		{"bad subnet", func(in *ec2.RunInstancesInput) { in.SubnetId = aws.String("net-1") }, "InvalidSubnetID.Malformed"},
		{"bad group", func(in *ec2.RunInstancesInput) { in.SecurityGroupIds = []string{"web"} }, "InvalidGroupId.Malformed"},
		{"subnet both on instance and interface", func(in *ec2.RunInstancesInput) {
			in.NetworkInterfaces = []types.InstanceNetworkInterfaceSpecification{{DeviceIndex: aws.Int32(0), SubnetId: aws.String("subnet-0a1b2c3d")}}
		}, "InvalidParameterCombination"},
		{"interface not primary", func(in *ec2.RunInstancesInput) {
			in.SubnetId, in.SecurityGroupIds = nil, nil
			in.NetworkInterfaces = []types.InstanceNetworkInterfaceSpecification{{DeviceIndex: aws.Int32(1), SubnetId: aws.String("subnet-0a1b2c3d")}}
		}, "InvalidParameterValue"},
		{"bad subnet on interface", func(in *ec2.RunInstancesInput) {
			in.SubnetId, in.SecurityGroupIds = nil, nil
			in.NetworkInterfaces = []types.InstanceNetworkInterfaceSpecification{{DeviceIndex: aws.Int32(0), SubnetId: aws.String("net-1")}}
		}, "InvalidSubnetID.Malformed"},
		{"profile name and arn", func(in *ec2.RunInstancesInput) {
			in.IamInstanceProfile.Arn = aws.String("arn:aws:iam::123456789012:instance-profile/x")
		}, "InvalidParameterCombination"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := runInput("", nil)
			c.mod(in)
			_, err := w.ec2.RunInstances(ctx, in)
			requireAPIError(t, err, c.code, http.StatusBadRequest)
		})
	}
	w.sim.mu.Lock()
	n := len(w.sim.instances)
	w.sim.mu.Unlock()
	if n != 0 {
		t.Fatalf("refused requests launched %d instances", n)
	}
	// The profile can also be named by ARN.
	in := runInput("", nil)
	in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: aws.String("arn:aws:iam::123456789012:instance-profile/by-arn")}
	out, err := w.ec2.RunInstances(ctx, in)
	if err != nil || aws.ToString(out.Instances[0].IamInstanceProfile.Arn) != "arn:aws:iam::123456789012:instance-profile/by-arn" {
		t.Fatalf("profile by ARN: %v %+v", err, out)
	}
}

func TestEC2DescribeFiltersAndErrors(t *testing.T) {
	w := newAWSTestWorld(t, Config{BootDelay: time.Second, ShutdownDelay: time.Minute, TerminatedRetention: time.Hour})
	ctx := context.Background()
	ids := map[string]string{}
	for _, org := range []string{"acme", "beta", "gamma"} {
		out, err := w.ec2.RunInstances(ctx, runInput("", map[string]string{"ManagedBy": "tunnelward", "OrgID": org}))
		if err != nil {
			t.Fatal(err)
		}
		ids[org] = aws.ToString(out.Instances[0].InstanceId)
	}
	unowned, err := w.ec2.RunInstances(ctx, runInput("", map[string]string{"Team": "web"}))
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(time.Second)
	if _, err := w.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{ids["gamma"]}}); err != nil {
		t.Fatal(err)
	}

	find := func(filters ...types.Filter) []string {
		t.Helper()
		var got []string
		p := ec2.NewDescribeInstancesPaginator(w.ec2, &ec2.DescribeInstancesInput{Filters: filters})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("DescribeInstances %+v: %v", filters, err)
			}
			for _, r := range page.Reservations {
				for _, i := range r.Instances {
					got = append(got, aws.ToString(i.InstanceId))
				}
			}
		}
		sort.Strings(got)
		return got
	}
	f := func(name string, values ...string) types.Filter {
		return types.Filter{Name: aws.String(name), Values: values}
	}
	sorted := func(v ...string) []string { sort.Strings(v); return v }
	check := func(what string, got, want []string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
	check("tag:OrgID=acme", find(f("tag:OrgID", "acme")), []string{ids["acme"]})
	check("tag:OrgID=acme|beta", find(f("tag:OrgID", "acme", "beta")), sorted(ids["acme"], ids["beta"]))
	check("tag:OrgID wildcard", find(f("tag:OrgID", "*a")), sorted(ids["beta"], ids["gamma"]))
	check("tag:OrgID single-char wildcard", find(f("tag:OrgID", "ac?e")), []string{ids["acme"]})
	check("tag-key=Team", find(f("tag-key", "Team")), []string{aws.ToString(unowned.Instances[0].InstanceId)})
	check("managed and running", find(f("tag:ManagedBy", "tunnelward"), f("instance-state-name", "running")), sorted(ids["acme"], ids["beta"]))
	check("shutting-down", find(f("instance-state-name", "shutting-down")), []string{ids["gamma"]})
	check("no match", find(f("tag:OrgID", "nobody")), nil)

	_, err = w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{f("colour", "red")}})
	requireAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	_, err = w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)
	_, err = w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"nope"}})
	requireAPIError(t, err, "InvalidInstanceID.Malformed", http.StatusBadRequest)
	_, err = w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{ids["acme"]}, MaxResults: aws.Int32(5)})
	requireAPIError(t, err, "InvalidParameterCombination", http.StatusBadRequest)
	_, err = w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(4)})
	requireAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	_, err = w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{NextToken: aws.String("garbage")})
	requireAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	_, err = w.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{ids["acme"], "i-0123456789abcdef0"}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)
	if got := describeOne(t, w, ids["acme"]); got.State.Name != types.InstanceStateNameRunning {
		t.Fatalf("a refused TerminateInstances changed a listed instance: %v", got.State.Name)
	}
}

func TestEC2DescribePagination(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	want := map[string]string{} // instance id -> reservation id
	for i := 0; i < 7; i++ {
		in := runInput(fmt.Sprintf("tok-%d", i), map[string]string{"OrgID": fmt.Sprintf("org-%d", i)})
		in.MinCount, in.MaxCount = aws.Int32(1), aws.Int32(int32(1+i%3)) // reservations of 1..3 instances
		out, err := w.ec2.RunInstances(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, inst := range out.Instances {
			want[aws.ToString(inst.InstanceId)] = aws.ToString(out.ReservationId)
		}
		w.clock.Advance(time.Millisecond)
	}
	if len(want) != 13 {
		t.Fatalf("launched %d instances, want 13", len(want))
	}
	seen := map[string]int{}
	pages := 0
	p := ec2.NewDescribeInstancesPaginator(w.ec2, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		if pages > 10 {
			t.Fatal("paginator does not terminate")
		}
		n := 0
		for _, r := range page.Reservations {
			for _, inst := range r.Instances {
				id := aws.ToString(inst.InstanceId)
				if want[id] != aws.ToString(r.ReservationId) {
					t.Fatalf("instance %s grouped under reservation %s, launched in %s", id, aws.ToString(r.ReservationId), want[id])
				}
				seen[id]++
				n++
			}
		}
		if n > 5 {
			t.Fatalf("page %d holds %d instances, MaxResults 5", pages, n)
		}
	}
	if pages != 3 {
		t.Fatalf("13 instances at 5 a page took %d pages, want 3", pages)
	}
	for id := range want {
		if seen[id] != 1 {
			t.Fatalf("instance %s seen %d times", id, seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("saw %d distinct instances, want %d", len(seen), len(want))
	}
}

func TestEC2CreateTagsAndReboot(t *testing.T) {
	w := newAWSTestWorld(t, Config{BootDelay: time.Second})
	ctx := context.Background()
	out, err := w.ec2.RunInstances(ctx, runInput("", map[string]string{"OrgID": "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	_, err = w.ec2.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: []string{id}})
	requireAPIError(t, err, "IncorrectInstanceState", http.StatusBadRequest)

	_, err = w.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{
		{Key: aws.String("TunnelID"), Value: aws.String("c0ffee")}, {Key: aws.String("OrgID"), Value: aws.String("acme2")}, {Key: aws.String("Empty")},
	}})
	if err != nil {
		t.Fatalf("CreateTags: %v", err)
	}
	got := tagMap(describeOne(t, w, id).Tags)
	if got["TunnelID"] != "c0ffee" || got["OrgID"] != "acme2" || got["Empty"] != "" || len(got) != 3 {
		t.Fatalf("tags after CreateTags: %v", got)
	}
	_, err = w.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"i-0123456789abcdef0"}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
	requireAPIError(t, err, "InvalidInstanceID.NotFound", http.StatusBadRequest)
	_, err = w.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"vol-1"}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
	requireAPIError(t, err, "InvalidID", http.StatusBadRequest)
	many := make([]types.Tag, 0, 50)
	for i := 0; i < 48; i++ {
		many = append(many, types.Tag{Key: aws.String(fmt.Sprintf("k%d", i)), Value: aws.String("v")})
	}
	_, err = w.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: many})
	requireAPIError(t, err, "TagLimitExceeded", http.StatusBadRequest)

	w.clock.Advance(time.Second)
	if _, err := w.ec2.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatalf("RebootInstances: %v", err)
	}
	if got := describeOne(t, w, id); got.State.Name != types.InstanceStateNameRunning {
		t.Fatalf("rebooting instance shows %v, want running", got.State.Name)
	}
}

func TestEC2Auth(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	badKey, _ := AWSTestClients(t, w.srv.URL, func(o *AWSTestOptions) { o.AccessKey = "AKIAWRONGWRONGWRONG" })
	_, err := badKey.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	requireAPIError(t, err, "AuthFailure", http.StatusUnauthorized)
	badSecret, _ := AWSTestClients(t, w.srv.URL, func(o *AWSTestOptions) { o.Secret = "not-the-secret" })
	_, err = badSecret.RunInstances(ctx, runInput("", nil))
	requireAPIError(t, err, "SignatureDoesNotMatch", http.StatusForbidden)
	badRegion, _ := AWSTestClients(t, w.srv.URL, func(o *AWSTestOptions) { o.Region = "eu-west-1" })
	_, err = badRegion.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	requireAPIError(t, err, "SignatureDoesNotMatch", http.StatusForbidden)
	w.sim.mu.Lock()
	n := len(w.sim.instances)
	w.sim.mu.Unlock()
	if n != 0 {
		t.Fatalf("unauthenticated RunInstances launched %d instances", n)
	}
	if got := awsCallCount(w.sim, "ec2.DescribeInstances", 401); got != 1 {
		t.Fatalf("ec2.DescribeInstances/401 counted %d, want 1", got)
	}

	// Hand-signed requests: a good signature passes, a signature from an
	// hour ago is expired, and a body altered after signing is refused.
	sign := func(body string, at time.Time) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, w.srv.URL+"/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		sum := sha256.Sum256([]byte(body))
		err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: DefaultAWSAccessKey, SecretAccessKey: DefaultAWSSecret},
			req, hex.EncodeToString(sum[:]), "ec2", DefaultRegion, at)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	do := func(req *http.Request) (int, string) {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const describe = "Action=DescribeInstances&Version=2016-11-15"
	if st, body := do(sign(describe, time.Now())); st != http.StatusOK || !strings.Contains(body, "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">") {
		t.Fatalf("hand-signed request: HTTP %d %s", st, body)
	}
	if st, body := do(sign(describe, time.Now().Add(-time.Hour))); st != http.StatusBadRequest || !strings.Contains(body, "<Code>RequestExpired</Code>") {
		t.Fatalf("hour-old signature: HTTP %d %s", st, body)
	}
	req := sign(describe, time.Now())
	req.Body = io.NopCloser(strings.NewReader("Action=DescribeInstances&Version=2016-11-15&MaxResults=5"))
	req.ContentLength = int64(len("Action=DescribeInstances&Version=2016-11-15&MaxResults=5"))
	req.Header.Del("Content-Length")
	if st, body := do(req); st != http.StatusForbidden || !strings.Contains(body, "<Code>SignatureDoesNotMatch</Code>") {
		t.Fatalf("altered body: HTTP %d %s", st, body)
	}
	noAuth, _ := http.NewRequest(http.MethodPost, w.srv.URL+"/", strings.NewReader(describe))
	noAuth.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if st, body := do(noAuth); st != http.StatusUnauthorized || !strings.Contains(body, "<Code>AuthFailure</Code>") || !strings.Contains(body, "<RequestID>") {
		t.Fatalf("unsigned request: HTTP %d %s", st, body)
	}
}

// Racing retries with one token launch one instance, and the order of tags
// or security groups is not a "different parameter".
func TestEC2ClientTokenConcurrentAndOrder(t *testing.T) {
	w := newAWSTestWorld(t, Config{BootDelay: time.Second})
	ctx := context.Background()
	tags := map[string]string{"ManagedBy": "tunnelward", "OrgID": "acme", "TunnelID": "c0ffee", "Name": "tw-acme"}
	const racers = 8
	res := make(chan string, racers)
	errs := make(chan error, racers)
	for i := 0; i < racers; i++ {
		go func() {
			out, err := w.ec2.RunInstances(ctx, runInput("acme-1", tags)) // map order differs per call
			if err != nil {
				errs <- err
				return
			}
			res <- aws.ToString(out.Instances[0].InstanceId)
		}()
	}
	var first string
	for i := 0; i < racers; i++ {
		select {
		case err := <-errs:
			t.Fatalf("racing RunInstances: %v", err)
		case id := <-res:
			if first == "" {
				first = id
			} else if id != first {
				t.Fatalf("racing RunInstances with one token gave %s and %s", first, id)
			}
		}
	}
	in := runInput("acme-1", tags)
	in.SecurityGroupIds = []string{"sg-1a2b3c4d", "sg-0a1b2c3d"}
	out, err := w.ec2.RunInstances(ctx, in)
	if err != nil || aws.ToString(out.Instances[0].InstanceId) != first {
		t.Fatalf("reordered security groups: %v", err)
	}
	w.sim.mu.Lock()
	n := len(w.sim.instances)
	w.sim.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d instances for one token, want 1", n)
	}
}

// A launch placed through its primary network interface keeps that interface's
// subnet and groups, and gets a public address only when it asked for one.
func TestEC2RunInstancesNetworkInterface(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	ctx := context.Background()
	for _, public := range []bool{false, true} {
		in := runInput("", nil)
		in.SubnetId, in.SecurityGroupIds = nil, nil
		in.NetworkInterfaces = []types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex: aws.Int32(0), SubnetId: aws.String("subnet-0feed"),
			Groups: []string{"sg-0beef"}, AssociatePublicIpAddress: aws.Bool(public),
		}}
		out, err := w.ec2.RunInstances(ctx, in)
		if err != nil {
			t.Fatalf("RunInstances public=%v: %v", public, err)
		}
		got := describeOne(t, w, aws.ToString(out.Instances[0].InstanceId))
		if aws.ToString(got.SubnetId) != "subnet-0feed" || len(got.SecurityGroups) != 1 || aws.ToString(got.SecurityGroups[0].GroupId) != "sg-0beef" {
			t.Errorf("public=%v: subnet %q groups %+v, want subnet-0feed and sg-0beef", public, aws.ToString(got.SubnetId), got.SecurityGroups)
		}
		if hasIP := aws.ToString(got.PublicIpAddress) != ""; hasIP != public {
			t.Errorf("public=%v: public address %q", public, aws.ToString(got.PublicIpAddress))
		}
	}
}
