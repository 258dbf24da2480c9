package cloudsim

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func tagFilter(name string, values ...string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: values}
}

// describeTags lists every tag the filters select through the SDK's
// paginator, as "resource-id/type/key=value", in the order served.
func describeTags(t *testing.T, c *ec2.Client, maxResults int32, filters ...types.Filter) ([]string, int) {
	t.Helper()
	in := &ec2.DescribeTagsInput{Filters: filters}
	if maxResults > 0 {
		in.MaxResults = aws.Int32(maxResults)
	}
	var got []string
	pages := 0
	p := ec2.NewDescribeTagsPaginator(c, in)
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("DescribeTags %+v: %v", filters, err)
		}
		if pages++; pages > 20 {
			t.Fatal("DescribeTags paginator does not terminate")
		}
		if maxResults > 0 && len(page.Tags) > int(maxResults) {
			t.Fatalf("page of %d tags, MaxResults %d", len(page.Tags), maxResults)
		}
		for _, tg := range page.Tags {
			got = append(got, fmt.Sprintf("%s/%s/%s=%s", aws.ToString(tg.ResourceId), tg.ResourceType, aws.ToString(tg.Key), aws.ToString(tg.Value)))
		}
	}
	return got, pages
}

func TestEC2DescribeTags(t *testing.T) {
	w := multiRegionWorld(t, Config{})
	ctx := context.Background()
	acme := runOne(t, w.ec2, runInput("", map[string]string{"ManagedBy": "tunnelward", "OrgID": "acme", "Name": "tw-acme"}))
	beta := runOne(t, w.ec2, runInput("", map[string]string{"ManagedBy": "tunnelward", "OrgID": "beta"}))
	bare := runOne(t, w.ec2, runInput("", nil))
	// An instance of another region is not listed here.
	euEC2, _ := regionClients(t, w.srv.URL, euWest1)
	runOne(t, euEC2, runInput("", map[string]string{"OrgID": "acme-eu"}))

	all, pages := describeTags(t, w.ec2, 0)
	if pages != 1 || len(all) != 5 {
		t.Fatalf("all tags in %d pages: %v", pages, all)
	}
	for _, s := range all {
		if strings.HasPrefix(s, bare) || strings.Contains(s, "acme-eu") || !strings.Contains(s, "/instance/") {
			t.Fatalf("unexpected tag %s in %v", s, all)
		}
	}
	if !sort.StringsAreSorted(all) {
		t.Fatalf("tags not ordered by resource id, then key: %v", all)
	}

	check := func(what string, got, want []string) {
		t.Helper()
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
		}
	}
	tag := func(id, kv string) string { return id + "/instance/" + kv }
	byID, _ := describeTags(t, w.ec2, 0, tagFilter("resource-id", acme))
	check("resource-id", byID, []string{tag(acme, "ManagedBy=tunnelward"), tag(acme, "Name=tw-acme"), tag(acme, "OrgID=acme")})
	byKey, _ := describeTags(t, w.ec2, 0, tagFilter("key", "OrgID"))
	check("key", byKey, []string{tag(acme, "OrgID=acme"), tag(beta, "OrgID=beta")})
	byValue, _ := describeTags(t, w.ec2, 0, tagFilter("value", "be*"))
	check("value wildcard", byValue, []string{tag(beta, "OrgID=beta")})
	byBoth, _ := describeTags(t, w.ec2, 0, tagFilter("resource-type", "instance"), tagFilter("key", "ManagedBy", "Name"), tagFilter("resource-id", acme, beta))
	check("type, key and id", byBoth, []string{tag(acme, "ManagedBy=tunnelward"), tag(acme, "Name=tw-acme"), tag(beta, "ManagedBy=tunnelward")})
	byTag, _ := describeTags(t, w.ec2, 0, tagFilter("tag:OrgID", "acme"))
	check("tag:OrgID=acme (every tag of the resources selected)", byTag, []string{tag(acme, "ManagedBy=tunnelward"), tag(acme, "Name=tw-acme"), tag(acme, "OrgID=acme")})
	none, _ := describeTags(t, w.ec2, 0, tagFilter("resource-type", "volume"))
	check("resource-type volume", none, nil)

	// Pages of 5 at most (MaxResults 5..1000) through the SDK's paginator;
	// every tag exactly once, in the same order as one page.
	for i := 0; i < 3; i++ {
		runOne(t, w.ec2, runInput("", map[string]string{"OrgID": fmt.Sprintf("org-%d", i), "Team": "web"}))
	}
	whole, _ := describeTags(t, w.ec2, 0)
	paged, pages := describeTags(t, w.ec2, 5)
	if len(whole) != 11 || pages != 3 || fmt.Sprint(paged) != fmt.Sprint(whole) {
		t.Fatalf("paged (%d pages) %v\nwhole %v", pages, paged, whole)
	}

	_, err := w.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{MaxResults: aws.Int32(4)})
	requireAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	_, err = w.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{tagFilter("colour", "red")}})
	requireAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	_, err = w.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{NextToken: aws.String("garbage")})
	requireAPIError(t, err, "InvalidParameterValue", http.StatusBadRequest)
	if n := awsCallCount(w.sim, "ec2.DescribeTags", http.StatusOK); n == 0 {
		t.Fatal("DescribeTags not counted under ec2.DescribeTags")
	}
}

// tag-value matches any tag's value, tag-key any tag's key; both take
// wildcards, and several filters must all hold.
func TestEC2DescribeInstancesTagKeyAndValueFilters(t *testing.T) {
	w := newAWSTestWorld(t, Config{})
	acme := runOne(t, w.ec2, runInput("", map[string]string{"OrgID": "acme", "Name": "tw-acme"}))
	beta := runOne(t, w.ec2, runInput("", map[string]string{"OrgID": "beta", "Owner": "acme"}))
	web := runOne(t, w.ec2, runInput("", map[string]string{"Team": "web"}))
	find := func(filters ...types.Filter) []string {
		t.Helper()
		out, err := w.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: filters})
		if err != nil {
			t.Fatalf("DescribeInstances %+v: %v", filters, err)
		}
		var got []string
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				got = append(got, aws.ToString(i.InstanceId))
			}
		}
		sort.Strings(got)
		return got
	}
	sorted := func(v ...string) []string { sort.Strings(v); return v }
	for _, c := range []struct {
		what    string
		filters []types.Filter
		want    []string
	}{
		{"tag-value=acme", []types.Filter{tagFilter("tag-value", "acme")}, sorted(acme, beta)},
		{"tag-value wildcard", []types.Filter{tagFilter("tag-value", "tw-*")}, []string{acme}},
		{"tag-value two values", []types.Filter{tagFilter("tag-value", "beta", "web")}, sorted(beta, web)},
		{"tag-key=Owner", []types.Filter{tagFilter("tag-key", "Owner")}, []string{beta}},
		{"tag-key and tag-value", []types.Filter{tagFilter("tag-key", "Name"), tagFilter("tag-value", "acme")}, []string{acme}},
		{"tag-value nobody", []types.Filter{tagFilter("tag-value", "nobody")}, nil},
	} {
		if got := find(c.filters...); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Fatalf("%s: got %v, want %v", c.what, got, c.want)
		}
	}
}
