package reconcile

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strconv"

	"github.com/tunnelward/tunnelward/internal/aws"
	"github.com/tunnelward/tunnelward/internal/cloudflare"
	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/userdata"
)

// NewClouds binds the engine's interfaces to tunnelward's provider clients.
func NewClouds(cf *cloudflare.Client, aw *aws.Client, ud userdata.Params) Clouds {
	c := cfAdapter{c: cf}
	a := awsAdapter{c: aw}
	return Clouds{
		Tunnels: c, DNS: c, Instances: a, Params: a, Commands: a,
		UserData: func(orgID, paramName string) (string, error) {
			p := ud
			p.OrgID, p.ParameterName = orgID, paramName
			return userdata.Render(p)
		},
	}
}

// WithRegion returns c serving one more AWS region through aw (a client
// built for that region) and launching instances there with spec.
func (c Clouds) WithRegion(region string, aw *aws.Client, spec InstanceSpec) Clouds {
	a := awsAdapter{c: aw}
	regions := make(map[string]RegionClouds, len(c.Regions)+1)
	for k, v := range c.Regions {
		regions[k] = v
	}
	regions[region] = RegionClouds{Instances: a, Params: a, Commands: a, Instance: spec}
	c.Regions = regions
	return c
}

// WithPool returns c serving one more Cloudflare pool through cf (a client
// built for the pool's account, zone and token); pools fill in the order
// they are added. The default pool (DefaultPool, the client of NewClouds)
// is added the same way to give it limits.
func (c Clouds) WithPool(name string, cf *cloudflare.Client, limits PoolLimits) Clouds {
	a := cfAdapter{c: cf}
	pools := make(map[string]PoolClouds, len(c.Pools)+1)
	for k, v := range c.Pools {
		pools[k] = v
	}
	if _, ok := pools[name]; !ok {
		c.PoolOrder = append(slices.Clone(c.PoolOrder), name)
	}
	pools[name] = PoolClouds{Tunnels: a, DNS: a, ZoneName: cf.ZoneName(), Limits: limits}
	c.Pools = pools
	return c
}

type cfAdapter struct{ c *cloudflare.Client }

// cfKind maps internal/cloudflare's error kinds onto the engine's; the
// provider's codes are read there, never here.
func cfKind(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cloudflare.ErrNotFound):
		return errors.Join(ErrNotFound, err)
	case errors.Is(err, cloudflare.ErrConflict), errors.Is(err, cloudflare.ErrExists):
		return errors.Join(ErrExists, err)
	case errors.Is(err, cloudflare.ErrActiveConnections):
		return errors.Join(ErrActiveConnections, err)
	}
	return err
}

func fromCFTunnel(t cloudflare.Tunnel) Tunnel {
	return Tunnel{ID: t.ID, Name: t.Name, Status: t.Status, Deleted: t.Deleted}
}

func (a cfAdapter) CreateTunnel(ctx context.Context, name string) (Tunnel, secret.Token, error) {
	t, tok, err := a.c.CreateTunnelWithSecret(ctx, name)
	return fromCFTunnel(t), tok, cfKind(err)
}

func (a cfAdapter) FindTunnel(ctx context.Context, name string) (*Tunnel, error) {
	t, found, err := a.c.FindTunnel(ctx, name)
	if err != nil || !found {
		return nil, cfKind(err)
	}
	out := fromCFTunnel(t)
	return &out, nil
}

func (a cfAdapter) GetTunnel(ctx context.Context, id string) (Tunnel, error) {
	t, err := a.c.GetTunnel(ctx, id)
	return fromCFTunnel(t), cfKind(err)
}

func (a cfAdapter) ListTunnels(ctx context.Context) ([]Tunnel, error) {
	ts, _, err := a.c.ListTunnels(ctx, owner.TunnelNamePrefix)
	if err != nil {
		return nil, cfKind(err)
	}
	out := make([]Tunnel, 0, len(ts))
	for _, t := range ts {
		out = append(out, fromCFTunnel(t))
	}
	return out, nil
}

func (a cfAdapter) DeleteTunnel(ctx context.Context, id string) error {
	existed, err := a.c.DeleteTunnel(ctx, id)
	if err == nil && !existed {
		return ErrNotFound
	}
	return cfKind(err)
}

func (a cfAdapter) CleanConnections(ctx context.Context, id string) error {
	return cfKind(a.c.CleanConnections(ctx, id))
}

func (a cfAdapter) RotateSecret(ctx context.Context, id string) (secret.Token, error) {
	tok, err := a.c.RotateSecret(ctx, id)
	return tok, cfKind(err)
}

func (a cfAdapter) Connectors(ctx context.Context, id string) ([]string, error) {
	cs, err := a.c.Connectors(ctx, id)
	if err != nil {
		return nil, cfKind(err)
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out, nil
}

func (a cfAdapter) DropConnector(ctx context.Context, id, clientID string) error {
	return cfKind(a.c.DropConnector(ctx, id, clientID))
}

func (a cfAdapter) GetIngress(ctx context.Context, id string) ([]plan.IngressRule, error) {
	rules, _, err := a.c.GetConfig(ctx, id)
	if err != nil {
		return nil, cfKind(err)
	}
	out := make([]plan.IngressRule, 0, len(rules))
	for _, r := range rules {
		out = append(out, plan.IngressRule{Hostname: r.Hostname, Service: r.Service})
	}
	return out, nil
}

func (a cfAdapter) PutIngress(ctx context.Context, id string, rules []plan.IngressRule) error {
	in := make([]cloudflare.IngressRule, 0, len(rules))
	for _, r := range rules {
		in = append(in, cloudflare.IngressRule{Hostname: r.Hostname, Service: r.Service})
	}
	return cfKind(a.c.PutConfig(ctx, id, in))
}

func (a cfAdapter) Token(ctx context.Context, id string) (secret.Token, error) {
	t, err := a.c.Token(ctx, id)
	return t, cfKind(err)
}

func fromCFRecord(r cloudflare.Record) plan.Record {
	return plan.Record{ID: r.ID, Name: r.Name, Type: r.Type, Content: r.Content, Proxied: r.Proxied, TTL: r.TTL, Comment: r.Comment}
}

func fromCFRecords(rs []cloudflare.Record) []plan.Record {
	out := make([]plan.Record, 0, len(rs))
	for _, r := range rs {
		out = append(out, fromCFRecord(r))
	}
	return out
}

func (a cfAdapter) CreateCNAME(ctx context.Context, name, target, comment string) (plan.Record, error) {
	r, err := a.c.CreateRecord(ctx, cloudflare.RecordSpec{Name: name, Content: target, Comment: comment})
	return fromCFRecord(r), cfKind(err)
}

func (a cfAdapter) FindRecords(ctx context.Context, name string) ([]plan.Record, error) {
	rs, err := a.c.FindRecords(ctx, name)
	return fromCFRecords(rs), cfKind(err)
}

func (a cfAdapter) GetRecord(ctx context.Context, id string) (plan.Record, error) {
	r, err := a.c.GetRecord(ctx, id)
	return fromCFRecord(r), cfKind(err)
}

func (a cfAdapter) UpdateCNAME(ctx context.Context, id, name, target, comment string) (plan.Record, error) {
	r, err := a.c.UpdateRecord(ctx, id, cloudflare.RecordSpec{Name: name, Content: target, Comment: comment})
	return fromCFRecord(r), cfKind(err)
}

func (a cfAdapter) DeleteRecord(ctx context.Context, id string) error {
	existed, err := a.c.DeleteRecord(ctx, id)
	if err == nil && !existed {
		return ErrNotFound
	}
	return cfKind(err)
}

func (a cfAdapter) Batch(ctx context.Context, deletes []string, creates []CNAME) ([]plan.Record, error) {
	specs := make([]cloudflare.RecordSpec, len(creates))
	for i, c := range creates {
		specs[i] = cloudflare.RecordSpec{Name: c.Name, Content: c.Target, Comment: c.Comment}
	}
	res, err := a.c.Batch(ctx, deletes, specs)
	if err != nil {
		return nil, cfKind(err)
	}
	return fromCFRecords(res.Created), nil
}

// OwnedRecords lists the records whose ownership comment names orgID, under
// any name: one filtered listing finds what a crash may have left unrecorded.
func (a cfAdapter) OwnedRecords(ctx context.Context, orgID string) ([]plan.Record, error) {
	rs, _, err := a.c.ListRecords(ctx, owner.DNSComment(orgID))
	if err != nil {
		return nil, cfKind(err)
	}
	out := make([]plan.Record, 0, len(rs))
	for _, r := range rs {
		// The filter is a prefix: "tunnelward:org=acme" also matches acme2's.
		if owner, ok := owner.OrgFromDNSComment(r.Comment); ok && owner == orgID {
			out = append(out, fromCFRecord(r))
		}
	}
	return out, nil
}

// ListRecords lists only records carrying our ownership marker: the sweep
// needs no others (a conflicting record shows up as a missing one, and the
// org's next reconcile finds it by name).
func (a cfAdapter) ListRecords(ctx context.Context) ([]plan.Record, error) {
	rs, _, err := a.c.ListRecords(ctx, owner.DNSCommentPrefix)
	return fromCFRecords(rs), cfKind(err)
}

type awsAdapter struct{ c *aws.Client }

func awsKind(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, aws.ErrNotFound):
		return errors.Join(ErrNotFound, err)
	case errors.Is(err, aws.ErrIdempotentParameterMismatch):
		return errors.Join(ErrTokenMismatch, err)
	}
	return err
}

// tokenGen reads the generation back from a readable ClientToken
// ("tw-<org>-g<gen>-a<attempt>"); 0 when it cannot tell.
var tokenGen = regexp.MustCompile(`-g([0-9]+)-a[0-9]+$`)

func fromAWSInstance(in aws.Instance) Instance {
	out := Instance{ID: in.ID, State: in.State, OrgID: in.OrgID(), TunnelID: in.Tags[owner.TagTunnelID], LaunchTime: in.LaunchTime, ARN: in.ARN}
	if g, err := strconv.ParseInt(in.Tags[owner.TagGeneration], 10, 64); err == nil {
		out.Generation = g
	} else if m := tokenGen.FindStringSubmatch(in.ClientToken); m != nil {
		out.Generation, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return out
}

func fromAWSInstances(ins []aws.Instance) []Instance {
	out := make([]Instance, 0, len(ins))
	for _, in := range ins {
		out = append(out, fromAWSInstance(in))
	}
	return out
}

func (a awsAdapter) RunInstance(ctx context.Context, s RunSpec) (Instance, error) {
	in, err := a.c.RunInstance(ctx, aws.InstanceSpec{
		OrgID: s.Tags[owner.TagOrgID], TunnelID: s.Tags[owner.TagTunnelID], Name: s.Tags["Name"],
		ImageID: s.ImageID, InstanceType: s.InstanceType, SubnetID: s.SubnetID,
		SecurityGroupIDs: s.SecurityGroupIDs, InstanceProfile: s.InstanceProfile,
		UserData: s.UserData, ClientToken: s.ClientToken,
		// The Generation tag (and any other the engine sets) travels with
		// the launch: it is how a re-created org's plan tells its own
		// instance from the old generation's, whatever the ClientToken.
		Tags: s.Tags,
	})
	return fromAWSInstance(in), awsKind(err)
}

func (a awsAdapter) OrgInstances(ctx context.Context, orgID string) ([]Instance, error) {
	ins, err := a.c.DescribeOrgInstances(ctx, orgID)
	return fromAWSInstances(ins), awsKind(err)
}

func (a awsAdapter) ManagedInstances(ctx context.Context) ([]Instance, error) {
	ins, _, err := a.c.ListManagedInstances(ctx)
	return fromAWSInstances(ins), awsKind(err)
}

func (a awsAdapter) TerminateInstances(ctx context.Context, ids []string) error {
	_, err := a.c.TerminateInstances(ctx, ids...)
	return awsKind(err)
}

func (a awsAdapter) PutToken(ctx context.Context, name string, tok secret.Token, tags map[string]string) error {
	_, err := a.c.PutToken(ctx, name, tok, tags)
	return awsKind(err)
}

func (a awsAdapter) DescribeParam(ctx context.Context, name string) (*Param, error) {
	m, err := a.c.GetParameterMeta(ctx, name)
	if errors.Is(err, aws.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, awsKind(err)
	}
	return &Param{Name: m.Name, Description: m.Description, Modified: m.LastModifiedDate}, nil
}

func (a awsAdapter) ListParams(ctx context.Context, prefix string) ([]Param, error) {
	ms, _, err := a.c.ListParameters(ctx, prefix)
	if err != nil {
		return nil, awsKind(err)
	}
	out := make([]Param, 0, len(ms))
	for _, m := range ms {
		out = append(out, Param{Name: m.Name, Description: m.Description, Modified: m.LastModifiedDate})
	}
	return out, nil
}

func (a awsAdapter) DeleteParam(ctx context.Context, name string) error {
	existed, err := a.c.DeleteParameter(ctx, name)
	if err == nil && !existed {
		return ErrNotFound
	}
	return awsKind(err)
}

func (a awsAdapter) TagParam(ctx context.Context, name string, tags map[string]string) error {
	return awsKind(a.c.TagParameter(ctx, name, tags))
}

func (a awsAdapter) ParamTags(ctx context.Context, name string) (map[string]string, error) {
	tags, err := a.c.ParameterTags(ctx, name)
	return tags, awsKind(err)
}

func (a awsAdapter) RestartCloudflared(ctx context.Context, instanceID string) (string, error) {
	id, err := a.c.SendCommand(ctx, instanceID, userdata.RestartCommands(""), "tunnelward remediation: restart cloudflared")
	return id, awsKind(err)
}
