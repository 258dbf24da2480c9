package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/tunnelward/tunnelward/schemas"
)

// The fast path (fastpath.go) must be invisible: Decode with it returns
// exactly what the JSON Schema library path returns, event or error, for
// every input; it accepts only what the library accepts, yielding the same
// event; and it does accept the events a publisher sends (otherwise it
// would be dead code). These tests check all three over the examples beside
// the schemas, the reliability helper's hostile corpus, a table of edge
// cases and the fuzz seeds.

// diffCase is one input of the differential tests.
type diffCase struct {
	name, subject string
	payload       []byte
}

// libraryDecode is Decode without the fast path.
func libraryDecode(v *Validator, subject string, payload []byte) (Event, error) {
	if err := precheck(payload); err != nil {
		return Event{}, err
	}
	return v.decodeLibrary(subject, payload)
}

// checkAgree asserts the properties on one input and reports whether
// Decode's fast path took it (returned the event without the library).
func checkAgree(t *testing.T, v *Validator, subject string, payload []byte) (fastTook bool) {
	t.Helper()
	got, gotErr := v.Decode(subject, payload)
	want, wantErr := libraryDecode(v, subject, payload)
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("Decode and the library disagree on %q (subject %q):\n  Decode:  %v\n  library: %v", payload, subject, gotErr, wantErr)
	case gotErr != nil:
		var g, w *ValidationError
		if !errors.As(gotErr, &g) || !errors.As(wantErr, &w) || *g != *w {
			t.Fatalf("different errors for %q:\n  Decode:  %#v\n  library: %#v", payload, gotErr, wantErr)
		}
	case !reflect.DeepEqual(got, want):
		t.Fatalf("different events for %q:\n  Decode:  %+v\n  library: %+v", payload, got, want)
	}
	if precheck(payload) != nil {
		return false
	}
	fast, fastOK := v.decodeFast(payload)
	lib, libErr := v.decodeSchema(payload)
	fastTook = fastOK && v.semantic(subject, fast, fast.OrgID()) == nil
	if fastOK {
		if libErr != nil {
			t.Fatalf("fast path accepts what the schema rejects: %q: %v", payload, libErr)
		}
		if !reflect.DeepEqual(fast, lib) {
			t.Fatalf("fast path and library decode %q differently:\n  fast:    %+v\n  library: %+v", payload, fast, lib)
		}
	}
	// What a publisher sends (the library-accepted event, encoded by this
	// package) is taken by the fast path, unless encoding/json escaped a
	// character (the fast path leaves escapes to the library).
	if libErr == nil {
		canon, err := json.Marshal(lib)
		if err != nil {
			t.Fatalf("encode %+v: %v", lib, err)
		}
		if _, ok := v.decodeFast(canon); !ok && !bytes.Contains(canon, []byte(`\`)) {
			if _, err := v.decodeSchema(canon); err == nil {
				t.Fatalf("fast path declines a canonical valid event the library accepts: %s", canon)
			}
		}
	}
	return fastTook
}

func exampleCases(t testing.TB) (valid, invalid []diffCase) {
	t.Helper()
	files, _ := fs.Glob(schemas.Examples, "examples/valid/*.json")
	for _, f := range files {
		b, _ := fs.ReadFile(schemas.Examples, f)
		var probe struct {
			Type string
			Data struct {
				OrgID string `json:"org_id"`
			}
		}
		if err := json.Unmarshal(b, &probe); err != nil {
			t.Fatal(err)
		}
		subj, _ := Subject(probe.Type, probe.Data.OrgID)
		valid = append(valid, diffCase{path.Base(f), subj, b})
	}
	b, err := fs.ReadFile(schemas.Examples, "examples/invalid/expectations.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp map[string]json.RawMessage
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	files, _ = fs.Glob(schemas.Examples, "examples/invalid/*.json")
	for _, f := range files {
		var e struct{ Subject string }
		if raw, ok := exp[path.Base(f)]; ok && path.Base(f) != "expectations.json" {
			_ = json.Unmarshal(raw, &e)
			p, _ := fs.ReadFile(schemas.Examples, f)
			invalid = append(invalid, diffCase{path.Base(f), e.Subject, p})
		}
	}
	if len(valid) < 4 || len(invalid) < 10 {
		t.Fatalf("examples: %d valid, %d invalid", len(valid), len(invalid))
	}
	return valid, invalid
}

// hostileCases reads the reliability helper's hostile corpus (every entry
// is an event ingest must dead-letter).
func hostileCases(t testing.TB) []diffCase {
	t.Helper()
	dir := filepath.Join("..", "reliability", "testdata", "hostile")
	b, err := os.ReadFile(filepath.Join(dir, "cases.json"))
	if err != nil {
		t.Fatalf("hostile corpus: %v", err)
	}
	var doc struct {
		Cases map[string]struct{ Subject string }
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var out []diffCase
	for name, c := range doc.Cases {
		p, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, diffCase{name, c.Subject, p})
	}
	if len(out) < 30 {
		t.Fatalf("hostile corpus: %d cases", len(out))
	}
	return out
}

const edgeBase = `{"specversion":"1.0","id":"01JDX7Q2T3V4W5X6Y7Z8A9B0C1","type":"org.created","source":"platform","time":"2026-11-26T10:00:00Z","subject":"acme","data":{"org_id":"acme","slug":"acme"}}`

// edgeCases are variants around every rule the fast path checks: each on
// both sides of its boundary, and each form it leaves to the library.
// fast says whether the fast path must take it (false: the library decides).
func edgeCases() []struct {
	diffCase
	fast bool
} {
	rep := func(old, new string) []byte { return []byte(strings.Replace(edgeBase, old, new, 1)) }
	data := func(d string) []byte { return rep(`{"org_id":"acme","slug":"acme"}`, d) }
	typed := func(typ, d string) []byte {
		return []byte(strings.Replace(strings.Replace(edgeBase, `"org.created"`, `"`+typ+`"`, 1), `{"org_id":"acme","slug":"acme"}`, d, 1))
	}
	long := func(s string, n int) string { return strings.Repeat(s, n) }
	type ec = struct {
		diffCase
		fast bool
	}
	c := func(name string, fast bool, p []byte) ec { return ec{diffCase{name, "orgs.acme.created", p}, fast} }
	d := func(name string, fast bool, p []byte) ec { return ec{diffCase{name, "orgs.acme.deleted", p}, fast} }
	h := func(name string, fast bool, p []byte) ec {
		return ec{diffCase{name, "orgs.acme.health_failed", p}, fast}
	}
	r := func(name string, fast bool, p []byte) ec {
		return ec{diffCase{name, "orgs.acme.token_rotation_requested", p}, fast}
	}
	nosubj := func(name string, fast bool, p []byte) ec { return ec{diffCase{name, "", p}, fast} } // as the publisher checks
	takeover := func(t string) []byte { return data(`{"org_id":"acme","slug":"acme","takeover":` + t + `}`) }
	hex32 := "0123456789abcdef0123456789abcdef"
	return []ec{
		c("base", true, []byte(edgeBase)),
		nosubj("no nats subject", true, []byte(edgeBase)),
		c("pretty printed", true, []byte(strings.NewReplacer(`,"`, ",\n\t\"", `":`, `" : `, `{`, "{\r\n ", `}`, "\n}").Replace(edgeBase))),
		c("trailing whitespace", true, []byte(edgeBase+" \n\t")),
		c("members reordered", true, []byte(`{"data":{"slug":"acme","org_id":"acme"},"subject":"acme","time":"2026-11-26T10:00:00Z","source":"platform","type":"org.created","id":"x","specversion":"1.0"}`)),
		c("trailing garbage", false, []byte(edgeBase+"x")),
		c("two documents", false, []byte(edgeBase+edgeBase)),
		c("bom", false, append([]byte("\ufeff"), edgeBase...)),
		c("empty", false, nil),
		c("escape in slug", false, data(`{"org_id":"acme","slug":"ac\u006de"}`)),
		c("escaped quote in source", false, rep(`"platform"`, `"plat\"form"`)),
		c("escaped key", false, rep(`"source"`, `"sour\u0063e"`)),
		c("duplicate envelope key", false, rep(`"source":"platform"`, `"source":"platform","source":"other"`)),
		c("duplicate data key", false, data(`{"org_id":"acme","slug":"acme","slug":"shop"}`)),
		c("duplicate data", false, rep(`,"data"`, `,"data":{"org_id":"acme","slug":"x"},"data"`)),
		c("key case", false, rep(`"source"`, `"Source"`)),
		c("unknown envelope key", false, rep(`"source"`, `"plan":"x","source"`)),
		c("unknown data key", false, data(`{"org_id":"acme","slug":"acme","plan":"x"}`)),
		c("reason on created", false, data(`{"org_id":"acme","slug":"acme","reason":"x"}`)),
		c("number id", false, rep(`"01JDX7Q2T3V4W5X6Y7Z8A9B0C1"`, `12`)),
		c("null source", false, rep(`"platform"`, `null`)),
		c("data null", false, data(`null`)),
		c("data array", false, data(`["acme"]`)),
		c("data string", false, data(`"acme"`)),
		c("nested in data", false, data(`{"org_id":"acme","slug":{"x":"y"}}`)),
		c("missing id", false, rep(`"id":"01JDX7Q2T3V4W5X6Y7Z8A9B0C1",`, ``)),
		c("missing data", false, rep(`,"data":{"org_id":"acme","slug":"acme"}`, ``)),
		c("specversion 1.1", false, rep(`"1.0"`, `"1.1"`)),
		c("id 128", true, rep(`01JDX7Q2T3V4W5X6Y7Z8A9B0C1`, long("A", 128))),
		c("id 129", false, rep(`01JDX7Q2T3V4W5X6Y7Z8A9B0C1`, long("A", 129))),
		c("id punctuation", true, rep(`01JDX7Q2T3V4W5X6Y7Z8A9B0C1`, `a.b_c:d-e`)),
		c("id slash", false, rep(`01JDX7Q2T3V4W5X6Y7Z8A9B0C1`, `a/b`)),
		c("id empty", false, rep(`01JDX7Q2T3V4W5X6Y7Z8A9B0C1`, ``)),
		c("source empty", false, rep(`"platform"`, `""`)),
		c("source 256 runes", true, rep(`"platform"`, `"`+long("é", 256)+`"`)),
		c("source 257 runes", false, rep(`"platform"`, `"`+long("é", 257)+`"`)),
		c("source unicode", true, rep(`"platform"`, `"plätform ☃"`)),
		c("source raw line separator", true, rep(`"platform"`, "\"a\u2028b\"")),
		c("source control char", false, rep(`"platform"`, "\"a\tb\"")),
		c("datacontenttype", true, rep(`"subject"`, `"datacontenttype":"application/json","subject"`)),
		c("datacontenttype other", false, rep(`"subject"`, `"datacontenttype":"text/plain","subject"`)),
		c("dataschema v1", true, rep(`"subject"`, `"dataschema":"urn:tunnelward:schema:org.created:v1","subject"`)),
		c("dataschema of another type", false, rep(`"subject"`, `"dataschema":"urn:tunnelward:schema:org.deleted:v1","subject"`)),
		c("dataschema v9", false, rep(`"subject"`, `"dataschema":"urn:tunnelward:schema:org.created:v9","subject"`)),
		c("time offset", true, rep(`10:00:00Z`, `10:00:00+05:30`)),
		c("time negative offset", true, rep(`10:00:00Z`, `10:00:00-23:59`)),
		c("time offset hour 24", false, rep(`10:00:00Z`, `10:00:00+24:00`)),
		c("time fraction", true, rep(`10:00:00Z`, `10:00:00.123456789Z`)),
		c("time fraction 10 digits", false, rep(`10:00:00Z`, `10:00:00.1234567891Z`)),
		c("time fraction empty", false, rep(`10:00:00Z`, `10:00:00.Z`)),
		c("time lower t", false, rep(`26T10`, `26t10`)),
		c("time lower z", false, rep(`10:00:00Z`, `10:00:00z`)),
		c("time leap second", false, rep(`2026-11-26T10:00:00Z`, `2016-12-31T23:59:60Z`)),
		c("time second 60", false, rep(`10:00:00Z`, `10:00:60Z`)),
		c("time hour 24", false, rep(`10:00:00Z`, `24:00:00Z`)),
		c("time feb 29 leap year", true, rep(`2026-11-26`, `2024-02-29`)),
		c("time feb 29", false, rep(`2026-11-26`, `2026-02-29`)),
		c("time month 13", false, rep(`2026-11-26`, `2026-13-01`)),
		c("time day 00", false, rep(`2026-11-26`, `2026-11-00`)),
		c("time no zone", false, rep(`10:00:00Z`, `10:00:00`)),
		c("time space", false, rep(`26T10`, `26 10`)),
		c("time year 0", true, rep(`2026-11-26`, `0000-01-01`)),
		nosubj("subject 63", true, []byte(strings.ReplaceAll(edgeBase, `"acme"`, `"`+long("a", 63)+`"`))),
		nosubj("subject 64", false, []byte(strings.ReplaceAll(edgeBase, `"acme"`, `"`+long("a", 64)+`"`))),
		nosubj("subject hyphens", true, []byte(strings.NewReplacer(`"subject":"acme"`, `"subject":"-a-"`, `"org_id":"acme"`, `"org_id":"-a-"`).Replace(edgeBase))),
		nosubj("subject upper", false, []byte(strings.ReplaceAll(edgeBase, `"acme"`, `"Acme"`))),
		c("subject mismatch", false, rep(`"subject":"acme"`, `"subject":"acne"`)),
		c("slug 1", true, data(`{"org_id":"acme","slug":"a"}`)),
		c("slug 63", true, data(`{"org_id":"acme","slug":"`+long("a", 63)+`"}`)),
		c("slug 64", false, data(`{"org_id":"acme","slug":"`+long("a", 64)+`"}`)),
		c("slug inner hyphens", true, data(`{"org_id":"acme","slug":"a--b"}`)),
		c("slug trailing hyphen", false, data(`{"org_id":"acme","slug":"a-"}`)),
		c("slug leading hyphen", false, data(`{"org_id":"acme","slug":"-a"}`)),
		c("slug empty", false, data(`{"org_id":"acme","slug":""}`)),
		c("slug dot", false, data(`{"org_id":"acme","slug":"a.b"}`)),
		c("slug reserved", false, data(`{"org_id":"acme","slug":"www"}`)),
		c("slug punycode", false, data(`{"org_id":"acme","slug":"xn--80ak6aa92e"}`)),
		c("instance type", true, data(`{"org_id":"acme","slug":"acme","instance_type":"t4g.small"}`)),
		c("instance type hyphens", true, data(`{"org_id":"acme","slug":"acme","instance_type":"m-5-.x"}`)),
		c("instance type 32", true, data(`{"org_id":"acme","slug":"acme","instance_type":"m5`+long("a", 28)+`.x"}`)),
		c("instance type 33", false, data(`{"org_id":"acme","slug":"acme","instance_type":"m5`+long("a", 29)+`.x"}`)),
		c("instance type no digit", false, data(`{"org_id":"acme","slug":"acme","instance_type":"t.small"}`)),
		c("instance type digit first", false, data(`{"org_id":"acme","slug":"acme","instance_type":"4t.small"}`)),
		c("instance type two dots", false, data(`{"org_id":"acme","slug":"acme","instance_type":"t4g.sm.all"}`)),
		c("instance type no size", false, data(`{"org_id":"acme","slug":"acme","instance_type":"t4g."}`)),
		c("instance type empty", false, data(`{"org_id":"acme","slug":"acme","instance_type":""}`)),
		c("region", true, data(`{"org_id":"acme","slug":"acme","region":"eu-west-1"}`)),
		c("region long", true, data(`{"org_id":"acme","slug":"acme","region":"us-gov-west-east-12"}`)),
		c("region no name", false, data(`{"org_id":"acme","slug":"acme","region":"eu-1"}`)),
		c("region three letters", false, data(`{"org_id":"acme","slug":"acme","region":"euw-west-1"}`)),
		c("region double hyphen", false, data(`{"org_id":"acme","slug":"acme","region":"eu--1"}`)),
		c("region trailing letter", false, data(`{"org_id":"acme","slug":"acme","region":"eu-west-1a"}`)),
		c("region 33", false, data(`{"org_id":"acme","slug":"acme","region":"eu-`+long("w", 28)+`-1"}`)),
		c("region path", false, data(`{"org_id":"acme","slug":"acme","region":"../eu-west-1"}`)),
		c("pool", true, data(`{"org_id":"acme","slug":"acme","pool":"eu-2"}`)),
		c("pool 1", true, data(`{"org_id":"acme","slug":"acme","pool":"p"}`)),
		c("pool 32", true, data(`{"org_id":"acme","slug":"acme","pool":"p`+long("a", 31)+`"}`)),
		c("pool 33", false, data(`{"org_id":"acme","slug":"acme","pool":"p`+long("a", 32)+`"}`)),
		c("pool trailing hyphen", true, data(`{"org_id":"acme","slug":"acme","pool":"p-"}`)),
		c("pool digit first", false, data(`{"org_id":"acme","slug":"acme","pool":"1p"}`)),
		c("pool hyphen first", false, data(`{"org_id":"acme","slug":"acme","pool":"-p"}`)),
		c("pool upper", false, data(`{"org_id":"acme","slug":"acme","pool":"Pool"}`)),
		c("pool dot", false, data(`{"org_id":"acme","slug":"acme","pool":"p.q"}`)),
		c("pool empty", false, data(`{"org_id":"acme","slug":"acme","pool":""}`)),
		c("pool number", false, data(`{"org_id":"acme","slug":"acme","pool":1}`)),
		c("duplicate pool", false, data(`{"org_id":"acme","slug":"acme","pool":"a","pool":"b"}`)),
		c("pool and everything", true, data(`{"org_id":"acme","slug":"acme","instance_type":"t4g.small","region":"eu-west-1","pool":"eu","takeover":{"type":"A","content":"192.0.2.1"}}`)),
		c("takeover A", true, takeover(`{"type":"A","content":"192.0.2.1"}`)),
		c("takeover A record id", true, takeover(`{"type":"A","record_id":"`+hex32+`"}`)),
		c("takeover A both", true, takeover(`{"record_id":"`+hex32+`","content":"203.0.113.255","type":"A"}`)),
		c("takeover A zeros", true, takeover(`{"type":"A","content":"0.0.0.0"}`)),
		c("takeover A plus sign", true, takeover(`{"type":"A","content":"+1.2.3.4"}`)), // the library's ipv4 reads parts with Atoi
		c("takeover A 256", false, takeover(`{"type":"A","content":"192.0.2.256"}`)),
		c("takeover A leading zero", false, takeover(`{"type":"A","content":"192.0.2.01"}`)),
		c("takeover A three parts", false, takeover(`{"type":"A","content":"192.0.2"}`)),
		c("takeover A minus", false, takeover(`{"type":"A","content":"192.0.2.-1"}`)),
		c("takeover A with ipv6", false, takeover(`{"type":"A","content":"2001:db8::1"}`)),
		c("takeover A hostname", false, takeover(`{"type":"A","content":"old.example.com"}`)),
		c("takeover AAAA", true, takeover(`{"type":"AAAA","content":"2001:db8::1"}`)),
		c("takeover AAAA full", true, takeover(`{"type":"AAAA","content":"2001:0db8:0000:0000:0000:0000:0000:0001"}`)),
		c("takeover AAAA mapped", true, takeover(`{"type":"AAAA","content":"::ffff:192.0.2.1"}`)),
		c("takeover AAAA zone", false, takeover(`{"type":"AAAA","content":"fe80::1%eth0"}`)),
		c("takeover AAAA ipv4", false, takeover(`{"type":"AAAA","content":"192.0.2.1"}`)),
		c("takeover AAAA bad", false, takeover(`{"type":"AAAA","content":"2001:db8:::1"}`)),
		c("takeover CNAME", true, takeover(`{"type":"CNAME","content":"old-lb.example.com"}`)),
		c("takeover CNAME trailing dot", true, takeover(`{"type":"CNAME","content":"old-lb.example.com."}`)),
		c("takeover CNAME upper", true, takeover(`{"type":"CNAME","content":"Old-LB.Example.COM"}`)),
		c("takeover CNAME one label", true, takeover(`{"type":"CNAME","content":"localhost"}`)),
		c("takeover CNAME label 63", true, takeover(`{"type":"CNAME","content":"`+long("a", 63)+`.com"}`)),
		c("takeover CNAME label 64", false, takeover(`{"type":"CNAME","content":"`+long("a", 64)+`.com"}`)),
		c("takeover CNAME 253", true, takeover(`{"type":"CNAME","content":"`+strings.Repeat(long("a", 62)+".", 4)+`a"}`)),
		c("takeover CNAME 255", false, takeover(`{"type":"CNAME","content":"`+strings.Repeat(long("a", 62)+".", 4)+`abc"}`)),
		c("takeover CNAME 256", false, takeover(`{"type":"CNAME","content":"`+strings.Repeat(long("a", 63)+".", 4)+`"}`)),
		c("takeover CNAME empty label", false, takeover(`{"type":"CNAME","content":"a..b"}`)),
		c("takeover CNAME hyphen label", false, takeover(`{"type":"CNAME","content":"a.-b.c"}`)),
		c("takeover CNAME underscore", false, takeover(`{"type":"CNAME","content":"_acme.example.com"}`)),
		c("takeover CNAME unicode", false, takeover(`{"type":"CNAME","content":"bücher.example"}`)),
		c("takeover CNAME only dot", false, takeover(`{"type":"CNAME","content":"."}`)),
		c("takeover CNAME record id", true, takeover(`{"type":"CNAME","record_id":"`+hex32+`"}`)),
		c("takeover empty content", false, takeover(`{"type":"CNAME","content":""}`)),
		c("takeover no content or id", false, takeover(`{"type":"A"}`)),
		c("takeover no type", false, takeover(`{"content":"192.0.2.1"}`)),
		c("takeover MX", false, takeover(`{"type":"MX","content":"mail.example.com"}`)),
		c("takeover lower type", false, takeover(`{"type":"a","content":"192.0.2.1"}`)),
		c("takeover record id upper", false, takeover(`{"type":"A","record_id":"`+strings.ToUpper(hex32)+`"}`)),
		c("takeover record id 31", false, takeover(`{"type":"A","record_id":"`+hex32[1:]+`"}`)),
		c("takeover record id 33", false, takeover(`{"type":"A","record_id":"`+hex32+`0"}`)),
		c("takeover record id g", false, takeover(`{"type":"A","record_id":"`+hex32[1:]+`g"}`)),
		c("takeover unknown member", false, takeover(`{"type":"A","content":"192.0.2.1","ttl":"1"}`)),
		c("takeover duplicate member", false, takeover(`{"type":"A","content":"192.0.2.1","content":"192.0.2.2"}`)),
		c("takeover duplicate", false, data(`{"org_id":"acme","slug":"acme","takeover":{"type":"A","content":"192.0.2.1"},"takeover":{"type":"A","content":"192.0.2.1"}}`)),
		c("takeover empty", false, takeover(`{}`)),
		c("takeover null", false, takeover(`null`)),
		c("takeover string", false, takeover(`"A"`)),
		c("takeover nested", false, takeover(`{"type":"A","content":{"v":"192.0.2.1"}}`)),
		c("takeover escape", false, takeover(`{"type":"A","content":"192.0.2.\u0031"}`)),
		d("takeover on deleted", false, typed("org.deleted", `{"org_id":"acme","takeover":{"type":"A","content":"192.0.2.1"}}`)),
		d("deleted", true, typed("org.deleted", `{"org_id":"acme"}`)),
		d("deleted empty reason", true, typed("org.deleted", `{"org_id":"acme","reason":""}`)),
		d("deleted reason 1024 runes", true, typed("org.deleted", `{"org_id":"acme","reason":"`+long("ü", 1024)+`"}`)),
		d("deleted reason 1025", false, typed("org.deleted", `{"org_id":"acme","reason":"`+long("r", 1025)+`"}`)),
		d("deleted slug", false, typed("org.deleted", `{"org_id":"acme","slug":"acme"}`)),
		h("health", true, typed("org.health_failed", `{"org_id":"acme","reason":"530","observer":"probe"}`)),
		h("health empty reason", false, typed("org.health_failed", `{"org_id":"acme","reason":"","observer":"probe"}`)),
		h("health observer 256", true, typed("org.health_failed", `{"org_id":"acme","reason":"r","observer":"`+long("o", 256)+`"}`)),
		h("health observer 257", false, typed("org.health_failed", `{"org_id":"acme","reason":"r","observer":"`+long("o", 257)+`"}`)),
		h("health no observer", false, typed("org.health_failed", `{"org_id":"acme","reason":"r"}`)),
		c("health on created subject", false, typed("org.health_failed", `{"org_id":"acme","reason":"r","observer":"o"}`)),
		r("rotation", true, typed("org.token_rotation_requested", `{"org_id":"acme"}`)),
		r("rotation reason", true, typed("org.token_rotation_requested", `{"org_id":"acme","reason":"leaked in a support ticket"}`)),
		r("rotation empty reason", true, typed("org.token_rotation_requested", `{"org_id":"acme","reason":""}`)),
		r("rotation reason 1024 runes", true, typed("org.token_rotation_requested", `{"org_id":"acme","reason":"`+long("ü", 1024)+`"}`)),
		r("rotation reason 1025", false, typed("org.token_rotation_requested", `{"org_id":"acme","reason":"`+long("r", 1025)+`"}`)),
		r("rotation reason number", false, typed("org.token_rotation_requested", `{"org_id":"acme","reason":1}`)),
		r("rotation no org", false, typed("org.token_rotation_requested", `{"reason":"x"}`)),
		r("rotation slug", false, typed("org.token_rotation_requested", `{"org_id":"acme","slug":"acme"}`)),
		r("rotation observer", false, typed("org.token_rotation_requested", `{"org_id":"acme","observer":"x"}`)),
		r("rotation dataschema", true, []byte(strings.Replace(string(typed("org.token_rotation_requested", `{"org_id":"acme"}`)), `"subject"`, `"dataschema":"urn:tunnelward:schema:org.token_rotation_requested:v1","subject"`, 1))),
		r("rotation dataschema of created", false, []byte(strings.Replace(string(typed("org.token_rotation_requested", `{"org_id":"acme"}`)), `"subject"`, `"dataschema":"urn:tunnelward:schema:org.created:v1","subject"`, 1))),
		r("rotation of another org", false, []byte(strings.ReplaceAll(string(typed("org.token_rotation_requested", `{"org_id":"acme"}`)), `"acme"`, `"globex"`))),
		c("rotation on created subject", false, typed("org.token_rotation_requested", `{"org_id":"acme"}`)),
		nosubj("rotation without nats subject", true, typed("org.token_rotation_requested", `{"org_id":"acme"}`)),
		c("unknown type", false, typed("org.renamed", `{"org_id":"acme"}`)),
	}
}

func TestFastPathCoversSchemas(t *testing.T) {
	v := newValidator(t)
	all, err := schemas.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if v.latest[s.Type] != v.byType[s.Type][s.ID] {
			continue
		}
		if v.fast[s.Type] != s.ID {
			t.Errorf("%s (sha256 %s) has no fast path: it changed since fastpath.go was written (%s). Update fastpath.go to state exactly what the schema states, and its hash in fastSchemas; until then the library validates %s alone (correct, but slower)",
				s.File, schemaSum(s.Body), fastSchemas[s.ID], s.Type)
		}
	}
}

func TestFastPathAgreesWithLibrary(t *testing.T) {
	v := newValidator(t)
	valid, invalid := exampleCases(t)
	for _, c := range valid {
		t.Run("valid/"+c.name, func(t *testing.T) {
			if !checkAgree(t, v, c.subject, c.payload) {
				t.Fatal("the fast path declines a valid example")
			}
		})
	}
	for _, c := range invalid {
		t.Run("invalid/"+c.name, func(t *testing.T) {
			checkAgree(t, v, c.subject, c.payload)
			if _, err := v.Decode(c.subject, c.payload); err == nil {
				t.Fatal("invalid example accepted")
			}
		})
	}
	for _, c := range hostileCases(t) {
		t.Run("hostile/"+c.name, func(t *testing.T) {
			checkAgree(t, v, c.subject, c.payload)
		})
	}
	for _, c := range edgeCases() {
		t.Run("edge/"+c.name, func(t *testing.T) {
			took := checkAgree(t, v, c.subject, c.payload)
			if took != c.fast {
				t.Fatalf("fast path took it: %v, want %v (%s)", took, c.fast, c.payload)
			}
		})
	}
}

// TestFastPatternsMatchSchemaRegexps checks each hand-written matcher
// against the pattern in the schema file, over every string of up to five
// characters from an alphabet covering each character class the patterns
// name, plus longer samples.
func TestFastPatternsMatchSchemaRegexps(t *testing.T) {
	all, err := schemas.All()
	if err != nil {
		t.Fatal(err)
	}
	patterns := map[string]string{} // property name -> pattern, the same in every schema
	var walk func(name string, n any)
	walk = func(name string, n any) {
		switch n := n.(type) {
		case map[string]any:
			if p, ok := n["pattern"].(string); ok {
				if old, seen := patterns[name]; seen && old != p {
					t.Fatalf("property %s has two patterns: %s, %s", name, old, p)
				}
				patterns[name] = p
			}
			for k, c := range n {
				walk(k, c)
			}
		}
	}
	for _, s := range all {
		var doc any
		if err := json.Unmarshal(s.Body, &doc); err != nil {
			t.Fatal(err)
		}
		walk("", doc)
	}
	matchers := map[string]func(string) bool{
		"id":            func(s string) bool { return len(s) >= 1 && allBytes(s, isIDByte) },
		"subject":       isOrgID,
		"org_id":        isOrgID,
		"slug":          isSlug,
		"instance_type": isInstanceType,
		"region":        isRegion,
		"pool":          isPool,
		"record_id":     isRecordID,
	}
	for name := range patterns {
		if matchers[name] == nil {
			t.Fatalf("schema pattern of %q has no fast matcher in this test", name)
		}
	}
	alphabet := []byte("az09-.A_:/ ")
	var inputs []string
	var gen func(prefix []byte)
	gen = func(prefix []byte) {
		inputs = append(inputs, string(prefix))
		if len(prefix) == 5 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix, c))
		}
	}
	gen(nil)
	inputs = append(inputs, "t4g.small", "m5-4.large", "us-gov-west-1", "eu-west-12", "a-b-c-d-e-f-9", "ab-c-1-2",
		"xx-y-0", strings.Repeat("a", 63), strings.Repeat("a", 64), "é", "a\n", "\na",
		"p"+strings.Repeat("a", 31), "p"+strings.Repeat("a", 32), "0123456789abcdef0123456789abcdef",
		"0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef0", "0123456789ABCDEF0123456789ABCDEF",
		"0123456789abcdef0123456789abcdeg", strings.Repeat("0", 32), strings.Repeat("f", 32)+"\n")
	for name, p := range patterns {
		re := regexp.MustCompile(p)
		m := matchers[name]
		bad := 0
		for _, s := range inputs {
			want := re.MatchString(s)
			if name == "slug" {
				want = want && len(s) <= 63 // maxLength 63, folded into isSlug
			}
			if got := m(s); got != want {
				if bad++; bad < 10 {
					t.Errorf("%s %s: %q: fast %v, regexp %v", name, p, s, !want, want)
				}
			}
		}
	}
}

// FuzzFastPath checks the fast path against the library on arbitrary
// input. Seeds (run by every `go test`): the examples, the hostile corpus,
// the edge cases and FuzzDecode's corpus.
//
//	go test ./internal/events -run '^$' -fuzz FuzzFastPath -fuzztime 60s
func FuzzFastPath(f *testing.F) {
	valid, invalid := exampleCases(f)
	for _, c := range append(append(valid, invalid...), hostileCases(f)...) {
		f.Add(c.subject, c.payload)
	}
	for _, c := range edgeCases() {
		f.Add(c.subject, c.payload)
	}
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "*"))
	for _, s := range seeds {
		if subject, payload, ok := readFuzzSeed(s); ok {
			f.Add(subject, payload)
		}
	}
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, subject string, payload []byte) {
		checkAgree(t, v, subject, payload)
	})
}

// readFuzzSeed reads a (string, []byte) seed in Go's corpus file format.
func readFuzzSeed(file string) (string, []byte, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", nil, false
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "string(") || !strings.HasPrefix(lines[2], "[]byte(") {
		return "", nil, false
	}
	subject, err1 := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
	payload, err2 := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "[]byte("), ")"))
	return subject, []byte(payload), err1 == nil && err2 == nil
}

// TestFastFormatsMatchLibrary checks the fast path's takeover content
// formats against the JSON Schema library's own, over every string of up to
// four characters from an alphabet covering what the formats look at, plus
// longer samples.
func TestFastFormatsMatchLibrary(t *testing.T) {
	fast := map[string]func(string) bool{"ipv4": isIPv4Format, "ipv6": isIPv6Format, "hostname": isHostnameFormat}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	lib := map[string]*jsonschema.Schema{}
	for name := range fast {
		url := "urn:test:format:" + name
		if err := c.AddResource(url, map[string]any{"format": name}); err != nil {
			t.Fatal(err)
		}
		sch, err := c.Compile(url)
		if err != nil {
			t.Fatal(err)
		}
		lib[name] = sch
	}
	alphabet := []byte("019.:af-Z_+%é")
	var inputs []string
	var gen func(prefix []byte)
	gen = func(prefix []byte) {
		inputs = append(inputs, string(prefix))
		if len(prefix) == 4 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix, c))
		}
	}
	gen(nil)
	inputs = append(inputs, "192.0.2.1", "255.255.255.255", "256.0.0.1", "01.2.3.4", "1.2.3.4.", "+1.2.3.4", "-0.1.2.3",
		"1.2.3.04", " 1.2.3.4", "1.2.3.4 ", "0x1.2.3.4", "١.٢.٣.٤", "2001:db8::1", "::", "::1", "::ffff:192.0.2.1",
		"fe80::1%eth0", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1::2", "[::1]", "1:2:3:4:5:6:7:8:9",
		"example.com", "example.com.", "example.com..", "a-b.c", "-a.b", "a-.b", "a_b.c", "xn--bcher-kva.example",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a.", 126)+"a", strings.Repeat("a.", 127)+"a",
		strings.Repeat("a.", 127), "a.b.c.1", "1.2.3.4")
	for name, m := range fast {
		bad := 0
		for _, s := range inputs {
			want := lib[name].Validate(s) == nil
			if got := m(s); got != want {
				if bad++; bad < 10 {
					t.Errorf("format %s: %q: fast %v, library %v", name, s, got, want)
				}
			}
		}
	}
}
