package cloudsim

import (
	"net/http"
	"slices"
)

// cfDNSBatch is POST /zones/{zone}/dns_records/batch as Cloudflare
// documents it (developers.cloudflare.com/dns/manage-dns-records/how-to/
// batch-record-changes): deletes, then patches, then puts, then posts, each
// list in the order given, in one database transaction: if any action
// fails nothing is applied and the answer is the first error. At most
// Config.DNSBatchLimit changes per batch (200 on Free, 3,500 on paid
// plans). Every change applies within the zone of the path: an id of
// another zone's record is not found. The whole batch is one request,
// counted once against the rate limit like any other (docs/decisions.md).
// Caller holds s.mu.
func (s *Sim) cfDNSBatch(zone string, body map[string]any) (any, *cfResultInfo, *cfErr) {
	lists := map[string][]map[string]any{}
	total := 0
	for _, k := range []string{"deletes", "patches", "puts", "posts"} {
		v, ok := body[k]
		if !ok || v == nil {
			continue
		}
		items, isList := v.([]any)
		if !isList {
			return nil, nil, cfErrorf(http.StatusBadRequest, 9207, "Request body is invalid: %s must be a list", k) // approx
		}
		for i, it := range items {
			m, isObj := it.(map[string]any)
			if !isObj {
				return nil, nil, cfErrorf(http.StatusBadRequest, 9207, "Request body is invalid: %s[%d] is not an object", k, i) // approx
			}
			lists[k] = append(lists[k], m)
		}
		total += len(items)
	}
	if total > s.cfg.DNSBatchLimit {
		return nil, nil, cfErrorf(http.StatusBadRequest, 81063, "Batch holds %d record changes; at most %d on this plan.", total, s.cfg.DNSBatchLimit) // approx
	}
	// All or nothing: keep the zone as it was and restore it on the first error.
	saved := make(map[string]DNSRecord, len(s.dnsRecords))
	for id, r := range s.dnsRecords {
		c := *r
		c.Tags = slices.Clone(r.Tags)
		saved[id] = c
	}
	rollback := func() {
		s.dnsRecords = make(map[string]*DNSRecord, len(saved))
		for id, r := range saved {
			s.dnsRecords[id] = &r
		}
	}
	out := map[string][]any{"deletes": {}, "patches": {}, "puts": {}, "posts": {}}
	for _, m := range lists["deletes"] {
		id, _, e := bodyString(m, "id")
		if e == nil {
			_, e = s.cfRecord(zone, id)
		}
		if e != nil {
			rollback()
			return nil, nil, e
		}
		out["deletes"] = append(out["deletes"], dnsJSON(s.dnsRecords[id]))
		delete(s.dnsRecords, id)
	}
	for _, k := range []string{"patches", "puts"} {
		for _, m := range lists[k] {
			id, _, e := bodyString(m, "id")
			var res any
			if e == nil {
				res, _, e = s.cfDNSWrite(zone, id, m, k == "patches")
			}
			if e != nil {
				rollback()
				return nil, nil, e
			}
			out[k] = append(out[k], res)
		}
	}
	for _, m := range lists["posts"] {
		res, _, e := s.cfDNSCreate(zone, m)
		if e != nil {
			rollback()
			return nil, nil, e
		}
		out["posts"] = append(out["posts"], res)
	}
	return out, nil, nil
}
