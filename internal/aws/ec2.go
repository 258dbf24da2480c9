package aws

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/owner"
)

// Ownership tags every instance tunnelward launches carries (internal/owner).
const (
	TagManagedBy = owner.TagManagedBy
	TagOrgID     = owner.TagOrgID
	TagTunnelID  = owner.TagTunnelID
	TagName      = owner.TagName
	ManagedBy    = owner.ManagedBy
)

// LiveStates are the instance states that count as "the org has an
// instance" (shutting-down and terminated do not).
var LiveStates = []string{"pending", "running", "stopping", "stopped"}

// InstanceSpec is one org instance to launch.
type InstanceSpec struct {
	OrgID            string
	TunnelID         string
	Name             string // Name tag
	ImageID          string
	InstanceType     string
	SubnetID         string
	SecurityGroupIDs []string
	InstanceProfile  string // ARN or name
	UserData         string // the script as text; base64-encoded here
	ClientToken      string // from owner.ClientToken(org, generation, attempt)
	// Tags are extra instance tags (e.g. Generation). The ownership tags
	// ManagedBy, OrgID, TunnelID and Name come from the fields above and
	// cannot be overridden here.
	Tags map[string]string
}

// Instance is what tunnelward needs to know of an EC2 instance.
type Instance struct {
	ID           string
	State        string
	ImageID      string
	InstanceType string
	PrivateIP    string
	LaunchTime   time.Time
	ClientToken  string
	Tags         map[string]string
	// OwnerID is the account that owns the instance (the reservation's
	// ownerId); ARN is arn:<partition>:ec2:<region>:<owner>:instance/<id>,
	// what ${ec2:SourceInstanceARN} holds in the instance's own requests.
	// Both are empty when the response carried no owner.
	OwnerID string
	ARN     string
}

// OrgID is the instance's OrgID tag.
func (i Instance) OrgID() string { return i.Tags[TagOrgID] }

// Live reports whether the instance is in one of LiveStates.
func (i Instance) Live() bool {
	for _, s := range LiveStates {
		if i.State == s {
			return true
		}
	}
	return false
}

func toInstance(in types.Instance) Instance {
	out := Instance{ID: aws.ToString(in.InstanceId), ImageID: aws.ToString(in.ImageId),
		InstanceType: string(in.InstanceType), PrivateIP: aws.ToString(in.PrivateIpAddress),
		ClientToken: aws.ToString(in.ClientToken), Tags: map[string]string{}}
	if in.State != nil {
		out.State = string(in.State.Name)
	}
	if in.LaunchTime != nil {
		out.LaunchTime = *in.LaunchTime
	}
	for _, t := range in.Tags {
		out.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

// owned sets the owner and ARN of an instance from its reservation.
func (c *Client) owned(i Instance, ownerID *string) Instance {
	i.OwnerID = aws.ToString(ownerID)
	if i.OwnerID != "" && i.ID != "" {
		i.ARN = InstanceARN(c.region, i.OwnerID, i.ID)
	}
	return i
}

// InstanceARN is an EC2 instance's ARN in the partition of its region.
func InstanceARN(region, accountID, instanceID string) string {
	partition := "aws"
	switch {
	case strings.HasPrefix(region, "cn-"):
		partition = "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		partition = "aws-us-gov"
	}
	return "arn:" + partition + ":ec2:" + region + ":" + accountID + ":instance/" + instanceID
}

// maxClientToken is EC2's ClientToken length limit.
const maxClientToken = 64

// RunInstance launches one instance for spec, tagged for ownership, with
// IMDSv2 required and user-data base64-encoded. With the same ClientToken
// and spec it returns the instance launched before instead of a second one;
// ErrIdempotentParameterMismatch when the token was used with another spec.
func (c *Client) RunInstance(ctx context.Context, spec InstanceSpec) (Instance, error) {
	if spec.OrgID == "" || spec.ImageID == "" || spec.ClientToken == "" {
		return Instance{}, fmt.Errorf("ec2 RunInstances for org %q: org id, image id and client token are required", spec.OrgID)
	}
	if len(spec.ClientToken) > maxClientToken {
		return Instance{}, fmt.Errorf("ec2 RunInstances for org %s: client token longer than %d characters", spec.OrgID, maxClientToken)
	}
	tags := []types.Tag{
		{Key: aws.String(TagManagedBy), Value: aws.String(ManagedBy)},
		{Key: aws.String(TagOrgID), Value: aws.String(spec.OrgID)},
	}
	if spec.TunnelID != "" {
		tags = append(tags, types.Tag{Key: aws.String(TagTunnelID), Value: aws.String(spec.TunnelID)})
	}
	if spec.Name != "" {
		tags = append(tags, types.Tag{Key: aws.String(TagName), Value: aws.String(spec.Name)})
	}
	extra := make([]string, 0, len(spec.Tags))
	for k := range spec.Tags {
		switch k {
		case TagManagedBy, TagOrgID, TagTunnelID, TagName:
			continue
		}
		extra = append(extra, k)
	}
	sort.Strings(extra) // a stable order keeps retries' parameters identical for the ClientToken
	for _, k := range extra {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(spec.Tags[k])})
	}
	in := &ec2.RunInstancesInput{
		ImageId:     aws.String(spec.ImageID),
		MinCount:    aws.Int32(1),
		MaxCount:    aws.Int32(1),
		ClientToken: aws.String(spec.ClientToken),
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeInstance, Tags: tags},
			{ResourceType: types.ResourceTypeVolume, Tags: tags},
		},
		// cloudflared only dials out; the instance needs no inbound path and
		// its credentials come from IMDSv2 only.
		MetadataOptions: &types.InstanceMetadataOptionsRequest{HttpTokens: types.HttpTokensStateRequired},
	}
	if spec.InstanceType != "" {
		in.InstanceType = types.InstanceType(spec.InstanceType)
	}
	if spec.SubnetID != "" {
		// The primary interface is spelled out so that no public IP is
		// attached whatever the subnet's MapPublicIpOnLaunch says; EC2 then
		// wants subnet and groups on the interface, not at the top level.
		in.NetworkInterfaces = []types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex:              aws.Int32(0),
			SubnetId:                 aws.String(spec.SubnetID),
			Groups:                   spec.SecurityGroupIDs,
			AssociatePublicIpAddress: aws.Bool(false),
			DeleteOnTermination:      aws.Bool(true),
		}}
	} else if len(spec.SecurityGroupIDs) > 0 {
		in.SecurityGroupIds = spec.SecurityGroupIDs
	}
	if spec.InstanceProfile != "" {
		if len(spec.InstanceProfile) > 4 && spec.InstanceProfile[:4] == "arn:" {
			in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: aws.String(spec.InstanceProfile)}
		} else {
			in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Name: aws.String(spec.InstanceProfile)}
		}
	}
	if spec.UserData != "" {
		in.UserData = aws.String(base64.StdEncoding.EncodeToString([]byte(spec.UserData)))
	}
	var out Instance
	err := c.ec2Call.Do(ctx, "RunInstances", "org "+spec.OrgID, func(ctx context.Context) error {
		res, err := c.ec2.RunInstances(ctx, in)
		if err != nil {
			return err
		}
		if len(res.Instances) != 1 {
			return fmt.Errorf("RunInstances returned %d instances, want 1", len(res.Instances))
		}
		out = c.owned(toInstance(res.Instances[0]), res.OwnerId)
		return nil
	})
	if hasCode(err, "IdempotentParameterMismatch") {
		return Instance{}, apicall.WithKind(err, ErrIdempotentParameterMismatch)
	}
	return out, err
}

// DescribeOrgInstances returns the org's live instances (found by tags).
func (c *Client) DescribeOrgInstances(ctx context.Context, orgID string) ([]Instance, error) {
	items, _, err := c.describe(ctx, "org "+orgID, []types.Filter{
		{Name: aws.String("tag:" + TagManagedBy), Values: []string{ManagedBy}},
		{Name: aws.String("tag:" + TagOrgID), Values: []string{orgID}},
		{Name: aws.String("instance-state-name"), Values: LiveStates},
	})
	return items, err
}

// ListManagedInstances returns every live instance tagged
// ManagedBy=tunnelward, all pages, and how many pages it fetched.
func (c *Client) ListManagedInstances(ctx context.Context) ([]Instance, int, error) {
	return c.describe(ctx, "managed", []types.Filter{
		{Name: aws.String("tag:" + TagManagedBy), Values: []string{ManagedBy}},
		{Name: aws.String("instance-state-name"), Values: LiveStates},
	})
}

// GetInstance describes one instance by id, whatever its state
// (ErrNotFound when EC2 no longer knows it).
func (c *Client) GetInstance(ctx context.Context, id string) (Instance, error) {
	var out []Instance
	err := c.ec2Call.Do(ctx, "DescribeInstances", id, func(ctx context.Context) error {
		res, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, r := range res.Reservations {
			for _, in := range r.Instances {
				out = append(out, c.owned(toInstance(in), r.OwnerId))
			}
		}
		return nil
	})
	if hasCode(err, "InvalidInstanceID.NotFound") {
		return Instance{}, apicall.WithKind(err, ErrNotFound)
	}
	if err != nil {
		return Instance{}, err
	}
	if len(out) == 0 {
		return Instance{}, &apicall.Error{Provider: "ec2", Op: "DescribeInstances", Resource: id, Attempts: 1, Kind: ErrNotFound, Err: errors.New("no such instance")}
	}
	return out[0], nil
}

func (c *Client) describe(ctx context.Context, what string, filters []types.Filter) ([]Instance, int, error) {
	in := &ec2.DescribeInstancesInput{Filters: filters}
	if c.pageSize > 0 {
		in.MaxResults = aws.Int32(int32(max(5, min(1000, c.pageSize))))
	} else {
		in.MaxResults = aws.Int32(1000)
	}
	p := ec2.NewDescribeInstancesPaginator(c.ec2, in)
	var out []Instance
	pages, err := allPages(ctx, c.ec2Call, "DescribeInstances", what, p.HasMorePages, p.NextPage, func(res *ec2.DescribeInstancesOutput) {
		for _, r := range res.Reservations {
			for _, inst := range r.Instances {
				out = append(out, c.owned(toInstance(inst), r.OwnerId))
			}
		}
	})
	if err != nil {
		return nil, pages, err
	}
	return out, pages, nil
}

// StateChange is one instance's state transition.
type StateChange struct {
	ID       string
	Previous string
	Current  string
}

// TerminateInstances terminates the instances; terminating an already
// terminated instance is a no-op in EC2, so this is idempotent.
func (c *Client) TerminateInstances(ctx context.Context, ids ...string) ([]StateChange, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out []StateChange
	err := c.ec2Call.Do(ctx, "TerminateInstances", fmt.Sprint(ids), func(ctx context.Context) error {
		res, err := c.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, s := range res.TerminatingInstances {
			sc := StateChange{ID: aws.ToString(s.InstanceId)}
			if s.PreviousState != nil {
				sc.Previous = string(s.PreviousState.Name)
			}
			if s.CurrentState != nil {
				sc.Current = string(s.CurrentState.Name)
			}
			out = append(out, sc)
		}
		return nil
	})
	if hasCode(err, "InvalidInstanceID.NotFound") {
		return nil, apicall.WithKind(err, ErrNotFound)
	}
	return out, err
}

// RebootInstances asks EC2 to reboot the instances.
func (c *Client) RebootInstances(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	err := c.ec2Call.Do(ctx, "RebootInstances", fmt.Sprint(ids), func(ctx context.Context) error {
		_, err := c.ec2.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: ids})
		return err
	})
	if hasCode(err, "InvalidInstanceID.NotFound") {
		return apicall.WithKind(err, ErrNotFound)
	}
	return err
}
