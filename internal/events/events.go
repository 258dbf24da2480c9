// Package events is tunnelward's event contract: the CloudEvents-style
// envelope, the typed payload of each event type, the NATS subjects, and the
// validator that enforces the JSON Schemas in schemas/ plus the semantic rules
// a schema cannot express. It knows nothing of storage.
package events

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Event types.
const (
	TypeCreated      = "org.created"
	TypeDeleted      = "org.deleted"
	TypeHealthFailed = "org.health_failed"
	// TypeTokenRotationRequested asks for a new tunnel token for the org.
	TypeTokenRotationRequested = "org.token_rotation_requested"
)

// Stream and subject names (public contract: README, docs/nats-cli.md).
const (
	Stream        = "ORG_EVENTS"
	DLQStream     = "ORG_EVENTS_DLQ"
	SubjectPrefix = "orgs."
	DLQPrefix     = "dlq."
	SpecVersion   = "1.0"
)

// typeSuffix maps an event type to the last token of its subject.
var typeSuffix = map[string]string{
	TypeCreated:                "created",
	TypeDeleted:                "deleted",
	TypeHealthFailed:           "health_failed",
	TypeTokenRotationRequested: "token_rotation_requested",
}

// SubjectShape is the form of every event subject, as error messages show it.
var SubjectShape = func() string {
	suffixes := make([]string, 0, len(typeSuffix))
	for _, s := range typeSuffix {
		suffixes = append(suffixes, s)
	}
	sort.Strings(suffixes)
	return SubjectPrefix + "<org_id>.<" + strings.Join(suffixes, "|") + ">"
}()

// wellFormedSubject reports whether subject has the shape of an event
// subject: orgs.<one non-empty token>.<a known event suffix>. Whether the
// org and the type agree with the payload is checked separately.
func wellFormedSubject(subject string) bool {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok {
		return false
	}
	org, suffix, ok := strings.Cut(rest, ".")
	if !ok || org == "" || strings.Contains(suffix, ".") {
		return false
	}
	for _, s := range typeSuffix {
		if s == suffix {
			return true
		}
	}
	return false
}

// Subject returns the NATS subject of an event type for an org:
// orgs.<org_id>.<created|deleted|health_failed|token_rotation_requested>.
func Subject(eventType, orgID string) (string, error) {
	s, ok := typeSuffix[eventType]
	if !ok {
		return "", fmt.Errorf("unknown event type %q", eventType)
	}
	return SubjectPrefix + orgID + "." + s, nil
}

// Event is one decoded, validated event. Exactly one of Created, Deleted,
// HealthFailed and TokenRotationRequested is set, matching Type.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Type            string    `json:"type"`
	Source          string    `json:"source"`
	Time            time.Time `json:"time"`
	Subject         string    `json:"subject"` // the org id
	DataContentType string    `json:"datacontenttype,omitempty"`
	DataSchema      string    `json:"dataschema,omitempty"`

	Created                *Created                `json:"-"`
	Deleted                *Deleted                `json:"-"`
	HealthFailed           *HealthFailed           `json:"-"`
	TokenRotationRequested *TokenRotationRequested `json:"-"`
}

// Created is the data of org.created.
type Created struct {
	OrgID        string `json:"org_id"`
	Slug         string `json:"slug"`
	InstanceType string `json:"instance_type,omitempty"`
	Region       string `json:"region,omitempty"`
	// Pool is the Cloudflare pool (account and zone) to place the org in;
	// "" leaves the choice to the reconciler's placement policy.
	Pool string `json:"pool,omitempty"`
	// Takeover names the DNS record already at the org's hostname that
	// tunnelward may replace with its tunnel CNAME; nil: none may be.
	Takeover *Takeover `json:"takeover,omitempty"`
}

// Takeover record types (data.takeover.type).
const (
	TakeoverA     = "A"
	TakeoverAAAA  = "AAAA"
	TakeoverCNAME = "CNAME"
)

// Takeover is org.created's data.takeover: the existing record, by its type
// and its current content, its Cloudflare record id, or both (at least one).
type Takeover struct {
	Type     string `json:"type"`
	Content  string `json:"content,omitempty"`
	RecordID string `json:"record_id,omitempty"`
}

// Deleted is the data of org.deleted.
type Deleted struct {
	OrgID  string `json:"org_id"`
	Reason string `json:"reason,omitempty"`
}

// HealthFailed is the data of org.health_failed.
type HealthFailed struct {
	OrgID    string `json:"org_id"`
	Reason   string `json:"reason"`
	Observer string `json:"observer"`
}

// TokenRotationRequested is the data of org.token_rotation_requested.
type TokenRotationRequested struct {
	OrgID  string `json:"org_id"`
	Reason string `json:"reason,omitempty"`
}

// OrgID is the org the event is about (data.org_id).
func (e Event) OrgID() string {
	switch {
	case e.Created != nil:
		return e.Created.OrgID
	case e.Deleted != nil:
		return e.Deleted.OrgID
	case e.HealthFailed != nil:
		return e.HealthFailed.OrgID
	case e.TokenRotationRequested != nil:
		return e.TokenRotationRequested.OrgID
	}
	return e.Subject
}

// NATSSubject is the subject the event is published on.
func (e Event) NATSSubject() string {
	s, _ := Subject(e.Type, e.OrgID())
	return s
}

// MarshalJSON writes the envelope with its typed data.
func (e Event) MarshalJSON() ([]byte, error) {
	type envelope Event // drops this method
	var data any
	switch {
	case e.Created != nil:
		data = e.Created
	case e.Deleted != nil:
		data = e.Deleted
	case e.HealthFailed != nil:
		data = e.HealthFailed
	case e.TokenRotationRequested != nil:
		data = e.TokenRotationRequested
	default:
		return nil, fmt.Errorf("event %s: no data", e.ID)
	}
	return json.Marshal(struct {
		envelope
		Time string `json:"time"`
		Data any    `json:"data"`
	}{envelope(e), e.Time.UTC().Format(time.RFC3339Nano), data})
}

// New returns an event of the given type with a fresh id, the current time
// and source "platform" (callers may override), for the data given.
func New(data any) (Event, error) {
	e := Event{SpecVersion: SpecVersion, ID: NewID(), Source: "platform", Time: time.Now().UTC()}
	switch d := data.(type) {
	case Created:
		e.Type, e.Subject, e.Created = TypeCreated, d.OrgID, &d
	case Deleted:
		e.Type, e.Subject, e.Deleted = TypeDeleted, d.OrgID, &d
	case HealthFailed:
		e.Type, e.Subject, e.HealthFailed = TypeHealthFailed, d.OrgID, &d
	case TokenRotationRequested:
		e.Type, e.Subject, e.TokenRotationRequested = TypeTokenRotationRequested, d.OrgID, &d
	default:
		return Event{}, fmt.Errorf("unknown event data %T", data)
	}
	return e, nil
}

// crockford is the ULID alphabet.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a ULID: 48 bits of milliseconds then 80 random bits, so ids
// sort by creation time and never collide in practice.
func NewID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go ≥1.24)
	// 128 bits -> 26 base32 chars, the top char holding 3 bits.
	var sb strings.Builder
	sb.Grow(26)
	var acc uint64
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 | uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 | uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	for i := 25; i >= 0; i-- {
		shift := uint(i * 5)
		switch {
		case shift >= 64:
			acc = hi >> (shift - 64)
		case shift > 59:
			acc = lo>>shift | hi<<(64-shift)
		default:
			acc = lo >> shift
		}
		sb.WriteByte(crockford[acc&31])
	}
	return sb.String()
}
