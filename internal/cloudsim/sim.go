// Package cloudsim is a stateful HTTP emulator of the exact Cloudflare API v4,
// EC2 query API and SSM JSON API surface tunnelward uses (plus STS
// GetCallerIdentity, so a client can check its credentials), a simulated
// world (instances boot, cloudflared connects tunnels), fault injection and an
// invariant checker. It imports nothing of tunnelward's, so it cannot bend to
// what it tests.
//
// Files: sim.go (core: state, clock, scheduler, routing), cf*.go (Cloudflare),
// ec2*.go (EC2), ssm*.go (SSM), sts.go (STS), world.go (connectors,
// user-data, /_sim/world), faults.go, calls.go, invariants.go, simhttp.go
// (/_sim endpoints), resolve.go (the DNS resolution probe), persist.go (the
// world kept in a file).
package cloudsim

import (
	"fmt"
	"math/rand"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Sandbox identities: the defaults of both cmd/cloudsim and the reconciler's
// sandbox mode (docs/cloudsim.md).
const (
	DefaultCFToken   = "sandbox-token"
	DefaultAccountID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
	DefaultZoneID    = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
	DefaultZoneName  = "sandbox.tunnelward.test"
	// The second Cloudflare identity DefaultConfig serves (Config.CFExtra):
	// another account, zone and API token, the sandbox's second pool.
	DefaultCF2Token     = "sandbox2-token"
	DefaultAccount2ID   = "b2c3d4e5f60718293a4b5c6d7e8f90a1"
	DefaultZone2ID      = "e0f1d2c3b4a5968778695a4b3c2d1e0f"
	DefaultZone2Name    = "sandbox2.tunnelward.test"
	DefaultAWSAccessKey = "AKIASANDBOXEXAMPLE"
	DefaultAWSSecret    = "sandbox-secret"
	DefaultRegion       = "us-east-1"
)

// Config shapes one emulated world. Zero durations mean "immediately".
type Config struct {
	// CFToken, AccountID, ZoneID and ZoneName are the first Cloudflare
	// identity: an API token with access to one account and one zone in it.
	CFToken   string
	AccountID string
	ZoneID    string
	ZoneName  string
	// CFExtra are Cloudflare identities served besides the first: each is an
	// API token with access to one account and one zone in it. The same token in
	// two identities is one user with access to both (one rate budget); the same
	// AccountID in two identities is two zones in one account (one tunnel limit).
	CFExtra []CFIdentity
	// TunnelQuota is how many live tunnels one account may hold; 0 means 1000 (Cloudflare's limit).
	TunnelQuota int

	AWSAccessKey string
	AWSSecret    string
	// Region is the home region: where Go loaders put resources that name
	// no region, and the one the sandbox identities document. It is always
	// one of Regions (New adds it when missing).
	Region string
	// Regions are the regions the emulated AWS account has. EC2 and SSM are
	// per region, as on AWS: a request acts in the region of its SigV4
	// credential scope, and a scope outside this set is refused as AWS
	// refuses a region it does not serve. Empty means just Region.
	Regions []string

	BootDelay           time.Duration // pending -> running
	ConnectDelay        time.Duration // running + token read -> tunnel connections up
	ShutdownDelay       time.Duration // shutting-down -> terminated / stopping -> stopped
	TerminatedRetention time.Duration // terminated instances stay visible this long (AWS: ~1h)
	DNSQuota            int           // records per zone (each zone its own); 0 means 200
	// DNSBatchLimit is how many record changes one dns_records/batch may
	// hold (Cloudflare: 200 on Free, 3,500 on paid plans); 0 means 200.
	DNSBatchLimit int
	Seed          int64 // fault injection and id generation are deterministic under it

	// RetryInterval is how often a simulated cloudflared that could not
	// connect (no parameter, bad token) tries again; 0 means 5s.
	RetryInterval time.Duration

	// InstanceRoleTagPolicy makes the simulated cloudflared's parameter read
	// obey deploy/iam/instance-role-policy.json: the instance role may read
	// a parameter only while it is tagged InstanceArn=<the reading
	// instance's ARN> (${ec2:SourceInstanceARN}); otherwise the read is
	// denied (AccessDeniedException) and retried every RetryInterval.
	// DefaultConfig turns it on; the zero value is the lenient world.
	InstanceRoleTagPolicy bool

	// Limits are the provider-shaped rate limits (faults.go); the zero value
	// means "off". DefaultConfig turns them on with the real figures.
	Limits RateLimits

	// Now is the clock; nil means time.Now. Tests may inject a fake clock.
	Now func() time.Time
}

// DefaultConfig returns the sandbox identities with short but real delays.
func DefaultConfig() Config {
	return Config{
		CFToken: DefaultCFToken, AccountID: DefaultAccountID, ZoneID: DefaultZoneID, ZoneName: DefaultZoneName,
		CFExtra:      []CFIdentity{{Token: DefaultCF2Token, AccountID: DefaultAccount2ID, ZoneID: DefaultZone2ID, ZoneName: DefaultZone2Name}},
		TunnelQuota:  DefaultTunnelQuota,
		AWSAccessKey: DefaultAWSAccessKey, AWSSecret: DefaultAWSSecret,
		Region: DefaultRegion, Regions: DefaultRegions(), BootDelay: 2 * time.Second, ConnectDelay: time.Second,
		ShutdownDelay: time.Second, TerminatedRetention: time.Hour, DNSQuota: 200, Seed: 1,
		RetryInterval: 5 * time.Second, Limits: DefaultRateLimits(), InstanceRoleTagPolicy: true,
	}
}

// DefaultRegions are the regions DefaultConfig's account has: a handful of
// commercial regions on three continents, the home region first.
func DefaultRegions() []string {
	return []string{DefaultRegion, "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"}
}

// reRegion is the shape of an AWS region name (us-east-1, us-gov-west-1,
// ap-southeast-2).
var reRegion = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// Validate names the first thing wrong with the configuration's regions (a
// malformed name, a region listed twice, or a home Region that is not one
// of Regions) or its Cloudflare identities (an extra identity with an empty
// field, a zone id given two names or accounts, a negative quota). New does
// not refuse a Config (it normalises instead), so callers that take them
// from a user (cmd/cloudsim) call Validate first.
func (c Config) Validate() error {
	if err := c.ValidateCF(); err != nil {
		return err
	}
	if c.Region != "" && !reRegion.MatchString(c.Region) {
		return fmt.Errorf("region %q is not an AWS region name (like us-east-1)", c.Region)
	}
	seen := map[string]bool{}
	for _, r := range c.Regions {
		if !reRegion.MatchString(r) {
			return fmt.Errorf("regions: %q is not an AWS region name (like eu-west-1)", r)
		}
		if seen[r] {
			return fmt.Errorf("regions: %s is listed twice", r)
		}
		seen[r] = true
	}
	if home := c.Region; len(c.Regions) > 0 && home != "" && !seen[home] {
		return fmt.Errorf("region %s (the home region) is not one of regions %v", home, c.Regions)
	}
	return nil
}

// normaliseRegions sets Region (DefaultRegion when empty) and makes Regions
// the home region first, then the others in the order given, without empty
// or repeated entries.
func normaliseRegions(c *Config) {
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	out := make([]string, 0, len(c.Regions)+1)
	out = append(out, c.Region)
	seen := map[string]bool{c.Region: true}
	for _, r := range c.Regions {
		if r = strings.TrimSpace(r); r != "" && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	c.Regions = out
}

// Regions returns the account's regions (home region included).
func (s *Sim) Regions() []string { return append([]string(nil), s.cfg.Regions...) }

// hasRegion reports whether the account has region r.
func (s *Sim) hasRegion(r string) bool {
	for _, x := range s.cfg.Regions {
		if x == r {
			return true
		}
	}
	return false
}

// Sim is one emulated world. All state is guarded by mu; handlers take mu,
// call s.tick() to run due scheduled events, then act.
type Sim struct {
	cfg Config
	cf  cfDirectory // the Cloudflare identities (cf_identity.go); read-only after New

	mu  sync.Mutex
	rnd *rand.Rand
	seq uint64 // id counter
	// idSeed seeded rnd, which has drawn idDraws hex digits since: the id
	// generator's state as a snapshot keeps it (persist.go).
	idSeed  int64
	idDraws uint64
	// version counts changes of the world; notify (capacity 1) tells an
	// autosaver that there is one (persist.go).
	version uint64
	notify  chan struct{}

	tunnels     map[string]*Tunnel        // by tunnel id
	dnsRecords  map[string]*DNSRecord     // by record id
	instances   map[string]*Instance      // by instance id
	clientToks  map[tokenKey]*clientToken // RunInstances (region, ClientToken) -> reservation
	params      map[paramKey]*Parameter   // by (region, name); written only through setParam/deleteParam
	paramOrder  map[string][]string       // per region: params' names sorted, absent when stale (ssm.go)
	commands    map[string]*Command       // by command id
	connectors  map[string]*Connector     // by instance id: the simulated cloudflared
	reservation map[string][]string       // reservation id -> instance ids

	sched   []scheduled // pending world events, sorted by at
	eventAt time.Time   // due time of the event running now (zero outside events)

	calls  *callCounter // see calls.go
	faults *faultSet    // see faults.go
}

// New builds an empty world.
func New(cfg Config) *Sim {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	normaliseRegions(&cfg)
	if cfg.DNSQuota == 0 {
		cfg.DNSQuota = 200
	}
	if cfg.TunnelQuota == 0 {
		cfg.TunnelQuota = DefaultTunnelQuota
	}
	cfg.CFExtra = append([]CFIdentity(nil), cfg.CFExtra...) // the world's own copy
	if cfg.DNSBatchLimit <= 0 {
		cfg.DNSBatchLimit = 200
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	s := &Sim{
		cfg:         cfg,
		cf:          newCFDirectory(cfg),
		rnd:         rand.New(rand.NewSource(cfg.Seed)),
		idSeed:      cfg.Seed,
		notify:      make(chan struct{}, 1),
		tunnels:     map[string]*Tunnel{},
		dnsRecords:  map[string]*DNSRecord{},
		instances:   map[string]*Instance{},
		clientToks:  map[tokenKey]*clientToken{},
		params:      map[paramKey]*Parameter{},
		paramOrder:  map[string][]string{},
		commands:    map[string]*Command{},
		connectors:  map[string]*Connector{},
		reservation: map[string][]string{},
	}
	s.calls = newCallCounter()
	s.faults = newFaultSet(cfg.Seed, cfg.Limits)
	return s
}

// Config returns the world's configuration (a copy: its slices are the
// caller's).
func (s *Sim) Config() Config {
	c := s.cfg
	c.Regions = append([]string(nil), c.Regions...)
	c.CFExtra = append([]CFIdentity(nil), c.CFExtra...)
	return c
}

// now is the world's clock.
// While a scheduled event runs, now is the event's own due time, so whatever
// the event schedules in turn (a restarted cloudflared's connect, a boot) is
// timed from when it was due, not from when a request happened to tick the
// world: the lazy world then matches one that advanced by itself. Caller
// holds mu (code outside mu reads s.cfg.Now()).
func (s *Sim) now() time.Time {
	if !s.eventAt.IsZero() {
		return s.eventAt
	}
	return s.cfg.Now()
}

// scheduled is a world event that fires once its time has come.
type scheduled struct {
	at time.Time
	ev event
}

// event is one pending change of the world: what happens and to what, named
// by id. Events are data rather than closures so that a snapshot keeps the
// world's timers (persist.go): a boot, a termination or a cloudflared's
// next connect attempt resumes after a reload at the time it was due.
type event struct {
	Kind     string    `json:"kind"`
	Instance string    `json:"instance,omitempty"` // instance id (connector events: its instance's)
	Command  string    `json:"command,omitempty"`  // SSM command id
	Region   string    `json:"region,omitempty"`   // evTokenExpire: the token's region
	Token    string    `json:"token,omitempty"`    // evTokenExpire: the ClientToken
	Gen      int       `json:"gen,omitempty"`      // connector events: the process generation they belong to
	Since    time.Time `json:"since,omitzero"`     // evRebootUp: the instance's StateChangedAt when the reboot began
	// Held (evConnectAttempt): a running cloudflared dials the edge again
	// with the token it holds (its connections were closed under it),
	// instead of reading its parameter as a starting one does.
	Held bool `json:"held,omitempty"`
}

// Event kinds; each is handled in fire.
const (
	evBoot           = "boot"            // pending -> running (RunInstances)
	evRebootUp       = "reboot_up"       // a rebooted instance's OS is up again
	evShutdownDone   = "shutdown_done"   // shutting-down -> terminated
	evStopDone       = "stop_done"       // stopping -> stopped
	evForget         = "forget"          // a terminated instance drops out of DescribeInstances
	evTokenExpire    = "token_expire"    // a ClientToken is no longer honoured
	evConnectAttempt = "connect_attempt" // cloudflared reads its token
	evConnectOpen    = "connect_open"    // cloudflared's connections are registered
	evSSMVisible     = "ssm_visible"     // an invocation goes Pending -> InProgress
	evSSMRun         = "ssm_run"         // an invocation runs its script
)

// schedule queues ev to fire (under mu) at or after at; events due at the
// same time fire in the order they were queued. Caller holds mu.
func (s *Sim) schedule(at time.Time, ev event) {
	i := sort.Search(len(s.sched), func(i int) bool { return s.sched[i].at.After(at) })
	s.sched = append(s.sched, scheduled{})
	copy(s.sched[i+1:], s.sched[i:])
	s.sched[i] = scheduled{at: at, ev: ev}
}

// tick runs every scheduled event that is due, in time order. Time in the
// world advances lazily: every request calls tick before it looks at state,
// so the world is deterministic for a given sequence of requests and clock.
// Caller holds mu.
func (s *Sim) tick() {
	now := s.now()
	fired := false
	for len(s.sched) > 0 && !s.sched[0].at.After(now) {
		ev := s.sched[0]
		s.sched = s.sched[1:]
		s.eventAt = ev.at
		s.fire(ev.ev)
		s.eventAt = time.Time{}
		fired = true
	}
	if fired {
		s.changed()
	}
}

// changed records that the world changed, for an autosaver. Caller holds mu.
func (s *Sim) changed() {
	s.version++
	select {
	case s.notify <- struct{}{}:
	default: // a save is already due; it will see this change too
	}
}

// changedBy records a change when op (an operation name, as in Calls) may
// have changed the world: anything but a read. Caller holds mu.
func (s *Sim) changedBy(op string) {
	if !readOnlyOp(op) {
		s.changed()
	}
}

// readOnlyOp reports whether op only reads. Unknown operations count as
// writes, so a save is never skipped for want of a name here.
func readOnlyOp(op string) bool {
	switch {
	case strings.HasPrefix(op, "sts."),
		strings.HasPrefix(op, "ec2.Describe"),
		strings.HasPrefix(op, "ssm.Get"), strings.HasPrefix(op, "ssm.Describe"), strings.HasPrefix(op, "ssm.List"),
		strings.HasPrefix(op, "cf.") && (strings.HasSuffix(op, ".get") || strings.HasSuffix(op, ".list")):
		return true
	}
	return false
}

// fire runs one due event; s.now() is its due time. An event whose target
// has moved on (another state, a newer connector generation) does nothing.
// Caller holds mu.
func (s *Sim) fire(ev event) {
	at := s.now()
	inst := s.instances[ev.Instance]
	switch ev.Kind {
	case evBoot:
		if inst == nil || inst.State != "pending" {
			return
		}
		// Times are the scheduled ones, not the (later) tick's, so the
		// world does not depend on when someone happened to look.
		inst.State, inst.StateChangedAt = "running", at
		s.instanceRunning(inst)
	case evRebootUp:
		if inst != nil && inst.State == "running" && inst.StateChangedAt.Equal(ev.Since) {
			s.instanceRunning(inst)
		}
	case evShutdownDone:
		s.shutdownDone(inst)
	case evStopDone:
		if inst != nil && inst.State == "stopping" {
			inst.State, inst.StateChangedAt = "stopped", at
		}
	case evForget:
		if inst != nil && inst.State == "terminated" {
			delete(s.instances, inst.ID)
		}
	case evTokenExpire:
		s.expireToken(tokenKey{ev.Region, ev.Token})
	case evConnectAttempt:
		if c := s.connectors[ev.Instance]; c != nil {
			s.connectAttempt(c, ev.Gen, at, ev.Held)
		}
	case evConnectOpen:
		if c := s.connectors[ev.Instance]; c != nil {
			s.connectOpen(c, ev.Gen, at)
		}
	case evSSMVisible, evSSMRun:
		cmd := s.commands[ev.Command]
		if cmd == nil || cmd.Invocations[ev.Instance] == nil {
			return
		}
		if ev.Kind == evSSMVisible {
			if inv := cmd.Invocations[ev.Instance]; inv.Status == "Pending" {
				inv.Status = "InProgress"
			}
			return
		}
		s.runInvocation(cmd, ev.Instance, at)
	default:
		// Only a snapshot could carry an unknown kind, and load refuses it.
		panic("cloudsim: unknown world event " + ev.Kind)
	}
}

// Tick lets a caller (a test, a poller) advance the world without a request.
func (s *Sim) Tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick()
}

// Handler serves all emulated APIs on one address: Cloudflare under
// /client/v4/, the emulator's own endpoints under /_sim/, and EC2, SSM and
// STS at the root, told apart by protocol (SSM: JSON with X-Amz-Target
// AmazonSSM.*; EC2 and STS: form-encoded query protocol with Action=, told
// apart by the service their SigV4 credential scope names).
func (s *Sim) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/client/v4/"):
			s.serveCloudflare(w, r) // cf.go
		case strings.HasPrefix(r.URL.Path, "/_sim/"):
			s.serveSim(w, r) // simhttp.go
		case strings.HasPrefix(r.Header.Get("X-Amz-Target"), "AmazonSSM."):
			s.serveSSM(w, r) // ssm.go
		case r.Method == http.MethodPost && sigV4Service(r) == "sts":
			s.serveSTS(w, r) // sts.go
		case r.Method == http.MethodPost:
			s.serveEC2(w, r) // ec2.go
		default:
			http.NotFound(w, r)
		}
	})
}

// newHex returns a deterministic id of n hex characters. Caller holds mu.
func (s *Sim) newHex(n int) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hexd[s.rnd.Intn(16)]
	}
	s.idDraws += uint64(n)
	return string(b)
}

// ---- Resource types shared by the provider files and the world ----

// Tunnel is a Cloudflare Tunnel (cfd_tunnel).
type Tunnel struct {
	ID              string
	AccountTag      string
	Name            string
	ConfigSrc       string // "cloudflare" (remotely managed) or "local"
	Secret          string // base64 tunnel secret; part of the token
	CreatedAt       time.Time
	DeletedAt       *time.Time
	Config          *TunnelConfig // remotely-managed configuration, nil until PUT
	ConfigVersion   int
	Connections     []TunnelConn // active connections (4 per healthy connector)
	EverConnected   bool
	ConnsActiveAt   *time.Time
	ConnsInactiveAt *time.Time
	Metadata        map[string]any
	// SecretGen counts the rotations of Secret (PATCH tunnel_secret with a
	// new value): 0 as created. A connector's TokenGen is the generation it
	// authenticated with; only the current one opens new connections.
	SecretGen int `json:",omitempty"`
}

// TunnelConfig is the remotely-managed configuration (ingress rules).
type TunnelConfig struct {
	Ingress []IngressRule `json:"ingress"`
	// Raw keeps any other fields the client sent, returned as-is.
	Raw map[string]any `json:"-"`
}

// IngressRule is one ingress rule.
type IngressRule struct {
	Hostname string `json:"hostname,omitempty"`
	Path     string `json:"path,omitempty"`
	Service  string `json:"service"`
}

// TunnelConn is one edge connection of a connector.
type TunnelConn struct {
	ID          string
	ConnectorID string // the client id (uuid) of the simulated cloudflared that opened it
	ColoName    string
	OpenedAt    time.Time
	OriginIP    string
}

// DNSRecord is a zone DNS record.
type DNSRecord struct {
	ID         string
	ZoneID     string
	Name       string // FQDN, lowercase
	Type       string
	Content    string
	Proxied    bool
	TTL        int
	Comment    string
	Tags       []string
	CreatedOn  time.Time
	ModifiedOn time.Time
}

// Instance is an EC2 instance.
type Instance struct {
	ID                 string
	ReservationID      string
	ImageID            string
	InstanceType       string
	State              string // pending, running, stopping, stopped, shutting-down, terminated
	UserData           string // base64, as sent
	Tags               map[string]string
	IamInstanceProfile string // ARN or name
	SubnetID           string
	SecurityGroupIDs   []string
	PrivateIP          string
	PublicIP           string // only when the launch associated one
	LaunchTime         time.Time
	StateChangedAt     time.Time
	ClientToken        string
	// Region is where the instance was launched (the RunInstances request's
	// region); "" means Config.Region (loaders, hand-built worlds).
	Region string
	// MetadataOptions are the instance metadata service settings the launch
	// asked for; fields left empty (or 0) mean EC2's defaults.
	MetadataOptions MetadataOptions
}

// MetadataOptions are an instance's metadata service (IMDS) settings, as
// RunInstances takes them (MetadataOptions.*). The zero value of a field
// means EC2's default for it: HttpTokens "optional" (IMDSv1 allowed),
// HttpPutResponseHopLimit 1, HttpEndpoint "enabled", HttpProtocolIpv6 and
// InstanceMetadataTags "disabled".
type MetadataOptions struct {
	HttpTokens              string // optional | required
	HttpPutResponseHopLimit int    // 1..64
	HttpEndpoint            string // enabled | disabled
	HttpProtocolIpv6        string // enabled | disabled
	InstanceMetadataTags    string // enabled | disabled
}

// withDefaults fills in EC2's default for every field left unset.
func (m MetadataOptions) withDefaults() MetadataOptions {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&m.HttpTokens, "optional")
	def(&m.HttpEndpoint, "enabled")
	def(&m.HttpProtocolIpv6, "disabled")
	def(&m.InstanceMetadataTags, "disabled")
	if m.HttpPutResponseHopLimit == 0 {
		m.HttpPutResponseHopLimit = 1
	}
	return m
}

// tokenKey: a ClientToken is idempotent within one region only, as on AWS.
type tokenKey struct{ region, token string }

// paramKey: a parameter name is unique within one region only.
type paramKey struct{ region, name string }

// clientToken remembers a RunInstances ClientToken: its parameter fingerprint
// and the reservation it produced.
type clientToken struct {
	Fingerprint   string
	ReservationID string
	CreatedAt     time.Time
	// Instances of the reservation, kept here after they drop out of
	// s.instances: AWS honours a token for at least 24 h after termination.
	Instances []*Instance
}

// Parameter is an SSM parameter.
type Parameter struct {
	Name             string
	Type             string // String, StringList, SecureString
	Value            string
	Version          int64
	Tags             map[string]string
	KeyID            string
	Description      string
	LastModifiedDate time.Time
	Tier             string
	DataType         string
	// Region is where the parameter lives; "" means Config.Region (set by
	// setParam, so a stored parameter always has it).
	Region string
}

// Command is an SSM SendCommand invocation (one instance each, as we use it).
type Command struct {
	ID           string
	DocumentName string
	InstanceIDs  []string
	Commands     []string
	Comment      string
	RequestedAt  time.Time
	Region       string // where it was sent; GetCommandInvocation sees it only there
	// Per instance: Status (Pending, InProgress, Success, Failed, ...), output.
	Invocations map[string]*Invocation
}

// Invocation is one instance's view of a command.
type Invocation struct {
	InstanceID string
	Status     string
	StdOut     string
	StdErr     string
	ExitCode   int32
	DoneAt     time.Time
}

// Connector is the simulated cloudflared on one instance.
type Connector struct {
	InstanceID string
	TunnelID   string // the tunnel its token authenticated, "" when none
	Running    bool   // process up (killed by /_sim/world, restarted by SendCommand)
	Connected  bool
	LastError  string // e.g. "parameter not found", "invalid token"
	// Broken makes cloudflared exit at every start (a corrupt binary, a full
	// disk): set by /_sim/world break_connector, cured only by a new instance.
	Broken bool

	// ClientID is the uuid the connector registers with (connections'
	// client_id): cloudflared draws a new one at every start, so a
	// restarted cloudflared is a new connector.
	ClientID string
	// TokenGen is the generation (Tunnel.SecretGen) of the secret in the
	// token the process authenticated TunnelID with: it holds that token
	// until it restarts, and dials again with it when its connections are
	// closed under it. The token itself is not kept here.
	TokenGen    int       `json:",omitempty"`
	RunAt       time.Time // when the process last started
	Attempts    int       // connect attempts since the process started
	ConnectedAt time.Time
	gen         int // bumped on every start/stop so stale scheduled attempts do nothing
}
