package events

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path"
	"reflect"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/schemas"
)

func newValidator(t *testing.T, opts ...Option) *Validator {
	t.Helper()
	v, err := NewValidator(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestValidExamples(t *testing.T) {
	v := newValidator(t)
	files, err := fs.Glob(schemas.Examples, "examples/valid/*.json")
	if err != nil || len(files) < 4 {
		t.Fatalf("valid examples: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		t.Run(path.Base(f), func(t *testing.T) {
			b, _ := fs.ReadFile(schemas.Examples, f)
			var probe struct {
				Type string `json:"type"`
				Data struct {
					OrgID string `json:"org_id"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &probe); err != nil {
				t.Fatal(err)
			}
			subj, err := Subject(probe.Type, probe.Data.OrgID)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := v.Decode(subj, b)
			if err != nil {
				t.Fatalf("valid example rejected: %v", err)
			}
			if ev.OrgID() != probe.Data.OrgID || ev.Type != probe.Type || ev.Time.IsZero() {
				t.Fatalf("decoded %+v", ev)
			}
			// Re-encoding a decoded event yields a valid event again.
			if _, err := v.Validate(ev); err != nil {
				t.Fatalf("round trip: %v", err)
			}
		})
	}
}

func TestInvalidExamples(t *testing.T) {
	v := newValidator(t)
	b, err := fs.ReadFile(schemas.Examples, "examples/invalid/expectations.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp map[string]json.RawMessage
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	files, _ := fs.Glob(schemas.Examples, "examples/invalid/*.json")
	seen := 0
	for _, f := range files {
		name := path.Base(f)
		if name == "expectations.json" {
			continue
		}
		seen++
		t.Run(name, func(t *testing.T) {
			var e struct{ Subject, Code, Field string }
			raw, ok := exp[name]
			if !ok {
				t.Fatalf("no expectation for %s in expectations.json", name)
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			payload, _ := fs.ReadFile(schemas.Examples, f)
			_, err := v.Decode(e.Subject, payload)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want *ValidationError, got %v", err)
			}
			if ve.Code != e.Code || ve.Field != e.Field {
				t.Fatalf("got code=%s field=%q (%v), want code=%s field=%q", ve.Code, ve.Field, ve, e.Code, e.Field)
			}
			if !strings.Contains(err.Error(), e.Field) {
				t.Fatalf("message %q does not name the field", err)
			}
		})
	}
	if seen != len(exp)-1 {
		t.Fatalf("%d invalid example files but %d expectations", seen, len(exp)-1)
	}
}

func TestPayloadLevelRejections(t *testing.T) {
	v := newValidator(t)
	good := `{"specversion":"1.0","id":"x1","type":"org.deleted","source":"platform","time":"2026-11-26T10:00:00Z","subject":"acme","data":{"org_id":"acme","reason":"%s"}}`
	cases := []struct {
		name, subject string
		payload       []byte
		code          string
	}{
		{"oversized", "orgs.acme.deleted", []byte(strings.Replace(good, "%s", strings.Repeat("a", MaxEventSize), 1)), CodeTooLarge},
		{"invalid utf8", "orgs.acme.deleted", []byte(strings.Replace(good, "%s", "\xff\xfe", 1)), CodeInvalidUTF8},
		{"array", "orgs.acme.deleted", []byte(`[1,2]`), CodeMalformedJSON},
		{"wrong nats org", "orgs.globex.deleted", []byte(strings.Replace(good, "%s", "x", 1)), CodeSubjectMismatch},
		{"wrong nats type", "orgs.acme.created", []byte(strings.Replace(good, "%s", "x", 1)), CodeSubjectMismatch},
		{"reason too long", "orgs.acme.deleted", []byte(strings.Replace(good, "%s", strings.Repeat("r", 1025), 1)), CodeSchema},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Decode(c.subject, c.payload)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Code != c.code {
				t.Fatalf("want code %s, got %v", c.code, err)
			}
		})
	}
	if _, err := v.Decode("orgs.acme.deleted", []byte(strings.Replace(good, "%s", "ok", 1))); err != nil {
		t.Fatalf("control event rejected: %v", err)
	}
}

// A NATS subject that is not
// orgs.<org_id>.<created|deleted|health_failed|token_rotation_requested>
// is the subject's fault, not the payload's: the error names the subject and
// the shape it should have had, whatever the payload says.
func TestSubjectOfWrongShape(t *testing.T) {
	v := newValidator(t)
	created := func(org string) []byte {
		return []byte(`{"specversion":"1.0","id":"x1","type":"org.created","source":"platform","time":"2026-11-26T10:00:00Z","subject":"` + org + `","data":{"org_id":"` + org + `","slug":"` + org + `"}}`)
	}
	for _, subject := range []string{"orgs.foo2.renamed", "orgs.foo4.x.created", "orgs.foo2", "org.foo2.created", "orgs.foo2.created.extra", "orgs..created"} {
		t.Run(subject, func(t *testing.T) {
			org := "foo2"
			if strings.Contains(subject, "foo4") {
				org = "foo4"
			}
			_, err := v.Decode(subject, created(org))
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Code != CodeBadSubject || ve.Field != "subject" {
				t.Fatalf("want %s on field subject, got %#v", CodeBadSubject, err)
			}
			for _, want := range []string{subject, "orgs.<org_id>.<created|deleted|health_failed|token_rotation_requested>"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("reason %q does not say %q", err, want)
				}
			}
		})
	}
	// The right shape with another org or another type is still a mismatch
	// between subject and payload.
	for _, subject := range []string{"orgs.globex.created", "orgs.foo2.deleted"} {
		_, err := v.Decode(subject, created("foo2"))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Code != CodeSubjectMismatch {
			t.Fatalf("%s: want %s, got %#v", subject, CodeSubjectMismatch, err)
		}
	}
	if _, err := v.Decode("orgs.foo2.created", created("foo2")); err != nil {
		t.Fatalf("control event rejected: %v", err)
	}
}

func TestReservedSlugsConfigurable(t *testing.T) {
	ev, err := New(Created{OrgID: "acme", Slug: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newValidator(t).Validate(ev); err != nil {
		t.Fatalf("default list: %v", err)
	}
	_, err = newValidator(t, WithReservedSlugs([]string{"Shop"})).Validate(ev)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Code != CodeReservedSlug || ve.Field != "/data/slug" {
		t.Fatalf("custom list: %v", err)
	}
	ev.Created.Slug = "www"
	if _, err := newValidator(t, WithReservedSlugs([]string{"shop"})).Validate(ev); err != nil {
		t.Fatalf("www allowed once the list is replaced: %v", err)
	}
}

func TestNewIDIsSortableULID(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := 0; i < 1000; i++ {
		id := NewID()
		if len(id) != 26 || strings.Trim(id, crockford) != "" || id[0] > '7' {
			t.Fatalf("bad ULID %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
		if prev != "" && id[:10] < prev[:10] {
			t.Fatalf("time prefix went backwards: %s after %s", id, prev)
		}
		prev = id
	}
}

// The fields of issues 15 and 16: org.created's pool and takeover, and
// org.token_rotation_requested. Each refusal names its field; a takeover
// naming neither content nor record_id names both alternatives.
func TestPoolTakeoverAndRotation(t *testing.T) {
	v := newValidator(t)
	ok := []any{
		Created{OrgID: "acme", Slug: "acme", Pool: "eu-2"},
		Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Type: TakeoverCNAME, Content: "old-lb.example.com"}},
		Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Type: TakeoverAAAA, RecordID: "372e67954025e0ba6aaa6d586b9e0b59"}},
		TokenRotationRequested{OrgID: "acme"},
		TokenRotationRequested{OrgID: "acme", Reason: "leaked"},
	}
	for _, d := range ok {
		ev, err := New(d)
		if err != nil {
			t.Fatal(err)
		}
		b, err := v.Validate(ev)
		if err != nil {
			t.Fatalf("%+v: %v", d, err)
		}
		back, err := v.Decode(ev.NATSSubject(), b)
		if err != nil || back.OrgID() != "acme" || !reflect.DeepEqual(back.Created, ev.Created) || !reflect.DeepEqual(back.TokenRotationRequested, ev.TokenRotationRequested) {
			t.Fatalf("%+v: round trip %+v, %v", d, back, err)
		}
	}
	ev, _ := New(TokenRotationRequested{OrgID: "acme"})
	if ev.Type != "org.token_rotation_requested" || ev.NATSSubject() != "orgs.acme.token_rotation_requested" {
		t.Fatalf("rotation: type %s subject %s", ev.Type, ev.NATSSubject())
	}
	b, _ := v.Validate(ev)
	if strings.Contains(string(b), "reason") {
		t.Fatalf("an empty reason is left out: %s", b)
	}

	bad := []struct {
		data          any
		field, detail string
	}{
		{Created{OrgID: "acme", Slug: "acme", Pool: "EU"}, "/data/pool", "does not match pattern"},
		{Created{OrgID: "acme", Slug: "acme", Pool: "p" + strings.Repeat("a", 32)}, "/data/pool", ""},
		{Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Type: TakeoverA}}, "/data/takeover", "'content' or 'record_id'"},
		{Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Content: "192.0.2.1"}}, "/data/takeover/type", ""},
		{Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Type: "TXT", Content: "x"}}, "/data/takeover/type", "'A', 'AAAA', 'CNAME'"},
		{Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Type: TakeoverA, Content: "2001:db8::1"}}, "/data/takeover/content", "ipv4"},
		{Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Type: TakeoverAAAA, Content: "192.0.2.1"}}, "/data/takeover/content", "ipv6"},
		{Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Type: TakeoverCNAME, Content: "a..b"}}, "/data/takeover/content", "hostname"},
		{Created{OrgID: "acme", Slug: "acme", Takeover: &Takeover{Type: TakeoverCNAME, RecordID: "xyz"}}, "/data/takeover/record_id", ""},
		{TokenRotationRequested{OrgID: "acme", Reason: strings.Repeat("r", 1025)}, "/data/reason", ""},
		{TokenRotationRequested{OrgID: "Acme"}, "/subject", ""},
	}
	for _, c := range bad {
		ev, err := New(c.data)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Validate(ev)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Code != CodeSchema || ve.Field != c.field || !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), c.detail) {
			t.Errorf("%+v: got %v, want a schema error on %s saying %q", c.data, err, c.field, c.detail)
		}
	}
}
