package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tunnelward/tunnelward/internal/admin"
	"github.com/tunnelward/tunnelward/internal/cloudsim"
	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/progress"
	"github.com/tunnelward/tunnelward/internal/ratelimit"
	"github.com/tunnelward/tunnelward/internal/reconcile"
	"github.com/tunnelward/tunnelward/internal/state"
)

// Exit codes of `reconciler plan`, as terraform plan -detailed-exitcode.
const (
	planNoChanges = 0
	planError     = 1
	planChanges   = 2
)

// planReport is `reconciler plan -o json` and the admin API's /v1/plan.
type planReport struct {
	Orgs    []orgPlan          `json:"orgs"`
	Orphans []reconcile.Orphan `json:"orphans"`
	Summary planSummary        `json:"summary"`
}

type orgPlan struct {
	OrgID      string          `json:"org_id"`
	Present    bool            `json:"present"`
	Hostname   string          `json:"hostname,omitempty"`
	Generation int64           `json:"generation"`
	Changes    []plan.Change   `json:"changes"`
	Conflicts  []plan.Conflict `json:"conflicts"`
	// Withheld are changes held back: creations a conflict holds (nothing
	// billable is built for an org whose hostname another record holds), a
	// cutover waiting for its tunnel's health, a rotation waiting for the
	// org to converge.
	Withheld []plan.Change `json:"withheld,omitempty"`
	Ready    bool          `json:"ready"`
	// Pool is the Cloudflare pool the org is in, or would be placed in.
	Pool string `json:"pool,omitempty"`
}

type planSummary struct {
	Orgs            int `json:"orgs"`
	OrgsWithChanges int `json:"orgs_with_changes"`
	Create          int `json:"create"`
	Update          int `json:"update"`
	Delete          int `json:"delete"`
	Restart         int `json:"restart"`
	// Other counts the steps of token rotations and cutovers (rotate,
	// drop, rotated, takeover).
	Other     int `json:"other"`
	Conflicts int `json:"conflicts"`
	Orphans   int `json:"orphans"`
}

// Changed reports whether applying the plan would change anything or an
// operator has something to look at (conflicts, orphans).
func (r planReport) Changed() bool {
	s := r.Summary
	return s.Create+s.Update+s.Delete+s.Restart+s.Other+s.Conflicts+s.Orphans > 0
}

func newPlanReport(plans []reconcile.OrgPlan, orphans []reconcile.Orphan) planReport {
	r := planReport{Orgs: make([]orgPlan, 0, len(plans)), Orphans: orphans}
	if r.Orphans == nil {
		r.Orphans = []reconcile.Orphan{}
	}
	for _, p := range plans {
		op := orgPlan{OrgID: p.OrgID, Present: p.Desired.Present, Hostname: p.Desired.Hostname, Generation: p.Desired.Generation,
			Changes: p.Plan.Changes, Conflicts: p.Plan.Conflicts, Withheld: p.Plan.Withheld, Ready: p.Plan.Ready, Pool: p.Pool}
		if op.Changes == nil {
			op.Changes = []plan.Change{}
		}
		if op.Conflicts == nil {
			op.Conflicts = []plan.Conflict{}
		}
		r.Orgs = append(r.Orgs, op)
		r.Summary.Orgs++
		if len(op.Changes) > 0 {
			r.Summary.OrgsWithChanges++
		}
		for _, c := range op.Changes {
			switch c.Op {
			case plan.OpCreate:
				r.Summary.Create++
			case plan.OpUpdate:
				r.Summary.Update++
			case plan.OpDelete:
				r.Summary.Delete++
			case plan.OpRestart:
				r.Summary.Restart++
			default:
				r.Summary.Other++
			}
		}
		r.Summary.Conflicts += len(op.Conflicts)
	}
	r.Summary.Orphans = len(r.Orphans)
	return r
}

// planWith runs the dry run on an engine: one org, or every org from one
// inventory listing (which also finds orphans).
func planWith(ctx context.Context, eng *reconcile.Engine, org string) (planReport, error) {
	if org != "" {
		p, err := eng.PlanOrg(ctx, org)
		if err != nil {
			return planReport{}, err
		}
		return newPlanReport([]reconcile.OrgPlan{p}, nil), nil
	}
	plans, orphans, err := eng.PlanAll(ctx)
	if err != nil {
		return planReport{}, err
	}
	return newPlanReport(plans, orphans), nil
}

// The daemon's /v1/plan reads the clouds, spending the budget the
// reconciles need, for whoever can reach the admin API: answers are reused
// for planCacheTTL, and at most planBurst new ones are computed in a row,
// then one per planEvery (429 with Retry-After past that). A full plan
// costs one inventory listing (a few pages per provider), one org a few
// reads.
const (
	planCacheTTL = 10 * time.Second
	planEvery    = 15 * time.Second
	planBurst    = 4
)

// newPlanCache is the daemon's /v1/plan cache and limiter, on the clock
// now (time.Now when nil).
func newPlanCache(now func() time.Time) *admin.Costly {
	return admin.NewCostly(admin.CostlyOptions{TTL: planCacheTTL, Every: planEvery, Burst: planBurst, What: "/v1/plan", Now: now})
}

// planFunc computes the dry run of one org, or of every org when org is "".
type planFunc func(ctx context.Context, org string) (planReport, error)

// servePlans registers the daemon's dry run, GET /v1/plan and
// /v1/plan/{id}, so `reconciler plan` works while the daemon holds the
// state file. It only reads, like the command; its cloud calls go at
// ratelimit.Low, behind every reconcile's, and through cache.
func servePlans(mux interface{ Handle(string, http.Handler) }, plan planFunc, orgs interface {
	Get(string) (state.Org, bool, error)
}, cache *admin.Costly) {
	handler := func(param string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			org := ""
			if param != "" {
				org = r.PathValue(param)
				// Answered from bbolt: an unknown org costs no cloud call
				// and no share of the limit.
				if _, ok, err := orgs.Get(org); err == nil && !ok {
					writePlanError(w, http.StatusNotFound, fmt.Sprintf("org %q not found", org))
					return
				}
			}
			// Org ids are never empty, so "" is free for the full plan.
			cache.Serve(w, r, org, func(ctx context.Context) (int, any) {
				rep, err := plan(ratelimit.WithPriority(ctx, ratelimit.Low), org)
				if err != nil {
					return http.StatusBadGateway, map[string]string{"error": err.Error()}
				}
				return http.StatusOK, rep
			})
		})
	}
	mux.Handle("GET /v1/plan", handler(""))
	mux.Handle("GET /v1/plan/{id}", handler("id"))
}

func writePlanError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// planCommand is `reconciler plan [ORG]`.
func planCommand(ctx context.Context, cx *cmdContext) int {
	c, stderr := cx.cfg, cx.stderr
	org := ""
	if len(cx.args) == 1 {
		org = cx.args[0]
	}
	// Planning every org waits on paginated listings: show it on a terminal.
	var bar *progress.Reporter
	if org == "" {
		bar = progress.ForTerminal(stderr, "plan: listing every org's resources", progress.Options{ElapsedOnly: true})
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					bar.Add(1)
				}
			}
		}()
	}
	rep, err := planLocal(ctx, cx, org)
	if errors.Is(err, state.ErrLocked) {
		fmt.Fprintf(stderr, "note: %s is held by the running reconciler; planning through its admin API at %s\n", statePath(c), c.AdminListen)
		var cached bool
		var age string
		rep, cached, age, err = fetchPlan(ctx, c, org)
		if err == nil && cached {
			fmt.Fprintf(stderr, "note: the daemon answered from its plan cache (computed %ss ago; it reuses an answer for %s)\n", age, planCacheTTL)
		}
	}
	bar.Clear()
	if err != nil {
		fmt.Fprintln(stderr, "reconciler plan:", err)
		return planError
	}
	if cx.output == "json" {
		enc := json.NewEncoder(cx.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printPlan(cx.stdout, rep)
	}
	if rep.Changed() {
		return planChanges
	}
	return planNoChanges
}

// planLocal plans from the state file opened read-only and the clouds.
func planLocal(ctx context.Context, cx *cmdContext, org string) (planReport, error) {
	c := cx.cfg
	store, err := openReadOnly(c)
	if err != nil {
		return planReport{}, err
	}
	defer store.Close()
	cloudURL := ""
	switch c.Cloud {
	case config.ModeSandbox:
		// The daemon is stopped: plan against the sandbox cloud it saved,
		// loaded into this process and served on loopback for the run.
		// Nothing is saved back, and a plan only reads.
		sim, loaded, err := cloudsim.OpenFile(sandboxConfig(c), sandboxPath(c))
		if err != nil {
			return planReport{}, fmt.Errorf("sandbox cloud: %w", err)
		}
		if !loaded {
			return planReport{}, fmt.Errorf("no sandbox cloud saved at %s: the reconciler has not run on this --data-dir yet, or its cloud was removed; "+
				"start it, or plan against a cloudsim with --cloud http://HOST:PORT", sandboxPath(c))
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return planReport{}, fmt.Errorf("serve the saved sandbox cloud: %w", err)
		}
		srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		defer srv.Close()
		cloudURL = "http://" + l.Addr().String()
		fmt.Fprintf(cx.stderr, "note: the reconciler is not running; planning against the sandbox cloud it saved in %s\n", sandboxPath(c))
	case config.ModeURL:
		cloudURL = strings.TrimRight(c.CloudURL, "/")
	}
	ecfg, clouds, err := engineConfig(ctx, c, cloudURL, cx.log, nil)
	if err != nil {
		return planReport{}, err
	}
	ecfg.SweepInterval = -1 // never runs: only the dry-run methods are called
	eng, err := reconcile.New(ecfg, clouds, store, nil)
	if err != nil {
		return planReport{}, err
	}
	if org != "" {
		if _, ok, err := store.Get(org); err == nil && !ok {
			return planReport{}, fmt.Errorf("%w: %q is not in %s", errNotFound, org, statePath(c))
		}
	}
	return planWith(ctx, eng, org)
}

// fetchPlan asks the running daemon's /v1/plan. cached says whether the
// daemon answered from its plan cache, and age how old that answer is.
func fetchPlan(ctx context.Context, c config.Config, org string) (rep planReport, cached bool, age string, err error) {
	path := "/v1/plan"
	if org != "" {
		path += "/" + org
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	resp, u, err := adminGet(ctx, c, path)
	if err != nil {
		return planReport{}, false, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return planReport{}, false, "", adminError(u, resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return planReport{}, false, "", fmt.Errorf("admin API %s: %w", u, err)
	}
	return rep, resp.Header.Get("X-Cache") == "HIT", resp.Header.Get("Age"), nil
}

func printPlan(w io.Writer, r planReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ORG\tRESOURCE\tACTION\tTARGET\tREASON")
	for _, o := range r.Orgs {
		if len(o.Changes) == 0 && len(o.Withheld) == 0 {
			what := "no changes"
			if o.Ready {
				what = "no changes (ready)"
			}
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\n", o.OrgID, what)
		}
		for _, c := range o.Changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.OrgID, c.Resource, c.Op, dash(c.Target), c.Reason)
		}
		for _, c := range o.Withheld {
			fmt.Fprintf(tw, "%s\t%s\t%s (withheld)\t%s\t%s\n", o.OrgID, c.Resource, c.Op, dash(c.Target), c.Reason)
		}
	}
	_ = tw.Flush()
	if r.Summary.Conflicts > 0 {
		fmt.Fprintln(w, "\nConflicts (a record tunnelward does not own, or a region it cannot follow; reported, never forced):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ORG\tRESOURCE\tTARGET\tREASON")
		for _, o := range r.Orgs {
			for _, c := range o.Conflicts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.OrgID, c.Resource, dash(c.Target), c.Reason)
			}
		}
		_ = tw.Flush()
	}
	if len(r.Orphans) > 0 {
		fmt.Fprintln(w, "\nOrphans (owned resources of no known org, or in a region that is not their org's; the sweep collects them when --gc is on):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tID\tNAME\tORG\tREGION")
		for _, o := range r.Orphans {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Kind, o.ID, dash(o.Name), dash(o.OrgID), dash(o.Region))
		}
		_ = tw.Flush()
	}
	s := r.Summary
	fmt.Fprintf(w, "\nPlan: %d to create, %d to update, %d to delete, %d to restart, %d other (token rotation, cutover); %d conflicts; %d orphans; %d of %d orgs change.\n",
		s.Create, s.Update, s.Delete, s.Restart, s.Other, s.Conflicts, s.Orphans, s.OrgsWithChanges, s.Orgs)
}
