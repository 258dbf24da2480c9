package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/state"
)

// The engine's view of the clouds: narrow interfaces, defined here by their
// consumer, so the provider packages stay free to shape their own clients.
// adapters.go binds them to internal/cloudflare and internal/aws.

// Errors the adapters translate provider errors into.
var (
	// ErrNotFound: the resource does not exist (or is a deleted tunnel).
	ErrNotFound = errors.New("not found")
	// ErrExists: a create hit a resource of the same name (tunnel 409, DNS
	// 81053, SSM ParameterAlreadyExists).
	ErrExists = errors.New("already exists")
	// ErrActiveConnections: a tunnel delete refused because connectors are
	// still connected.
	ErrActiveConnections = errors.New("tunnel has active connections")
	// ErrTokenMismatch: RunInstances refused a ClientToken reused with other
	// parameters (IdempotentParameterMismatch).
	ErrTokenMismatch = errors.New("client token reused with different parameters")
)

// Tunnel is a Cloudflare tunnel as the engine sees it.
type Tunnel struct {
	ID      string
	Name    string
	Status  string // inactive, healthy, degraded, down
	Deleted bool
	Pool    string // set by listings that span pools (Engine.List)
}

// TunnelAPI is the Cloudflare tunnel surface the engine uses.
type TunnelAPI interface {
	// CreateTunnel creates a remotely managed tunnel with a secret drawn by
	// the caller's side and returns its token, built without a call;
	// ErrExists when a live tunnel already has the name.
	CreateTunnel(ctx context.Context, name string) (Tunnel, secret.Token, error)
	// FindTunnel returns the live tunnel with exactly this name, nil if none.
	FindTunnel(ctx context.Context, name string) (*Tunnel, error)
	// GetTunnel reads one tunnel; ErrNotFound when unknown.
	GetTunnel(ctx context.Context, id string) (Tunnel, error)
	// ListTunnels returns every live tunnel named with tunnelward's prefix
	// (all pages).
	ListTunnels(ctx context.Context) ([]Tunnel, error)
	// DeleteTunnel deletes; ErrActiveConnections while connected, ErrNotFound when gone.
	DeleteTunnel(ctx context.Context, id string) error
	// CleanConnections drops the tunnel's stale connections.
	CleanConnections(ctx context.Context, id string) error
	GetIngress(ctx context.Context, id string) ([]plan.IngressRule, error)
	PutIngress(ctx context.Context, id string, rules []plan.IngressRule) error
	// Token reads the tunnel's token from the API: only for a tunnel whose
	// token this process does not hold (adopted, or created before a crash).
	Token(ctx context.Context, id string) (secret.Token, error)
	// RotateSecret gives the tunnel a new secret drawn by the caller's side
	// and returns its token, built without a call.
	RotateSecret(ctx context.Context, id string) (secret.Token, error)
	// Connectors lists the client ids of the tunnel's connected connectors.
	Connectors(ctx context.Context, id string) ([]string, error)
	// DropConnector deletes one connector's connections.
	DropConnector(ctx context.Context, id, clientID string) error
}

// DNSAPI is the Cloudflare DNS surface the engine uses (one zone).
type DNSAPI interface {
	// CreateCNAME creates a proxied CNAME; ErrExists when the name is taken.
	CreateCNAME(ctx context.Context, name, target, comment string) (plan.Record, error)
	// FindRecords returns the records named exactly name.
	FindRecords(ctx context.Context, name string) ([]plan.Record, error)
	// GetRecord reads one record; ErrNotFound when gone.
	GetRecord(ctx context.Context, id string) (plan.Record, error)
	// UpdateCNAME rewrites a record as a proxied CNAME.
	UpdateCNAME(ctx context.Context, id, name, target, comment string) (plan.Record, error)
	// DeleteRecord deletes; ErrNotFound when gone.
	DeleteRecord(ctx context.Context, id string) error
	// ListRecords returns every record of the zone that carries
	// tunnelward's ownership marker (all pages).
	ListRecords(ctx context.Context) ([]plan.Record, error)
	// OwnedRecords returns the records marked as orgID's, whatever their
	// name (all pages).
	OwnedRecords(ctx context.Context, orgID string) ([]plan.Record, error)
	// Batch deletes and creates (proxied CNAMEs) in one request, all or
	// nothing; it returns the created records in the order of creates.
	Batch(ctx context.Context, deletes []string, creates []CNAME) ([]plan.Record, error)
}

// CNAME is one proxied CNAME to create.
type CNAME struct{ Name, Target, Comment string }

// Instance is an EC2 instance as the engine sees it.
type Instance struct {
	ID         string
	State      string
	Region     string // set by listings that span regions (Engine.List)
	OrgID      string // OrgID tag
	TunnelID   string // TunnelID tag
	Generation int64  // Generation tag
	LaunchTime time.Time
	// ARN is the instance's ARN ("" when the provider did not say its
	// owner): the value of the token parameter's InstanceArn tag.
	ARN string
}

// RunSpec is one RunInstances call.
type RunSpec struct {
	ClientToken      string
	ImageID          string
	InstanceType     string
	SubnetID         string
	SecurityGroupIDs []string
	InstanceProfile  string
	UserData         string // plain text; internal/aws base64-encodes it
	Tags             map[string]string
}

// InstanceAPI is the EC2 surface the engine uses.
type InstanceAPI interface {
	// RunInstance launches one instance; ErrTokenMismatch on
	// IdempotentParameterMismatch.
	RunInstance(ctx context.Context, spec RunSpec) (Instance, error)
	// OrgInstances lists the org's managed instances that are not terminated.
	OrgInstances(ctx context.Context, orgID string) ([]Instance, error)
	// ManagedInstances lists every managed instance that is not terminated (all pages).
	ManagedInstances(ctx context.Context) ([]Instance, error)
	TerminateInstances(ctx context.Context, ids []string) error
}

// Param is an SSM parameter's metadata; the value is never read back.
type Param struct {
	Name        string
	Description string
	Region      string    // set by listings that span regions (Engine.List)
	Modified    time.Time // when its value was last written (zero: not known)
}

// ParamAPI is the SSM Parameter Store surface the engine uses.
type ParamAPI interface {
	// PutToken writes the token as a tagged SecureString, overwriting an
	// existing parameter of that name (ours: it is under our prefix).
	PutToken(ctx context.Context, name string, tok secret.Token, tags map[string]string) error
	// DescribeParam returns the parameter's metadata, nil when absent.
	DescribeParam(ctx context.Context, name string) (*Param, error)
	// ListParams lists the parameters under a path prefix (all pages).
	ListParams(ctx context.Context, prefix string) ([]Param, error)
	// DeleteParam deletes; ErrNotFound when absent.
	DeleteParam(ctx context.Context, name string) error
	// TagParam adds tags to a parameter, overwriting values of keys it has;
	// ErrNotFound when absent.
	TagParam(ctx context.Context, name string, tags map[string]string) error
	// ParamTags reads a parameter's tags; ErrNotFound when absent.
	ParamTags(ctx context.Context, name string) (map[string]string, error)
}

// CommandAPI runs the remediation command on an instance through SSM.
type CommandAPI interface {
	// RestartCloudflared sends `systemctl restart cloudflared` and returns the command id.
	RestartCloudflared(ctx context.Context, instanceID string) (string, error)
}

// UserDataFunc renders an instance's user-data; it names the token
// parameter and never contains the token.
type UserDataFunc func(orgID, paramName string) (string, error)

// Clouds bundles the provider surfaces. Instances, Params and Commands are
// the default region's; Regions adds the other regions the engine serves.
type Clouds struct {
	Tunnels   TunnelAPI
	DNS       DNSAPI
	Instances InstanceAPI
	Params    ParamAPI
	Commands  CommandAPI
	UserData  UserDataFunc
	// DefaultRegion names the region of Instances/Params/Commands: orgs that
	// ask for no region go there. "" when the engine serves one region.
	DefaultRegion string
	Regions       map[string]RegionClouds
	// DefaultPool names the Cloudflare pool of Tunnels/DNS (zone
	// Config.ZoneName): orgs placed before pools existed ("" in bbolt) are
	// in it. Pools holds every pool by name, the default's too when its
	// limits are set; PoolOrder is the order pools fill in (the default
	// first). A Clouds without pools serves one unlimited pool.
	DefaultPool string
	Pools       map[string]PoolClouds
	PoolOrder   []string
}

// PoolClouds are one Cloudflare pool: an account, a zone in it and the
// credentials' surfaces, with the limits placement keeps under.
type PoolClouds struct {
	Name     string // set by the engine (poolClouds)
	Tunnels  TunnelAPI
	DNS      DNSAPI
	ZoneName string // lowercase, no trailing dot; hostnames are <slug>.<ZoneName>
	Limits   PoolLimits
}

// PoolLimits bound what placement puts in a pool. Pools in one account
// share its tunnels; a zone is one pool's. Zero means unlimited.
type PoolLimits struct {
	Account string // the Cloudflare account id: pools naming one share MaxTunnels
	// Budget names the API budget (the user behind the token) the pool's
	// calls draw from: pools on one budget list at that budget's pace.
	Budget     string
	MaxTunnels int // tunnels in the account (Cloudflare: 1,000)
	MaxRecords int // DNS records in the zone (Free: 200; paid: 3,500)
}

// RegionClouds are the AWS surfaces of one region, with how org instances
// are launched there (AMIs, subnets and security groups are regional).
type RegionClouds struct {
	Instances InstanceAPI
	Params    ParamAPI
	Commands  CommandAPI
	Instance  InstanceSpec
}

// served lists the regions in a stable order, the default first.
func (c Clouds) served() []string {
	out := []string{c.DefaultRegion}
	for _, r := range sortedKeys(c.Regions) {
		if r != c.DefaultRegion {
			out = append(out, r)
		}
	}
	return out
}

func (c Clouds) validate() error {
	var missing []string
	if c.Tunnels == nil {
		missing = append(missing, "Tunnels")
	}
	if c.DNS == nil {
		missing = append(missing, "DNS")
	}
	if c.Instances == nil {
		missing = append(missing, "Instances")
	}
	if c.Params == nil {
		missing = append(missing, "Params")
	}
	if c.Commands == nil {
		missing = append(missing, "Commands")
	}
	if c.UserData == nil {
		missing = append(missing, "UserData")
	}
	for _, r := range sortedKeys(c.Regions) {
		rc := c.Regions[r]
		if rc.Instances == nil || rc.Params == nil || rc.Commands == nil || rc.Instance.ImageID == "" {
			missing = append(missing, "Regions["+r+"] (instances, params, commands and an AMI)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("reconcile: clouds missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// Store is the part of internal/state the engine uses.
type Store interface {
	Get(orgID string) (state.Org, bool, error)
	List() ([]state.Org, error)
	// ForEach streams every org inside one read transaction; fn must not
	// write to the store. EnqueueAll and Sweep use it so that 100,000 orgs
	// are never all decoded in memory at once.
	ForEach(fn func(state.Org) error) error
	Update(orgID string, fn func(*state.Org) error) error
}

// serialStore runs the engine's Store.Update calls one at a time. bbolt
// serializes write transactions anyway, so this costs nothing; it guards
// against a store whose read path can miss a just-committed write of a
// concurrent Update (state's decoded-record cache publishes after commit,
// outside the write lock), which lost fields the engine had recorded.
//
// It is also where the engine sees every change of an org's conditions
// (the engine is the only writer of conditions): changed is called after
// each committed Update with the conditions before and after it, so the
// orgs-by-condition gauge follows each change instead of a recount.
type serialStore struct {
	Store
	mu      sync.Mutex
	changed func(before, after []state.Condition)
}

func (s *serialStore) Update(orgID string, fn func(*state.Org) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var before, after []state.Condition
	err := s.Store.Update(orgID, func(o *state.Org) error {
		before = slices.Clone(o.Conditions)
		if err := fn(o); err != nil {
			return err
		}
		after = slices.Clone(o.Conditions)
		return nil
	})
	if err == nil && s.changed != nil {
		s.changed(before, after)
	}
	return err
}
