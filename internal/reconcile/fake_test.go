package reconcile

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelward/tunnelward/internal/owner"
	"github.com/tunnelward/tunnelward/internal/plan"
	"github.com/tunnelward/tunnelward/internal/secret"
	"github.com/tunnelward/tunnelward/internal/state"
)

// fakeCloud is an in-memory cloud behind the engine's narrow interfaces
// (cloud.go): engine logic tested without HTTP, workers or the wall clock.
// It keeps only what the interfaces promise; the SDK seams are proven by
// the emulator-level tests (harness_test.go).
type fakeCloud struct {
	mu       sync.Mutex
	seq      int
	tunnels  map[string]*Tunnel // by id; Deleted ones stay
	ingress  map[string][]plan.IngressRule
	records  map[string]plan.Record
	insts    map[string]*Instance
	tokens   map[string]string // client token -> instance id
	params   map[string]map[string]string
	restarts []string
	calls    map[string]int
	// paramsHold, when set, holds ListParams: it sends on entered, then
	// waits for release and fails with err when that is not nil.
	paramsHold *listHold
}

// listHold holds a listing in the middle: a test sees it running.
type listHold struct {
	entered chan struct{}
	release chan error
}

func newFakeCloud() *fakeCloud {
	return &fakeCloud{tunnels: map[string]*Tunnel{}, ingress: map[string][]plan.IngressRule{},
		records: map[string]plan.Record{}, insts: map[string]*Instance{}, tokens: map[string]string{},
		params: map[string]map[string]string{}, calls: map[string]int{}}
}

func (f *fakeCloud) id(prefix string) string { f.seq++; return fmt.Sprintf("%s%04d", prefix, f.seq) }
func (f *fakeCloud) call(op string)          { f.calls[op]++ }

func (f *fakeCloud) CreateTunnel(_ context.Context, name string) (Tunnel, secret.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("tunnel.create")
	for _, t := range f.tunnels {
		if t.Name == name && !t.Deleted {
			return Tunnel{}, secret.Token{}, ErrExists
		}
	}
	t := &Tunnel{ID: f.id("t-"), Name: name, Status: "inactive"}
	f.tunnels[t.ID] = t
	return *t, secret.NewToken("token-of-" + t.ID), nil
}

func (f *fakeCloud) FindTunnel(_ context.Context, name string) (*Tunnel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("tunnel.list")
	for _, t := range f.tunnels {
		if t.Name == name && !t.Deleted {
			c := *t
			return &c, nil
		}
	}
	return nil, nil
}

func (f *fakeCloud) GetTunnel(_ context.Context, id string) (Tunnel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("tunnel.get")
	if t, ok := f.tunnels[id]; ok {
		return *t, nil
	}
	return Tunnel{}, ErrNotFound
}

func (f *fakeCloud) ListTunnels(context.Context) ([]Tunnel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("tunnels.list")
	var out []Tunnel
	for _, t := range f.tunnels {
		if !t.Deleted {
			out = append(out, *t)
		}
	}
	return out, nil
}

func (f *fakeCloud) DeleteTunnel(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("tunnel.delete")
	t, ok := f.tunnels[id]
	if !ok || t.Deleted {
		return ErrNotFound
	}
	t.Deleted = true
	return nil
}

func (f *fakeCloud) CleanConnections(context.Context, string) error { return nil }

func (f *fakeCloud) RotateSecret(_ context.Context, id string) (secret.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("tunnel.edit")
	if t, ok := f.tunnels[id]; !ok || t.Deleted {
		return secret.Token{}, ErrNotFound
	}
	f.seq++
	return secret.NewToken(fmt.Sprintf("token-of-%s-%d", id, f.seq)), nil
}

func (f *fakeCloud) Connectors(context.Context, string) ([]string, error) { return nil, nil }

func (f *fakeCloud) DropConnector(context.Context, string, string) error { return nil }

func (f *fakeCloud) GetIngress(_ context.Context, id string) ([]plan.IngressRule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.tunnels[id]; !ok || t.Deleted {
		return nil, ErrNotFound
	}
	return f.ingress[id], nil
}

func (f *fakeCloud) PutIngress(_ context.Context, id string, rules []plan.IngressRule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("tunnel_config.put")
	f.ingress[id] = rules
	return nil
}

func (f *fakeCloud) Token(_ context.Context, id string) (secret.Token, error) {
	f.mu.Lock()
	f.call("tunnel_token.get")
	f.mu.Unlock()
	return secret.NewToken("token-of-" + id), nil
}

func (f *fakeCloud) CreateCNAME(_ context.Context, name, target, comment string) (plan.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("dns.create")
	for _, r := range f.records {
		if strings.EqualFold(r.Name, name) {
			return plan.Record{}, ErrExists
		}
	}
	r := plan.Record{ID: f.id("r-"), Name: name, Type: "CNAME", Content: target, Proxied: true, Comment: comment}
	f.records[r.ID] = r
	return r, nil
}

// Batch is all or nothing, deletes before creates, as Cloudflare's.
func (f *fakeCloud) Batch(_ context.Context, deletes []string, creates []CNAME) ([]plan.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("dns.batch")
	left := maps.Clone(f.records)
	for _, id := range deletes {
		if _, ok := left[id]; !ok {
			return nil, ErrNotFound
		}
		delete(left, id)
	}
	var out []plan.Record
	for _, c := range creates {
		for _, r := range left {
			if strings.EqualFold(r.Name, c.Name) {
				return nil, ErrExists
			}
		}
		r := plan.Record{ID: f.id("r-"), Name: c.Name, Type: "CNAME", Content: c.Target, Proxied: true, Comment: c.Comment}
		left[r.ID] = r
		out = append(out, r)
	}
	f.records = left
	return out, nil
}

func (f *fakeCloud) FindRecords(_ context.Context, name string) ([]plan.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("dns.list")
	var out []plan.Record
	for _, r := range f.records {
		if strings.EqualFold(r.Name, name) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeCloud) GetRecord(_ context.Context, id string) (plan.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.records[id]; ok {
		return r, nil
	}
	return plan.Record{}, ErrNotFound
}

func (f *fakeCloud) UpdateCNAME(_ context.Context, id, name, target, comment string) (plan.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := plan.Record{ID: id, Name: name, Type: "CNAME", Content: target, Proxied: true, Comment: comment}
	f.records[id] = r
	return r, nil
}

func (f *fakeCloud) DeleteRecord(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.records[id]; !ok {
		return ErrNotFound
	}
	delete(f.records, id)
	return nil
}

func (f *fakeCloud) ListRecords(context.Context) ([]plan.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("dns.list")
	var out []plan.Record
	for _, r := range f.records {
		if _, ok := owner.OrgFromDNSComment(r.Comment); ok {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeCloud) OwnedRecords(_ context.Context, orgID string) ([]plan.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []plan.Record
	for _, r := range f.records {
		if o, ok := owner.OrgFromDNSComment(r.Comment); ok && o == orgID {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeCloud) RunInstance(_ context.Context, s RunSpec) (Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("RunInstances")
	if id, ok := f.tokens[s.ClientToken]; ok {
		return *f.insts[id], nil
	}
	var gen int64
	fmt.Sscan(s.Tags[owner.TagGeneration], &gen)
	in := &Instance{ID: f.id("i-"), State: "running", OrgID: s.Tags[owner.TagOrgID], TunnelID: s.Tags[owner.TagTunnelID],
		Generation: gen, ARN: "arn:aws:ec2:us-east-1:123456789012:instance/x"}
	f.insts[in.ID] = in
	f.tokens[s.ClientToken] = in.ID
	return *in, nil
}

func (f *fakeCloud) live(orgID string) []Instance {
	var out []Instance
	for _, in := range f.insts {
		if in.OrgID == orgID && in.State != "terminated" {
			out = append(out, *in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (f *fakeCloud) OrgInstances(_ context.Context, orgID string) ([]Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live(orgID), nil
}

func (f *fakeCloud) ManagedInstances(context.Context) ([]Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DescribeInstances")
	var out []Instance
	for _, in := range f.insts {
		if in.State != "terminated" {
			out = append(out, *in)
		}
	}
	return out, nil
}

func (f *fakeCloud) TerminateInstances(_ context.Context, ids []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("TerminateInstances")
	for _, id := range ids {
		if in, ok := f.insts[id]; ok {
			in.State = "terminated"
		}
	}
	return nil
}

func (f *fakeCloud) PutToken(_ context.Context, name string, _ secret.Token, tags map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("PutParameter")
	if f.params[name] == nil {
		f.params[name] = map[string]string{}
	}
	for k, v := range tags {
		f.params[name][k] = v
	}
	return nil
}

func (f *fakeCloud) DescribeParam(_ context.Context, name string) (*Param, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.params[name]; !ok {
		return nil, nil
	}
	return &Param{Name: name}, nil
}

func (f *fakeCloud) ListParams(_ context.Context, prefix string) ([]Param, error) {
	f.mu.Lock()
	h := f.paramsHold
	f.mu.Unlock()
	if h != nil {
		h.entered <- struct{}{}
		if err := <-h.release; err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DescribeParameters")
	var out []Param
	for name := range f.params {
		if strings.HasPrefix(name, prefix) {
			out = append(out, Param{Name: name})
		}
	}
	return out, nil
}

func (f *fakeCloud) DeleteParam(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.params[name]; !ok {
		return ErrNotFound
	}
	delete(f.params, name)
	return nil
}

func (f *fakeCloud) TagParam(_ context.Context, name string, tags map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("AddTagsToResource")
	if f.params[name] == nil {
		return ErrNotFound
	}
	for k, v := range tags {
		f.params[name][k] = v
	}
	return nil
}

func (f *fakeCloud) ParamTags(_ context.Context, name string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.params[name]; ok {
		return copyTags(t), nil
	}
	return nil, ErrNotFound
}

func copyTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (f *fakeCloud) RestartCloudflared(_ context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts = append(f.restarts, id)
	return "cmd-" + id, nil
}

// setStatus sets every live tunnel of org to status (the connector
// connected, dropped, ...).
func (f *fakeCloud) setStatus(org, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.tunnels {
		if t.Name == owner.TunnelName(org) && !t.Deleted {
			t.Status = status
		}
	}
}

// fakeEngine is an engine on a fakeCloud, a temporary bbolt and a clock the
// test moves: no workers run; the test calls Reconcile itself.
type fakeEngine struct {
	t     *testing.T
	e     *Engine
	cloud *fakeCloud
	store *state.Store
	now   time.Time
	seq   uint64
}

func newFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	return newFakeEngineWith(t, nil)
}

// newFakeEngineWith is newFakeEngine with the engine's config adjusted by
// opt (nil: none) before the engine is built.
func newFakeEngineWith(t *testing.T, opt func(*Config)) *fakeEngine {
	t.Helper()
	fe := &fakeEngine{t: t, cloud: newFakeCloud(), now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fe.store = st
	c := fe.cloud
	clouds := Clouds{Tunnels: c, DNS: c, Instances: c, Params: c, Commands: c,
		UserData: func(org, param string) (string, error) { return "#!/bin/sh\n# " + param + "\n", nil }}
	cfg := Config{ZoneName: "example.test", Instance: InstanceSpec{ImageID: "ami-1"},
		BootConnect: 90 * time.Second, PollInterval: 10 * time.Second, HealthGrace: time.Minute,
		// The DNS batch window is real time (a timer), not the fake clock:
		// passes here run one at a time, so a window only ever gathers one
		// change and sends it alone. A millisecond keeps that path without
		// the default's 200 ms wait per record create and delete.
		DNSBatchWindow: time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return fe.now }}
	if opt != nil {
		opt(&cfg)
	}
	e, err := New(cfg, clouds, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	fe.e = e
	return fe
}

func (fe *fakeEngine) apply(facts ...state.Fact) {
	fe.t.Helper()
	for i := range facts {
		fe.seq++
		facts[i].Seq, facts[i].EventID, facts[i].Time = fe.seq, fmt.Sprint("ev-", fe.seq), fe.now
	}
	if _, err := fe.store.Apply(facts); err != nil {
		fe.t.Fatal(err)
	}
}

// pass runs one reconcile of org at the current clock.
func (fe *fakeEngine) pass(org string) Result {
	fe.t.Helper()
	res, err := fe.e.Reconcile(context.Background(), org)
	if err != nil {
		fe.t.Fatalf("reconcile %s: %v", org, err)
	}
	return res
}

// restart is a process restart: a new engine on the same configuration,
// clouds and state file, in place of the old one (stopped or never run).
func (fe *fakeEngine) restart() *Engine {
	fe.t.Helper()
	e, err := New(fe.e.cfg, fe.e.clouds, fe.store, nil)
	if err != nil {
		fe.t.Fatal(err)
	}
	fe.e = e
	return e
}

func (fe *fakeEngine) org(id string) state.Org {
	fe.t.Helper()
	o, ok, err := fe.store.Get(id)
	if err != nil || !ok {
		fe.t.Fatalf("org %s: %v %v", id, ok, err)
	}
	return o
}

// One org from event to Ready, each pass at a known instant: the first
// pass builds everything and asks to come back after the boot; Ready only
// once the tunnel is healthy.
func TestFakeCreateToReady(t *testing.T) {
	fe := newFakeEngine(t)
	fe.apply(created("acme", "acme"))
	res := fe.pass("acme")
	if res.RequeueAfter != 90*time.Second {
		t.Fatalf("first pass requeue %v, want the boot time", res.RequeueAfter)
	}
	c := fe.cloud
	if len(c.live("acme")) != 1 || len(c.records) != 1 || len(c.params) != 1 || c.calls["tunnel.create"] != 1 {
		t.Fatalf("after the first pass: %d instances, %d records, %d params, %v", len(c.live("acme")), len(c.records), len(c.params), c.calls)
	}
	if IsTrue(fe.org("acme"), state.CondReady) {
		t.Fatal("Ready before the tunnel connected")
	}
	fe.now = fe.now.Add(90 * time.Second)
	c.setStatus("acme", "healthy")
	fe.pass("acme")
	o := fe.org("acme")
	if r, _ := Condition(o, state.CondReady); !r.Status || !r.LastTransitionTime.Equal(fe.now) {
		t.Fatalf("Ready %+v, want true at %v", r, fe.now)
	}
	if c.calls["RunInstances"] != 1 || c.calls["tunnel.create"] != 1 {
		t.Fatalf("calls %v", c.calls)
	}
}

// A tunnel that goes down: the pass restarts cloudflared; still down after
// the grace, the next pass replaces the instance; the clock, not sleeps,
// decides.
func TestFakeRestartThenReplace(t *testing.T) {
	fe := newFakeEngine(t)
	fe.apply(created("acme", "acme"))
	fe.pass("acme")
	fe.now = fe.now.Add(90 * time.Second)
	fe.cloud.setStatus("acme", "healthy")
	fe.pass("acme")
	first := fe.org("acme").Observed.InstanceID

	fe.now = fe.now.Add(time.Hour)
	fe.cloud.setStatus("acme", "down")
	fe.apply(healthFailed("acme"))
	fe.pass("acme")
	if !slices.Equal(fe.cloud.restarts, []string{first}) {
		t.Fatalf("restarts %v, want one of %s", fe.cloud.restarts, first)
	}
	fe.now = fe.now.Add(30 * time.Second) // within the grace: wait
	fe.pass("acme")
	if n := len(fe.cloud.restarts); n != 1 || fe.cloud.calls["RunInstances"] != 1 {
		t.Fatalf("within the grace: %d restarts, %d launches", n, fe.cloud.calls["RunInstances"])
	}
	fe.now = fe.now.Add(61 * time.Second) // past it: replace
	fe.pass("acme")
	live := fe.cloud.live("acme")
	if len(live) != 1 || live[0].ID == first || fe.cloud.calls["RunInstances"] != 2 {
		t.Fatalf("after the grace: live %+v, launches %d; want one new instance", live, fe.cloud.calls["RunInstances"])
	}
	o := fe.org("acme")
	if o.Observed.InstanceID != live[0].ID || len(o.Remediations) != 2 ||
		o.Remediations[0].Action != ActRestart || o.Remediations[0].Outcome != OutcomeFailed ||
		o.Remediations[1].Action != ActReplace || o.Remediations[1].Outcome != OutcomePending {
		t.Fatalf("record %+v remediations %+v", o.Observed, o.Remediations)
	}
}

// Deleted: everything found by name and tag goes, the tombstone is done.
func TestFakeDelete(t *testing.T) {
	fe := newFakeEngine(t)
	fe.apply(created("acme", "acme"))
	fe.pass("acme")
	fe.apply(deleted("acme"))
	fe.now = fe.now.Add(time.Minute)
	fe.pass("acme")
	c := fe.cloud
	live, _ := c.ListTunnels(context.Background())
	if len(c.live("acme")) != 0 || len(c.records) != 0 || len(c.params) != 0 || len(live) != 0 {
		t.Fatalf("left behind: %d instances, %d records, %d params, %d tunnels", len(c.live("acme")), len(c.records), len(c.params), len(live))
	}
	o := fe.org("acme")
	if d, _ := Condition(o, state.CondDeleted); !o.Observed.DeleteDone || !d.Status || !d.LastTransitionTime.Equal(fe.now) {
		t.Fatalf("tombstone %+v", o)
	}
}

// mustPool is a served pool's surfaces ("" the default), for tests that
// call a step directly.
func (e *Engine) mustPool(name string) PoolClouds {
	pc, ok := e.poolClouds(name)
	if !ok {
		panic("pool " + name + " not served")
	}
	return pc
}
