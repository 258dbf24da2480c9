package admin

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"sort"
	"time"

	"github.com/tunnelward/tunnelward/internal/state"
)

// OrgWalker streams every org record (*state.Store). The status page
// summarises the whole fleet on each view, so it reads the records one at
// a time instead of decoding them all at once (List).
type OrgWalker interface {
	ForEach(fn func(state.Org) error) error
}

// StatusSource is what the status page shows beside the org records;
// cmd/reconciler implements it over the daemon's NATS connection and
// metrics.
type StatusSource interface {
	// DeadLetters returns the newest dead letters, at most n, newest
	// first, and how many the dead-letter stream holds.
	DeadLetters(ctx context.Context, n int) (DeadLetters, error)
	// APIBudgets is each cloud provider's API use over a recent window.
	APIBudgets() []APIBudget
}

// DeadLetters is the tail of the dead-letter stream.
type DeadLetters struct {
	Total  uint64
	Recent []DeadLetter
}

// DeadLetter is one event the reconciler refused, with why (the DLQ
// headers).
type DeadLetter struct {
	Seq     uint64    // in the dead-letter stream
	At      time.Time // when it was dead-lettered
	Subject string    // the original subject
	Code    string    // Tw-Dlq-Code
	Reason  string    // Tw-Dlq-Reason
	Field   string    // Tw-Dlq-Field
}

// APIBudget is one provider's API use over Window.
type APIBudget struct {
	Provider  string
	Window    time.Duration
	Requests  int
	Limit     int // requests allowed per Window; 0 when the provider has no such budget
	Throttled int
	Failed    int
	Note      string
}

// StatusPageRefresh is how often the page reloads itself.
const StatusPageRefresh = 30 * time.Second

// Caps that keep the page readable (and its size bounded) on a large
// fleet; the page says when a list is cut.
const (
	maxListedOrgs    = 100
	maxDeadLetters   = 10
	deadLetterBudget = 2 * time.Second
)

// StatusPage is the fleet at a glance: plain server-rendered HTML with no
// script, reloading itself. It is an ordinary handler on the admin mux, so
// whatever guards the admin API guards it too.
type StatusPage struct {
	orgs OrgWalker
	src  StatusSource // nil: no dead letters or budgets to show
	log  *slog.Logger
	now  func() time.Time
}

// NewStatusPage returns the page over orgs and src.
func NewStatusPage(orgs OrgWalker, src StatusSource, log *slog.Logger) *StatusPage {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &StatusPage{orgs: orgs, src: src, log: log, now: time.Now}
}

//go:embed statuspage.html.tmpl
var statusPageHTML string

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"age":     humanAge,
	"percent": func(n, d int) int { return n * 100 / max(d, 1) },
	"bar":     func(p int) int { return min(p, 100) },
	"utc":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"window":  window,
}).Parse(statusPageHTML))

// window is a budget window as people say it: 5m, 1h, 90s.
func window(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// The states an org is summarised by, in the order the page lists them.
const (
	StateReady        = "Ready"
	StateProvisioning = "Provisioning"
	StateDegraded     = "Degraded"
	StateConflict     = "Conflict"
	StateFailed       = "Failed"
	StateDeleting     = "Deleting"
	StateDeleted      = "Deleted"
)

var stateOrder = []string{StateReady, StateProvisioning, StateDegraded, StateConflict, StateFailed, StateDeleting, StateDeleted}

// OrgState is the one word the page sums an org up by: a finished
// tombstone is Deleted, one still cascading Deleting; a present org is
// Failed, in Conflict, Ready, Degraded or else still Provisioning, checked
// in that order (an org kept Ready where it is despite a refused region
// change is Ready, and listed among the conflicts).
func OrgState(o state.Org) string {
	if o.Desired.Presence == state.Deleted {
		if o.Observed.DeleteDone {
			return StateDeleted
		}
		return StateDeleting
	}
	switch {
	case isTrue(o, state.CondFailed):
		return StateFailed
	case isTrue(o, state.CondConflict) && !isTrue(o, state.CondReady):
		return StateConflict
	case isTrue(o, state.CondReady):
		return StateReady
	case isTrue(o, state.CondDegraded):
		return StateDegraded
	}
	return StateProvisioning
}

func condition(o state.Org, typ string) (state.Condition, bool) {
	for _, c := range o.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return state.Condition{}, false
}

func isTrue(o state.Org, typ string) bool {
	c, ok := condition(o, typ)
	return ok && c.Status
}

type stateCount struct {
	State string
	Count int
}

type orgRow struct {
	ID, Slug, State, Reason, Message, LastError string
	Since                                       time.Time
	Age                                         time.Duration
}

type statusView struct {
	Now          time.Time
	Refresh      int
	Orgs         int // records, tombstones included
	States       []stateCount
	Tunnels      []stateCount
	NotReady     []orgRow
	NotReadyAll  int
	Conflicts    []orgRow
	ConflictsAll int
	DeadLetters  *DeadLetters
	DLQError     string
	Budgets      []APIBudget
	OrgsError    string
}

func (p *StatusPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v := p.view(r.Context())
	var buf bytes.Buffer
	if err := statusTmpl.Execute(&buf, v); err != nil {
		p.log.Error("status page", "err", err)
		http.Error(w, "rendering the status page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// No script, no frames, no outside resources: the page is inline CSS
	// and links to the admin API.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	code := http.StatusOK
	if v.OrgsError != "" {
		code = http.StatusInternalServerError
	}
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func (p *StatusPage) view(ctx context.Context) statusView {
	now := p.now()
	v := statusView{Now: now, Refresh: int(StatusPageRefresh.Seconds())}
	states := map[string]int{}
	tunnels := map[string]int{}
	var notReady, conflicts []orgRow
	err := p.orgs.ForEach(func(o state.Org) error {
		v.Orgs++
		st := OrgState(o)
		states[st]++
		if o.Desired.Presence == state.Present {
			if s := o.Observed.TunnelStatus; s != "" {
				tunnels[s]++
			} else {
				tunnels["none"]++
			}
			if c, ok := condition(o, state.CondConflict); ok && c.Status {
				conflicts = append(conflicts, orgRow{ID: o.ID, Slug: o.Desired.Slug, State: st, Reason: c.Reason,
					Message: c.Message, Since: c.LastTransitionTime, Age: now.Sub(c.LastTransitionTime)})
			}
		}
		// A finished tombstone is done; one still deleting is listed, as
		// its cascade may be what is stuck.
		if st == StateReady || st == StateDeleted {
			return nil
		}
		row := orgRow{ID: o.ID, Slug: o.Desired.Slug, State: st, LastError: o.LastError, Since: o.UpdatedAt}
		if c, ok := condition(o, state.CondReady); ok {
			row.Reason, row.Message, row.Since = c.Reason, c.Message, c.LastTransitionTime
		} else {
			row.Reason = "NotReconciledYet"
		}
		// Failed and Deleting say more than Ready's bare reason.
		for _, typ := range []string{state.CondFailed, state.CondDeleting} {
			if c, ok := condition(o, typ); ok && c.Status {
				row.Reason, row.Message = c.Reason, c.Message
			}
		}
		row.Age = now.Sub(row.Since)
		notReady = append(notReady, row)
		return nil
	})
	if err != nil {
		p.log.Error("status page: read orgs", "err", err)
		v.OrgsError = err.Error()
	}
	for _, s := range stateOrder {
		v.States = append(v.States, stateCount{s, states[s]})
	}
	for s, n := range tunnels {
		v.Tunnels = append(v.Tunnels, stateCount{s, n})
	}
	sort.Slice(v.Tunnels, func(i, j int) bool { return v.Tunnels[i].State < v.Tunnels[j].State })
	oldestFirst := func(rows []orgRow) {
		sort.Slice(rows, func(i, j int) bool {
			if !rows[i].Since.Equal(rows[j].Since) {
				return rows[i].Since.Before(rows[j].Since)
			}
			return rows[i].ID < rows[j].ID
		})
	}
	oldestFirst(notReady)
	oldestFirst(conflicts)
	v.NotReadyAll, v.ConflictsAll = len(notReady), len(conflicts)
	v.NotReady, v.Conflicts = notReady[:min(len(notReady), maxListedOrgs)], conflicts[:min(len(conflicts), maxListedOrgs)]

	if p.src != nil {
		dctx, cancel := context.WithTimeout(ctx, deadLetterBudget)
		defer cancel()
		dl, err := p.src.DeadLetters(dctx, maxDeadLetters)
		if err != nil {
			v.DLQError = err.Error()
		} else {
			v.DeadLetters = &dl
		}
		v.Budgets = p.src.APIBudgets()
	}
	return v
}

// humanAge is a duration as an operator reads it: 45s, 12m, 3h20m, 2d4h.
func humanAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}
