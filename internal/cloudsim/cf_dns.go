package cloudsim

import (
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// dnsTypes are the record types the emulator accepts; proxiable ones can
// carry proxied=true.
var dnsTypes = map[string]bool{"A": true, "AAAA": true, "CNAME": true, "TXT": true, "MX": true, "NS": true, "CAA": true, "SRV": true}

func proxiable(typ string) bool { return typ == "A" || typ == "AAAA" || typ == "CNAME" }

// fqdn turns a record name into the stored form for zone (a zone id):
// lowercase, no trailing dot, "@" is the apex, a name not already in the
// zone gets the zone's name appended.
func (s *Sim) fqdn(zoneID, name string) string {
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	zone := s.zoneName(zoneID)
	switch {
	case n == "@" || n == "":
		return zone
	case n == zone || strings.HasSuffix(n, "."+zone):
		return n
	default:
		return n + "." + zone
	}
}

// dnsJSON is a record as the v4 API shows it.
func dnsJSON(r *DNSRecord) map[string]any {
	tags := r.Tags
	if tags == nil {
		tags = []string{}
	}
	var comment any
	if r.Comment != "" {
		comment = r.Comment
	}
	return map[string]any{
		"id":          r.ID,
		"zone_id":     r.ZoneID,
		"name":        r.Name,
		"type":        r.Type,
		"content":     r.Content,
		"proxiable":   proxiable(r.Type),
		"proxied":     r.Proxied,
		"ttl":         r.TTL,
		"comment":     comment,
		"tags":        tags,
		"settings":    map[string]any{},
		"meta":        map[string]any{},
		"created_on":  cfTime(r.CreatedOn),
		"modified_on": cfTime(r.ModifiedOn),
	}
}

// dnsInput is a create/update body after validation.
type dnsInput struct {
	Type, Name, Content, Comment string
	Proxied                      bool
	TTL                          int
	Tags                         []string
}

// readDNSInput validates body over base (PATCH merges into the current
// record) for a record of zone (a zone id).
func (s *Sim) readDNSInput(zone string, body map[string]any, base dnsInput) (dnsInput, *cfErr) {
	in := base
	if v, has, e := bodyString(body, "type"); e != nil {
		return in, e
	} else if has {
		in.Type = strings.ToUpper(v)
	}
	if v, has, e := bodyString(body, "name"); e != nil {
		return in, e
	} else if has {
		in.Name = v
	}
	if v, has, e := bodyString(body, "content"); e != nil {
		return in, e
	} else if has {
		in.Content = v
	}
	if v, has, e := bodyString(body, "comment"); e != nil {
		return in, e
	} else if has {
		in.Comment = v
	} else if _, present := body["comment"]; present { // explicit null clears it
		in.Comment = ""
	}
	if v, has, e := bodyBool(body, "proxied"); e != nil {
		return in, e
	} else if has {
		in.Proxied = v
	}
	if v, ok := body["ttl"]; ok && v != nil {
		f, isNum := v.(float64)
		if !isNum || f != float64(int(f)) {
			return in, cfErrorf(http.StatusBadRequest, 9003, "ttl must be an integer") // approx
		}
		in.TTL = int(f)
	}
	if v, ok := body["tags"]; ok && v != nil {
		list, isList := v.([]any)
		if !isList {
			return in, cfErrorf(http.StatusBadRequest, 1004, "tags must be a list of strings")
		}
		in.Tags = nil
		for _, t := range list {
			str, _ := t.(string)
			in.Tags = append(in.Tags, str)
		}
	}

	if !dnsTypes[in.Type] {
		return in, cfErrorf(http.StatusBadRequest, 1004, "DNS Validation Error: type %q is not supported here (A, AAAA, CNAME, TXT, MX, NS, CAA, SRV)", in.Type)
	}
	if strings.TrimSpace(in.Name) == "" {
		return in, cfErrorf(http.StatusBadRequest, 9000, "DNS name is invalid.") // approx
	}
	in.Name = s.fqdn(zone, in.Name)
	if !hostnameRe.MatchString(in.Name) && !strings.HasPrefix(in.Name, "_") {
		return in, cfErrorf(http.StatusBadRequest, 9000, "DNS name is invalid.")
	}
	if in.Content == "" {
		return in, cfErrorf(http.StatusBadRequest, 9005, "Content for %s record is invalid.", in.Type) // approx
	}
	switch in.Type {
	case "A":
		if a, err := netip.ParseAddr(in.Content); err != nil || !a.Is4() {
			return in, cfErrorf(http.StatusBadRequest, 9005, "Content for A record must be a valid IPv4 address.")
		}
	case "AAAA":
		if a, err := netip.ParseAddr(in.Content); err != nil || !a.Is6() {
			return in, cfErrorf(http.StatusBadRequest, 9006, "Content for AAAA record must be a valid IPv6 address.")
		}
	case "CNAME":
		in.Content = strings.TrimSuffix(strings.ToLower(in.Content), ".")
		if !hostnameRe.MatchString(in.Content) {
			return in, cfErrorf(http.StatusBadRequest, 9007, "Content for CNAME record is invalid.")
		}
		if in.Content == in.Name {
			return in, cfErrorf(http.StatusBadRequest, 9007, "A CNAME record cannot point to itself.")
		}
	}
	if in.Proxied && !proxiable(in.Type) {
		return in, cfErrorf(http.StatusBadRequest, 9004, "This record type cannot be proxied.")
	}
	if in.TTL == 0 {
		in.TTL = 1
	}
	if in.TTL != 1 && (in.TTL < 60 || in.TTL > 86400) {
		return in, cfErrorf(http.StatusBadRequest, 9003, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.") // approx
	}
	if len(in.Comment) > 100 {
		return in, cfErrorf(http.StatusBadRequest, 9102, "DNS record comment is too long: %d characters, at most 100 on this plan.", len(in.Comment)) // approx
	}
	return in, nil
}

// cfRecord finds a record of the zone by id; a record of another zone is
// not found.
func (s *Sim) cfRecord(zone, id string) (*DNSRecord, *cfErr) {
	r := s.dnsRecords[id]
	if r == nil || s.zoneOrFirst(r.ZoneID) != zone {
		return nil, errCFRecordNotFound
	}
	return r, nil
}

// zoneRecordCount is how many records the zone holds (its quota's count).
func (s *Sim) zoneRecordCount(zone string) int {
	n := 0
	for _, r := range s.dnsRecords {
		if s.zoneOrFirst(r.ZoneID) == zone {
			n++
		}
	}
	return n
}

// dnsConflict applies the coexistence rules against every record of the
// zone except self: a CNAME shares its name with nothing; A/AAAA/others may
// not sit beside a CNAME; an exact duplicate is refused. Records of other
// zones never conflict.
func (s *Sim) dnsConflict(zone string, in dnsInput, self string) *cfErr {
	for id, r := range s.dnsRecords {
		if id == self || r.Name != in.Name || s.zoneOrFirst(r.ZoneID) != zone {
			continue
		}
		if in.Type == "CNAME" || r.Type == "CNAME" {
			return errCFHostExists
		}
		if r.Type == in.Type && r.Content == in.Content {
			return errCFIdentical
		}
	}
	return nil
}

func (s *Sim) cfDNSCreate(zone string, body map[string]any) (any, *cfResultInfo, *cfErr) {
	in, e := s.readDNSInput(zone, body, dnsInput{})
	if e != nil {
		return nil, nil, e
	}
	if e := s.dnsConflict(zone, in, ""); e != nil {
		return nil, nil, e
	}
	if s.zoneRecordCount(zone) >= s.cfg.DNSQuota {
		return nil, nil, errCFQuota
	}
	now := s.now()
	r := &DNSRecord{
		ID: s.newHex(32), ZoneID: zone, Name: in.Name, Type: in.Type, Content: in.Content,
		Proxied: in.Proxied, TTL: in.TTL, Comment: in.Comment, Tags: in.Tags, CreatedOn: now, ModifiedOn: now,
	}
	s.dnsRecords[r.ID] = r
	return dnsJSON(r), nil, nil
}

// cfDNSWrite is PUT (overwrite: unspecified optional fields reset) and
// PATCH (merge into the current record).
func (s *Sim) cfDNSWrite(zone, id string, body map[string]any, patch bool) (any, *cfResultInfo, *cfErr) {
	r, e := s.cfRecord(zone, id)
	if e != nil {
		return nil, nil, e
	}
	base := dnsInput{}
	if patch {
		base = dnsInput{Type: r.Type, Name: r.Name, Content: r.Content, Comment: r.Comment, Proxied: r.Proxied, TTL: r.TTL, Tags: r.Tags}
	}
	in, e := s.readDNSInput(zone, body, base)
	if e != nil {
		return nil, nil, e
	}
	if e := s.dnsConflict(zone, in, id); e != nil {
		return nil, nil, e
	}
	r.Type, r.Name, r.Content, r.Comment, r.Proxied, r.TTL, r.Tags = in.Type, in.Name, in.Content, in.Comment, in.Proxied, in.TTL, in.Tags
	r.ModifiedOn = s.now()
	return dnsJSON(r), nil, nil
}

// strFilter is one of the v4 string filters: field, field.exact,
// field.contains, field.startswith, field.endswith, field.present,
// field.absent. ok reports whether any was given.
func strFilter(q url.Values, field string, fold func(string) string) (match func(string) bool, ok bool) {
	var preds []func(string) bool
	add := func(k string, f func(v, want string) bool) {
		if !q.Has(k) {
			return
		}
		want := fold(q.Get(k))
		preds = append(preds, func(v string) bool { return f(fold(v), want) })
	}
	eq := func(v, w string) bool { return v == w }
	add(field, eq)
	add(field+".exact", eq)
	add(field+".contains", strings.Contains)
	add(field+".startswith", strings.HasPrefix)
	add(field+".endswith", strings.HasSuffix)
	if q.Has(field + ".present") {
		preds = append(preds, func(v string) bool { return v != "" })
	}
	if q.Has(field + ".absent") {
		preds = append(preds, func(v string) bool { return v == "" })
	}
	if len(preds) == 0 {
		return nil, false
	}
	return func(v string) bool {
		for _, p := range preds {
			if !p(v) {
				return false
			}
		}
		return true
	}, true
}

func (s *Sim) cfDNSList(zone string, q url.Values) (any, *cfResultInfo, *cfErr) {
	page, perPage, e := cfPaging(q, 100, 5000)
	if e != nil {
		return nil, nil, e
	}
	matchAny := false
	switch q.Get("match") {
	case "", "all":
	case "any":
		matchAny = true
	default:
		return nil, nil, cfErrorf(http.StatusBadRequest, 1004, "match must be all or any, got %q", q.Get("match"))
	}
	lower := func(v string) string { return strings.TrimSuffix(strings.ToLower(v), ".") }
	same := func(v string) string { return v }
	var filters []func(*DNSRecord) bool
	if m, ok := strFilter(q, "name", lower); ok {
		filters = append(filters, func(r *DNSRecord) bool { return m(r.Name) })
	}
	if m, ok := strFilter(q, "content", lower); ok {
		filters = append(filters, func(r *DNSRecord) bool { return m(r.Content) })
	}
	if m, ok := strFilter(q, "comment", same); ok {
		filters = append(filters, func(r *DNSRecord) bool { return m(r.Comment) })
	}
	if v := q.Get("type"); v != "" {
		filters = append(filters, func(r *DNSRecord) bool { return r.Type == strings.ToUpper(v) })
	}
	if v := q.Get("proxied"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, nil, cfErrorf(http.StatusBadRequest, 1004, "proxied must be true or false, got %q", v)
		}
		filters = append(filters, func(r *DNSRecord) bool { return r.Proxied == b })
	}
	var out []*DNSRecord
	for _, r := range s.dnsRecords {
		if s.zoneOrFirst(r.ZoneID) != zone {
			continue
		}
		keep := len(filters) == 0 || !matchAny
		for _, f := range filters {
			if matchAny && f(r) {
				keep = true
				break
			}
			if !matchAny && !f(r) {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, r)
		}
	}
	order := q.Get("order")
	key := func(r *DNSRecord) string {
		switch order {
		case "content":
			return r.Content
		case "ttl":
			return strconv.Itoa(100000 + r.TTL)
		case "proxied":
			return strconv.FormatBool(r.Proxied)
		case "name":
			return r.Name
		default: // the API's default order is by type, then name
			return r.Type + " " + r.Name
		}
	}
	desc := q.Get("direction") == "desc"
	sort.Slice(out, func(i, j int) bool {
		ki, kj := key(out[i]), key(out[j])
		if ki != kj {
			return (ki < kj) != desc
		}
		return out[i].ID < out[j].ID
	})
	lo, hi, info := pageOf(len(out), page, perPage)
	res := make([]any, 0, hi-lo)
	for _, r := range out[lo:hi] {
		res = append(res, dnsJSON(r))
	}
	return res, info, nil
}
