package events

import (
	"errors"
	"io/fs"
	"path"
	"reflect"
	"testing"

	"github.com/tunnelward/tunnelward/schemas"
)

// FuzzDecode feeds arbitrary subjects and payloads to the decoder ingest and
// the publisher share. Properties: it never panics; every refusal is a
// *ValidationError with a known code; every accepted event re-encodes
// (Validate) into a payload that decodes to the same event on the subject
// the event itself names, so what the publisher sends, ingest accepts.
// Seeds: the examples beside the schemas, plus testdata/fuzz/FuzzDecode.
//
//	go test ./internal/events -run '^$' -fuzz FuzzDecode -fuzztime 60s
func FuzzDecode(f *testing.F) {
	for _, dir := range []string{"examples/valid", "examples/invalid"} {
		entries, err := fs.ReadDir(schemas.Examples, dir)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range entries {
			b, _ := fs.ReadFile(schemas.Examples, path.Join(dir, e.Name()))
			f.Add("orgs.acme.created", b)
			f.Add("orgs.acme.deleted", b)
			f.Add("", b) // as the publisher checks: every type's round trip
		}
	}
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	codes := map[string]bool{CodeTooLarge: true, CodeInvalidUTF8: true, CodeMalformedJSON: true, CodeUnknownType: true,
		CodeUnknownSchemaVersion: true, CodeSchema: true, CodeSubjectMismatch: true, CodeReservedSlug: true,
		CodePunycodeSlug: true, CodeBadSubject: true}
	f.Fuzz(func(t *testing.T, subject string, payload []byte) {
		ev, err := v.Decode(subject, payload)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || !codes[ve.Code] {
				t.Fatalf("refusal is not a known *ValidationError: %#v", err)
			}
			return
		}
		if subject != "" && subject != ev.NATSSubject() {
			t.Fatalf("accepted on %q but the event's subject is %q", subject, ev.NATSSubject())
		}
		b, err := v.Validate(ev)
		if err != nil {
			t.Fatalf("accepted event does not re-validate: %v\npayload %q", err, payload)
		}
		again, err := v.Decode(ev.NATSSubject(), b)
		if err != nil {
			t.Fatalf("re-encoded event refused: %v", err)
		}
		if again.ID != ev.ID || again.Type != ev.Type || again.OrgID() != ev.OrgID() || !again.Time.Equal(ev.Time) {
			t.Fatalf("round trip changed the event: %+v -> %+v", ev, again)
		}
		if !reflect.DeepEqual(again.Created, ev.Created) || !reflect.DeepEqual(again.TokenRotationRequested, ev.TokenRotationRequested) {
			t.Fatalf("round trip changed the data: %+v -> %+v", ev, again)
		}
	})
}
