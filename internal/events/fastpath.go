package events

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The fast path accepts well-formed events without the JSON Schema library:
// the library's generic parse into map[string]any and its schema walk cost
// ~8 µs per event, most of ingest's CPU (PERFORMANCE.md, section 1). It
// reads the payload straight into the typed event with a strict scanner and
// checks exactly what the schemas state. It only ever accepts: anything it
// does not recognise (an escape in a string, a number, a duplicate or
// unknown key, a value out of range, a semantic failure) goes through the
// library path, so every rejection carries the library's error, and the
// schemas stay the single source of truth. fastpath_test.go proves both
// paths agree on every example, the hostile corpus and the fuzz seeds.

// fastSchemas are the schema files this code was written against, by
// SHA-256 of the embedded file. A type whose schema differs (edited, or a
// newer version became the latest) has no fast path until this code and the
// hash are updated: the library validates it alone. TestFastPathCoversSchemas
// fails in that case, as a reminder.
var fastSchemas = map[string]string{
	"urn:tunnelward:schema:org.created:v1":                  "ba0a553cf3373408fec26e7931c1f77277142b4cb0112594dae65bdff1505796",
	"urn:tunnelward:schema:org.deleted:v1":                  "f3689255f6ba70cdee275efaf1daf1af93ad83332563d0a0891307e112aefd0e",
	"urn:tunnelward:schema:org.health_failed:v1":            "97f86cbc8eaedce06c8565eb28069ffe6ab9bcef5bc918e6b109968662c4e7a0",
	"urn:tunnelward:schema:org.token_rotation_requested:v1": "a8ab9e25cbae79b14869749a1906b88cc9089f2577b53e0d85d30f39572f5466",
}

func schemaSum(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// Envelope and data members, as bits of a presence mask.
const (
	fSpec = 1 << iota
	fID
	fType
	fSource
	fTime
	fSubject
	fContentType
	fDataSchema
	fData
)

const (
	dOrgID = 1 << iota
	dSlug
	dInstanceType
	dRegion
	dReason
	dObserver
	dPool
	dTakeover
)

// Members of org.created's data.takeover.
const (
	tType = 1 << iota
	tContent
	tRecordID
)

// Members each event type's data allows (additionalProperties: false) and
// requires.
var fastData = map[string]struct{ allowed, required int }{
	TypeCreated:                {dOrgID | dSlug | dInstanceType | dRegion | dPool | dTakeover, dOrgID | dSlug},
	TypeDeleted:                {dOrgID | dReason, dOrgID},
	TypeHealthFailed:           {dOrgID | dReason | dObserver, dOrgID | dReason | dObserver},
	TypeTokenRotationRequested: {dOrgID | dReason, dOrgID},
}

type fastEvent struct {
	has, dataHas, takeoverHas                                            int
	specVersion, id, typ, source, time, subject, contentType, dataSchema string
	orgID, slug, instanceType, region, reason, observer, pool            string
	takeoverType, takeoverContent, takeoverRecordID                      string
}

// decodeFast returns the event and true if payload is a valid event of a
// type with a fast path, by every rule its schema states; false means "ask
// the library", never "invalid". The caller has checked size and UTF-8.
func (v *Validator) decodeFast(payload []byte) (Event, bool) {
	if len(v.fast) == 0 {
		return Event{}, false
	}
	p := scanner{s: string(payload)} // one copy; the event's strings share it
	var f fastEvent
	ok := p.object(func(key string) bool {
		var bit int
		var dst *string
		switch key {
		case "specversion":
			bit, dst = fSpec, &f.specVersion
		case "id":
			bit, dst = fID, &f.id
		case "type":
			bit, dst = fType, &f.typ
		case "source":
			bit, dst = fSource, &f.source
		case "time":
			bit, dst = fTime, &f.time
		case "subject":
			bit, dst = fSubject, &f.subject
		case "datacontenttype":
			bit, dst = fContentType, &f.contentType
		case "dataschema":
			bit, dst = fDataSchema, &f.dataSchema
		case "data":
			if f.has&fData != 0 {
				return false
			}
			f.has |= fData
			return p.object(func(key string) bool { return f.dataMember(&p, key) })
		default:
			return false
		}
		if f.has&bit != 0 {
			return false // duplicate key: the library keeps the last; let it
		}
		f.has |= bit
		var ok bool
		*dst, ok = p.str()
		return ok
	})
	if !ok || !p.end() {
		return Event{}, false
	}
	const required = fSpec | fID | fType | fSource | fTime | fSubject | fData
	if f.has&required != required {
		return Event{}, false
	}
	schemaID, ok := v.fast[f.typ]
	if !ok {
		return Event{}, false
	}
	rules := fastData[f.typ]
	if f.dataHas&^rules.allowed != 0 || f.dataHas&rules.required != rules.required {
		return Event{}, false
	}
	// Envelope (identical in every v1 schema).
	if f.specVersion != SpecVersion ||
		len(f.id) < 1 || len(f.id) > 128 || !allBytes(f.id, isIDByte) ||
		!runeLen(f.source, 1, 256) ||
		!isOrgID(f.subject) ||
		f.has&fContentType != 0 && f.contentType != "application/json" ||
		f.has&fDataSchema != 0 && f.dataSchema != schemaID {
		return Event{}, false
	}
	t, ok := fastTime(f.time)
	if !ok {
		return Event{}, false
	}
	ev := Event{
		SpecVersion: f.specVersion, ID: f.id, Type: f.typ, Source: f.source, Time: t,
		Subject: f.subject, DataContentType: f.contentType, DataSchema: f.dataSchema,
	}
	if !isOrgID(f.orgID) {
		return Event{}, false
	}
	switch f.typ {
	case TypeCreated:
		if !isSlug(f.slug) ||
			f.dataHas&dInstanceType != 0 && (len(f.instanceType) > 32 || !isInstanceType(f.instanceType)) ||
			f.dataHas&dRegion != 0 && (len(f.region) > 32 || !isRegion(f.region)) ||
			f.dataHas&dPool != 0 && !isPool(f.pool) ||
			f.dataHas&dTakeover != 0 && !f.validTakeover() {
			return Event{}, false
		}
		ev.Created = &Created{OrgID: f.orgID, Slug: f.slug, InstanceType: f.instanceType, Region: f.region, Pool: f.pool}
		if f.dataHas&dTakeover != 0 {
			ev.Created.Takeover = &Takeover{Type: f.takeoverType, Content: f.takeoverContent, RecordID: f.takeoverRecordID}
		}
	case TypeDeleted:
		if !runeLen(f.reason, 0, 1024) {
			return Event{}, false
		}
		ev.Deleted = &Deleted{OrgID: f.orgID, Reason: f.reason}
	case TypeHealthFailed:
		if !runeLen(f.reason, 1, 1024) || !runeLen(f.observer, 1, 256) {
			return Event{}, false
		}
		ev.HealthFailed = &HealthFailed{OrgID: f.orgID, Reason: f.reason, Observer: f.observer}
	case TypeTokenRotationRequested:
		if !runeLen(f.reason, 0, 1024) {
			return Event{}, false
		}
		ev.TokenRotationRequested = &TokenRotationRequested{OrgID: f.orgID, Reason: f.reason}
	default:
		return Event{}, false
	}
	return ev, true
}

func (f *fastEvent) dataMember(p *scanner, key string) bool {
	var bit int
	var dst *string
	switch key {
	case "org_id":
		bit, dst = dOrgID, &f.orgID
	case "slug":
		bit, dst = dSlug, &f.slug
	case "instance_type":
		bit, dst = dInstanceType, &f.instanceType
	case "region":
		bit, dst = dRegion, &f.region
	case "reason":
		bit, dst = dReason, &f.reason
	case "observer":
		bit, dst = dObserver, &f.observer
	case "pool":
		bit, dst = dPool, &f.pool
	case "takeover":
		if f.dataHas&dTakeover != 0 {
			return false
		}
		f.dataHas |= dTakeover
		return p.object(func(key string) bool { return f.takeoverMember(p, key) })
	default:
		return false
	}
	if f.dataHas&bit != 0 {
		return false
	}
	f.dataHas |= bit
	var ok bool
	*dst, ok = p.str()
	return ok
}

func (f *fastEvent) takeoverMember(p *scanner, key string) bool {
	var bit int
	var dst *string
	switch key {
	case "type":
		bit, dst = tType, &f.takeoverType
	case "content":
		bit, dst = tContent, &f.takeoverContent
	case "record_id":
		bit, dst = tRecordID, &f.takeoverRecordID
	default:
		return false
	}
	if f.takeoverHas&bit != 0 {
		return false
	}
	f.takeoverHas |= bit
	var ok bool
	*dst, ok = p.str()
	return ok
}

// validTakeover checks data.takeover as org.created's schema states it:
// type required and one of A, AAAA, CNAME; content or record_id (or both);
// content 1..255 characters, of the format its type names; record_id 32
// lowercase hex digits.
func (f *fastEvent) validTakeover() bool {
	if f.takeoverHas&tType == 0 || f.takeoverHas&(tContent|tRecordID) == 0 {
		return false
	}
	if f.takeoverHas&tRecordID != 0 && !isRecordID(f.takeoverRecordID) {
		return false
	}
	var format func(string) bool
	switch f.takeoverType {
	case TakeoverA:
		format = isIPv4Format
	case TakeoverAAAA:
		format = isIPv6Format
	case TakeoverCNAME:
		format = isHostnameFormat
	default:
		return false
	}
	return f.takeoverHas&tContent == 0 || runeLen(f.takeoverContent, 1, 255) && format(f.takeoverContent)
}

// scanner reads the subset of JSON the fast path accepts: objects whose
// members are strings without escapes or, nested (data, data.takeover),
// such objects.
type scanner struct {
	s string
	i int
}

func (p *scanner) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) next(c byte) bool {
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (p *scanner) end() bool {
	p.ws()
	return p.i == len(p.s)
}

// str reads a string with no escape and no control character; the payload
// is valid UTF-8 already, so its bytes are the string's value.
func (p *scanner) str() (string, bool) {
	if !p.next('"') {
		return "", false
	}
	start := p.i
	for j := start; j < len(p.s); j++ {
		switch c := p.s[j]; {
		case c == '"':
			p.i = j + 1
			return p.s[start:j], true
		case c == '\\' || c < 0x20:
			return "", false
		}
	}
	return "", false
}

// object reads {"key": value, ...}, calling member after each key's colon
// to read the value.
func (p *scanner) object(member func(key string) bool) bool {
	if !p.next('{') {
		return false
	}
	if p.next('}') {
		return true
	}
	for {
		k, ok := p.str()
		if !ok || !p.next(':') || !member(k) {
			return false
		}
		if p.next(',') {
			continue
		}
		return p.next('}')
	}
}

// The schemas' patterns, hand-compiled; TestFastPatternsMatchSchemaRegexps
// checks each against the regexp it stands for.

func isLower(c byte) bool      { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isLowerDigit(c byte) bool { return isLower(c) || isDigit(c) }
func isLabelByte(c byte) bool  { return isLowerDigit(c) || c == '-' }

// isIDByte: [A-Za-z0-9._:-]
func isIDByte(c byte) bool {
	return isLowerDigit(c) || c >= 'A' && c <= 'Z' || c == '.' || c == '_' || c == ':' || c == '-'
}

func allBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

// runeLen: minLength/maxLength count code points.
func runeLen(s string, lo, hi int) bool {
	n := utf8.RuneCountInString(s)
	return n >= lo && n <= hi
}

// isOrgID: ^[a-z0-9-]{1,63}$
func isOrgID(s string) bool {
	return len(s) >= 1 && len(s) <= 63 && allBytes(s, isLabelByte)
}

// isSlug: minLength 1, maxLength 63, ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$
func isSlug(s string) bool {
	return len(s) >= 1 && len(s) <= 63 && allBytes(s, isLabelByte) &&
		isLowerDigit(s[0]) && isLowerDigit(s[len(s)-1])
}

// isInstanceType: ^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\.[a-z0-9]+$
func isInstanceType(s string) bool {
	dot := -1
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			if dot >= 0 {
				return false
			}
			dot = i
		}
	}
	if dot < 1 || dot == len(s)-1 {
		return false
	}
	family, size := s[:dot], s[dot+1:]
	if !isLower(family[0]) || !allBytes(family, isLabelByte) || !allBytes(size, isLowerDigit) {
		return false
	}
	for i := 1; i < len(family); i++ {
		if isDigit(family[i]) {
			return true
		}
	}
	return false
}

// isRegion: ^[a-z]{2}(-[a-z]+)+-[0-9]+$
func isRegion(s string) bool {
	if len(s) < 2 || !isLower(s[0]) || !isLower(s[1]) {
		return false
	}
	groups := 0 // -[a-z]+ groups before the number
	i := 2
	for {
		if i >= len(s) || s[i] != '-' {
			return false
		}
		i++
		j := i
		for j < len(s) && isLower(s[j]) {
			j++
		}
		if j > i {
			groups++
			i = j
			continue
		}
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		return j > i && j == len(s) && groups >= 1
	}
}

// isPool: ^[a-z][a-z0-9-]{0,31}$
func isPool(s string) bool {
	return len(s) >= 1 && len(s) <= 32 && isLower(s[0]) && allBytes(s, isLabelByte)
}

// isRecordID: ^[0-9a-f]{32}$
func isRecordID(s string) bool {
	return len(s) == 32 && allBytes(s, func(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' })
}

// The formats data.takeover.content is checked against, written as the
// JSON Schema library (santhosh-tekuri/jsonschema v6) checks them, quirks
// included (its ipv4 reads each part with strconv.Atoi, so "+1" passes):
// what it accepts, the fast path must accept, and nothing more.
// TestFastFormatsMatchLibrary compares them over a corpus.

// isIPv4Format: format "ipv4".
func isIPv4Format(s string) bool {
	groups := strings.Split(s, ".")
	if len(groups) != 4 {
		return false
	}
	for _, g := range groups {
		if len(g) > 1 && g[0] == '0' {
			return false
		}
		n, err := strconv.Atoi(g)
		if err != nil || n < 0 || n > 255 {
			return false
		}
	}
	return true
}

// isIPv6Format: format "ipv6".
func isIPv6Format(s string) bool {
	if !strings.Contains(s, ":") {
		return false
	}
	addr, err := netip.ParseAddr(s)
	return err == nil && addr.Zone() == ""
}

// isHostnameFormat: format "hostname" (labels of 1..63 letters, digits and
// inner hyphens, 253 bytes at most without a trailing dot).
func isHostnameFormat(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) < 1 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLabelByte(c) && !(c >= 'A' && c <= 'Z') {
				return false
			}
		}
	}
	return true
}

// fastTime accepts the strict RFC 3339 form YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
// with an upper-case T and Z, no leap second and 1–9 fraction digits: a
// subset of what the library's date-time format accepts that time.Parse
// also reads (the rest, such as a lower-case t or second 60, goes to the
// library, which reports it). It parses with the call the library path uses.
func fastTime(s string) (time.Time, bool) {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18} {
		if !isDigit(s[i]) {
			return time.Time{}, false
		}
	}
	two := func(i int) int { return int(s[i]-'0')*10 + int(s[i+1]-'0') }
	if two(11) > 23 || two(14) > 59 || two(17) > 59 {
		return time.Time{}, false
	}
	rest := s[19:]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && isDigit(rest[n]) {
			n++
		}
		if n == 1 || n > 10 {
			return time.Time{}, false
		}
		rest = rest[n:]
	}
	switch {
	case rest == "Z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
		isDigit(rest[1]) && isDigit(rest[2]) && isDigit(rest[4]) && isDigit(rest[5]):
		if int(rest[1]-'0')*10+int(rest[2]-'0') > 23 || int(rest[4]-'0')*10+int(rest[5]-'0') > 59 {
			return time.Time{}, false
		}
	default:
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}
