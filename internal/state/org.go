// Package state is tunnelward's durable desired and observed state, kept in
// bbolt: one record per org, plus the schema version. Desired state changes
// only through applied events (ingest, replay); observed resource ids,
// conditions and remediation history are written by the reconcile engine.
package state

import (
	"slices"
	"time"
)

// Presence is whether an org should exist.
type Presence string

const (
	Present Presence = "present"
	Deleted Presence = "deleted" // tombstone: kept so older events stay ignored
)

// Desired is what the platform's events say should exist.
type Desired struct {
	Presence     Presence `json:"presence"`
	Slug         string   `json:"slug,omitempty"`
	InstanceType string   `json:"instance_type,omitempty"` // optional override from org.created
	Region       string   `json:"region,omitempty"`        // optional override from org.created
	// Pool is the Cloudflare pool org.created asked for (data.pool), "" for
	// the placement policy's choice.
	Pool string `json:"pool,omitempty"`
	// Takeover is the existing DNS record at the org's hostname that
	// org.created (data.takeover) allows tunnelward to replace with its
	// tunnel CNAME; nil: a record tunnelward does not own is a conflict.
	// Shared by copies of a record: read it, never write through it.
	Takeover *Takeover `json:"takeover,omitempty"`
	// TokenRotationSeq is the stream sequence of the newest applied
	// org.token_rotation_requested of this generation (0: none asked);
	// Observed.TokenRotatedSeq says which request a finished rotation served.
	TokenRotationSeq uint64 `json:"token_rotation_seq,omitempty"`
	// Generation starts at 1 with the first created and is bumped when a
	// deleted org is created again; EC2 ClientTokens include it.
	Generation int64 `json:"generation"`
}

// Takeover names a DNS record by its type and its current content, its
// Cloudflare record id, or both (at least one is set).
type Takeover struct {
	Type     string `json:"type,omitempty"` // A, AAAA or CNAME
	Content  string `json:"content,omitempty"`
	RecordID string `json:"record_id,omitempty"`
}

// Equal reports whether d and e say the same (Takeover by value: == on
// Desired compares its pointer).
func (d Desired) Equal(e Desired) bool {
	dt, et := d.Takeover, e.Takeover
	d.Takeover, e.Takeover = nil, nil
	return d == e && (dt == nil) == (et == nil) && (dt == nil || *dt == *et)
}

// Observed holds the cloud resource ids the engine created or found. Never a
// secret: the tunnel token lives only in SSM.
type Observed struct {
	TunnelID      string `json:"tunnel_id,omitempty"`
	TunnelName    string `json:"tunnel_name,omitempty"`
	DNSRecordID   string `json:"dns_record_id,omitempty"`
	DNSName       string `json:"dns_name,omitempty"` // FQDN the record was created under (old name kept until moved)
	ParameterName string `json:"parameter_name,omitempty"`
	InstanceID    string `json:"instance_id,omitempty"`
	// InstanceGeneration is the org generation the instance was launched for.
	InstanceGeneration int64     `json:"instance_generation,omitempty"`
	IngressHost        string    `json:"ingress_host,omitempty"` // hostname last written to the tunnel config
	TunnelStatus       string    `json:"tunnel_status,omitempty"`
	ObservedAt         time.Time `json:"observed_at,omitzero"`
	// DeleteDone is set when every resource of a deleted org is gone.
	DeleteDone bool `json:"delete_done,omitempty"`
	// Launch bookkeeping (reconcile engine): the RunInstances ClientToken is
	// derived from org id, LaunchGeneration and LaunchAttempt; LaunchInFlight
	// is committed before the call so a crash mid-call reuses the same token.
	LaunchGeneration int64 `json:"launch_generation,omitempty"`
	LaunchAttempt    int   `json:"launch_attempt,omitempty"`
	LaunchInFlight   bool  `json:"launch_in_flight,omitempty"`
	// ParamTunnelID is the tunnel whose token was last written to the
	// parameter (SSM metadata does not say). InstanceTunnelID is the tunnel
	// InstanceID's cloudflared was restarted for when that differs from the
	// instance's TunnelID tag (the tunnel was replaced under it).
	ParamTunnelID    string `json:"param_tunnel_id,omitempty"`
	InstanceTunnelID string `json:"instance_tunnel_id,omitempty"`
	// Region is the AWS region of the org's token parameter and instance,
	// committed before the first AWS write for the org: an org's region is
	// fixed while it has resources ("" in records from before regions: the
	// reconciler's default region).
	Region string `json:"region,omitempty"`
	// RegionGeneration is the org generation that committed Region (0 in
	// records from before it was kept). A later generation that asks for
	// another region moves the org there: it was deleted and re-created.
	RegionGeneration int64 `json:"region_generation,omitempty"`
	// Pool is the Cloudflare pool (account and zone) the org is placed in,
	// committed before its first Cloudflare write and fixed while it has
	// resources ("" in records from before pools: the default pool).
	Pool string `json:"pool,omitempty"`
	// PoolGeneration is the org generation Pool was committed for (0 in
	// records from before it was kept). With several replicas, a state file
	// can hold an older generation's placement (the org was deleted and
	// re-created while another replica owned it): the shared placement
	// records decide then.
	PoolGeneration int64 `json:"pool_generation,omitempty"`
	// TokenRotatedAt is when the org's tunnel token was last rotated (zero:
	// never, the token is the one the tunnel was created with);
	// TokenRotatedSeq the request (Desired.TokenRotationSeq) it served.
	TokenRotatedAt  time.Time `json:"token_rotated_at,omitzero"`
	TokenRotatedSeq uint64    `json:"token_rotated_seq,omitempty"`
	// TokenSince is when the token in use was issued (the tunnel's first
	// token put, or the last rotation): what --token-max-age is counted
	// from. Zero in records from before it: the sweep sets it from the
	// parameter's last write.
	TokenSince time.Time `json:"token_since,omitzero"`
	// Rotation is a token rotation in flight (nil: none), committed before
	// each of its steps so a crash resumes it exactly once.
	Rotation *Rotation `json:"rotation,omitempty"`
	// ReconciledSeq is the org's LastSeq when a reconcile last finished: an
	// org whose LastSeq is newer has an event no pass has acted on yet (the
	// process died between ingest's ack and the reconcile), so a restart
	// queues it even when it is Ready.
	ReconciledSeq uint64 `json:"reconciled_seq,omitempty"`
	// Replica is the replica (--replica-id) that last reconciled the org:
	// with several replicas, the one whose record of the org is current.
	Replica string `json:"replica,omitempty"`
	// Replaced is the record a takeover (Desired.Takeover) replaced with
	// the org's CNAME, as it was: committed before the DNS batch that
	// replaces it, so an operator can always put it back.
	Replaced ReplacedRecord `json:"replaced_record,omitzero"`
}

// ReplacedRecord is another party's DNS record as a takeover found it.
type ReplacedRecord struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Type    string    `json:"type"`
	Content string    `json:"content"`
	TTL     int       `json:"ttl"` // seconds; 1 is Cloudflare's "automatic"
	Proxied bool      `json:"proxied"`
	Comment string    `json:"comment,omitempty"`
	At      time.Time `json:"at"` // when the takeover was sent
}

// Rotation is the progress of one token rotation. Never the token.
type Rotation struct {
	// Seq is the org.token_rotation_requested it serves (0: the max-age
	// policy's).
	Seq    uint64 `json:"seq,omitempty"`
	Reason string `json:"reason"`
	// Phase is the next step (plan's Rotate* constants): secret (give the
	// tunnel a new secret), token (put its token into SSM), restart
	// (cloudflared re-reads it), connect (wait for a connector on the new
	// token, then drop the old ones).
	Phase string `json:"phase"`
	// Old are the connectors (client ids) connected before the new secret.
	Old         []string  `json:"old_connectors,omitempty"`
	StartedAt   time.Time `json:"started_at"`
	RestartedAt time.Time `json:"restarted_at,omitzero"`
	// Replaced counts the instances replaced because no connector came up
	// on the new token (bounded: plan.MaxRotationReplacements).
	Replaced int `json:"replaced,omitempty"`
}

// Condition types (docs/operations.md, "Org conditions").
const (
	CondProvisioning = "Provisioning"
	CondReady        = "Ready"
	CondDegraded     = "Degraded"
	CondConflict     = "Conflict"
	CondDeleting     = "Deleting"
	CondDeleted      = "Deleted"
	CondFailed       = "Failed"
)

// Reasons of the delete lifecycle (docs/operations.md lists every condition
// and reason).
const (
	// ReasonCascadeRunning: the engine is removing the org's resources.
	ReasonCascadeRunning = "CascadeRunning"
	// ReasonCascadeDone: everything the org owned was searched for by id,
	// name and tag, and is gone.
	ReasonCascadeDone = "CascadeDone"
)

// Condition is one observed condition of an org.
type Condition struct {
	Type               string    `json:"type"`
	Status             bool      `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"last_transition_time"`
}

// SetCondition sets one condition, keeping its transition time when the
// status does not change.
func (o *Org) SetCondition(typ string, status bool, reason, msg string, now time.Time) {
	for i := range o.Conditions {
		c := &o.Conditions[i]
		if c.Type != typ {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message = status, reason, msg
		return
	}
	o.Conditions = append(o.Conditions, Condition{Type: typ, Status: status, Reason: reason,
		Message: msg, LastTransitionTime: now})
}

// RemoveCondition drops a condition that no longer applies (a re-created
// org's Deleted, a finished tombstone's Provisioning), so status never shows
// a stale word.
func (o *Org) RemoveCondition(types ...string) {
	o.Conditions = slices.DeleteFunc(o.Conditions, func(c Condition) bool { return slices.Contains(types, c.Type) })
}

// HealthReport is one org.health_failed event as applied.
type HealthReport struct {
	EventID  string    `json:"event_id"`
	Seq      uint64    `json:"seq"`
	Reason   string    `json:"reason"`
	Observer string    `json:"observer,omitempty"`
	At       time.Time `json:"at"` // event time
	// Handled is set by the engine once it has diagnosed this report.
	Handled bool `json:"handled,omitempty"`
}

// Remediation is one diagnosis or repair the engine did.
type Remediation struct {
	At      time.Time `json:"at"`
	Action  string    `json:"action"`  // false_alarm, restart_cloudflared, replace_instance
	Outcome string    `json:"outcome"` // ok, failed, pending
	Detail  string    `json:"detail,omitempty"`
}

// Org is the record of one org. Zero times are left out of the JSON
// (omitzero): records written with them decode the same, so this needed no
// schema version.
type Org struct {
	ID          string    `json:"id"`
	Desired     Desired   `json:"desired"`
	LastSeq     uint64    `json:"last_seq"`      // stream sequence of the last applied event
	LastEventID string    `json:"last_event_id"` // id of that event
	UpdatedAt   time.Time `json:"updated_at"`    // time of that event
	// ChangedAt is when the record last changed, by an applied event or an
	// engine write, on the store's clock (UpdatedAt is the publisher's
	// clock, and only events move it). Zero in records from before it.
	ChangedAt time.Time `json:"changed_at,omitzero"`
	// DesiredSeq is the sequence of the last created/deleted applied and
	// GenerationSeq that of the event that began the current generation (or
	// tombstone). A redelivered event can arrive after newer ones; these let
	// a late health report not hide a created, and a late created not undo a
	// newer created or deleted (apply.go).
	DesiredSeq    uint64 `json:"desired_seq,omitempty"`
	GenerationSeq uint64 `json:"generation_seq,omitempty"`

	HealthReports []HealthReport `json:"health_reports,omitempty"` // newest last, capped

	Observed     Observed      `json:"observed"`
	Conditions   []Condition   `json:"conditions,omitempty"`
	LastError    string        `json:"last_error,omitempty"`
	LastErrorAt  time.Time     `json:"last_error_at,omitzero"`
	Remediations []Remediation `json:"remediations,omitempty"` // newest last, capped
}
