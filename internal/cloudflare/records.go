package cloudflare

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/packages/pagination"

	"github.com/tunnelward/tunnelward/internal/apicall"
)

// Record is a DNS record as tunnelward sees it.
type Record struct {
	ID         string
	Name       string // FQDN, lowercase
	Type       string
	Content    string
	Proxied    bool
	TTL        int
	Comment    string
	ModifiedOn time.Time
}

// RecordSpec is a proxied CNAME to create or write.
type RecordSpec struct {
	Name    string // FQDN
	Content string // target, e.g. <tunnel-id>.cfargotunnel.com
	Comment string // ownership marker
}

func toRecord(r *dns.RecordResponse) Record {
	return Record{ID: r.ID, Name: strings.ToLower(r.Name), Type: string(r.Type), Content: r.Content,
		Proxied: r.Proxied, TTL: int(r.TTL), Comment: r.Comment, ModifiedOn: r.ModifiedOn}
}

// detachRecord copies a listed record's strings, so the listing keeps none
// of the SDK's decoded page alive.
func detachRecord(r Record) Record {
	r.ID, r.Name, r.Type = strings.Clone(r.ID), strings.Clone(r.Name), strings.Clone(r.Type)
	r.Content, r.Comment = strings.Clone(r.Content), strings.Clone(r.Comment)
	return r
}

func (s RecordSpec) param() dns.CNAMERecordParam {
	var p dns.CNAMERecordParam
	setField(&p.Name.Value, &p.Name.Present, s.Name)
	setField(&p.Type.Value, &p.Type.Present, dns.CNAMERecordTypeCNAME)
	setField(&p.Content.Value, &p.Content.Present, s.Content)
	setField(&p.Proxied.Value, &p.Proxied.Present, true)
	setField(&p.TTL.Value, &p.TTL.Present, dns.TTL(1)) // 1 = automatic, required for proxied
	setField(&p.Comment.Value, &p.Comment.Present, s.Comment)
	return p
}

// CreateRecord creates a proxied CNAME. ErrExists when a record of that
// name already exists (code 81053): the caller then looks at who owns it.
func (c *Client) CreateRecord(ctx context.Context, s RecordSpec) (Record, error) {
	var p dns.RecordNewParams
	setField(&p.ZoneID.Value, &p.ZoneID.Present, c.cfg.ZoneID)
	p.Body = s.param()
	var out Record
	err := c.do(ctx, "dns.create", s.Name, func(ctx context.Context) error {
		r, err := c.records.New(ctx, p)
		if err == nil {
			out = toRecord(r)
		}
		return err
	})
	if hasCode(err, codeRecordExists) || hasCode(err, codeIdentical) {
		return Record{}, apicall.WithKind(err, ErrExists)
	}
	return out, err
}

// FindRecords returns every record with exactly this FQDN (any type).
func (c *Client) FindRecords(ctx context.Context, fqdn string) ([]Record, error) {
	fqdn = strings.ToLower(strings.TrimSuffix(fqdn, "."))
	items, _, err := c.listRecords(ctx, "dns.list", func(p *dns.RecordListParams) {
		setField(&p.Name.Value.Exact.Value, &p.Name.Value.Exact.Present, fqdn)
		p.Name.Present = true
	})
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, r := range items {
		if r.Name == fqdn {
			out = append(out, r)
		}
	}
	return out, nil
}

// GetRecord fetches a record by id (ErrNotFound when gone).
func (c *Client) GetRecord(ctx context.Context, id string) (Record, error) {
	var p dns.RecordGetParams
	setField(&p.ZoneID.Value, &p.ZoneID.Present, c.cfg.ZoneID)
	var out Record
	err := c.do(ctx, "dns.get", id, func(ctx context.Context) error {
		r, err := c.records.Get(ctx, id, p)
		if err == nil {
			out = toRecord(r)
		}
		return err
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return Record{}, apicall.WithKind(err, ErrNotFound)
	}
	return out, err
}

// UpdateRecord overwrites a record (PUT) with the spec.
func (c *Client) UpdateRecord(ctx context.Context, id string, s RecordSpec) (Record, error) {
	var p dns.RecordUpdateParams
	setField(&p.ZoneID.Value, &p.ZoneID.Present, c.cfg.ZoneID)
	p.Body = s.param()
	var out Record
	err := c.do(ctx, "dns.update", id, func(ctx context.Context) error {
		r, err := c.records.Update(ctx, id, p)
		if err == nil {
			out = toRecord(r)
		}
		return err
	})
	switch {
	case apicall.StatusOf(err) == http.StatusNotFound:
		return Record{}, apicall.WithKind(err, ErrNotFound)
	case hasCode(err, codeRecordExists):
		return Record{}, apicall.WithKind(err, ErrExists)
	}
	return out, err
}

// DeleteRecord deletes a record; existed is false when it was already gone.
func (c *Client) DeleteRecord(ctx context.Context, id string) (existed bool, err error) {
	var p dns.RecordDeleteParams
	setField(&p.ZoneID.Value, &p.ZoneID.Present, c.cfg.ZoneID)
	err = c.do(ctx, "dns.delete", id, func(ctx context.Context) error {
		_, err := c.records.Delete(ctx, id, p)
		return err
	})
	if apicall.StatusOf(err) == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// ListRecords lists the zone's records whose comment starts with
// commentPrefix ("" for all), every page, and says how many pages it
// fetched. The prefix is also checked here, so a server that ignores the
// filter costs pages but never yields a record we do not own.
func (c *Client) ListRecords(ctx context.Context, commentPrefix string) ([]Record, int, error) {
	items, pages, err := c.listRecords(ctx, "dns.list", func(p *dns.RecordListParams) {
		if commentPrefix != "" {
			setField(&p.Comment.Value.Startswith.Value, &p.Comment.Value.Startswith.Present, commentPrefix)
			p.Comment.Present = true
		}
	})
	if err != nil {
		return nil, pages, err
	}
	out := items[:0]
	for _, r := range items {
		if strings.HasPrefix(r.Comment, commentPrefix) {
			out = append(out, r)
		}
	}
	return out, pages, nil
}

func (c *Client) listRecords(ctx context.Context, op string, filter func(*dns.RecordListParams)) ([]Record, int, error) {
	var out []Record
	pages, err := listAll(ctx, c, op, c.cfg.DNSPageSize, func(r dns.RecordResponse) string { return r.ID },
		func(ctx context.Context, page int) (*pagination.V4PagePaginationArray[dns.RecordResponse], error) {
			var p dns.RecordListParams
			setField(&p.ZoneID.Value, &p.ZoneID.Present, c.cfg.ZoneID)
			setField(&p.Page.Value, &p.Page.Present, float64(page))
			setField(&p.PerPage.Value, &p.PerPage.Present, float64(c.cfg.DNSPageSize))
			filter(&p)
			return c.records.List(ctx, p)
		}, func(r *dns.RecordResponse) {
			out = append(out, detachRecord(toRecord(r)))
		})
	if err != nil {
		return nil, pages, err
	}
	return out, pages, nil
}

// BatchResult is what a DNS batch did: the records it created, in the
// order of the posts.
type BatchResult struct {
	Created []Record
}

// Batch deletes the records deletes names and creates the posts in one
// POST /zones/{zone}/dns_records/batch (cloudflare-go DNS.Records.Batch):
// Cloudflare runs deletes, patches, puts, then posts, in one database
// transaction, so either every change is applied or none (the error is the
// first action's that failed). One request against the rate limit,
// whatever the number of changes; at most 200 changes on Free zones,
// 3,500 on paid plans (the caller bounds the batch).
func (c *Client) Batch(ctx context.Context, deletes []string, posts []RecordSpec) (BatchResult, error) {
	var p dns.RecordBatchParams
	setField(&p.ZoneID.Value, &p.ZoneID.Present, c.cfg.ZoneID)
	if len(deletes) > 0 {
		ds := make([]dns.RecordBatchParamsDelete, len(deletes))
		for i, id := range deletes {
			setField(&ds[i].ID.Value, &ds[i].ID.Present, id)
		}
		setField(&p.Deletes.Value, &p.Deletes.Present, ds)
	}
	if len(posts) > 0 {
		ps := make([]dns.RecordBatchParamsPostUnion, len(posts))
		for i, s := range posts {
			ps[i] = s.param()
		}
		setField(&p.Posts.Value, &p.Posts.Present, ps)
	}
	var out BatchResult
	target := fmt.Sprintf("%d deletes, %d posts", len(deletes), len(posts))
	err := c.do(ctx, "dns.batch", target, func(ctx context.Context) error {
		res, err := c.records.Batch(ctx, p)
		if err != nil {
			return err
		}
		out.Created = out.Created[:0]
		for i := range res.Posts {
			out.Created = append(out.Created, toRecord(&res.Posts[i]))
		}
		if len(out.Created) != len(posts) {
			return fmt.Errorf("dns batch: %d records created, %d asked for", len(out.Created), len(posts))
		}
		return nil
	})
	return out, err
}
