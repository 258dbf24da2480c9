package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelward/tunnelward/internal/broker"
	"github.com/tunnelward/tunnelward/internal/events"
	"github.com/tunnelward/tunnelward/internal/state"
	"github.com/tunnelward/tunnelward/internal/testbin"
)

// proc is one child process with its combined output in a file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // set when done is closed
}

func startProc(t testing.TB, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	// Children die with the test binary, even when a timeout panic skips
	// the cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logf.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// term sends SIGTERM and waits (SIGKILL after 40 s); it returns the exit code.
func (p *proc) term() int {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		p.kill()
	}
	return p.exitCode()
}

func (p *proc) exitCode() int {
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// killedBySignal reports whether the process died of SIGKILL.
func (p *proc) killedBySignal() bool {
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// goroutines ends the process with SIGQUIT and returns the goroutine dump
// the Go runtime writes for it: what a process that stopped making
// progress was waiting on, for a test's failure message.
func (p *proc) goroutines() string {
	if !p.running() {
		return p.name + " is not running: no goroutine dump"
	}
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
	l := p.log()
	if i := strings.LastIndex(l, "SIGQUIT: quit"); i >= 0 {
		return p.name + " goroutines:\n" + l[i:]
	}
	return p.name + " wrote no goroutine dump"
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func freeAddr(t testing.TB) string { t.Helper(); return testbin.FreeAddr(t) }

// world is one deployment: a standalone nats-server process, a cloudsim
// process and (when started) the reconciler binary against both.
type world struct {
	t       testing.TB
	dir     string
	natsBin string
	recBin  string
	simBin  string

	natsAddr, natsDir string
	natsArgs          []string
	nats              *proc
	simAddr           string
	sim               *proc
	adminAddr         string
	dataDir           string
	rec               *proc
	recLogs           []string // log files of every reconciler run, for the secret scan
	recArgs           []string // extra reconciler flags

	nc *nats.Conn
	js jetstream.JetStream
	v  *events.Validator

	mu      sync.Mutex
	lastSeq map[string]uint64 // org -> stream seq of the last event published for it
	present map[string]bool   // org -> should exist (false: deleted)
	events  int
}

type worldOpts struct {
	simArgs  []string // extra cloudsim flags
	natsArgs []string // extra nats-server flags
	noClient bool     // do not connect the test's own NATS client
}

// fastWorld are cloudsim timings that keep process-level runs short.
var fastWorld = []string{"--boot-delay", "300ms", "--connect-delay", "200ms", "--shutdown-delay", "200ms", "--retry-interval", "300ms"}

func newWorld(t testing.TB, o worldOpts) *world {
	t.Helper()
	w := &world{
		t: t, dir: t.TempDir(),
		natsBin: binary(t, "nats-server", "github.com/nats-io/nats-server/v2"),
		recBin:  reconcilerBinary(t),
		simBin:  binary(t, "cloudsim", "./cmd/cloudsim"),
		lastSeq: map[string]uint64{}, present: map[string]bool{},
	}
	w.natsDir = filepath.Join(w.dir, "nats")
	w.dataDir = filepath.Join(w.dir, "data")
	w.natsAddr, w.simAddr, w.adminAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	w.natsArgs = o.natsArgs
	w.startNATS()
	w.sim = startProc(t, "cloudsim", w.simBin, nil, append([]string{"--listen", w.simAddr}, o.simArgs...)...)
	waitFor(t, 15*time.Second, "cloudsim up", func() bool { return httpStatus("http://"+w.simAddr+"/_sim/faults") == 200 })
	var err error
	if w.v, err = events.NewValidator(); err != nil {
		t.Fatal(err)
	}
	if !o.noClient {
		if w.nc, err = broker.Connect(w.natsURL(), "", "reliability-test", nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.nc.Close)
		w.js, _ = jetstream.New(w.nc)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := broker.EnsureStreams(ctx, w.js, nil); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *world) natsURL() string { return "nats://" + w.natsAddr }
func (w *world) simURL() string  { return "http://" + w.simAddr }

func (w *world) startNATS() {
	_, port, _ := net.SplitHostPort(w.natsAddr)
	args := append([]string{"-js", "-sd", w.natsDir, "-a", "127.0.0.1", "-p", port}, w.natsArgs...)
	w.nats = startProc(w.t, "nats-server", w.natsBin, nil, args...)
	waitFor(w.t, 15*time.Second, "nats-server up", func() bool {
		c, err := net.DialTimeout("tcp", w.natsAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// startReconciler runs the reconciler binary against the world with extra
// environment (crash points) and returns without waiting for readiness.
func (w *world) startReconciler(env ...string) *proc {
	w.t.Helper()
	args := append([]string{"--data-dir", w.dataDir, "--nats-url", w.natsURL(), "--admin-listen", w.adminAddr,
		"--sandbox-listen", freeAddr(w.t), "--cloud", w.simURL(), "--log-level", "debug",
		// The emulated cloudflared reconnects in 200 ms: no need to wait a minute.
		"--health-grace", "3s"}, w.recArgs...)
	w.rec = startProc(w.t, "reconciler", w.recBin, env, args...)
	w.recLogs = append(w.recLogs, w.rec.logPath)
	return w.rec
}

// waitReady waits for /readyz 200 from the running reconciler.
func (w *world) waitReady() {
	w.t.Helper()
	waitFor(w.t, 30*time.Second, "reconciler ready", func() bool {
		if !w.rec.running() {
			w.t.Fatalf("reconciler exited (%v) before ready:\n%s", w.rec.err, tail(w.rec.log(), 40))
		}
		return httpStatus("http://"+w.adminAddr+"/readyz") == 200
	})
}

// publish validates and publishes an event for the world's bookkeeping.
func (w *world) publish(data any) uint64 {
	w.t.Helper()
	ev, err := events.New(data)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := broker.PublishEvent(ctx, w.js, w.v, ev)
	if err != nil {
		w.t.Fatal(err)
	}
	w.record(ev, ack.Sequence)
	return ack.Sequence
}

func (w *world) record(ev events.Event, seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	org := ev.OrgID()
	w.events++
	if seq > w.lastSeq[org] {
		w.lastSeq[org] = seq
		switch {
		case ev.Created != nil:
			w.present[org] = true
		case ev.Deleted != nil:
			w.present[org] = false
		}
	}
}

func (w *world) create(org string) uint64 { return w.publish(events.Created{OrgID: org, Slug: org}) }
func (w *world) createIn(org, region string) uint64 {
	return w.publish(events.Created{OrgID: org, Slug: org, Region: region})
}

// regionOf says what is wrong ("" nothing) with where the emulator holds
// org's live instance and token parameter: both must be in region.
func (w *world) regionOf(org, region string) string {
	st, err := w.simState()
	if err != nil {
		return err.Error()
	}
	if _, _, insts, params := st.resources(org); insts != 1 || params != 1 {
		return fmt.Sprintf("org %s has %d instances and %d parameters, want 1 and 1", org, insts, params)
	}
	for _, in := range st.Instances {
		if in.liveOf(org) && in.Region != region {
			return fmt.Sprintf("instance %s of org %s in %s, want %s", in.InstanceID, org, in.Region, region)
		}
	}
	for _, p := range st.Parameters {
		if strings.Contains(p.Name, "/"+org+"/") && p.Region != region {
			return fmt.Sprintf("parameter %s of org %s in %s, want %s", p.Name, org, p.Region, region)
		}
	}
	return ""
}
func (w *world) delete(org string) uint64 { return w.publish(events.Deleted{OrgID: org}) }
func (w *world) healthFailed(org string) uint64 {
	return w.publish(events.HealthFailed{OrgID: org, Reason: "edge 530", Observer: "reliability"})
}

// expected returns the orgs that should exist and those that should be gone.
func (w *world) expected() (present, deleted []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for org, p := range w.present {
		if p {
			present = append(present, org)
		} else {
			deleted = append(deleted, org)
		}
	}
	sort.Strings(present)
	sort.Strings(deleted)
	return present, deleted
}

func (w *world) expectedPresent() []string { p, _ := w.expected(); return p }

// orgs reads /v1/orgs from the running reconciler.
func (w *world) orgs() (map[string]state.Org, error) {
	var body struct{ Orgs []state.Org }
	if err := getJSON("http://"+w.adminAddr+"/v1/orgs", &body); err != nil {
		return nil, err
	}
	m := map[string]state.Org{}
	for _, o := range body.Orgs {
		m[o.ID] = o
	}
	return m, nil
}

type violation struct{ Kind, Org, Resource, Detail string }

// invariants asks the emulator for leaks and duplicates given the orgs that
// should exist ("-" when none should: every owned resource is then an orphan).
func (w *world) invariants(present []string) ([]violation, error) {
	orgs := strings.Join(present, ",")
	if orgs == "" {
		orgs = "-"
	}
	var body struct{ Violations []violation }
	err := getJSON(w.simURL()+"/_sim/invariants?orgs="+orgs, &body)
	return body.Violations, err
}

// simState is the part of /_sim/state the checks read.
type simState struct {
	Tunnels []struct {
		ID        string  `json:"id"`
		Name      string  `json:"name"`
		DeletedAt *string `json:"deleted_at"`
		Status    string  `json:"status"`
	} `json:"tunnels"`
	DNSRecords []struct {
		ID, Name, Content, Comment string
	} `json:"dns_records"`
	Instances  []simInstance                   `json:"instances"`
	Parameters []struct{ Name, Region string } `json:"parameters"`
}

type simInstance struct {
	InstanceID string `json:"InstanceId"`
	Region     string
	State      struct{ Name string }
	Tags       []struct{ Key, Value string }
}

// liveOf reports whether the instance is not terminated and carries OrgID=org.
func (i simInstance) liveOf(org string) bool {
	if i.State.Name == "terminated" || i.State.Name == "shutting-down" {
		return false
	}
	for _, tag := range i.Tags {
		if tag.Key == "OrgID" && tag.Value == org {
			return true
		}
	}
	return false
}

func (w *world) simState() (simState, error) {
	var st simState
	err := getJSON(w.simURL()+"/_sim/state", &st)
	return st, err
}

// resources counts the live resources an org owns in the emulator.
func (st simState) resources(org string) (tunnels, records, instances, params int) {
	for _, t := range st.Tunnels {
		if t.Name == "tw-"+org && (t.DeletedAt == nil || *t.DeletedAt == "") {
			tunnels++
		}
	}
	for _, r := range st.DNSRecords {
		if r.Comment == "tunnelward:org="+org || strings.HasPrefix(r.Comment, "tunnelward:org="+org+" ") {
			records++
		}
	}
	for _, i := range st.Instances {
		if i.liveOf(org) {
			instances++
		}
	}
	for _, p := range st.Parameters {
		if strings.Contains(p.Name, "/"+org+"/") {
			params++
		}
	}
	return
}

// tunnelStatus is the status of the org's live tunnel ("" if none).
func (st simState) tunnelStatus(org string) string {
	for _, t := range st.Tunnels {
		if t.Name == "tw-"+org && (t.DeletedAt == nil || *t.DeletedAt == "") {
			return t.Status
		}
	}
	return ""
}

// running counts the org's instances in state running.
func (st simState) running(org string) int {
	n := 0
	for _, i := range st.Instances {
		if i.liveOf(org) && i.State.Name == "running" {
			n++
		}
	}
	return n
}

func isTrue(o state.Org, cond string) bool {
	for _, c := range o.Conditions {
		if c.Type == cond {
			return c.Status
		}
	}
	return false
}

// convergence says what is still wrong, "" when the world has converged:
// every published event applied (no event lost), every present org Ready
// with exactly one of each resource, every deleted org cleaned, and the
// invariant checker clean (no leak, no duplicate).
func (w *world) convergence() string {
	present, deleted := w.expected()
	orgs, err := w.orgs()
	if err != nil {
		return "admin API: " + err.Error()
	}
	w.mu.Lock()
	last := maps(w.lastSeq)
	w.mu.Unlock()
	var problems []string
	for org, seq := range last {
		if o, ok := orgs[org]; !ok || o.LastSeq != seq {
			problems = append(problems, fmt.Sprintf("%s: last applied seq %d, published %d (event lost?)", org, o.LastSeq, seq))
		}
	}
	st, err := w.simState()
	if err != nil {
		return "sim state: " + err.Error()
	}
	for _, org := range present {
		o := orgs[org]
		if !isTrue(o, state.CondReady) {
			problems = append(problems, fmt.Sprintf("%s: not Ready (last error %q)", org, o.LastError))
			continue
		}
		if o.Observed.Rotation != nil || o.Desired.TokenRotationSeq > o.Observed.TokenRotatedSeq {
			problems = append(problems, fmt.Sprintf("%s: token rotation asked (seq %d) not finished (rotated %d)", org, o.Desired.TokenRotationSeq, o.Observed.TokenRotatedSeq))
			continue
		}
		if tu, re, in, pa := st.resources(org); tu != 1 || re != 1 || in != 1 || pa != 1 {
			problems = append(problems, fmt.Sprintf("%s: %d tunnels, %d records, %d instances, %d parameters; want one each", org, tu, re, in, pa))
		} else if n := st.running(org); n != 1 {
			// A stopped instance is not converged, even while the org still
			// reads Ready from before its health report was handled.
			problems = append(problems, fmt.Sprintf("%s: its instance is not running", org))
		} else if s := st.tunnelStatus(org); s != "healthy" && s != "degraded" {
			// Likewise a killed connector: the health report is applied
			// (its seq matches) a moment before the engine clears Ready.
			problems = append(problems, fmt.Sprintf("%s: its tunnel is %s, not connected", org, s))
		}
	}
	for _, org := range deleted {
		if o := orgs[org]; !o.Observed.DeleteDone {
			problems = append(problems, fmt.Sprintf("%s: delete not done (last error %q)", org, o.LastError))
		}
	}
	// Each present org named with its generation: its instance must be
	// that generation's (a re-created org never keeps the old instance).
	named := make([]string, 0, len(present))
	for _, org := range present {
		named = append(named, fmt.Sprintf("%s:%d", org, max(orgs[org].Desired.Generation, 1)))
	}
	vs, err := w.invariants(named)
	if err != nil {
		return "invariants: " + err.Error()
	}
	for _, v := range vs {
		problems = append(problems, fmt.Sprintf("invariant %s org=%s %s: %s", v.Kind, v.Org, v.Resource, v.Detail))
	}
	sort.Strings(problems)
	if len(problems) > 8 {
		problems = append(problems[:8], fmt.Sprintf("... and %d more", len(problems)-8))
	}
	return strings.Join(problems, "; ")
}

func maps(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// waitConverged polls until convergence or the deadline; it returns the
// last problem ("" converged).
func (w *world) waitConverged(timeout time.Duration) string {
	var last string
	poll(timeout, 250*time.Millisecond, func() bool {
		if w.rec != nil && !w.rec.running() {
			last = fmt.Sprintf("reconciler exited: %v\n%s", w.rec.err, tail(w.rec.log(), 30))
			return true
		}
		last = w.convergence()
		return last == ""
	})
	return last
}

// simCallsLost returns the emulator's call counts and how many responses it
// cut short after applying the operation (lost_rate).
func (w *world) simCallsLost() (total int, byStatus map[string]int, lost int, err error) {
	var body struct {
		Total int                       `json:"total"`
		Ops   map[string]map[string]int `json:"ops"`
		Lost  map[string]int            `json:"lost"`
	}
	if err = getJSON(w.simURL()+"/_sim/calls", &body); err != nil {
		return 0, nil, 0, err
	}
	byStatus = map[string]int{}
	for _, st := range body.Ops {
		for code, n := range st {
			byStatus[code] += n
		}
	}
	for _, n := range body.Lost {
		lost += n
	}
	return body.Total, byStatus, lost, nil
}

// simWorld posts a /_sim/world action.
func (w *world) simWorld(action map[string]string) error {
	b, _ := json.Marshal(action)
	resp, err := http.Post(w.simURL()+"/_sim/world", "application/json", strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("world %v: %d %s", action, resp.StatusCode, body)
	}
	return nil
}

func httpStatus(url string) int {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func httpBody(url string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func getJSON(url string, v any) error {
	code, body, err := httpBody(url)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET %s: %d %s", url, code, tail(body, 3))
	}
	return json.Unmarshal([]byte(body), v)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, 50*time.Millisecond, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// poll is this package's one polling loop: cond every interval until it
// holds (true) or timeout passes (false, after one last try).
func poll(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
