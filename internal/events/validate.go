package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/tunnelward/tunnelward/schemas"
)

// MaxEventSize is the largest event payload accepted, in bytes. Events are a
// few hundred bytes; anything near this is a bug or abuse.
const MaxEventSize = 16 << 10

// DefaultReservedSlugs are subdomains no org may take: they belong to the
// platform itself or are easily abused for phishing.
var DefaultReservedSlugs = []string{
	"www", "api", "admin", "app", "mail", "smtp", "imap", "pop", "ftp", "ns", "ns1", "ns2",
	"dns", "mx", "status", "support", "help", "docs", "blog", "cdn", "static", "assets",
	"auth", "login", "sso", "id", "account", "accounts", "billing", "dashboard", "console",
	"portal", "internal", "root", "localhost", "test", "dev", "staging", "prod", "vpn",
	"webmail", "autodiscover", "autoconfig", "tunnelward",
}

// Reason codes of validation errors; the DLQ carries them in a header.
const (
	CodeTooLarge             = "too_large"
	CodeInvalidUTF8          = "invalid_utf8"
	CodeMalformedJSON        = "malformed_json"
	CodeUnknownType          = "unknown_type"
	CodeUnknownSchemaVersion = "unknown_schema_version"
	CodeSchema               = "schema"
	CodeSubjectMismatch      = "subject_mismatch"
	CodeReservedSlug         = "reserved_slug"
	CodePunycodeSlug         = "punycode_slug"
	CodeBadSubject           = "bad_subject"
)

// ValidationError says why an event was rejected and which field is wrong.
type ValidationError struct {
	Code string // one of the Code* constants
	// Field is a JSON pointer into the event ("/data/slug"), FieldNATSSubject
	// when the NATS subject itself is malformed, or "" for the whole payload.
	Field  string
	Detail string
}

// FieldNATSSubject is the Field of an error about the NATS subject the event
// was published on. It is not a JSON pointer (no leading "/"), so it cannot
// be mistaken for the envelope's own "/subject".
const FieldNATSSubject = "subject"

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("invalid event (%s): %s", e.Code, e.Detail)
	}
	return fmt.Sprintf("invalid event (%s): %s: %s", e.Code, e.Field, e.Detail)
}

func invalid(code, field, format string, args ...any) *ValidationError {
	return &ValidationError{Code: code, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// Validator checks payloads against the embedded schemas and the semantic
// rules. It is safe for concurrent use.
type Validator struct {
	byType   map[string]map[string]*jsonschema.Schema // type -> schema $id -> schema
	latest   map[string]*jsonschema.Schema            // type -> newest version
	reserved map[string]bool
	printer  *message.Printer
	// fast maps each type with a fast path (fastpath.go) to its schema $id.
	fast map[string]string
}

// Option configures a Validator.
type Option func(*Validator)

// WithReservedSlugs replaces the reserved slug list.
func WithReservedSlugs(slugs []string) Option {
	return func(v *Validator) {
		v.reserved = map[string]bool{}
		for _, s := range slugs {
			if s = strings.TrimSpace(strings.ToLower(s)); s != "" {
				v.reserved[s] = true
			}
		}
	}
}

// NewValidator compiles the embedded schemas.
func NewValidator(opts ...Option) (*Validator, error) {
	all, err := schemas.All()
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	v := &Validator{
		byType:  map[string]map[string]*jsonschema.Schema{},
		latest:  map[string]*jsonschema.Schema{},
		printer: message.NewPrinter(language.English),
	}
	latestVersion := map[string]int{}
	for _, s := range all {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(s.Body))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", s.File, err)
		}
		if err := c.AddResource(s.ID, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", s.File, err)
		}
		sch, err := c.Compile(s.ID)
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", s.File, err)
		}
		if v.byType[s.Type] == nil {
			v.byType[s.Type] = map[string]*jsonschema.Schema{}
		}
		v.byType[s.Type][s.ID] = sch
		if s.Version > latestVersion[s.Type] {
			latestVersion[s.Type], v.latest[s.Type] = s.Version, sch
		}
	}
	v.fast = map[string]string{}
	for _, s := range all {
		if v.latest[s.Type] == v.byType[s.Type][s.ID] && fastSchemas[s.ID] == schemaSum(s.Body) {
			v.fast[s.Type] = s.ID
		}
	}
	WithReservedSlugs(DefaultReservedSlugs)(v)
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

// Types returns the known event types, sorted.
func (v *Validator) Types() []string {
	var out []string
	for t := range v.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Decode validates a payload received on (or about to be published to) a
// NATS subject and returns the typed event. Any error is a *ValidationError.
func (v *Validator) Decode(subject string, payload []byte) (Event, error) {
	if err := precheck(payload); err != nil {
		return Event{}, err
	}
	// A valid event is taken by the fast path; anything else, including
	// an event the fast path would have to reject, gets the library's
	// verdict and error.
	if ev, ok := v.decodeFast(payload); ok && v.semantic(subject, ev, ev.OrgID()) == nil {
		return ev, nil
	}
	return v.decodeLibrary(subject, payload)
}

func precheck(payload []byte) error {
	if len(payload) > MaxEventSize {
		return invalid(CodeTooLarge, "", "payload is %d bytes, the limit is %d", len(payload), MaxEventSize)
	}
	if !utf8.Valid(payload) {
		return invalid(CodeInvalidUTF8, "", "payload is not valid UTF-8")
	}
	return nil
}

// decodeLibrary is Decode through the JSON Schema library alone, after
// precheck.
func (v *Validator) decodeLibrary(subject string, payload []byte) (Event, error) {
	ev, err := v.decodeSchema(payload)
	if err != nil {
		return Event{}, err
	}
	if err := v.semantic(subject, ev, ev.OrgID()); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// decodeSchema parses and validates payload with the JSON Schema library
// and builds the typed event; semantic rules are the caller's.
func (v *Validator) decodeSchema(payload []byte) (Event, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return Event{}, invalid(CodeMalformedJSON, "", "not a JSON document: %v", err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return Event{}, invalid(CodeMalformedJSON, "", "event must be a JSON object")
	}
	typ, _ := obj["type"].(string)
	versions, ok := v.byType[typ]
	if !ok {
		return Event{}, invalid(CodeUnknownType, "/type", "unknown event type %q (known: %s)", typ, strings.Join(v.Types(), ", "))
	}
	sch := v.latest[typ]
	if ds, present := obj["dataschema"]; present {
		s, _ := ds.(string)
		if sch, ok = versions[s]; !ok {
			return Event{}, invalid(CodeUnknownSchemaVersion, "/dataschema", "unknown schema %q for %s", s, typ)
		}
	}
	if err := sch.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return Event{}, v.schemaError(ve)
		}
		return Event{}, invalid(CodeSchema, "", "%v", err)
	}

	// The schema has checked every field's presence and type, so the typed
	// event is read straight from the parsed document (one JSON parse).
	ev := Event{
		SpecVersion:     str(obj, "specversion"),
		ID:              str(obj, "id"),
		Type:            typ,
		Source:          str(obj, "source"),
		Subject:         str(obj, "subject"),
		DataContentType: str(obj, "datacontenttype"),
		DataSchema:      str(obj, "dataschema"),
	}
	if ev.Time, err = time.Parse(time.RFC3339Nano, str(obj, "time")); err != nil {
		return Event{}, invalid(CodeSchema, "/time", "not an RFC 3339 time: %v", err)
	}
	data, _ := obj["data"].(map[string]any)
	switch typ {
	case TypeCreated:
		ev.Created = &Created{OrgID: str(data, "org_id"), Slug: str(data, "slug"), InstanceType: str(data, "instance_type"),
			Region: str(data, "region"), Pool: str(data, "pool")}
		if to, ok := data["takeover"].(map[string]any); ok {
			ev.Created.Takeover = &Takeover{Type: str(to, "type"), Content: str(to, "content"), RecordID: str(to, "record_id")}
		}
	case TypeDeleted:
		ev.Deleted = &Deleted{OrgID: str(data, "org_id"), Reason: str(data, "reason")}
	case TypeHealthFailed:
		ev.HealthFailed = &HealthFailed{OrgID: str(data, "org_id"), Reason: str(data, "reason"), Observer: str(data, "observer")}
	case TypeTokenRotationRequested:
		ev.TokenRotationRequested = &TokenRotationRequested{OrgID: str(data, "org_id"), Reason: str(data, "reason")}
	default:
		// A schema was added without its Go type: a programming error, but
		// never a panic.
		return Event{}, invalid(CodeUnknownType, "/type", "event type %q has a schema but no decoder", typ)
	}
	return ev, nil
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// Validate checks an event built in code, exactly as a receiver would.
func (v *Validator) Validate(ev Event) ([]byte, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, invalid(CodeMalformedJSON, "", "%v", err)
	}
	if _, err := v.Decode(ev.NATSSubject(), b); err != nil {
		return nil, err
	}
	return b, nil
}

func (v *Validator) semantic(subject string, ev Event, orgID string) error {
	if ev.Subject != orgID {
		return invalid(CodeSubjectMismatch, "/data/org_id", "data.org_id %q differs from the envelope subject %q", orgID, ev.Subject)
	}
	if subject != "" {
		// The subject's shape comes before its agreement with the payload:
		// on a subject of another shape no payload could be right, so
		// naming a payload field would send the publisher to the wrong fix.
		if !wellFormedSubject(subject) {
			return invalid(CodeBadSubject, FieldNATSSubject, "NATS subject %q is not of the form %s", subject, SubjectShape)
		}
		want, _ := Subject(ev.Type, orgID)
		if subject != want {
			return invalid(CodeSubjectMismatch, "/data/org_id", "NATS subject %q does not match the event (want %q)", subject, want)
		}
	}
	if ev.Created != nil {
		slug := ev.Created.Slug
		if v.reserved[slug] {
			return invalid(CodeReservedSlug, "/data/slug", "slug %q is reserved", slug)
		}
		// Punycode labels render as other (often look-alike) names in browsers.
		if strings.HasPrefix(slug, "xn--") {
			return invalid(CodePunycodeSlug, "/data/slug", "slug %q is a punycode (xn--) label", slug)
		}
		if len(slug) > 63 || strings.Contains(slug, ".") {
			return invalid(CodeSchema, "/data/slug", "slug %q is not one DNS label", slug)
		}
	}
	return nil
}

// schemaError turns the validator's error tree into one error naming the
// deepest failing field.
func (v *Validator) schemaError(ve *jsonschema.ValidationError) *ValidationError {
	// The validator collects sibling causes in map order; taking the
	// shallowest location (then the smallest) names the same field every
	// time, the envelope's before the data's.
	before := func(a, b *jsonschema.ValidationError) bool {
		if len(a.InstanceLocation) != len(b.InstanceLocation) {
			return len(a.InstanceLocation) < len(b.InstanceLocation)
		}
		return strings.Join(a.InstanceLocation, "/") < strings.Join(b.InstanceLocation, "/")
	}
	leaf := ve
	for len(leaf.Causes) > 0 {
		// "one of these members is required" (anyOf of required, as
		// data.takeover's content or record_id) names the object and every
		// alternative, not just the first one the library lists.
		if alts, ok := requiredAlternatives(leaf); ok {
			return invalid(CodeSchema, jsonPointer(leaf.InstanceLocation), "missing property %s: at least one is required", strings.Join(alts, " or "))
		}
		next := leaf.Causes[0]
		for _, c := range leaf.Causes[1:] {
			if before(c, next) {
				next = c
			}
		}
		leaf = next
	}
	loc := append([]string(nil), leaf.InstanceLocation...)
	switch k := leaf.ErrorKind.(type) {
	case *kind.Required:
		if len(k.Missing) > 0 {
			loc = append(loc, k.Missing[0])
		}
	case *kind.AdditionalProperties:
		if len(k.Properties) > 0 {
			loc = append(loc, k.Properties[0])
		}
	}
	return invalid(CodeSchema, jsonPointer(loc), "%s", leaf.ErrorKind.LocalizedString(v.printer))
}

// requiredAlternatives reports whether ve is a failed anyOf whose every
// branch only misses required members, and names them ('content', ...).
func requiredAlternatives(ve *jsonschema.ValidationError) ([]string, bool) {
	if _, ok := ve.ErrorKind.(*kind.AnyOf); !ok || len(ve.Causes) < 2 {
		return nil, false
	}
	var names []string
	for _, c := range ve.Causes {
		r, ok := c.ErrorKind.(*kind.Required)
		if !ok || len(c.Causes) > 0 || len(r.Missing) == 0 {
			return nil, false
		}
		for _, m := range r.Missing {
			names = append(names, "'"+m+"'")
		}
	}
	return names, true
}

// jsonPointer is the JSON pointer (RFC 6901) of an instance location.
func jsonPointer(loc []string) string {
	field := ""
	for _, p := range loc {
		field += "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(p)
	}
	return field
}
