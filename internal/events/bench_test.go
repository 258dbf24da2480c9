package events

import "testing"

// BenchmarkDecode is the validation cost of one event on ingest: JSON
// parse, JSON Schema (draft 2020-12) validation, semantic checks.
//
//	go test -run '^$' -bench BenchmarkDecode ./internal/events
func BenchmarkDecode(b *testing.B) {
	v, err := NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	ev, _ := New(Created{OrgID: "org-1234", Slug: "org-1234", Region: "eu-west-1"})
	payload, err := v.Validate(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Decode("orgs.org-1234.created", payload); err != nil {
			b.Fatal(err)
		}
	}
}
