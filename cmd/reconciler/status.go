package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// status prints org records from the state file. While the daemon runs it
// holds the file, so status then asks the daemon's admin API instead.
func status(cx *cmdContext) int {
	c, stdout, stderr := cx.cfg, cx.stdout, cx.stderr
	org := ""
	if len(cx.args) == 1 {
		org = cx.args[0]
	}
	orgs, err := readOrgs(c, org)
	err0 := err
	var watch map[string]string     // the running daemon's effective watch intervals
	var pools []reconcile.PoolUsage // and its pools' use
	if errors.Is(err, state.ErrLocked) {
		fmt.Fprintf(stderr, "note: %s is held by the running reconciler; reading its admin API at %s\n", statePath(c), c.AdminListen)
		orgs, watch, pools, err = fetchOrgs(c, org)
	}
	if err != nil {
		fmt.Fprintln(stderr, "reconciler status:", err)
		return 1
	}
	if cx.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if org != "" {
			_ = enc.Encode(orgs[0])
		} else {
			body := map[string]any{"orgs": orgs}
			if watch != nil {
				body["watch_intervals"] = watch
			}
			if pools != nil {
				body["pools"] = pools
			}
			_ = enc.Encode(body)
		}
		return 0
	}
	if org == "" {
		fmt.Fprintln(stdout, watchHeader(c, orgs, watch))
		if line := poolsHeader(pools); line != "" {
			fmt.Fprintln(stdout, line)
		}
		if watch != nil { // the daemon answered: it knows the cluster
			if line := clusterSummary(c); line != "" {
				fmt.Fprintln(stdout, line)
			}
		}
	}
	printTable(stdout, orgs, time.Now())
	if org != "" {
		printDetail(stdout, orgs[0]) // status_detail.go
		if errors.Is(err0, state.ErrLocked) {
			if line := orgOwnerLine(c, org); line != "" {
				fmt.Fprintln(stdout, "cluster: "+line)
			}
		}
	}
	return 0
}

var errNotFound = errors.New("org not found")

// openReadOnly opens the state file read-only; state.ErrLocked means the
// daemon holds it.
func openReadOnly(c config.Config) (*state.Store, error) {
	if _, err := os.Stat(statePath(c)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no state file at %s: has the reconciler run with this --data-dir?", statePath(c))
	}
	return state.Open(statePath(c), state.Options{ReadOnly: true, Timeout: time.Second})
}

func readOrgs(c config.Config, org string) ([]admin.Org, error) {
	s, err := openReadOnly(c)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	view := func(o state.Org) admin.Org { return admin.Org{Org: o, Pool: poolOf(c, o)} }
	if org == "" {
		l, err := s.List()
		out := make([]admin.Org, len(l))
		for i, o := range l {
			out[i] = view(o)
		}
		return out, err
	}
	x, ok, err := s.Get(org)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q is not in %s", errNotFound, org, statePath(c))
	}
	return []admin.Org{view(x)}, nil
}

// poolOf is the Cloudflare pool of a record read from the state file, as
// the engine's PoolOf says it (the daemon answers through it): the pool
// it is placed in, the default pool (--cloudflare-pool) for an org with a
// Cloudflare resource from before pools, "" for an org not placed yet.
func poolOf(c config.Config, o state.Org) string {
	switch ob := o.Observed; {
	case ob.Pool != "":
		return ob.Pool
	case ob.TunnelID != "" || ob.DNSRecordID != "":
		return c.Cloudflare.Pool
	}
	return ""
}

// watchHeader is the line above the table naming how often each listing
// looks: the running daemon's effective intervals, or, read from the state
// file with the daemon stopped, the schedule it would start with for this
// many orgs (one page count per listing, the default region's).
func watchHeader(c config.Config, orgs []admin.Org, watch map[string]string) string {
	var b strings.Builder
	b.WriteString("WATCH")
	if watch == nil {
		if c.WatchBudgetShare <= 0 {
			return fmt.Sprintf("WATCH off: every listing runs with the sweep, every %s", c.SweepInterval)
		}
		present := 0
		for _, o := range orgs {
			if o.Desired.Presence != state.Deleted {
				present++
			}
		}
		sched := reconcile.WatchIntervals(reconcile.PagesFor(present, reconcile.WatchConfig{}),
			reconcile.WatchConfig{BudgetShare: c.WatchBudgetShare}, reconcile.WatchFloors, c.SweepInterval)
		watch = map[string]string{}
		for l, d := range sched {
			watch[string(l)] = d.String()
		}
		fmt.Fprintf(&b, " (daemon not running; schedule for %d orgs)", present)
	}
	for _, l := range reconcile.Listings {
		fmt.Fprintf(&b, "  %s=%s", l, dash(watch[string(l)]))
	}
	fmt.Fprintf(&b, "  sweep=%s", c.SweepInterval)
	return b.String()
}

func fetchOrgs(c config.Config, org string) ([]admin.Org, map[string]string, []reconcile.PoolUsage, error) {
	path := "/v1/orgs"
	if org != "" {
		path += "/" + org
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, u, err := adminGet(ctx, c, path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil, nil, fmt.Errorf("%w: %q", errNotFound, org)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, nil, adminError(u, resp)
	}
	if org != "" {
		var x admin.Org
		if err := json.NewDecoder(resp.Body).Decode(&x); err != nil {
			return nil, nil, nil, fmt.Errorf("admin API %s: %w", u, err)
		}
		return []admin.Org{x}, nil, nil, nil
	}
	var l struct {
		Orgs           []admin.Org
		WatchIntervals map[string]string     `json:"watch_intervals"`
		Pools          []reconcile.PoolUsage `json:"pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, nil, nil, fmt.Errorf("admin API %s: %w", u, err)
	}
	return l.Orgs, l.WatchIntervals, l.Pools, nil
}

// poolsHeader is the line naming each Cloudflare pool's use against its
// limits, as the running daemon counts it ("" when it did not say).
func poolsHeader(pools []reconcile.PoolUsage) string {
	if len(pools) == 0 {
		return ""
	}
	of := func(used, limit int, what string) string {
		if limit == 0 {
			return fmt.Sprintf("%d %s (no limit)", used, what)
		}
		return fmt.Sprintf("%d/%d %s", used, limit, what)
	}
	var b strings.Builder
	b.WriteString("POOLS")
	for _, p := range pools {
		fmt.Fprintf(&b, "  %s (%s): %s, %s", p.Pool, p.Zone, of(p.Tunnels, p.MaxTunnels, "tunnels"), of(p.Records, p.MaxRecords, "dns records"))
	}
	if n := pools[0].Waiting; n > 0 {
		fmt.Fprintf(&b, "; %d org(s) wait for room (PoolFull)", n)
	}
	return b.String()
}

// adminGet sends GET path to the running daemon's admin API, with the
// admin token when one is configured (the same --admin-token-file or
// TUNNELWARD_ADMIN_TOKEN the daemon reads). u is the URL, for messages.
func adminGet(ctx context.Context, c config.Config, path string) (resp *http.Response, u string, err error) {
	u = "http://" + c.AdminListen + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, u, fmt.Errorf("admin API %s: %w", u, err)
	}
	if !c.Admin.Token.IsZero() {
		req.Header.Set("Authorization", "Bearer "+c.Admin.Token.Reveal())
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return nil, u, fmt.Errorf("admin API: %w", err)
	}
	return resp, u, nil
}

// adminError describes a failed admin API answer; a 401 says which token
// setting to look at.
func adminError(u string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e struct{ Error string }
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if resp.StatusCode == http.StatusUnauthorized {
		if resp.Request == nil || resp.Request.Header.Get("Authorization") == "" {
			return fmt.Errorf("admin API %s requires the admin token: give this command the daemon's %s or --admin-token-file",
				u, config.EnvAdminToken)
		}
		return fmt.Errorf("admin API %s refused the admin token this command sent (%s): give it the daemon's %s or --admin-token-file",
			u, msg, config.EnvAdminToken)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		return fmt.Errorf("admin API %s: %s", u, msg)
	}
	return fmt.Errorf("admin API %s: %s: %s", u, resp.Status, msg)
}

func printTable(w io.Writer, orgs []admin.Org, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// POOL after CONDITIONS: scripts read the columns up to CONDITIONS by
	// position.
	fmt.Fprintln(tw, "ORG\tPRESENCE\tSLUG\tGEN\tLAST_SEQ\tTUNNEL\tINSTANCE\tREGION\tCONDITIONS\tPOOL\tOBSERVED\tHEALTH_REPORTS\tLAST_ERROR\tUPDATED")
	for _, o := range orgs {
		var conds []string
		for _, c := range o.Conditions {
			if c.Status {
				conds = append(conds, c.Type)
			}
		}
		unhandled := 0
		for _, r := range o.HealthReports {
			if !r.Handled {
				unhandled++
			}
		}
		// When the record last changed, by an event or the engine; records
		// written before changed_at existed only know their last event's time.
		updated := "-"
		if t := o.ChangedAt; !t.IsZero() {
			updated = t.UTC().Format(time.RFC3339)
		} else if !o.UpdatedAt.IsZero() {
			updated = o.UpdatedAt.UTC().Format(time.RFC3339)
		}
		lastErr := o.LastError
		if len(lastErr) > 60 {
			lastErr = lastErr[:57] + "..."
		}
		// Where its AWS resources are; the asked-for region until then.
		region := o.Observed.Region
		if region == "" {
			region = o.Desired.Region
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d (%d open)\t%s\t%s\n",
			o.ID, o.Desired.Presence, dash(o.Desired.Slug), o.Desired.Generation, o.LastSeq,
			dash(o.Observed.TunnelID), dash(o.Observed.InstanceID), dash(region), dash(strings.Join(conds, ",")),
			dash(o.Pool), observedAge(o.Observed.ObservedAt, now), len(o.HealthReports), unhandled, dash(lastErr), updated)
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// observedAge is how long ago the engine last wrote what it saw of an org,
// "-" if never: a Ready seen 10 s ago is not a Ready seen 3 h ago.
func observedAge(at, now time.Time) string {
	if at.IsZero() {
		return "-"
	}
	d := max(now.Sub(at), 0)
	switch {
	case d < time.Minute:
		return d.Truncate(time.Second).String() + " ago"
	case d < time.Hour:
		return d.Truncate(time.Minute).String() + " ago"
	}
	return d.Truncate(time.Hour).String() + " ago"
}
