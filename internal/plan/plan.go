// Package plan decides what should change for one org: a pure function of its
// desired state and what was observed in the cloud, shared by the reconcile
// engine (which applies the changes) and `reconciler plan` (which prints
// them). No network, no storage: table-tested alone.
package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/tunnelward/tunnelward/internal/owner"
)

// CatchAllService answers every hostname the ingress does not name.
const CatchAllService = "http_status:404"

// TunnelTarget is the CNAME target of a tunnel.
func TunnelTarget(tunnelID string) string { return tunnelID + ".cfargotunnel.com" }

// Desired is what should exist for one org, already resolved against config.
type Desired struct {
	OrgID      string
	Present    bool   // false: the org is deleted and everything of it must go
	Hostname   string // <slug>.<zone>, lowercase
	Service    string // ingress service, e.g. http://localhost:8080
	Generation int64
	// Takeover, when set, names the record another party holds at the
	// hostname that the org may replace with its CNAME (a cutover of an
	// existing tenant, org.created's data.takeover); nil when none is
	// allowed, or when the org already has its own record.
	Takeover *Takeover `json:"Takeover,omitempty"`
}

// Takeover names an existing record by its type and its content, its
// Cloudflare id, or both (both must then match).
type Takeover struct {
	Type     string `json:"type"`
	Content  string `json:"content,omitempty"`
	RecordID string `json:"record_id,omitempty"`
}

// Tunnel is an observed live (not deleted) tunnel named for the org.
type Tunnel struct {
	ID     string
	Status string // inactive, healthy, degraded, down
}

// IngressRule is one rule of a tunnel's remotely-managed configuration.
type IngressRule struct {
	Hostname string `json:"hostname,omitempty"`
	Service  string `json:"service"`
}

// Record is an observed DNS record that either has the org's hostname or
// carries the org's ownership marker.
type Record struct {
	ID      string
	Name    string
	Type    string
	Content string
	Proxied bool
	TTL     int // seconds; 1 is Cloudflare's "automatic"
	Comment string
	// Pool is the Cloudflare pool whose zone holds the record, set by
	// listings that span pools (reconcile's Engine.List).
	Pool string
}

// Param is the observed token parameter (metadata only; the value is never read
// into a plan).
type Param struct {
	Name     string
	TunnelID string // from the parameter's TunnelID tag or description: which tunnel the token is for
}

// Instance is an observed owned instance of the org that is not terminated.
type Instance struct {
	ID         string
	State      string // pending, running, stopping, stopped, shutting-down
	TunnelID   string // TunnelID tag
	Generation int64  // Generation tag
}

// Observed is what reads found. A nil pointer or empty slice means "looked and
// found nothing"; the *Known flags say whether that part was looked at, so a
// plan never creates what it did not look for.
type Observed struct {
	Tunnel        *Tunnel
	Ingress       []IngressRule
	IngressKnown  bool
	Records       []Record
	RecordsKnown  bool
	Param         *Param
	ParamKnown    bool
	Instances     []Instance
	InstanceKnown bool
	// Remedy is what the health diagnosis decided from this observation
	// (and the org's remediation history): an input of the plan, so that a
	// pass and the dry run turn it into the same changes.
	Remedy Remedy
	// Rotation is the token rotation's part of the observation.
	Rotation Rotation
}

// Rotation is what a token rotation needs to be decided: whether one
// should start, where one in flight is, and the tunnel's connectors.
type Rotation struct {
	Want  string   // why a rotation should start ("" when none should)
	Phase string   // next step of a rotation in flight ("" when none is)
	Old   []string // connectors connected before its new secret
	// Connectors are connected now (read while a rotation starts or waits
	// for its connector: ConnectorsKnown).
	Connectors      []string
	ConnectorsKnown bool
	// Stuck: no connector on the new token a health grace after the
	// restart, while the old one may still serve: the instance is replaced
	// (a new instance boots on the token in SSM), at most
	// MaxRotationReplacements times (Replaced so far).
	Stuck    bool
	Replaced int
}

// MaxRotationReplacements bounds the instances a rotation replaces when no
// connector comes up on the new token: past it the cause is not the
// instance (its role cannot read the parameter, no route to Cloudflare),
// and replacing more would only cost boots (and the old connector's
// service, while it still runs).
const MaxRotationReplacements = 2

// Rotation phases, as state.Rotation.Phase records them.
const (
	RotateSecret  = "secret"
	RotateToken   = "token"
	RotateRestart = "restart"
	RotateConnect = "connect"
)

// Remedy is a health diagnosis's decision for one pass.
type Remedy struct {
	Restart string // restart cloudflared on this instance
	Replace string // terminate this instance and launch another
	// HoldReplace: the org used up its remediations for the window, so an
	// instance that needs replacing (stopped, or from an older generation)
	// is left as it is; the replacement is withheld.
	HoldReplace bool
	Reason      string
}

// Resource names a kind of cloud resource in a change.
type Resource string

const (
	ResTunnel   Resource = "tunnel"
	ResIngress  Resource = "ingress"
	ResToken    Resource = "token"
	ResDNS      Resource = "dns"
	ResInstance Resource = "instance"
)

// Op is what a change does.
type Op string

const (
	OpCreate  Op = "create"
	OpUpdate  Op = "update"
	OpDelete  Op = "delete"
	OpRestart Op = "restart" // restart cloudflared on the instance (token changed under it)
	// OpTakeover replaces another party's record named by the org's
	// takeover (Target: its id) with the org's CNAME, in one DNS batch.
	OpTakeover Op = "takeover"
	// OpRotate runs a token rotation's next steps (ResToken): a new secret,
	// its token into SSM, cloudflared restarted on it.
	OpRotate Op = "rotate"
	// OpDrop deletes a connector's connections (ResTunnel, Target the
	// client id): one from before a rotation, once the new one connected.
	OpDrop Op = "drop"
	// OpRotated records a finished rotation (ResToken).
	OpRotated Op = "rotated"
)

// Change is one step a reconcile would take.
type Change struct {
	Resource Resource `json:"resource"`
	Op       Op       `json:"op"`
	Target   string   `json:"target,omitempty"` // id or name the change acts on
	Reason   string   `json:"reason"`
}

func (c Change) String() string {
	return fmt.Sprintf("%s %s %s: %s", c.Op, c.Resource, c.Target, c.Reason)
}

// Conflict is something tunnelward must not fix: a resource it does not own
// stands where one of its own should be.
type Conflict struct {
	Resource Resource `json:"resource"`
	Target   string   `json:"target"`
	Reason   string   `json:"reason"`
}

// Result is the plan for one org.
type Result struct {
	Changes   []Change   `json:"changes"`
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// Withheld are the creations a conflict holds back: while another
	// party's record holds the org's hostname nothing billable is built for
	// it (a tunnel, token and instance that could never serve), and the
	// plan says so instead of staying silent. A takeover waiting for the
	// tunnel to be healthy is withheld too (TakeoverWaiting).
	Withheld []Change `json:"withheld,omitempty"`
	// KeepInstance is the live instance the plan keeps as the org's own
	// ("" when it launches one): the one place that choice is made, so the
	// engine records (adopts) exactly this instance.
	KeepInstance string `json:"keep_instance,omitempty"`
	// KeepRecord is the org's own DNS record at its hostname, when one exists.
	KeepRecord string `json:"keep_record,omitempty"`
	// Ready is true when nothing needs to change and the tunnel is healthy.
	Ready bool `json:"ready"`
}

// Empty reports whether the plan changes nothing.
func (r Result) Empty() bool { return len(r.Changes) == 0 }

// WantIngress is the ingress an org's tunnel should carry.
func WantIngress(d Desired) []IngressRule {
	return []IngressRule{{Hostname: d.Hostname, Service: d.Service}, {Service: CatchAllService}}
}

// IngressEqual compares two rule lists exactly (order matters: first match wins).
func IngressEqual(a, b []IngressRule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !strings.EqualFold(a[i].Hostname, b[i].Hostname) || a[i].Service != b[i].Service {
			return false
		}
	}
	return true
}

// Compute returns the changes that take the org from o to d.
func Compute(d Desired, o Observed) Result {
	if !d.Present {
		return computeDelete(d, o)
	}
	var r Result
	add := func(res Resource, op Op, target, reason string) {
		r.Changes = append(r.Changes, Change{Resource: res, Op: op, Target: target, Reason: reason})
	}
	tunnelID := ""
	if o.Tunnel == nil {
		add(ResTunnel, OpCreate, owner.TunnelName(d.OrgID), "no live tunnel named "+owner.TunnelName(d.OrgID))
	} else {
		tunnelID = o.Tunnel.ID
	}

	want := WantIngress(d)
	switch {
	case o.Tunnel == nil:
		add(ResIngress, OpUpdate, d.Hostname, reasonNewTunnelIngress)
	case o.IngressKnown && !IngressEqual(o.Ingress, want):
		add(ResIngress, OpUpdate, d.Hostname, fmt.Sprintf("ingress is %s, want %s", describeIngress(o.Ingress), describeIngress(want)))
	}

	switch {
	case o.Tunnel == nil:
		add(ResToken, OpCreate, "", "new tunnel needs its token in SSM")
	case o.ParamKnown && o.Param == nil:
		add(ResToken, OpCreate, "", "token parameter missing")
	case o.ParamKnown && o.Param.TunnelID != tunnelID:
		add(ResToken, OpUpdate, o.Param.Name, fmt.Sprintf("parameter holds the token of tunnel %q, want %q", o.Param.TunnelID, tunnelID))
	}

	if o.RecordsKnown || o.Tunnel == nil {
		dnsChanges(d, o, tunnelID, &r)
	}

	if o.InstanceKnown || o.Tunnel == nil {
		instanceChanges(d, o, tunnelID, &r)
		applyRemedy(d, o.Remedy, &r)
	}
	takeoverLast(&r)
	rotationChanges(d, o, tunnelID, &r)
	withholdOnConflict(&r)

	r.Ready = len(r.Changes) == 0 && len(r.Conflicts) == 0 && o.Tunnel != nil && o.Tunnel.Status == "healthy"
	return r
}

// InstanceWork says what the plan does to the org's instances before any
// remedy: how many it deletes, whether it launches one, and which live one
// it keeps. The health diagnosis asks it (a replacement of a stopped
// instance is a remediation; the kept instance is the one whose health is
// judged), so the rule for which instance stays lives in this package only.
func InstanceWork(d Desired, o Observed) (deletes int, launch bool, keep string) {
	var r Result
	tunnelID := ""
	if o.Tunnel != nil {
		tunnelID = o.Tunnel.ID
	}
	instanceChanges(d, o, tunnelID, &r)
	for _, c := range r.Changes {
		switch {
		case c.Resource == ResInstance && c.Op == OpDelete:
			deletes++
		case c.Resource == ResInstance && c.Op == OpCreate:
			launch = true
		}
	}
	return deletes, launch || o.Tunnel == nil, r.KeepInstance
}

// applyRemedy turns the health verdict into instance changes.
func applyRemedy(d Desired, m Remedy, r *Result) {
	has := func(op Op, target string) bool {
		for _, c := range r.Changes {
			if c.Resource == ResInstance && c.Op == op && (target == "" || c.Target == target) {
				return true
			}
		}
		return false
	}
	if m.HoldReplace && has(OpDelete, "") {
		kept := r.Changes[:0:0]
		for _, c := range r.Changes {
			if c.Resource == ResInstance && (c.Op == OpDelete || c.Op == OpCreate) {
				c.Reason = "withheld: remediation limit reached (" + c.Reason + ")"
				r.Withheld = append(r.Withheld, c)
				continue
			}
			kept = append(kept, c)
		}
		r.Changes = kept
	}
	if m.Replace != "" {
		if !has(OpDelete, m.Replace) {
			r.Changes = append(r.Changes, Change{Resource: ResInstance, Op: OpDelete, Target: m.Replace, Reason: m.Reason})
		}
		if !has(OpCreate, "") {
			r.Changes = append(r.Changes, Change{Resource: ResInstance, Op: OpCreate, Target: d.OrgID, Reason: "replacing " + m.Replace})
		}
		if r.KeepInstance == m.Replace {
			r.KeepInstance = ""
		}
	}
	if m.Restart != "" && !has(OpRestart, m.Restart) {
		r.Changes = append(r.Changes, Change{Resource: ResInstance, Op: OpRestart, Target: m.Restart, Reason: m.Reason})
	}
}

// rotationChanges adds a token rotation's steps. A rotation starts only on
// a converged org (nothing else to change, its instance kept, its tunnel
// healthy), so it never races a build or a repair; one in flight goes on
// whatever else the pass does (a replaced instance boots on the token in
// SSM, which is the new one from the token step on).
func rotationChanges(d Desired, o Observed, tunnelID string, r *Result) {
	rt := o.Rotation
	if tunnelID == "" || (rt.Want == "" && rt.Phase == "") {
		return
	}
	add := func(res Resource, op Op, target, reason string) {
		r.Changes = append(r.Changes, Change{Resource: res, Op: op, Target: target, Reason: reason})
	}
	switch rt.Phase {
	case "":
		if len(r.Changes) > 0 || len(r.Conflicts) > 0 || r.KeepInstance == "" || o.Tunnel.Status != "healthy" || !rt.ConnectorsKnown {
			r.Withheld = append(r.Withheld, Change{Resource: ResToken, Op: OpRotate, Target: tunnelID,
				Reason: "withheld until the org is converged and its tunnel healthy (" + rt.Want + ")"})
			return
		}
		add(ResToken, OpRotate, tunnelID, rt.Want)
	case RotateSecret, RotateToken, RotateRestart:
		add(ResToken, OpRotate, tunnelID, "rotation in flight; next step: "+rt.Phase)
	case RotateConnect:
		var fresh, old []string
		for _, c := range rt.Connectors {
			if slices.Contains(rt.Old, c) {
				old = append(old, c)
			} else {
				fresh = append(fresh, c)
			}
		}
		switch {
		case rt.ConnectorsKnown && len(fresh) > 0:
			for _, c := range old {
				add(ResTunnel, OpDrop, c, "connector from before the rotation; "+strings.Join(fresh, ", ")+" runs on the new token")
			}
			add(ResToken, OpRotated, tunnelID, "connector "+strings.Join(fresh, ", ")+" runs on the new token")
		case rt.Stuck && r.KeepInstance != "" && !slices.ContainsFunc(r.Changes, func(c Change) bool { return c.Resource == ResInstance && c.Op == OpDelete }):
			why := rotationStuckWhy
			if held := rt.Replaced >= MaxRotationReplacements || o.Remedy.HoldReplace; held {
				reason := fmt.Sprintf("withheld: %s, and %d instance replacements brought none; check that the instance can read its token parameter and reach Cloudflare", why, rt.Replaced)
				if rt.Replaced < MaxRotationReplacements {
					reason = "withheld: remediation limit reached (" + why + ")"
				}
				r.Withheld = append(r.Withheld, Change{Resource: ResInstance, Op: OpCreate, Target: d.OrgID, Reason: reason})
				return
			}
			add(ResInstance, OpDelete, r.KeepInstance, why)
			add(ResInstance, OpCreate, d.OrgID, "replacing "+r.KeepInstance+": "+why)
			r.KeepInstance = ""
		}
	}
}

// withholdOnConflict moves every creation out of a plan whose hostname is
// held by a record tunnelward does not own: the org could never serve, so
// nothing is built for it until the name is free. Updates and deletes of
// what already exists still go ahead.
func withholdOnConflict(r *Result) {
	conflict := ""
	for _, c := range r.Conflicts {
		if c.Resource == ResDNS {
			conflict = c.Target
			break
		}
	}
	if conflict == "" {
		return
	}
	kept := r.Changes[:0:0]
	for _, c := range r.Changes {
		newTunnelIngress := c.Resource == ResIngress && c.Reason == reasonNewTunnelIngress
		if c.Op == OpCreate || newTunnelIngress {
			c.Reason = fmt.Sprintf("withheld: %s is held by a record tunnelward does not own (%s)", conflict, c.Reason)
			r.Withheld = append(r.Withheld, c)
			continue
		}
		kept = append(kept, c)
	}
	r.Changes = kept
}

const reasonNewTunnelIngress = "new tunnel needs its ingress"

func dnsChanges(d Desired, o Observed, tunnelID string, r *Result) {
	target := "" // unknown until the tunnel exists
	if tunnelID != "" {
		target = TunnelTarget(tunnelID)
	}
	var mine, taken *Record
	for i := range o.Records {
		rec := o.Records[i]
		owner, owned := owner.OrgFromDNSComment(rec.Comment)
		switch {
		case strings.EqualFold(rec.Name, d.Hostname) && (!owned || owner != d.OrgID):
			c, held := RecordConflict(d, rec)
			if !held && taken == nil {
				taken = &o.Records[i]
				continue
			}
			if !held {
				c = heldConflict(d, rec) // a second record the takeover matches
			}
			r.Conflicts = append(r.Conflicts, c)
		case owned && owner == d.OrgID && strings.EqualFold(rec.Name, d.Hostname) && mine == nil:
			mine = &o.Records[i]
		case owned && owner == d.OrgID:
			// Ours under an old slug, or a duplicate: never left behind.
			r.Changes = append(r.Changes, Change{Resource: ResDNS, Op: OpDelete, Target: rec.ID,
				Reason: fmt.Sprintf("owned record %s is not the org's hostname %s", rec.Name, d.Hostname)})
		}
	}
	if taken != nil && mine != nil {
		// The org's own record and the one to take over at one name
		// (Cloudflare refuses a CNAME beside another record): never
		// delete another party's record beside ours.
		r.Conflicts = append(r.Conflicts, heldConflict(d, *taken))
	}
	for _, c := range r.Conflicts {
		if c.Resource == ResDNS {
			return // leave the name alone; the Conflict condition tells why
		}
	}
	if taken != nil {
		takeoverChange(o, *taken, target, r)
		return
	}
	if mine != nil {
		r.KeepRecord = mine.ID
	}
	switch {
	case mine == nil:
		r.Changes = append(r.Changes, Change{Resource: ResDNS, Op: OpCreate, Target: d.Hostname, Reason: "no CNAME for " + d.Hostname})
	case target != "" && (mine.Type != "CNAME" || !strings.EqualFold(mine.Content, target) || !mine.Proxied):
		r.Changes = append(r.Changes, Change{Resource: ResDNS, Op: OpUpdate, Target: mine.ID,
			Reason: fmt.Sprintf("record is %s %s proxied=%t, want CNAME %s proxied=true", mine.Type, mine.Content, mine.Proxied, target)})
	}
}

// takeoverChange replaces the record the takeover names with the org's
// CNAME once the tunnel is healthy: before that, the old record keeps
// serving and the plan holds the takeover back (Withheld), saying so.
func takeoverChange(o Observed, old Record, target string, r *Result) {
	what := fmt.Sprintf("replace %s %s with CNAME %s", old.Type, old.Content, target)
	c := Change{Resource: ResDNS, Op: OpTakeover, Target: old.ID}
	switch {
	case o.Tunnel != nil && o.Tunnel.Status == "healthy":
		c.Reason = what + ": tunnel healthy"
		r.Changes = append(r.Changes, c)
	case o.Tunnel == nil:
		c.Reason = fmt.Sprintf("waits for the tunnel to be healthy (not created yet) to replace %s %s with the tunnel's CNAME; the old record stays until then", old.Type, old.Content)
		r.Withheld = append(r.Withheld, c)
	default:
		status := o.Tunnel.Status
		if status == "" {
			status = "unknown"
		}
		c.Reason = fmt.Sprintf("waits for the tunnel to be healthy (it is %s) to %s; the old record stays until then", status, what)
		r.Withheld = append(r.Withheld, c)
	}
}

// takeoverLast holds a takeover back while the plan changes anything
// else: the hostname moves to the tunnel only once the org is whole (an
// ingress update failing in the same pass would have it answer 404).
func takeoverLast(r *Result) {
	i := slices.IndexFunc(r.Changes, func(c Change) bool { return c.Resource == ResDNS && c.Op == OpTakeover })
	if i < 0 || len(r.Changes) == 1 {
		return
	}
	c := r.Changes[i]
	r.Changes = slices.Delete(r.Changes, i, i+1)
	var others []string
	for _, o := range r.Changes {
		others = append(others, string(o.Resource)+" "+string(o.Op))
	}
	c.Reason = fmt.Sprintf("waits for the org's other changes (%s) to %s; the old record stays until then",
		strings.Join(others, ", "), strings.TrimSuffix(c.Reason, ": tunnel healthy"))
	r.Withheld = append(r.Withheld, c)
}

// rotationStuckWhy is why a stuck rotation replaces the instance.
const rotationStuckWhy = "no connector on the new token a health grace after cloudflared's restart"

// RotationHeld returns the instance replacement a stuck rotation's plan
// holds back (MaxRotationReplacements reached, or the remediation limit),
// if it holds one.
func RotationHeld(r Result) (Change, bool) {
	for _, c := range r.Withheld {
		if c.Resource == ResInstance && c.Op == OpCreate && strings.Contains(c.Reason, rotationStuckWhy) {
			return c, true
		}
	}
	return Change{}, false
}

// TakeoverWaiting returns the takeover a plan holds back until the tunnel
// is healthy, if it holds one.
func TakeoverWaiting(r Result) (Change, bool) {
	for _, c := range r.Withheld {
		if c.Resource == ResDNS && c.Op == OpTakeover {
			return c, true
		}
	}
	return Change{}, false
}

// RecordConflict says whether rec, a record at the org's hostname that the
// org does not own, is a conflict (held) and words it: every such record
// is one, except one tunnelward owns for no org that matches the org's
// takeover (MatchesTakeover), which the org replaces instead.
func RecordConflict(d Desired, rec Record) (c Conflict, held bool) {
	c = heldConflict(d, rec)
	if d.Takeover == nil {
		return c, true
	}
	if _, owned := owner.OrgFromDNSComment(rec.Comment); owned {
		c.Reason += "; another org's record is never taken over"
		return c, true
	}
	if MatchesTakeover(*d.Takeover, rec) {
		return Conflict{}, false
	}
	c.Reason = fmt.Sprintf("%s record %s (%s, content %s) does not match the takeover (%s): it changed or is another record; nothing was replaced",
		rec.Type, rec.Name, rec.ID, rec.Content, describeTakeover(*d.Takeover))
	return c, true
}

// heldConflict is the conflict of a record another party holds at the
// org's hostname.
func heldConflict(d Desired, rec Record) Conflict {
	return Conflict{Resource: ResDNS, Target: rec.Name,
		Reason: fmt.Sprintf("%s record %s (%s) exists and is not owned by org %s", rec.Type, rec.Name, rec.ID, d.OrgID)}
}

// MatchesTakeover reports whether rec is the record t names: the same
// type, and the same content (case-insensitive, without a trailing dot,
// addresses in canonical form) and/or the same id, whichever t gives.
func MatchesTakeover(t Takeover, rec Record) bool {
	if !strings.EqualFold(t.Type, rec.Type) || (t.Content == "" && t.RecordID == "") {
		return false
	}
	if t.RecordID != "" && !strings.EqualFold(t.RecordID, rec.ID) {
		return false
	}
	return t.Content == "" || normContent(t.Content) == normContent(rec.Content)
}

// normContent is a record's content in one spelling: lower case, no
// trailing dot, an IP address in its canonical form (2001:DB8:0::1 is
// 2001:db8::1).
func normContent(s string) string {
	s = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String()
	}
	return s
}

func describeTakeover(t Takeover) string {
	parts := []string{t.Type}
	if t.Content != "" {
		parts = append(parts, t.Content)
	}
	if t.RecordID != "" {
		parts = append(parts, "id "+t.RecordID)
	}
	return strings.Join(parts, " ")
}

func instanceChanges(d Desired, o Observed, tunnelID string, r *Result) {
	var live []Instance
	for _, in := range o.Instances {
		switch in.State {
		case "pending", "running":
			if in.Generation > 0 && in.Generation < d.Generation {
				// Left from before the org was deleted and created again: the new
				// generation starts clean.
				r.Changes = append(r.Changes, Change{Resource: ResInstance, Op: OpDelete, Target: in.ID,
					Reason: fmt.Sprintf("instance is from generation %d, org is at %d", in.Generation, d.Generation)})
				continue
			}
			live = append(live, in)
		case "stopping", "stopped":
			r.Changes = append(r.Changes, Change{Resource: ResInstance, Op: OpDelete, Target: in.ID, Reason: "instance is " + in.State + "; it is replaced"})
		}
	}
	// Keep the newest generation, then the lowest id: deterministic, so two
	// reconciles never pick different survivors.
	sort.Slice(live, func(i, j int) bool {
		if live[i].Generation != live[j].Generation {
			return live[i].Generation > live[j].Generation
		}
		return live[i].ID < live[j].ID
	})
	if len(live) == 0 {
		r.Changes = append(r.Changes, Change{Resource: ResInstance, Op: OpCreate, Target: d.OrgID, Reason: "no live instance"})
		return
	}
	for _, extra := range live[1:] {
		r.Changes = append(r.Changes, Change{Resource: ResInstance, Op: OpDelete, Target: extra.ID, Reason: "duplicate instance; keeping " + live[0].ID})
	}
	keep := live[0]
	r.KeepInstance = keep.ID
	if tunnelID != "" && keep.TunnelID != tunnelID {
		// The tunnel was replaced (deleted out of band): the parameter gets the
		// new token, and cloudflared must re-read it.
		r.Changes = append(r.Changes, Change{Resource: ResInstance, Op: OpRestart, Target: keep.ID,
			Reason: fmt.Sprintf("instance runs tunnel %q, want %q", keep.TunnelID, tunnelID)})
	}
}

func computeDelete(d Desired, o Observed) Result {
	var r Result
	add := func(res Resource, op Op, target, reason string) {
		r.Changes = append(r.Changes, Change{Resource: res, Op: op, Target: target, Reason: reason})
	}
	for _, in := range o.Instances {
		if in.State != "shutting-down" && in.State != "terminated" {
			add(ResInstance, OpDelete, in.ID, "org deleted")
		}
	}
	for _, rec := range o.Records {
		if owner, ok := owner.OrgFromDNSComment(rec.Comment); ok && owner == d.OrgID {
			add(ResDNS, OpDelete, rec.ID, "org deleted")
		}
	}
	if o.Param != nil {
		add(ResToken, OpDelete, o.Param.Name, "org deleted")
	}
	if o.Tunnel != nil {
		add(ResTunnel, OpDelete, o.Tunnel.ID, "org deleted")
	}
	return r
}

func describeIngress(rules []IngressRule) string {
	if len(rules) == 0 {
		return "empty"
	}
	parts := make([]string, len(rules))
	for i, ru := range rules {
		h := ru.Hostname
		if h == "" {
			h = "*"
		}
		parts[i] = h + "->" + ru.Service
	}
	return strings.Join(parts, ",")
}
